"""Benchmarks and GPU measurement scripts (run from a source checkout; not installed on robots).

- :mod:`bench.network`: ``da3-bench``, our network against upstream DA3 on one GPU.
- :mod:`bench.levers`, :mod:`bench.node_path`, :mod:`bench.common`: its parts.
- :mod:`bench.live`: the running node over DDS under a synthetic camera (``python -m bench.live``).
- ``run_gpu.sh``, ``live/run_gpu.sh``, ``flash_check.py``, ``attn_micro.py``, ``planner_check.py``:
  device-call scripts.
Results with their commands: ``bench/RESULTS.md``.
"""
