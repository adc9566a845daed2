"""The action backends' goal handling over a real DDS graph: trajectories a controller
rejects or aborts are reported, ones it carries out are not. control_msgs and moveit_msgs
do not install here, so the controller is played by a PlanToGoal action server (goal and
result wording are the only parts of a backend that depend on the action type)."""
import threading
import time

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

REJECTED, ABORTED, SLOW = 3, 2, 7   # the controller's answer, by the trajectory's length
SLOW_ANSWER_S = 2.5               # how long the controller takes to answer a SLOW trajectory


class StandInBackend(_ActionBackend):
    def __init__(self, node, action_name, on_failure, response_timeout=2.0):
        super().__init__(node, PlanToGoal, action_name, "", on_failure, response_timeout)

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

        def answer(goal):
            if goal.goal.object_id == SLOW:
                time.sleep(SLOW_ANSWER_S)
            return GoalResponse.REJECT if goal.goal.object_id == REJECTED \
                else GoalResponse.ACCEPT

        ActionServer(node, PlanToGoal, "/arm_controller/follow_joint_trajectory", execute,
                     goal_callback=answer, callback_group=ReentrantCallbackGroup())
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


def test_a_controller_that_answers_nothing_is_reported(controller):
    done = controller
    planner = rclpy.create_node("backend_silence_probe")
    failures = []
    backend = StandInBackend(planner, "/arm_controller/follow_joint_trajectory",
                             failures.append, response_timeout=1.0)
    try:
        assert spin_until(planner, backend.ready, 20.0)
        backend.send(trajectory(1))
        assert spin_until(planner, lambda: done == [1], 10.0)

        # Goals every 0.25 s, none answered for longer than the timeout: reported once.
        started = time.monotonic()
        while time.monotonic() - started < 1.4:
            backend.send(trajectory(SLOW))
            spin_until(planner, lambda: False, 0.25)
        assert len(failures) == 1, failures
        assert failures[0].startswith("/arm_controller/follow_joint_trajectory answered none "
                                      "of the trajectories sent in the last 1.")

        # Answered again: nothing to report.
        assert spin_until(planner, lambda: len(done) == 7, 2 * SLOW_ANSWER_S + 5.0)
        backend.send(trajectory(1))
        assert spin_until(planner, lambda: len(done) == 8, 10.0)

        # A goal left unanswered before a pause longer than the timeout does not count
        # against the goals after it.
        backend.send(trajectory(SLOW))
        spin_until(planner, lambda: False, 1.2)
        backend.send(trajectory(1))
        assert spin_until(planner, lambda: len(done) == 10, SLOW_ANSWER_S + 5.0)
        assert len(failures) == 1, failures
    finally:
        backend.close()
        planner.destroy_node()
