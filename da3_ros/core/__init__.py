"""What runs on the robot, ROS-free: frames -> windows -> engine -> alignment -> clouds.

numpy + torch only; every module here is on the node's runtime path (test/test_layout.py).
"""
