"""Command-line tools: synth, eval, replay and the demo (benchmarks live in ``bench/``).

``da3-synth`` writes synthetic bags with ground truth, ``da3-eval`` evaluates a model on a bag
offline, ``da3-replay`` plays a bag into the running node over DDS and records its outputs.
Bag I/O lives in :mod:`da3_ros.tools.bag`, the replay's parts in :mod:`da3_ros.tools.replay`.
"""
