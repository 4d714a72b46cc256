"""The node's garbage-collector counts for /diagnostics."""

import gc

from da3_ros.ros.gc_watch import gc_values


def test_full_collections_are_counted():
    before = gc_values()
    gc.collect()
    gc.collect(0)
    after = gc_values()
    assert int(after["gc.full_collections"]) == int(before["gc.full_collections"]) + 1
    assert int(after["gc.collections"]) >= int(before["gc.collections"]) + 2

