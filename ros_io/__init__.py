"""ROS message I/O without cv_bridge or rosbag2_py: images <-> NumPy, stamps, rosbag2 files."""
