"""ROS-free pipeline: frames -> windows -> engine -> alignment. numpy + torch only."""
