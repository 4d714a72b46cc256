"""Benchmarks of da3_ros (not installed on robots): ``bench.live`` measures the running node over DDS."""
