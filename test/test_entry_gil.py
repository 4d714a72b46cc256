"""da3_node's GIL switch interval: 1 ms unless DA3_GIL_SWITCH_INTERVAL_S says otherwise."""

import pytest

from da3_ros.ros.entry import GIL_SWITCH_INTERVAL_S, gil_switch_interval_s

DEFAULT = GIL_SWITCH_INTERVAL_S


@pytest.mark.parametrize("raw, expected", [(None, DEFAULT), ("0.005", 0.005), ("", DEFAULT),
                                           ("fast", DEFAULT), ("-1", DEFAULT)])
def test_interval_from_the_environment(monkeypatch, raw, expected):
    if raw is None:
        monkeypatch.delenv("DA3_GIL_SWITCH_INTERVAL_S", raising=False)
    else:
        monkeypatch.setenv("DA3_GIL_SWITCH_INTERVAL_S", raw)
    assert gil_switch_interval_s() == expected
    assert GIL_SWITCH_INTERVAL_S == 0.001
