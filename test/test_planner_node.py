"""planner_node over a real DDS graph with the simulated robot (separate processes): reach
goals through the PlanToGoal action, cancel, e-stop and stale state stop the arm, bad goals
are rejected, the plan-only service answers, an object goal succeeds only on fresh sightings
(the tool lifting off meanwhile).
Objects come from the simulator's ground truth (relayed, so a test can freeze their
last_seen); the world model is the static one (reaching needs only the arm; it keeps the
test fast)."""
import math
import signal
import time

import numpy as np
import pytest
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import State, Transition
from rclpy.action import ActionClient
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import JointState, PointCloud2, PointField
from std_msgs.msg import Bool
from trajectory_msgs.msg import JointTrajectory

from planner_node.actions import PANDA_ACCELERATION
from robot_model.kinematics import KinematicChain
from sim_robot import panda
from sim_robot.explore import top_down_quat
from sim_robot.scene import OBJECT_IDS
from ros_io.paths import share_path
from support.graph import Lifecycle, ask, output_of, ros_context, ros_process, spin_until
from world_model_planning.action import PlanToGoal
from world_model_planning.msg import GoalSpec, ObjectArray
from world_model_planning.srv import Plan

PLANNER_ARGS = ["-m", "planner_node.planner_node", "--ros-args",
                "-p", "model:=static", "-p", "samples:=48", "-p", "iterations:=2",
                "-p", "horizon:=12", "-p", "use_sim_time:=true", "-p", "state_timeout:=1.0",
                "-p", "torch_threads:=1", "-p", "diagnostics_period:=0.5",
                "-r", "objects:=/relayed_objects",
                "-r", "joint_states:=/relayed_joint_states"]
SIM_ARGS = ["-m", "sim_robot.sim_node", "--ros-args", "-p", "real_time_factor:=0.5",
            "-p", "clock_rate:=50.0", "-p", "joint_state_rate:=50.0",
            "-p", "ground_truth_rate:=10.0", "-p", "camera_rate:=2.0"]
R = PlanToGoal.Result
CUBE = OBJECT_IDS["cube"]


class Probe:
    """Relays joint states (so a test can starve the planner) and objects (so a test can
    freeze when they were last seen, or show the cube elsewhere or turned), records what is
    sent to the controller and the planner's /diagnostics, and talks to the planner."""

    def __init__(self):
        self.node = rclpy.create_node(
            "planner_probe", parameter_overrides=[Parameter("use_sim_time", value=True)])
        self.relay = True
        self.joint_states = []
        self.health = []    # the planner's /diagnostics statuses
        self.node.create_subscription(
            DiagnosticArray, "/diagnostics",
            lambda m: self.health.extend(s for s in m.status
                                         if s.name == "planner_node: planner"), 10)
        self.trajectories = []
        pub = self.node.create_publisher(JointState, "/relayed_joint_states", 10)

        def on_joints(msg):
            self.joint_states.append(msg)
            if self.relay:
                pub.publish(msg)
                self.relayed_stamp = msg.header.stamp
        self.joints_pub = pub
        self.node.create_subscription(JointState, "/joint_states", on_joints, 10)
        self.objects, self.frozen_sighting, self.cube_shown_at = None, None, None
        self.cube_turned_by = None     # rad about the vertical
        objects_pub = self.node.create_publisher(ObjectArray, "/relayed_objects", 10)

        def on_objects(msg):
            self.objects = msg
            if self.frozen_sighting is not None:
                for o in msg.objects:
                    o.last_seen = self.frozen_sighting
            if self.cube_shown_at is not None:
                cube = next(o for o in msg.objects if o.id == CUBE).pose.position
                cube.x, cube.y = self.cube_shown_at
            if self.cube_turned_by is not None:
                q = next(o for o in msg.objects if o.id == CUBE).pose.orientation
                q.x, q.y, q.z, q.w = (Rotation.from_euler("z", self.cube_turned_by)
                                      * Rotation.from_quat([q.x, q.y, q.z, q.w])).as_quat()
            objects_pub.publish(msg)
        self.node.create_subscription(ObjectArray, "/ground_truth/objects", on_objects, 10)
        self.arrivals = []      # sim time [s] each of the trajectories arrived

        def on_trajectory(msg):
            self.trajectories.append(msg)
            self.arrivals.append(self.now())
        self.node.create_subscription(JointTrajectory,
                                      "/joint_trajectory_controller/joint_trajectory",
                                      on_trajectory, 10)
        self.estop = self.node.create_publisher(Bool, "/estop", 10)
        self.action = ActionClient(self.node, PlanToGoal, "/planner_node/plan_to_goal")
        self.plan = self.node.create_client(Plan, "/planner_node/plan")

    def spin_until(self, condition, timeout):
        return spin_until(self.node, condition, timeout)

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def send(self, spec, feedback=None):
        future = self.action.send_goal_async(PlanToGoal.Goal(goal=spec),
                                             feedback_callback=feedback)
        assert self.spin_until(future.done, 10.0)
        return future.result()

    def result(self, handle, timeout):
        future = handle.get_result_async()
        assert self.spin_until(future.done, timeout), "no result in time"
        return future.result()

    def arm_speed(self) -> float:
        return float(np.abs(self.joint_states[-1].velocity[:7]).max())

    def wait_at_rest(self, timeout=8.0, settle=0.3) -> bool:
        """The arm's joints slower than 0.02 rad/s over `settle` s of joint states: one slow
        sample may be a joint turning round while the arm settles after braking."""
        def at_rest():
            if not self.joint_states:
                return False
            end = stamp_s(self.joint_states[-1])
            for js in reversed(self.joint_states):
                if np.abs(js.velocity[:7]).max() >= 0.02:
                    return False
                if end - stamp_s(js) >= settle:
                    return True
            return False
        return self.spin_until(at_rest, timeout)


