"""Synthetic data: procedural scenes and camera paths, camera effects, the ground-truth stand-in.

Used by the tests, ``da3-synth``, the demo and training; the node's runtime path never imports it.
"""
