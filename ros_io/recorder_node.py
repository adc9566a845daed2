"""ROS 2 node: record chosen topics into a rosbag2 bag (MCAP by default) until shut down.

`ros2 bag record` where rosbag2 is installed does the same; this node also runs where only
rclpy is available, and is what the data-collection command uses.
"""
from __future__ import annotations

import time

import rclpy
from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
from rclpy.node import Node

from ros_io.bag import STORAGE
from ros_io.params import declare, report_unknown_overrides
from ros_io.recorder import Recorder

DEFAULT_TOPICS = [
    "/clock", "/joint_states", "/robot_description",
    "/camera/color/image_raw", "/camera/color/camera_info", "/camera/depth/image_raw",
    "/camera/depth/camera_info", "/camera/instances/image_raw", "/camera/pose",
    "/joint_trajectory_controller/joint_trajectory", "/gripper_controller/commands",
    "/ground_truth/objects", "/ground_truth/tcp_pose",
]


class RecorderNode(Node):
    def __init__(self, **kwargs):
        super().__init__("recorder", **kwargs)
        declare(self, "topics", DEFAULT_TOPICS, ParameterDescriptor(
            description="Topics to record (each subscribed as soon as it appears)",
            read_only=True))
        declare(self, "output", "", ParameterDescriptor(
            description="Bag directory to create ('' = bags/rosbag2_<date-time>)", read_only=True))
        declare(self, "storage", "mcap", ParameterDescriptor(
            description="Storage plugin: mcap or sqlite3", read_only=True))
        declare(self, "duration", 0.0, ParameterDescriptor(
            description="Stop after this many seconds of node time (0 = until shutdown)",
            floating_point_range=[FloatingPointRange(from_value=0.0, to_value=1e6, step=0.0)]))
        report_unknown_overrides(self)
        output = self.get_parameter("output").value or \
            time.strftime("bags/rosbag2_%Y_%m_%d-%H_%M_%S")
        storage = self.get_parameter("storage").value
        if storage not in STORAGE:
            self.get_logger().error(f"unknown storage '{storage}'; using mcap")
            storage = "mcap"
        self.recorder = Recorder(self, output, self.get_parameter("topics").value, storage)
        self._start = self.get_clock().now()
        self.create_timer(0.5, self._check_duration)
        self.done = False
        self.get_logger().info(f"recording into {output}")

    def _check_duration(self) -> None:
        limit = self.get_parameter("duration").value
        if limit > 0 and (self.get_clock().now() - self._start).nanoseconds * 1e-9 >= limit:
            self.done = True

    def close(self) -> None:
        counts = self.recorder.close()
        self.get_logger().info(f"bag closed: {counts}")


def main(args=None):
    rclpy.init(args=args)
    node = RecorderNode()
    try:
        while rclpy.ok() and not node.done:
            rclpy.spin_once(node, timeout_sec=0.1)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        node.close()
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
