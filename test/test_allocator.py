"""glibc keeps a node's megabyte buffers in the heap: no page faults per received image."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from da3_ros.inference.allocator import keep_large_allocations

# per received image rclpy fills a take buffer and copies it into a bytes object, then both go:
# the minor page faults of 200 such rounds, after a first 200 that may grow the heap
PROBE = """
import resource, sys
from da3_ros.inference.allocator import keep_large_allocations
print(keep_large_allocations(), end=" ")
def churn():
    for _ in range(200):
        take = bytearray(1 << 20)
        take[::4096] = b"x" * len(take[::4096])  # touch every page
        message = bytes(take)
        del take, message
churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
churn()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(tuning: str) -> tuple[str, int]:
    env = dict(os.environ, DA3_MALLOC_TUNING=tuning)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    applied, faults = out.stdout.split()
    return applied, int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_large_buffers_are_reused_without_page_faults_unless_turned_off():
    applied, faults = _faults("1")
    assert applied == "True" and faults < 200  # reused heap memory: at most a few faults in all
    applied, faults_default = _faults("0")
    assert applied == "False" and faults_default >= 200 * 256  # a megabyte of fresh pages a round
    assert keep_large_allocations(respect_env=False)  # this process (the test runner) too
