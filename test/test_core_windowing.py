import numpy as np
import pytest

from da3_ros.core.frames import Frame
from da3_ros.core.windowing import (
    FrameWindower,
    KeyframeSelector,
    MultiCameraSync,
    TemporalWindower,
    window_indices,
)

MS = 1_000_000


def _frame(stamp_ms, cam="cam", value=0):
    return Frame(image=np.full((6, 8, 3), value, np.uint8), stamp_ns=int(stamp_ms * MS), camera=cam)


def _stamps(window):
    return [f.stamp_ns // MS for f in window.frames]


def test_window_indices():
    assert window_indices(10, 4, 1) == [7, 8, 9, 10]
    assert window_indices(10, 4, 3) == [1, 4, 7, 10]


def test_temporal_windows_num_view_stride_dilations():
    tw = TemporalWindower(num_view=4, stride=2, dilations=(3, 1))
    emitted, evicted = [], []
    for i in range(14):
        w, ev = tw.push([_frame(i)])
        emitted += [(i, x.dilation, _stamps(x)) for x in w]
        evicted += [f.stamp_ns // MS for f in ev]
    assert emitted == [
        (3, 1, [0, 1, 2, 3]), (5, 1, [2, 3, 4, 5]), (7, 1, [4, 5, 6, 7]),
        (9, 1, [6, 7, 8, 9]), (9, 3, [0, 3, 6, 9]),
        (11, 1, [8, 9, 10, 11]), (11, 3, [2, 5, 8, 11]),
        (13, 1, [10, 11, 12, 13]), (13, 3, [4, 7, 10, 13]),
    ]
    # History keeps (num_view - 1) * max_dilation + 1 = 10 items.
    assert evicted == [0, 1, 2, 3]


def test_flush_emits_tail_window_only_when_frames_pending():
    tw = TemporalWindower(num_view=4, stride=4)
    early = [f.stamp_ns // MS for i in range(6) for f in tw.push([_frame(i)])[1]]
    assert early == [0, 1]
    w, ev = tw.flush(lambda f: f.stamp_ns // MS >= 4)
    assert [_stamps(x) for x in w] == [[2, 3, 4, 5]] and w[0].final
    assert sorted(f.stamp_ns // MS for f in ev) == [2, 3, 4, 5]
    tw2 = TemporalWindower(num_view=4, stride=4)
    for i in range(2):
        tw2.push([_frame(i)])
    w, _ = tw2.flush(lambda f: True)
    assert [_stamps(x) for x in w] == [[0, 1]]  # fewer views when fewer frames arrived
    w, ev = tw2.flush(lambda f: True)
    assert w == [] and ev == []


def test_temporal_out_of_order_duplicate_invalid_unknown_camera():
    fw = FrameWindower("temporal", ["cam"], num_view=2, stride=1)
    reasons = []
    bad = Frame(image=np.zeros((6, 8), np.uint8), stamp_ns=50 * MS, camera="cam")
    for f in [_frame(10), _frame(20), _frame(20), _frame(15), _frame(30, cam="other"), bad, _frame(40)]:
        out = fw.push(f)
        reasons += [r for _, r in out.dropped]
    assert reasons == ["duplicate", "out_of_order", "unknown_camera", "invalid"]


def test_multicam_sync_sets_within_slop():
    sync = MultiCameraSync(["a", "b", "c"], slop_s=0.010)
    sets, drops = [], []
    # Set 1 within 6 ms; b's 101 has no partner (a and c jump to 200); set 2 within 9 ms.
    for f in [_frame(0, "a"), _frame(3, "b"), _frame(6, "c"), _frame(101, "b"),
              _frame(200, "a"), _frame(209, "c"), _frame(205, "b")]:
        s, d = sync.push(f)
        sets += [[(x.camera, x.stamp_ns // MS) for x in st] for st in s]
        drops += [(x.camera, x.stamp_ns // MS, r) for x, r in d]
    assert sets == [[("a", 0), ("b", 3), ("c", 6)], [("a", 200), ("b", 205), ("c", 209)]]
    assert drops == [("b", 101, "unmatched")]
    for x in sets:
        st = [t for _, t in x]
        assert max(st) - min(st) <= 10


def test_multicam_late_duplicate_reordered_unknown():
    sync = MultiCameraSync(["a", "b"], slop_s=0.005)
    out = []
    for f in [_frame(0, "a"), _frame(2, "b"), _frame(1, "b"), _frame(0, "a"), _frame(40, "a"),
              _frame(30, "a"), _frame(30, "a"), _frame(31, "b"), _frame(5, "x")]:
        s, d = sync.push(f)
        out.append((len(s), [r for _, r in d]))
    assert out == [
        (0, []), (1, []),            # set (0, 2)
        (0, ["late"]),               # b@1 is older than b@2, already used in a set
        (0, ["duplicate"]),          # a@0 again
        (0, []), (0, []),            # a@40, then a@30 inserted before it (reordered)
        (0, ["duplicate"]),          # a@30 again, still queued
        (1, []),                     # b@31 pairs with a@30
        (0, ["unknown_camera"]),
    ]
    assert sync.events["reordered"] == 1
    assert [f.stamp_ns // MS for f in sync.queues["a"]] == [40]
    assert [r for _, r in sync.flush()] == ["unmatched"]


def test_multicam_windows_hold_num_view_sets():
    fw = FrameWindower("multicam", ["a", "b"], num_view=3, stride=1, slop_s=0.005)
    windows = []
    for i in range(5):
        for cam, off in (("b", 1), ("a", 0)):
            windows += fw.push(_frame(100 * i + off, cam)).windows
    assert len(windows) == 3
    assert [(f.camera, f.stamp_ns // MS) for f in windows[0].frames] == [
        ("a", 0), ("b", 1), ("a", 100), ("b", 101), ("a", 200), ("b", 201)]


@pytest.mark.parametrize("min_dt_s,min_change,expected", [
    (0.25, 0.0, [0, 300, 600, 900]),
    (0.0, 0.1, [0, 300, 600, 900]),
    (0.0, 0.0, list(range(0, 1000, 100))),
])
def test_keyframe_selection(min_dt_s, min_change, expected):
    sel = KeyframeSelector(min_dt_s, min_change)
    kept = []
    for i, t in enumerate(range(0, 1000, 100)):
        # Image brightness changes by 10 grey levels per frame (0.039 of full range).
        if sel.accept(t * MS, np.full((24, 32, 3), 10 * i, np.uint8)):
            kept.append(t)
    assert kept == expected


def test_windower_counts_not_keyframe():
    fw = FrameWindower("temporal", [], num_view=2, stride=1, keyframe_min_dt_s=0.15)
    reasons = [r for i in range(6) for _, r in fw.push(_frame(100 * i)).dropped]
    assert reasons == ["not_keyframe"] * 3
