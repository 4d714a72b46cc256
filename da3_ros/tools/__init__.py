"""Command-line tools: synth, eval, replay (plus the demo and benchmark).

``da3-synth`` writes synthetic bags with ground truth, ``da3-eval`` evaluates a model on a bag
offline, ``da3-replay`` plays a bag into the running node over DDS and records its outputs.
Bag I/O lives in :mod:`da3_ros.tools.bag.io`.
"""