def stamp_s(msg) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


def reach_spec(position, yaw=0.3, tolerance=0.02, frame="world", angle_tolerance=0.15,
               budget=40, symmetry=0):
    spec = GoalSpec(target_type=GoalSpec.TARGET_END_EFFECTOR, position_tolerance=tolerance,
                    orientation_tolerance=angle_tolerance, orientation_symmetry=symmetry)
    spec.time_budget.sec = budget    # sim seconds; generous for a loaded 2-core machine
    spec.target_pose.header.frame_id = frame
    p = spec.target_pose.pose
    p.position.x, p.position.y, p.position.z = (float(v) for v in position)
    (p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w) = (
        float(v) for v in top_down_quat(yaw))
    return spec


@pytest.fixture(scope="module")
def graph():
    with ros_context(), \
            ros_process(SIM_ARGS, ready_line="simulated robot up", timeout=120) as sim, \
            ros_process(PLANNER_ARGS, ready_line="planning with", timeout=120) as planner:
        probe = Probe()
        probe.procs = (sim, planner)
        assert probe.action.wait_for_server(timeout_sec=30.0), output_of(planner)
        assert probe.spin_until(lambda: len(probe.joint_states) > 5, 30.0)
        assert probe.spin_until(
            lambda: probe.node.count_subscribers("/relayed_joint_states") > 0, 30.0)
        yield probe
        probe.node.destroy_node()


def test_reaches_a_pose_with_feedback_and_limits(graph):
    # The target yaw given the other way round: a parallel gripper's tool is the same turned
    # half a turn (orientation_symmetry 2), and the arm need not turn its wrist round.
    feedback = []
    start = len(graph.trajectories)
    handle = graph.send(reach_spec([0.45, 0.15, 0.3], yaw=0.3 + math.pi, symmetry=2),
                        lambda m: feedback.append(m.feedback))
    assert handle.accepted
    result = graph.result(handle, 120.0).result
    trace = [round(f.position_error, 3) for f in feedback]
    assert result.success, (result.failure_reason, trace, output_of(graph.procs[1])[-3000:])
    assert result.final_position_error < 0.02 and result.iterations == len(feedback) > 0
    assert result.final_orientation_error < 0.15
    assert feedback[-1].iteration == result.iterations
    assert 0.0 <= feedback[-1].predicted_success_probability <= 1.0
    sent = graph.trajectories[start:]
    assert sent, "nothing reached the controller topic"
    vmax, amax = panda.ARM_LIMITS.velocity, np.array(PANDA_ACCELERATION)
    for msg in sent:
        times = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in msg.points]
        assert np.all(np.diff(times) > 0) and msg.joint_names == list(panda.ARM_JOINT_NAMES)
        v = np.array([p.velocities for p in msg.points])
        a = np.array([p.accelerations for p in msg.points])
        assert np.all(np.abs(v) <= vmax + 1e-6) and np.all(np.abs(a) <= amax + 1e-6)
        assert np.allclose(msg.points[-1].velocities, 0.0)   # every trajectory ends at rest
    assert graph.wait_at_rest()


