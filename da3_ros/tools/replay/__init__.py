"""``da3-replay``: a bag played into the live node over DDS, its outputs recorded and reported.

:mod:`.cli` (the command), :mod:`.node_runner` (the node as a child process, also used by the
tests and benchmarks), :mod:`.player` (one run), :mod:`.ros_io` (the rclpy side), :mod:`.report`.
"""
