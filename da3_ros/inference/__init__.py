"""How a model string becomes a predictor: settings, sources, build and release (ROS-free).

- :mod:`.settings`: :class:`InferenceSettings`, the one home of the inference defaults and choices.
- :mod:`.sources`: ``default`` | preset | weights directory | hub id, and what the weights recommend.
- :mod:`.build`: the network on its device and dtype, the fast path, the engine, warm-up, release.
"""
