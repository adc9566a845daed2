"""Where the planner's trajectories go, chosen by the `backend` parameter.

  topic                    trajectory_msgs/JointTrajectory on a joint_trajectory_controller's
                           ~/joint_trajectory topic (replacement semantics; the simulated
                           robot listens here)
  follow_joint_trajectory  control_msgs/action/FollowJointTrajectory goals to a controller
                           (each new goal preempts the running one)
  moveit                   moveit_msgs/action/ExecuteTrajectory goals to move_group

The last two need control_msgs / moveit_msgs, present on robots with ros2_control or MoveIt
and imported only when chosen. Their goals are watched: one the controller rejects or aborts
(a path or goal tolerance violated, a controller switched off) is reported through
`on_failure(reason)`, and so is a controller that answers none of the goals sent over
`response_timeout` seconds (a hung controller, or replies DDS loses); one preempted by the
next trajectory ends canceled, as it should.
The gripper width goes to a std_msgs/Float64MultiArray topic (a forward_command_controller)
when `gripper_topic` is set.
"""
from __future__ import annotations

import time
from typing import Callable

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
        self.target = f"topic {self.pub.topic_name}"

    def ready(self) -> bool:
        """Whether a controller listens."""
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
    """Sends each trajectory as a new goal of an action and reports through
    on_failure(reason) the goals the controller rejects or aborts, and each `response_timeout`
    [s] in which it answered none (counted while goals go out at least that often: after a
    pause, a reply lost before it does not count)."""

    def __init__(self, node, action_type, action_name: str, gripper_topic: str,
                 on_failure: Callable[[str], None], response_timeout: float = 2.0):
        from rclpy.action import ActionClient

        self.node = node
        self.client = ActionClient(node, action_type, action_name)
        self.action_type, self.action_name = action_type, action_name
        self.target = f"action {action_name}"
        self.on_failure = on_failure
        self.response_timeout = response_timeout
        self._unanswered_since = None     # [s, monotonic] the first goal since the last reply
        self._last_send = -float("inf")
        self.pub_gripper = node.create_publisher(Float64MultiArray, gripper_topic, 10) \
            if gripper_topic else None
        self.pub = None

    def ready(self) -> bool:
        return self.client.server_is_ready()

    def _goal(self, trajectory):
        raise NotImplementedError

    def _describe(self, result) -> str:
        """The controller's words for a failed goal's result."""
        raise NotImplementedError

    def send(self, trajectory: JointTrajectory) -> None:
        now = time.monotonic()
        if self._unanswered_since is None or now - self._last_send > self.response_timeout:
            self._unanswered_since = now
        elif now - self._unanswered_since > self.response_timeout:
            self.on_failure(f"{self.action_name} answered none of the trajectories sent in "
                            f"the last {now - self._unanswered_since:.1f} s")
            self._unanswered_since = now
        self._last_send = now
        future = self.client.send_goal_async(self._goal(trajectory))
        future.add_done_callback(self._on_response)

    def _on_response(self, future) -> None:
        self._unanswered_since = None
        handle = future.result()
        if handle is None or not handle.accepted:
            self.on_failure(f"{self.action_name} rejected a trajectory")
            return
        handle.get_result_async().add_done_callback(self._on_result)

    def _on_result(self, future) -> None:
        from action_msgs.msg import GoalStatus

        response = future.result()
        if response is not None and response.status == GoalStatus.STATUS_ABORTED:
            self.on_failure(f"{self.action_name} aborted a trajectory: "
                            f"{self._describe(response.result)}")

    def close(self) -> None:
        self.client.destroy()
        if self.pub_gripper is not None:
            self.node.destroy_publisher(self.pub_gripper)


class FollowJointTrajectoryBackend(_ActionBackend):
    def __init__(self, node, action_name: str, gripper_topic: str, on_failure,
                 response_timeout: float):
        from control_msgs.action import FollowJointTrajectory

        super().__init__(node, FollowJointTrajectory, action_name, gripper_topic, on_failure,
                         response_timeout)

    def _goal(self, trajectory):
        return self.action_type.Goal(trajectory=trajectory)

    def _describe(self, result) -> str:
        return f"error_code {result.error_code} ({result.error_string})"


class MoveItBackend(_ActionBackend):
    def __init__(self, node, action_name: str, gripper_topic: str, on_failure,
                 response_timeout: float):
        from moveit_msgs.action import ExecuteTrajectory

        super().__init__(node, ExecuteTrajectory, action_name, gripper_topic, on_failure,
                         response_timeout)

    def _goal(self, trajectory):
        goal = self.action_type.Goal()
        goal.trajectory.joint_trajectory = trajectory
        return goal

    def _describe(self, result) -> str:
        return f"MoveItErrorCodes {result.error_code.val}"


def make_backend(kind: str, node, topic: str, action: str, moveit_action: str,
                 gripper_topic: str, on_failure: Callable[[str], None],
                 response_timeout: float = 2.0):
    """The backend by name; ValueError for an unknown name or one whose messages are not
    installed (the reason names the package). on_failure(reason) is called for each
    trajectory a controller rejects or aborts (on the node's executor) and for each
    response_timeout [s] in which an action's controller answered none (in `send`)."""
    if kind == "topic":
        return TopicBackend(node, topic, gripper_topic)
    try:
        if kind == "follow_joint_trajectory":
            return FollowJointTrajectoryBackend(node, action, gripper_topic, on_failure,
                                                response_timeout)
        if kind == "moveit":
            return MoveItBackend(node, moveit_action, gripper_topic, on_failure,
                                 response_timeout)
    except ImportError as err:
        raise ValueError(f"backend '{kind}' needs {err.name} (install it, or use "
                         f"backend:=topic)") from err
    raise ValueError(f"unknown backend '{kind}': expected one of {BACKENDS}")
