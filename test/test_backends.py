"""The action backends' goal handling over a real DDS graph: trajectories a controller
rejects or aborts are reported, ones it carries out are not. control_msgs and moveit_msgs
do not install here, so the controller is played by a PlanToGoal action server (goal and
result wording are the only parts of a backend that depend on the action type)."""
import threading

import pytest
import rclpy
from rclpy.action import ActionServer, GoalResponse
from rclpy.callback_groups import ReentrantCallbackGroup
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from planner_node.backends import _ActionBackend
from ros_io.lifecycle import HandOffExecutor
from support.graph import ros_context, spin_until
from world_model_planning.action import PlanToGoal
from world_model_planning.msg import GoalSpec

REJECTED, ABORTED = 3, 2   # the controller's answer, chosen by the trajectory's length


class StandInBackend(_ActionBackend):
    def __init__(self, node, action_name, on_failure):
        super().__init__(node, PlanToGoal, action_name, "", on_failure)

    def _goal(self, trajectory):
        return PlanToGoal.Goal(goal=GoalSpec(object_id=len(trajectory.points)))

    def _describe(self, result) -> str:
        return result.failure_reason


def trajectory(points: int) -> JointTrajectory:
    return JointTrajectory(joint_names=["j"],
                           points=[JointTrajectoryPoint(positions=[0.0])] * points)


@pytest.fixture
def controller():
    """The lengths of the trajectories a stand-in controller has carried out."""
    with ros_context():
        node = rclpy.create_node("stand_in_controller")
        done = []

        def execute(handle):
            points = handle.request.goal.object_id
            if points == ABORTED:
                handle.abort()
                return PlanToGoal.Result(failure_reason="path tolerance violated")
            handle.succeed()
            done.append(points)
            return PlanToGoal.Result(success=True)

        ActionServer(node, PlanToGoal, "/arm_controller/follow_joint_trajectory", execute,
                     goal_callback=lambda goal: GoalResponse.REJECT
                     if goal.goal.object_id == REJECTED else GoalResponse.ACCEPT,
                     callback_group=ReentrantCallbackGroup())
        executor = HandOffExecutor(num_threads=2)
        executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        try:
            yield done
        finally:
            executor.shutdown(timeout_sec=10.0)     # no callback may run on the node below
            spinner.join(timeout=5.0)
            node.destroy_node()


def test_rejected_and_aborted_trajectories_are_reported(controller):
    done = controller
    planner = rclpy.create_node("backend_probe")
    failures = []
    backend = StandInBackend(planner, "/arm_controller/follow_joint_trajectory",
                             failures.append)
    try:
        assert spin_until(planner, backend.ready, 20.0)
        backend.send(trajectory(1))
        assert spin_until(planner, lambda: done == [1], 10.0)
        spin_until(planner, lambda: False, 0.3)
        assert failures == []        # carried out: nothing to report

        backend.send(trajectory(ABORTED))
        assert spin_until(planner, lambda: len(failures) == 1, 10.0)
        assert failures[0] == ("/arm_controller/follow_joint_trajectory aborted a "
                               "trajectory: path tolerance violated")
        backend.send(trajectory(REJECTED))
        assert spin_until(planner, lambda: len(failures) == 2, 10.0)
        assert failures[1] == "/arm_controller/follow_joint_trajectory rejected a trajectory"

        backend.send(trajectory(5))
        assert spin_until(planner, lambda: done == [1, 5], 10.0)
        spin_until(planner, lambda: False, 0.3)
        assert len(failures) == 2
    finally:
        backend.close()
        planner.destroy_node()