def test_cancel_stops_the_arm(graph):
    feedback = []
    handle = graph.send(reach_spec([0.35, -0.3, 0.2], yaw=-0.5),
                        lambda m: feedback.append(m))
    assert handle.accepted
    assert graph.spin_until(lambda: len(feedback) >= 2, 30.0)
    cancel = handle.cancel_goal_async()
    assert graph.spin_until(cancel.done, 10.0)
    result = graph.result(handle, 20.0)
    assert result.result.failure_code == R.REASON_CANCELED and not result.result.success
    assert graph.wait_at_rest(), graph.arm_speed()


def test_estop_stops_the_arm_and_refuses_goals(graph):
    feedback = []
    handle = graph.send(reach_spec([0.5, 0.2, 0.35]), lambda m: feedback.append(m))
    assert graph.spin_until(lambda: len(feedback) >= 2, 30.0)
    assert graph.spin_until(lambda: graph.health and graph.health[-1].message
                            == "executing a goal", 5.0), graph.health[-1:]
    graph.estop.publish(Bool(data=True))
    result = graph.result(handle, 20.0).result
    assert result.failure_code == R.REASON_ESTOP
    assert graph.wait_at_rest()
    assert not graph.send(reach_spec([0.5, 0.0, 0.3])).accepted
    assert graph.spin_until(lambda: graph.health[-1].level == DiagnosticStatus.WARN
                            and "e-stop" in graph.health[-1].message, 5.0), graph.health[-1]
    values = {v.key: v.value for v in graph.health[-1].values}
    assert values["last goal"] == "e-stop" and int(values["goals failed"]) >= 1, values
    graph.estop.publish(Bool(data=False))
    assert graph.spin_until(lambda: graph.health[-1].level == DiagnosticStatus.OK
                            and graph.health[-1].message == "idle", 5.0), graph.health[-1]


def test_stale_joint_states_stop_the_arm(graph):
    feedback = []
    handle = graph.send(reach_spec([0.4, -0.2, 0.25]), lambda m: feedback.append(m))
    assert graph.spin_until(lambda: len(feedback) >= 2, 30.0)
    graph.relay = False
    try:
        result = graph.result(handle, 20.0).result
        assert result.failure_code == R.REASON_STALE_STATE, result.failure_reason
        assert graph.wait_at_rest()
    finally:
        graph.relay = True
    assert graph.spin_until(lambda: "joint state stale" in output_of(graph.procs[1]), 5.0)


def test_joint_states_are_taken_in_the_order_they_come(graph):
    # A burst of joint states, each newer than the one before: none may be taken for older
    # than the last (as when two were handled at once and finished in the wrong order).
    graph.relay = False
    try:
        graph.spin_until(lambda: False, 0.2)
        last = graph.joint_states[-1]
        t0 = graph.relayed_stamp.sec + graph.relayed_stamp.nanosec * 1e-9
        for i in range(1, 301):
            msg = JointState(name=last.name, position=last.position, velocity=last.velocity,
                             effort=last.effort)
            t = t0 + i * 1e-5
            msg.header.stamp.sec, msg.header.stamp.nanosec = int(t), int(t % 1 * 1e9)
            graph.joints_pub.publish(msg)
        graph.spin_until(lambda: False, 1.0)
    finally:
        graph.relay = True
    assert "older than the last" not in output_of(graph.procs[1])


@pytest.mark.parametrize("reason, spec", [
    ("NaN", reach_spec([math.nan, 0.0, 0.3])),
    ("unknown frame", reach_spec([0.4, 0.0, 0.3], frame="camera_link")),
    ("unreachable", reach_spec([1.5, 0.0, 0.3])),
    ("unknown object id", GoalSpec(target_type=GoalSpec.TARGET_OBJECT, object_id=77,
                                   position_tolerance=0.02, orientation_tolerance=-1.0)),
    ("must not be negative", reach_spec([0.4, 0.0, 0.3], budget=-1)),
    ("at most 64: orientation_symmetry", reach_spec([0.4, 0.0, 0.3], symmetry=65)),
    # The cube lies turned 0.3 rad about z; the goal wants it unturned.
    ("beyond orientation_tolerance", GoalSpec(target_type=GoalSpec.TARGET_OBJECT,
                                              object_id=CUBE, position_tolerance=0.02,
                                              orientation_tolerance=0.1)),
])
def test_bad_goals_are_rejected(graph, reason, spec):
    if spec.target_type == GoalSpec.TARGET_OBJECT:
        spec.target_pose.header.frame_id = "world"
        spec.target_pose.pose.position.x, spec.target_pose.pose.position.z = 0.5, 0.025
        spec.target_pose.pose.orientation.w = 1.0
    assert not graph.send(spec).accepted
    assert graph.spin_until(lambda: reason.split()[-1] in output_of(graph.procs[1]), 5.0)
    assert graph.procs[1].poll() is None


