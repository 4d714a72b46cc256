"""Fast DDS segments left by killed processes are removed; live and new ones are not."""

from __future__ import annotations

import fcntl
import os
import time

from da3_ros.dds_env import remove_stale_fastdds_segments


def _segment(d, name: str, age_s: float) -> str:
    for path in (d / name, d / f"{name}_el"):
        path.write_bytes(b"x")
        os.utime(path, (time.time() - age_s,) * 2)
    return str(d / f"{name}_el")


def test_only_segments_nobody_holds_and_older_than_a_minute_go(tmp_path):
    _segment(tmp_path, "fastdds_dead", 120)
    held = _segment(tmp_path, "fastdds_live", 120)
    _segment(tmp_path, "fastdds_new", 1)
    (tmp_path / "other_el").write_bytes(b"x")
    fd = os.open(held, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a live participant (another open file description)
    try:
        assert remove_stale_fastdds_segments(str(tmp_path)) == 2
    finally:
        os.close(fd)
    left = ["fastdds_live", "fastdds_live_el", "fastdds_new", "fastdds_new_el", "other_el"]
    assert sorted(os.listdir(tmp_path)) == left
