"""The node's garbage collector pauses, timed for /diagnostics."""

import gc

from da3_ros.ros.gc_watch import GcWatch


def test_full_collections_are_counted_and_timed():
    watch = GcWatch()
    watch.install()
    watch.install()  # idempotent: one callback
    try:
        gc.collect()
        gc.collect(0)
    finally:
        watch.remove()
    gc.collect()  # removed: not counted
    values = watch.values()
    assert watch.full_collections == 1 and values["gc.full_collections"] == "1"
    assert 0.0 < watch.pause_max_ms <= watch.pause_total_ms
    last = watch.full_pause_last_ms
    assert last > 0.0 and values["gc.full_pause_last_ms"] == f"{last:.1f}"