def push_spec(position, tolerance, budget):
    spec = GoalSpec(target_type=GoalSpec.TARGET_OBJECT, object_id=CUBE,
                    position_tolerance=tolerance, orientation_tolerance=-1.0)
    spec.time_budget.sec = budget
    spec.target_pose.header.frame_id = "world"
    p = spec.target_pose.pose
    p.position.x, p.position.y, p.position.z = (float(v) for v in position)
    p.orientation.w = 1.0
    return spec


def tool_position(joint_state) -> torch.Tensor:
    urdf = open(share_path("config", "panda.urdf")).read()
    chain = KinematicChain.from_urdf(urdf, "world", panda.TCP_FRAME)
    return chain.forward(torch.tensor(joint_state.position[:7]))[:3, 3]


def test_an_object_goal_holds_only_on_fresh_sightings(graph):
    # The cube already lies at the target. Seen only once (a memory holding it where it last
    # saw it), the goal cannot be confirmed: the tool lifts straight off the cube by
    # retreat_height (the hand must not hide it) and waits there until the budget runs out.
    # Seen afresh every cycle, it succeeds at once.
    assert graph.spin_until(lambda: graph.objects is not None, 10.0)
    cube = next(o for o in graph.objects.objects if o.id == CUBE).pose.position
    target = [cube.x, cube.y, cube.z]
    graph.frozen_sighting = graph.objects.header.stamp
    feedback = []
    start = tool_position(graph.joint_states[-1])
    try:
        result = graph.result(graph.send(push_spec(target, 0.03, 6),
                                         lambda m: feedback.append(m.feedback)), 60.0).result
    finally:
        graph.frozen_sighting = None
    assert result.failure_code == R.REASON_TIMEOUT and "confirm" in result.failure_reason
    assert result.final_position_error < 0.03     # it held, as far as the planner could see
    assert feedback and {f.stage for f in feedback} == {"retreat"}
    assert graph.arm_speed() < 0.02               # withdrawn, waiting
    lift = tool_position(graph.joint_states[-1]) - start
    assert float(lift[2]) == pytest.approx(0.1, abs=0.015)
    assert float(lift[:2].norm()) < 0.01, lift
    result = graph.result(graph.send(push_spec(target, 0.03, 20)), 60.0).result
    assert result.success, result.failure_reason
    assert graph.wait_at_rest()


def test_an_object_goal_turned_beyond_its_tolerance_ends_when_its_position_settles(graph):
    # The cube lies at the target, turned as the goal wants it: the goal is taken, and first
    # holds on a sighting that is not renewed. The sightings after it show the cube turned
    # 0.5 rad: it lies at its target, but a push does not turn it back, so the goal ends as
    # soon as the position is confirmed, naming the turn (not when the budget runs out).
    assert graph.spin_until(lambda: graph.objects is not None, 10.0)
    cube = next(o for o in graph.objects.objects if o.id == CUBE).pose
    spec = push_spec([cube.position.x, cube.position.y, cube.position.z], 0.03, 30)
    spec.orientation_tolerance = 0.2
    spec.target_pose.pose.orientation = cube.orientation
    graph.frozen_sighting = graph.objects.header.stamp
    feedback = []
    try:
        handle = graph.send(spec, lambda m: feedback.append(m.feedback))
        assert handle.accepted
        assert graph.spin_until(lambda: feedback, 20.0)
        graph.cube_turned_by = 0.5
        graph.frozen_sighting = None
        started = graph.now()
        result = graph.result(handle, 60.0).result
    finally:
        graph.frozen_sighting = graph.cube_turned_by = None
    assert result.failure_code == R.REASON_EXECUTION_FAILURE, result.failure_reason
    assert "beyond orientation_tolerance 0.2: a push does not turn it back" in \
        result.failure_reason
    assert result.final_orientation_error == pytest.approx(0.5, abs=0.02)
    assert result.final_position_error < 0.03
    assert graph.now() - started < 10.0        # sim seconds, of the 30 the budget gives
    assert graph.wait_at_rest()


