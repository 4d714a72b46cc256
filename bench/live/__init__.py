"""``python -m bench.live``: the live-node benchmark (issue 13, item 1).

The real node runs as its own process (:mod:`da3_ros.tools.replay.node_runner`'s ``NodeRunner``)
with a given config; a synthetic camera (:mod:`.camera`) sends 640x480 rgb8 images + CameraInfo on an exact
schedule, a recorder (:mod:`.recorder`) takes the receipt time of every output per header stamp,
and the report (:mod:`.report`) gives frames sent / published / dropped by reason, output rate per
topic, window and per-view depth latency, node CPU per thread, GPU memory and time to ready.
``saturate`` (:mod:`.saturate`) steps the camera rate on one node process to find the highest
rate with at most 1 % of frames lost. ``--node upstream`` runs :mod:`.upstream_wrapper` (the
upstream ``depth_anything_3`` API in a minimal rclpy node) under the same camera and recorder.

Modules: ``stats`` (percentiles, rates, accounting: pure), ``procstat`` (thread CPU from /proc),
``config`` (params file and node command), ``camera``, ``recorder``, ``session`` (one node
process: start, ready, send, settle, stop), ``report``, ``saturate``, ``profile`` (py-spy),
``table`` (RESULTS.md rows), ``sink`` (stand-in node), ``upstream_wrapper`` (+ ``upstream_shims``),
``cli``; ``run_gpu.sh`` for device calls.
"""
