"""Training of the bundled DA3 model on synthetic scenes (see docs/TRAINING.md).

Modules: :mod:`~da3_ros.training.data` (synthetic windows), :mod:`~da3_ros.training.losses`
(DA3 output losses), :mod:`~da3_ros.training.train` (entry point),
:mod:`~da3_ros.training.evaluate` (held-out metrics).
"""