def test_a_push_stops_at_once_when_its_goal_first_seems_met(graph):
    # Under way to a target 10 cm beyond the cube, the cube is shown at the target: in the
    # cycle where the goal first holds, the command brakes at once (a trajectory that starts
    # when it is sent), before the lift's plan takes over a lead later. Without it the last
    # plan goes on pushing until then.
    assert graph.spin_until(lambda: graph.objects is not None, 10.0)
    cube = next(o for o in graph.objects.objects if o.id == CUBE).pose.position
    target = [cube.x + 0.1, cube.y, cube.z]
    feedback = []
    handle = graph.send(push_spec(target, 0.02, 20),
                        lambda m: feedback.append((graph.now(), m.feedback)))
    try:
        assert graph.spin_until(lambda: len(feedback) >= 3, 30.0)
        graph.cube_shown_at = target[:2]
        assert graph.spin_until(lambda: any(f.stage == "retreat" for _, f in feedback), 30.0)
    finally:
        graph.cube_shown_at = None
    result = graph.result(handle, 60.0).result
    lifted = next(i for i, (_, f) in enumerate(feedback) if f.stage == "retreat")
    window = (feedback[lifted - 1][0], feedback[lifted][0])
    sent = [(arrived, stamp_s(m)) for arrived, m in zip(graph.arrivals, graph.trajectories)
            if window[0] < arrived <= window[1]]
    assert any(start <= arrived for arrived, start in sent), sent
    assert result.success or result.failure_code == R.REASON_TIMEOUT, result.failure_reason
    assert graph.wait_at_rest()


def test_malformed_scene_cloud_is_reported_and_planning_goes_on(graph):
    pub = graph.node.create_publisher(PointCloud2, "/scene_cloud", qos_profile_sensor_data)
    cloud = PointCloud2(height=1, width=2, point_step=24, row_step=48, data=bytes(48),
                        fields=[PointField(name=n, offset=8 * i, datatype=PointField.FLOAT64,
                                           count=1) for i, n in enumerate("xyz")])
    assert graph.spin_until(lambda: pub.get_subscription_count() > 0, 10.0)
    assert graph.spin_until(lambda: pub.publish(cloud) or "scene cloud ignored"
                            in output_of(graph.procs[1]), 10.0)
    handle = graph.send(reach_spec([0.45, 0.05, 0.3]))
    assert handle.accepted and graph.result(handle, 120.0).result.success
    graph.node.destroy_publisher(pub)


def test_plan_service_returns_a_trajectory_and_scored_futures(graph):
    request = Plan.Request(goal=reach_spec([0.45, 0.0, 0.3]))
    response = ask(graph.node, graph.plan, request, 30.0)
    assert response is not None and response.success, response
    points = response.trajectory.points
    assert len(points) == 12 and len(points[0].positions) == 7
    f = response.futures
    n = f.actions.num_sequences
    assert len(f.ee_positions) == n * 12 * 3 and len(f.costs) == n
    assert f.costs[0] == pytest.approx(response.best_cost, rel=1e-4)
    request.goal.position_tolerance = -1.0
    response = ask(graph.node, graph.plan, request, 10.0)
    assert not response.success and "tolerance" in response.message


def test_deactivation_ends_the_goal_and_holds_the_arm(graph):
    # A lifecycle manager takes the planner down mid-goal: the goal ends with the reason, the
    # arm brakes to rest and stays there, goals and plan requests are refused (not left
    # unanswered) until it is active again, and then it plans as before.
    lifecycle = Lifecycle(graph.node, "/planner_node")
    handle = graph.send(reach_spec([0.35, 0.3, 0.2], yaw=0.5))
    assert handle.accepted
    assert graph.spin_until(lambda: graph.arm_speed() > 0.1, 30.0)
    assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
    result = graph.result(handle, 20.0).result
    assert result.failure_code == R.REASON_CANCELED and "deactivated" in result.failure_reason
    assert graph.wait_at_rest(), graph.arm_speed()
    still, sent = len(graph.joint_states), len(graph.trajectories)
    graph.spin_until(lambda: False, 1.5)
    assert max(np.abs(js.velocity[:7]).max() for js in graph.joint_states[still:]) < 0.02
    # Nothing but holds at rest is commanded after (no plan of the ended goal).
    assert all(max((abs(v) for pt in t.points for v in pt.velocities), default=0.0) < 0.02
               for t in graph.trajectories[sent:])

    def refused():
        assert not graph.send(reach_spec([0.45, 0.0, 0.3])).accepted
        plan = ask(graph.node, graph.plan, Plan.Request(goal=reach_spec([0.45, 0.0, 0.3])),
                   10.0)
        assert plan.message == "planner is not active"
    refused()
    assert lifecycle.transition(Transition.TRANSITION_CLEANUP)
    assert lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED
    refused()
    assert graph.procs[1].poll() is None, output_of(graph.procs[1])

    assert lifecycle.transition(Transition.TRANSITION_CONFIGURE)
    assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
    handle = graph.send(reach_spec([0.45, 0.05, 0.3]))
    assert handle.accepted and graph.result(handle, 120.0).result.success


