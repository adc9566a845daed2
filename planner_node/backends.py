"""Where the planner's trajectories go, chosen by the `backend` parameter.

  topic                    trajectory_msgs/JointTrajectory on a joint_trajectory_controller's
                           ~/joint_trajectory topic (replacement semantics; the simulated
                           robot listens here)
  follow_joint_trajectory  control_msgs/action/FollowJointTrajectory goals to a controller
                           (each new goal preempts the running one)
  moveit                   moveit_msgs/action/ExecuteTrajectory goals to move_group

The last two need control_msgs / moveit_msgs, present on robots with ros2_control or MoveIt
and imported only when chosen. The gripper width goes to a std_msgs/Float64MultiArray topic
(a forward_command_controller) when `gripper_topic` is set.
"""
from __future__ import annotations

import torch
from builtin_interfaces.msg import Duration
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

BACKENDS = ("topic", "follow_joint_trajectory", "moveit")


def knots_to_trajectory(joint_names, stamp, frame_id: str, dt: float, positions: torch.Tensor,
                        velocities: torch.Tensor, accelerations: torch.Tensor
                        ) -> JointTrajectory:
    """A JointTrajectory starting at `stamp` with one point every dt seconds (P, J)."""
    msg = JointTrajectory(joint_names=list(joint_names))
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    for i, (p, v, a) in enumerate(zip(positions.tolist(), velocities.tolist(),
                                      accelerations.tolist())):
        ns = int(round((i + 1) * dt * 1e9))
        msg.points.append(JointTrajectoryPoint(
            positions=p, velocities=v, accelerations=a,
            time_from_start=Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)))
    return msg


class TopicBackend:
    def __init__(self, node, topic: str, gripper_topic: str):
        self.node = node
        self.pub = node.create_publisher(JointTrajectory, topic, 10)
        self.pub_gripper = node.create_publisher(Float64MultiArray, gripper_topic, 10) \
            if gripper_topic else None

    def ready(self) -> bool:
        return self.pub.get_subscription_count() > 0

    def send(self, trajectory: JointTrajectory) -> None:
        self.pub.publish(trajectory)

    def gripper(self, width: float) -> None:
        if self.pub_gripper is not None:
            self.pub_gripper.publish(Float64MultiArray(data=[float(width)]))

    def close(self) -> None:
        self.node.destroy_publisher(self.pub)
        if self.pub_gripper is not None:
            self.node.destroy_publisher(self.pub_gripper)


class _ActionBackend(TopicBackend):
    """Sends each trajectory as a new goal of an action; rejected goals are logged."""

    def __init__(self, node, action_type, action_name: str, gripper_topic: str):
        from rclpy.action import ActionClient

        self.node = node
        self.client = ActionClient(node, action_type, action_name)
        self.action_type = action_type
        self.pub_gripper = node.create_publisher(Float64MultiArray, gripper_topic, 10) \
            if gripper_topic else None
        self.pub = None

    def ready(self) -> bool:
        return self.client.server_is_ready()

    def _goal(self, trajectory):
        raise NotImplementedError

    def send(self, trajectory: JointTrajectory) -> None:
        future = self.client.send_goal_async(self._goal(trajectory))
        future.add_done_callback(self._on_response)

    def _on_response(self, future) -> None:
        handle = future.result()
        if handle is None or not handle.accepted:
            self.node.get_logger().error("the controller rejected a trajectory goal")

    def close(self) -> None:
        self.client.destroy()
        if self.pub_gripper is not None:
            self.node.destroy_publisher(self.pub_gripper)


class FollowJointTrajectoryBackend(_ActionBackend):
    def __init__(self, node, action_name: str, gripper_topic: str):
        from control_msgs.action import FollowJointTrajectory

        super().__init__(node, FollowJointTrajectory, action_name, gripper_topic)

    def _goal(self, trajectory):
        return self.action_type.Goal(trajectory=trajectory)


class MoveItBackend(_ActionBackend):
    def __init__(self, node, action_name: str, gripper_topic: str):
        from moveit_msgs.action import ExecuteTrajectory

        super().__init__(node, ExecuteTrajectory, action_name, gripper_topic)

    def _goal(self, trajectory):
        goal = self.action_type.Goal()
        goal.trajectory.joint_trajectory = trajectory
        return goal


def make_backend(kind: str, node, topic: str, action: str, moveit_action: str,
                 gripper_topic: str):
    """The backend by name; ValueError for an unknown name or one whose messages are not
    installed (the reason names the package)."""
    if kind == "topic":
        return TopicBackend(node, topic, gripper_topic)
    try:
        if kind == "follow_joint_trajectory":
            return FollowJointTrajectoryBackend(node, action, gripper_topic)
        if kind == "moveit":
            return MoveItBackend(node, moveit_action, gripper_topic)
    except ImportError as err:
        raise ValueError(f"backend '{kind}' needs {err.name} (install it, or use "
                         f"backend:=topic)") from err
    raise ValueError(f"unknown backend '{kind}': expected one of {BACKENDS}")
