"""planner_node pushes the cube over a real DDS graph: the simulated robot and the planner
with the shipped learned world model in separate processes, objects from the simulator's
ground truth, a seeded push goal through the PlanToGoal action; success is judged on the
ground truth, the feedback walks through the stages, and the fingers push apart."""
import time

import numpy as np
import pytest
import rclpy
from rclpy.action import ActionClient
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState

from sim_robot.closed_loop import sample_goal
from sim_robot.scene import OBJECT_IDS
from support.graph import output_of, ros_context, ros_process, spin_until
from world_model_planning.action import PlanToGoal
from world_model_planning.msg import GoalSpec, ObjectArray

PLANNER_ARGS = ["-m", "planner_node.planner_node", "--ros-args",
                "-p", "model:=learned", "-p", "samples:=64", "-p", "iterations:=2",
                "-p", "use_sim_time:=true", "-p", "state_timeout:=1.0",
                "-r", "objects:=/ground_truth/objects"]
SIM_ARGS = ["-m", "sim_robot.sim_node", "--ros-args", "-p", "real_time_factor:=0.4",
            "-p", "clock_rate:=50.0", "-p", "joint_state_rate:=50.0",
            "-p", "ground_truth_rate:=10.0", "-p", "camera_rate:=2.0"]


@pytest.fixture(scope="module")
def node():
    with ros_context(), \
            ros_process(SIM_ARGS, ready_line="simulated robot up", timeout=120) as sim, \
            ros_process(PLANNER_ARGS, ready_line="planning with", timeout=120) as planner:
        node = rclpy.create_node(
            "push_probe", parameter_overrides=[Parameter("use_sim_time", value=True)])
        node.truth, node.widths = None, []     # gripper widths [m] from the joint states
        node.create_subscription(ObjectArray, "/ground_truth/objects",
                                 lambda m: setattr(node, "truth", m), 10)
        node.create_subscription(JointState, "/joint_states", lambda m: node.widths.append(
            sum(p for n, p in zip(m.name, m.position) if "finger" in n)), 10)
        node.action = ActionClient(node, PlanToGoal, "/planner_node/plan_to_goal")
        node.procs = (sim, planner)
        assert node.action.wait_for_server(timeout_sec=30.0), output_of(planner)
        assert spin_until(node, lambda: node.truth is not None, 30.0)
        yield node
        node.destroy_node()


def cube_position(truth: ObjectArray) -> np.ndarray:
    cube = next(o for o in truth.objects if o.id == OBJECT_IDS["cube"])
    return np.array([cube.pose.position.x, cube.pose.position.y, cube.pose.position.z])


def test_pushes_the_cube_to_its_target(node):
    poses = {"cube": (cube_position(node.truth), np.array([0.0, 0.0, 0.0, 1.0]))}
    goal = sample_goal("push", poses, np.random.default_rng(3))
    spec = GoalSpec(target_type=GoalSpec.TARGET_OBJECT, object_id=OBJECT_IDS["cube"],
                    position_tolerance=goal.position_tolerance, orientation_tolerance=-1.0)
    spec.time_budget.sec = 30       # sim seconds
    spec.target_pose.header.frame_id = "world"
    p = spec.target_pose.pose
    p.position.x, p.position.y, p.position.z = (float(v) for v in goal.position)
    p.orientation.w = 1.0
    feedback = []
    deadline = time.monotonic() + 30.0
    while True:      # the planner refuses goals on objects it has not heard of yet
        sent = node.action.send_goal_async(
            PlanToGoal.Goal(goal=spec), feedback_callback=lambda m: feedback.append(m.feedback))
        assert spin_until(node, sent.done, 10.0)
        if sent.result().accepted:
            break
        assert time.monotonic() < deadline, output_of(node.procs[1])[-2000:]
        spin_until(node, lambda: False, 0.5)
    del node.widths[:]
    done = sent.result().get_result_async()
    assert spin_until(node, done.done, 240.0), output_of(node.procs[1])[-3000:]
    result = done.result().result
    stages = [f.stage for f in feedback]
    assert result.success, (result.failure_reason, [(f.stage, round(f.position_error, 3))
                                                    for f in feedback])
    # Judged on the simulator: the cube lies within tolerance of its target.
    spin_until(node, lambda: False, 0.5)      # the latest ground truth
    error = np.linalg.norm(cube_position(node.truth)[:2] - goal.position[:2].numpy())
    assert error <= goal.position_tolerance + 0.005, error
    assert stages[0] == "approach" and "push" in stages, stages
    # The fingers 3 cm apart (push_gripper_width), both on the cube's 5 cm face.
    assert np.median(node.widths) == pytest.approx(0.03, abs=0.003), np.median(node.widths)