def test_a_goal_without_a_controller_ends_at_once(graph):
    # A controller topic nobody listens on: the goal ends naming it once first_state_wait
    # has passed, not when its time budget runs out, and /diagnostics warns of it.
    health = []
    graph.node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: health.extend(
        s for s in m.status if s.name == "lonely_planner: planner"), 10)
    args = PLANNER_ARGS + ["-r", "__node:=lonely_planner", "-p", "first_state_wait:=1.0",
                           "-p", "controller_topic:=/nobody/joint_trajectory"]
    with ros_process(args, ready_line="planning with", timeout=120) as planner:
        action = ActionClient(graph.node, PlanToGoal, "/lonely_planner/plan_to_goal")
        assert action.wait_for_server(timeout_sec=20.0)
        sent = action.send_goal_async(PlanToGoal.Goal(goal=reach_spec([0.45, 0.0, 0.3])))
        assert graph.spin_until(sent.done, 10.0) and sent.result().accepted
        result = graph.result(sent.result(), 10.0).result
        assert result.failure_code == R.REASON_EXECUTION_FAILURE
        assert result.failure_reason == "no controller on topic /nobody/joint_trajectory"
        assert graph.spin_until(lambda: any(
            s.level == DiagnosticStatus.WARN and s.message == result.failure_reason
            for s in health), 5.0), health[-1:]
        assert planner.poll() is None
        action.destroy()


def test_misspelt_parameter_and_missing_backend_are_reported():
    args = ["-m", "planner_node.planner_node", "--ros-args", "-p", "model:=static",
            "-p", "backend:=moveit", "-p", "sampels:=3", "-p", "tool_radius:=5.0"]
    with ros_process(args, ready_line="cannot configure the planner", timeout=60) as proc:
        time.sleep(1.0)
        assert proc.poll() is None
        out = output_of(proc)
        assert "unknown parameter 'sampels'" in out and "moveit_msgs" in out
        # Out of its range: refused with the reason, the default used, the node up.
        assert "parameter 'tool_radius' rejected" in out and "using the default 0.0105" in out
    args = ["-m", "planner_node.planner_node", "--ros-args", "-p", "model:=static",
            "-p", "push_speeds:=[0.1, -0.05]"]
    with ros_process(args, ready_line="cannot configure the planner", timeout=60) as proc:
        time.sleep(1.0)
        assert proc.poll() is None and "push_speeds must lie in (0, 2] m/s" in output_of(proc)


def test_ctrl_c_mid_goal_brings_the_arm_to_rest_and_exits_cleanly(graph):
    # Last in this module: it ends the module's planner. Ctrl-C (as `ros2 launch` passes it on)
    # arrives while the arm moves: the planner still commands it to rest before it leaves the
    # graph, and exits cleanly.
    planner = graph.procs[1]
    handle = graph.send(reach_spec([0.35, 0.3, 0.2], yaw=0.5))
    assert handle.accepted
    assert graph.spin_until(lambda: graph.arm_speed() > 0.1, 30.0)
    sent = len(graph.trajectories)
    planner.send_signal(signal.SIGINT)
    assert graph.spin_until(lambda: planner.poll() is not None, 30.0)
    out = output_of(planner)
    assert planner.returncode == 0, out
    assert "Traceback" not in out and "could not be brought to rest" not in out, out
    graph.spin_until(lambda: False, 0.5)    # what was sent last has arrived
    assert len(graph.trajectories) > sent
    assert max(abs(v) for v in graph.trajectories[-1].points[-1].velocities) < 1e-6
    assert graph.wait_at_rest(), graph.arm_speed()
