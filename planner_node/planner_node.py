"""ROS 2 lifecycle node `planner_node`: model-predictive control over imagined futures.

~/plan_to_goal (PlanToGoal action): every 1 / `rate` seconds (node clock; sim time with
use_sim_time) it reads the latest joint state and objects, plans one MPC cycle from what the
controller is commanding when the new trajectory starts (one cycle ahead, or 1.5 times the
longest of the last five planning times plus half a step if that is longer; at most
MAX_LEAD), sends the first `execute_steps` steps plus a braking tail through the chosen
backend, and publishes feedback and ~/futures markers, until the goal holds for
`settle_cycles` cycles (for an object goal on new sightings of the object, taken since the
goal first held, the tool withdrawing `retreat_height` straight up meanwhile, so that the
hand does not hide the object: see planner_node.settle), its time budget
ends, or it is canceled. The arm is brought to rest (within its limits) on cancel, an e-stop
message (std_msgs/Bool true on `estop`), stale joint states, a world-model failure or a new goal.
A trajectory the controller rejects or aborts (action backends) ends the goal: the controller
holds the arm where it stopped; so does having no controller to send to (none found within
`first_state_wait`, or one lost).
Health on /diagnostics ("planner_node: planner"): goals and their outcomes, cycles, the last
planning time; a warning for an e-stop, plans that came too late, or no controller; an error
when a controller rejected or aborted a trajectory.
~/plan (Plan service) plans once without executing, for evaluation.
The world model runs in-process (no serialisation); the scene memory's ObjectArray (`objects`)
and Gaussian centres (`scene_cloud`, PointCloud2) feed the costs.
"""
from __future__ import annotations

import collections
import functools
import math
import threading
import time
import traceback

import numpy as np
import torch
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.qos import qos_profile_sensor_data
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import JointState, PointCloud2, PointField
from std_msgs.msg import Bool, Header
from visualization_msgs.msg import MarkerArray

from planner_node.actions import PANDA_ACCELERATION, PANDA_JERK, braking, executed_knots
from planner_node.arm_history import ArmHistory
from planner_node.backends import BACKENDS, knots_to_trajectory, make_backend
from planner_node.collision import DistanceField
from planner_node.costs import (END_EFFECTOR, OBJECT, CostWeights, Goal, Scene, goal_error,
                                goal_angle, gripper_command, sighting_age)
from planner_node.markers import plan_markers
from planner_node.mpc import PlannerConfig, build_planner
from planner_node.pushed_object import PushedObject
from planner_node.samplers import SAMPLERS, SamplerConfig
from planner_node.settle import GoalSettle, Retreat, oriented, settles_on
from ros_io.diagnostics import ERROR, OK, WARN, Diagnostics, Since
from ros_io.lifecycle import ManagedNode, run
from ros_io.params import CONFIGURE, declare, ranged, report_unknown_overrides
from ros_io.paths import share_path
from ros_io.stamps import to_duration_msg, to_seconds, to_time_msg
from sim_robot.trajectory_follower import JointTrajectoryFollower, TrajectoryRejected
from world_model_node.messages import futures_to_msg, joint_state_to_tensors, objects_to_tensors
from world_model_node.predictor import WorldState
from world_model_planning.action import PlanToGoal
from world_model_planning.msg import CandidateActions, GoalSpec, ObjectArray
from world_model_planning.srv import Plan

R = PlanToGoal.Result
SHOULDER_HEIGHT = 0.333   # m, Panda joint 2 above the base (reach is measured from there)
MAX_LEAD = 2.0            # s: a plan that needs longer is not worth sending
MAX_SYMMETRY = 64         # GoalSpec.orientation_symmetry


def goal_from_spec(spec: GoalSpec, world_frame: str, object_ids: list,
                   object_rotations: torch.Tensor, max_reach: float,
                   table_height: float) -> Goal:
    """A core Goal from a GoalSpec, the objects' ids and rotations (K, 3, 3) as the planner
    sees them; ValueError with the reason for a goal to reject."""
    pose = spec.target_pose
    if pose.header.frame_id not in ("", world_frame):
        raise ValueError(f"unknown frame '{pose.header.frame_id}' (goals are in "
                         f"'{world_frame}')")
    p, q = pose.pose.position, pose.pose.orientation
    values = [p.x, p.y, p.z, q.x, q.y, q.z, q.w, spec.position_tolerance,
              spec.orientation_tolerance]
    if not all(math.isfinite(v) for v in values):
        raise ValueError("goal contains NaN or infinity")
    if to_seconds(spec.time_budget) < 0:
        raise ValueError("time_budget must not be negative")
    if spec.position_tolerance <= 0:
        raise ValueError(f"position_tolerance must be positive, got {spec.position_tolerance}")
    if spec.orientation_symmetry > MAX_SYMMETRY:
        raise ValueError(f"orientation_symmetry must be at most {MAX_SYMMETRY}, got "
                         f"{spec.orientation_symmetry}")
    symmetry = max(1, int(spec.orientation_symmetry))
    position = torch.tensor([p.x, p.y, p.z], dtype=torch.float32)
    rotation = None
    if spec.orientation_tolerance >= 0:
        norm = math.sqrt(q.x ** 2 + q.y ** 2 + q.z ** 2 + q.w ** 2)
        if abs(norm - 1.0) > 1e-3:
            raise ValueError(f"target orientation is not a unit quaternion (norm {norm:.4f})")
        rotation = torch.tensor(Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix(),
                                dtype=torch.float32)
    reach = math.dist((p.x, p.y, p.z), (0.0, 0.0, SHOULDER_HEIGHT))
    if reach > max_reach:
        raise ValueError(f"target is unreachable: {reach:.3f} m from the shoulder "
                         f"(max_reach {max_reach} m)")
    if p.z < table_height:
        raise ValueError(f"target is below the table (z {p.z:.3f} m)")
    if spec.target_type == GoalSpec.TARGET_END_EFFECTOR:
        return Goal(END_EFFECTOR, position, rotation, None, spec.position_tolerance,
                    spec.orientation_tolerance, symmetry=symmetry)
    if spec.target_type == GoalSpec.TARGET_OBJECT:
        if int(spec.object_id) not in object_ids:
            raise ValueError(f"unknown object id {spec.object_id} (scene has {object_ids})")
        goal = Goal(OBJECT, position, rotation, int(spec.object_id), spec.position_tolerance,
                    spec.orientation_tolerance, symmetry=symmetry)
        if rotation is not None:
            turn = float(goal_angle(
                object_rotations[object_ids.index(int(spec.object_id))], goal))
            if turn > spec.orientation_tolerance:
                raise ValueError(
                    f"object {spec.object_id} is turned {turn:.3f} rad from the target "
                    f"orientation, beyond orientation_tolerance {spec.orientation_tolerance}: "
                    f"pushes move an object without turning it")
        return goal
    raise ValueError(f"unknown target_type {spec.target_type}")


def last_sighting(objects: ObjectArray, object_id: int) -> float:
    """When the object was last observed [s]: its last_seen, or the message's stamp where the
    source leaves last_seen unset; -inf if the message does not hold it."""
    for o in objects.objects:
        if o.id == object_id:
            stamp = o.last_seen if o.last_seen.sec or o.last_seen.nanosec \
                else objects.header.stamp
            return to_seconds(stamp)
    return -math.inf


class PlannerNode(ManagedNode):
    def __init__(self, **kwargs):
        super().__init__("planner_node", **kwargs)
        p = functools.partial(declare, self)
        cfg = dict(additional_constraints=CONFIGURE)   # read by on_configure
        p("model", "learned", ParameterDescriptor(
            description="World model: learned (checkpoint) or static (objects never move)",
            **cfg))
        p("checkpoint", str(share_path("models", "world_model")), ParameterDescriptor(
            description="World-model checkpoint directory (with robot.urdf)", **cfg))
        p("device", "cpu", ParameterDescriptor(description="Torch device", **cfg))
        p("sampler", "icem", ParameterDescriptor(
            description=f"Sampler: one of {sorted(SAMPLERS)}", **cfg))
        p("samples", 128, ranged("Sampled sequences per iteration", 8, 1 << 16, True, **cfg))
        p("horizon", 16, ranged("Steps per sequence (one step = the model's step)", 2, 128,
                                True, **cfg))
        p("iterations", 3, ranged("Sampler iterations per cycle", 1, 100, True, **cfg))
        p("elites", 16, ranged("Elite sequences (CEM, iCEM)", 2, 4096, True, **cfg))
        p("init_std", 0.2, ranged("Initial sampling std, share of the velocity limit",
                                  0.01, 2.0, **cfg))
        p("seed", 0, ranged("Sampler seed", 0, 2 ** 31 - 1, True, **cfg))
        p("guide_speeds", [0.25, 0.1], ParameterDescriptor(
            description="Tool speeds [m/s] of the straight-to-target guides scored each cycle",
            **cfg))
        p("push_speeds", [0.1, 0.05], ParameterDescriptor(
            description="Tool speeds [m/s] of the guides while pushing", **cfg))
        p("heading_room", 0.8, ranged("Room [rad] to its limits that turning the tool along a "
                                      "push must leave every joint, else it turns the other "
                                      "way round", 0.0, 3.0, **cfg))
        p("rate", 5.0, ranged("MPC cycles per second [Hz]", 0.5, 100.0, **cfg))
        p("plan_budget", 0.5, ranged("Wall-clock budget of one cycle's optimisation [s]",
                                     0.001, 10.0))
        p("execute_steps", 2, ranged("Plan steps sent per cycle (then a braking tail)", 1, 64,
                                     True, **cfg))
        p("limit_scale", 0.5, ranged("Share of the velocity, acceleration and jerk limits "
                                     "the planner may use", 0.05, 1.0, **cfg))
        p("max_acceleration", list(PANDA_ACCELERATION), ParameterDescriptor(
            description="Per-joint acceleration limits [rad/s^2] (a URDF has none)", **cfg))
        p("max_jerk", list(PANDA_JERK), ParameterDescriptor(
            description="Per-joint jerk limits [rad/s^3]", **cfg))
        for name in CostWeights.names():
            p(f"weights.{name}", float(getattr(CostWeights(), name)),
              ranged(f"Weight of the {name} cost", 0.0, 1e6))
        p("collision_margin", 0.01, ranged("Clearance kept from obstacles [m]", 0.0, 0.5))
        p("table_height", 0.0, ranged("Height of the table top in the world frame [m]",
                                      -2.0, 2.0))
        p("push_height", 0.025, ranged("Height of the tool centre point when pushing [m]",
                                       0.0, 0.3))
        p("push_speed", 0.1, ranged("Fastest tool speed while pushing [m/s] (pushes faster "
                                    "than the world model learned from are guesses)",
                                    0.01, 1.0))
        p("min_push_speed", 0.02, ranged(
            "Slowest push near the target when perception lags [m/s] (costs.push_speed_limit)",
            0.001, 1.0))
        p("push_stop_time", 0.2, ranged("Time the tool and a pushed object take to stop [s]",
                                        0.0, 5.0))
        p("push_gripper_width", 0.03, ranged(
            "Widest finger-pad opening [m] while pushing (narrower for narrow objects): "
            "the two fingers keep a pushed object from turning", 0.0, 0.08))
        p("tool_radius", 0.0105, ranged("From the tool centre point to the face that pushes "
                                        "[m] (where a pushed object is reckoned unseen)",
                                        0.0, 0.2))
        p("reckoning_margin", 0.01, ranged(
            "How far inside the goal's tolerance an object reckoned from the push must be [m]",
            0.0, 0.2))
        p("max_reach", 0.85, ranged("Farthest goal from the shoulder [m]", 0.1, 3.0))
        p("backend", "topic", ParameterDescriptor(description=f"One of {BACKENDS}", **cfg))
        p("controller_topic", "/joint_trajectory_controller/joint_trajectory",
          ParameterDescriptor(description="JointTrajectory topic (backend topic)", **cfg))
        p("controller_action", "/joint_trajectory_controller/follow_joint_trajectory",
          ParameterDescriptor(description="FollowJointTrajectory action", **cfg))
        p("moveit_action", "/execute_trajectory",
          ParameterDescriptor(description="move_group's ExecuteTrajectory action", **cfg))
        p("controller_response_timeout", 2.0, ranged(
            "Action backends: a controller that answers none of the trajectories sent over "
            "this long [s] ends the goal", 0.1, 60.0, **cfg))
        p("gripper_topic", "/gripper_controller/commands", ParameterDescriptor(
            description="Float64MultiArray gripper width command ('' = none)", **cfg))
        p("gripper_joints", ["panda_finger_joint1", "panda_finger_joint2"],
          ParameterDescriptor(description="Joints whose positions sum to the width", **cfg))
        p("state_timeout", 0.5, ranged("Joint states older than this are stale [s]",
                                       0.01, 10.0))
        p("first_state_wait", 5.0, ranged(
            "How long a goal waits for the first joint state and for a controller after "
            "start-up [s, wall clock]", 0.0, 60.0))
        p("default_time_budget", 20.0, ranged("Time budget of goals that set none [s]",
                                              0.1, 3600.0))
        p("settle_cycles", 2, ranged("Cycles the goal must hold to succeed", 1, 100, True))
        p("retreat_height", 0.1, ranged(
            "How far the tool lifts while a newer sighting confirms an object goal [m]",
            0.0, 0.5))
        p("world_frame", "world", ParameterDescriptor(description="Frame of goals", **cfg))
        p("markers.futures", 16, ranged("Futures drawn on ~/futures", 0, 1024, True))
        p("obstacle_resolution", 0.02, ranged("Voxel size of the obstacle field [m]",
                                              0.005, 0.2, **cfg))
        p("torch_threads", 0, ranged("CPU threads for torch (0 = torch's default)", 0, 256,
                                     True, **cfg))
        p("autostart", True, ParameterDescriptor(
            description="Configure and activate at start-up (no lifecycle manager needed)",
            read_only=True))
        self.diagnostics = Diagnostics(self, "planner", lambda: self.prm("device"),
                                       self._report)
        report_unknown_overrides(self)
        self.planner = None
        self.backend = None
        self.goals_succeeded, self.goals_failed, self._last_goal = 0, 0, ""
        self.cycles, self._plan_ms = 0, math.nan    # MPC cycles; the latest one's planning
        self.late_plans, self._late_reported = 0, Since()
        self.execution_failures, self._failures_reported = 0, Since()
        self._lock = threading.Lock()
        self._joint_state: tuple | None = None    # (q, qd, gripper width, stamp [s])
        self._joint_state_seen = threading.Event()
        self._arm_history = ArmHistory()    # where the tool was when a frame was taken
        self._objects: ObjectArray | None = None
        self._obstacles: DistanceField | None = None
        self._estop = False
        self._execution_failure = None   # a controller's rejection or abort, for the goal
        self._last_execution_failure = ""
        self._goal_generation = 0
        # Sending to the controller and ending goals take this lock: once a deactivation
        # holds the arm, no plan of the goal it ended can follow.
        self._command_lock = threading.RLock()
        self._goals_running = 0
        self._goal_ended = threading.Condition()
        # The action and the plan service live as long as the node: a goal or request that
        # meets a lifecycle transition is answered (rejected or ended with a reason).
        self.action = ActionServer(self, PlanToGoal, "~/plan_to_goal", self._execute,
                                   goal_callback=self._on_goal,
                                   cancel_callback=lambda _: CancelResponse.ACCEPT,
                                   callback_group=ReentrantCallbackGroup())
        self.create_service(Plan, "~/plan", self._on_plan,
                            callback_group=MutuallyExclusiveCallbackGroup())

    def prm(self, name):
        return self.get_parameter(name).value

    # ---- lifecycle -----------------------------------------------------------------------
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        device = self.prm("device")
        if device.startswith("cuda") and not torch.cuda.is_available():
            self.get_logger().error(f"device '{device}' requested but CUDA is not available")
            return TransitionCallbackReturn.FAILURE
        if self.prm("torch_threads") > 0:
            torch.set_num_threads(self.prm("torch_threads"))
        weights = CostWeights(**{n: self.prm(f"weights.{n}") for n in CostWeights.names()})
        speeds = {n: tuple(self.prm(n)) for n in ("guide_speeds", "push_speeds")}
        for name, values in speeds.items():
            if not all(0.0 < v <= 2.0 for v in values):
                self.get_logger().error(f"cannot configure the planner: {name} must lie in "
                                        f"(0, 2] m/s, got {list(values)}")
                return TransitionCallbackReturn.FAILURE
        config = PlannerConfig(
            sampler=self.prm("sampler"), horizon=self.prm("horizon"),
            sampling=SamplerConfig(samples=self.prm("samples"),
                                   iterations=self.prm("iterations"),
                                   elites=min(self.prm("elites"), self.prm("samples"))),
            init_std=self.prm("init_std"), weights=weights, seed=self.prm("seed"), **speeds,
            heading_room=self.prm("heading_room"),
            top_futures=max(2, self.prm("markers.futures")))
        try:
            self.planner = build_planner(self.prm("model"), self.prm("checkpoint"), config,
                                         self.prm("max_acceleration"), self.prm("max_jerk"),
                                         self.prm("limit_scale"), device)
            self.backend = make_backend(self.prm("backend"), self, self.prm("controller_topic"),
                                        self.prm("controller_action"),
                                        self.prm("moveit_action"), self.prm("gripper_topic"),
                                        self._on_execution_failure,
                                        self.prm("controller_response_timeout"))
        except (ValueError, RuntimeError, OSError) as err:
            self.get_logger().error(f"cannot configure the planner: {err}")
            self.planner = None
            return TransitionCallbackReturn.FAILURE
        self.arm_joints = list(self.planner.chain.limits.names)
        lim = self.planner.cpu_limits
        # What the controller commands, mirrored with the same replacement semantics.
        self.mirror = None
        self.mirror_limits = (lim.lower - 0.02, lim.upper + 0.02, lim.velocity * 2)
        group = ReentrantCallbackGroup()
        self.subs = [
            # One at a time, so that joint states are taken in the order they come.
            self.create_subscription(JointState, "joint_states", self._on_joint_state, 10,
                                     callback_group=MutuallyExclusiveCallbackGroup()),
            self.create_subscription(ObjectArray, "objects",
                                     lambda m: setattr(self, "_objects", m), 1,
                                     callback_group=group),
            self.create_subscription(PointCloud2, "scene_cloud", self._on_cloud,
                                     qos_profile_sensor_data, callback_group=group),
            self.create_subscription(Bool, "estop", self._on_estop, 10, callback_group=group)]
        self.pub_markers = self.create_lifecycle_publisher(MarkerArray, "~/futures", 1)
        self.get_logger().info(
            f"planning with {self.planner.predictor.name} on {device}: {config.sampler}, "
            f"{config.sampling.samples} samples x {config.horizon} steps x "
            f"{config.sampling.iterations} iterations, backend {self.prm('backend')}")
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._stop_goals()
        return super().on_deactivate(state)

    def _stop_goals(self) -> None:
        """End the running goal (at its next check) and bring the arm to rest now."""
        with self._command_lock:
            self._active = False
            self._goal_generation += 1
            # Deactivation and teardown go on either way: rclpy fails a transition whose
            # callback raises without saying why, and at exit the context may be gone.
            try:
                self._hold()
            except Exception:
                self.get_logger().error("the arm could not be brought to rest:\n"
                                        + traceback.format_exc())

    def _teardown(self) -> None:
        self._stop_goals()
        # The goal's thread still uses the planner until its cycle ends.
        with self._goal_ended:
            self._goal_ended.wait_for(lambda: self._goals_running == 0,
                                      timeout=self.prm("plan_budget") + 2.0)
        if getattr(self, "subs", None):
            for sub in self.subs:
                self.destroy_subscription(sub)
            self.destroy_lifecycle_publisher(self.pub_markers)
            self.backend.close()
            self.backend = None
            self.subs = []
        self.planner = None

    # ---- inputs --------------------------------------------------------------------------
    def now_s(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_joint_state(self, msg: JointState) -> None:
        try:
            q, qd, width = joint_state_to_tensors(msg, self.arm_joints,
                                                  self.prm("gripper_joints"))
        except ValueError as err:
            self.get_logger().error(f"joint state ignored: {err}", throttle_duration_sec=5.0)
            return
        stamp = to_seconds(msg.header.stamp)
        with self._lock:
            if self._joint_state is not None and stamp < self._joint_state[3]:
                self.get_logger().warn("joint state older than the last one ignored",
                                       throttle_duration_sec=5.0)
                return
            self._joint_state = (q, qd, width, stamp)
            self._arm_history.add(stamp, q)
        self._joint_state_seen.set()

    def _on_cloud(self, msg: PointCloud2) -> None:
        """Static obstacles: Gaussian centres away from the table, the objects (the world
        model moves those) and the robot's own body."""
        fields = {f.name: (f.offset, f.datatype) for f in msg.fields}
        xyz = [fields.get(n) for n in "xyz"]
        if xyz != [(0, PointField.FLOAT32), (4, PointField.FLOAT32), (8, PointField.FLOAT32)] \
                or msg.point_step % 4 or msg.point_step < 12 or msg.is_bigendian:
            self.get_logger().error("scene cloud ignored: expected little-endian float32 x, y, "
                                    "z at offsets 0, 4, 8", throttle_duration_sec=5.0)
            return
        try:
            points = np.frombuffer(bytes(msg.data), np.float32).reshape(
                -1, msg.point_step // 4)[:, :3].astype(np.float64)
        except ValueError as err:
            self.get_logger().error(f"scene cloud ignored: {err}")
            return
        points = points[np.isfinite(points).all(1)]
        points = points[points[:, 2] > self.prm("table_height") + 0.02]
        if self._objects is not None and self._objects.objects:
            try:
                _, pos, rot, ext, _ = objects_to_tensors(self._objects)
                local = np.einsum("kji,nkj->nki", rot.numpy(),
                                  points[:, None] - pos.numpy()[None])
                inside = (np.abs(local) <= ext.numpy()[None] + 0.03).all(-1).any(-1)
                points = points[~inside]
            except ValueError as err:   # kept: the objects message is reported on use
                self.get_logger().error(f"objects not removed from the scene cloud: {err}",
                                        throttle_duration_sec=5.0)
        with self._lock:
            js = self._joint_state
        if js is not None and len(points):
            q = js[0]
            spheres = self.planner.cpu_spheres
            centres = spheres.centres(self.planner.cpu_chain.link_poses(q)).numpy()
            d = np.linalg.norm(points[:, None] - centres[None], axis=-1)
            points = points[~(d <= spheres.radii.numpy()[None] + 0.03).any(-1)]
        self._obstacles = DistanceField.from_points(
            points, [-1.2, -1.2, -0.1], [1.2, 1.2, 1.4],
            self.prm("obstacle_resolution")).to(self.planner.device) if len(points) else None

    def _on_estop(self, msg: Bool) -> None:
        if msg.data and not self._estop:
            self.get_logger().error("e-stop: holding the arm")
            self._hold()
        self._estop = bool(msg.data)

    def _state(self):
        """(WorldState, stamp of the joint state, the ObjectArray it holds) from the latest
        messages; ValueError."""
        with self._lock:
            js, objects = self._joint_state, self._objects or ObjectArray()
        if js is None:
            raise ValueError("no joint state received yet")
        q, qd, width, stamp = js
        return WorldState(q, qd, width, *objects_to_tensors(objects)), stamp, objects

    def _tool_at(self, t: float | None) -> torch.Tensor | None:
        """The tool's position (3,) at t [s] from the recent joint states; None if they
        do not cover it."""
        with self._lock:
            return self._arm_history.tool_position_at(self.planner.cpu_chain, t)

    def _scene(self) -> Scene:
        return Scene(table_height=self.prm("table_height"), obstacles=self._obstacles,
                     collision_margin=self.prm("collision_margin"),
                     push_height=self.prm("push_height"), push_speed=self.prm("push_speed"),
                     min_push_speed=self.prm("min_push_speed"),
                     push_stop_time=self.prm("push_stop_time"),
                     tool_radius=self.prm("tool_radius"),
                     push_gripper_width=self.prm("push_gripper_width"),
                     reckoning_margin=self.prm("reckoning_margin"))

    # ---- execution -----------------------------------------------------------------------
    def _commanded(self, t: float, q_measured):
        """(position, velocity, acceleration) the controller commands at time t: the mirror
        of what we sent, reset to the measured position when we have sent nothing yet."""
        if self.mirror is None:
            lower, upper, velocity = self.mirror_limits
            self.mirror = JointTrajectoryFollower(self.arm_joints, lower.numpy(),
                                                  upper.numpy(), velocity.numpy(),
                                                  q_measured.numpy())
        return tuple(torch.tensor(x, dtype=torch.float32) for x in self.mirror.sample(t))

    def _send(self, start: float, positions, velocities, accelerations) -> None:
        dt = self.planner.dt
        try:
            self.mirror.set_trajectory(self.now_s(), start, self.arm_joints,
                                       (np.arange(len(positions)) + 1) * dt,
                                       positions.numpy(), velocities.numpy(),
                                       accelerations.numpy())
        except TrajectoryRejected as err:
            self.get_logger().error(f"trajectory not sent: {err}")
            return
        self.backend.send(knots_to_trajectory(self.arm_joints, to_time_msg(start),
                                              self.prm("world_frame"), dt, positions,
                                              velocities, accelerations))

    def _hold(self) -> None:
        """Bring the command to rest from where it is now, within the limits."""
        with self._command_lock:
            if self.planner is None or self.mirror is None:
                return
            now = self.now_s()
            q, v, a = (torch.tensor(x, dtype=torch.float32) for x in self.mirror.sample(now))
            self._send(now, *braking(q, v, a, self.planner.cpu_limits, self.planner.dt))

    def _report(self) -> tuple:
        """/diagnostics: ERROR when a controller rejected or aborted a trajectory since the
        last report; WARN while unconfigured, on e-stop, for plans that came too late, or
        with no controller to send to."""
        with self._lock:
            js = self._joint_state
        values = {"goals succeeded": self.goals_succeeded, "goals failed": self.goals_failed,
                  "last goal": self._last_goal, "cycles": self.cycles,
                  "last planning ms": self._plan_ms, "plans too late": self.late_plans,
                  "controller failures": self.execution_failures,
                  "joint state age s": math.nan if js is None else self.now_s() - js[3],
                  "backend": self.prm("backend")}
        failures = self._failures_reported(self.execution_failures)
        late = self._late_reported(self.late_plans)
        backend = self.backend
        if self.planner is None or backend is None:
            return WARN, "not configured", values
        if not self._active:
            return OK, "inactive", values
        if failures:
            return ERROR, self._last_execution_failure, values
        if self._estop:
            return WARN, "e-stop active: goals refused", values
        if late:
            return WARN, f"{late} plan(s) came too late to be sent since the last report", values
        if not backend.ready():
            return WARN, f"no controller on {backend.target}", values
        if self._goals_running:
            return OK, "executing a goal", values
        return OK, "idle", values

    def _controller_ready(self, wait: float) -> bool:
        """Whether the backend has a controller, waiting up to `wait` s (wall clock) for one:
        just after start-up, discovery may not have found it yet."""
        deadline = time.monotonic() + wait
        while not self.backend.ready():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def _on_execution_failure(self, reason: str) -> None:
        """A controller rejected or aborted a trajectory: it holds where it stopped instead of
        following what was sent, so the mirror of it is dropped and the running goal ends."""
        self.get_logger().error(reason)
        with self._command_lock:
            self.mirror = None
        self.execution_failures += 1
        self._execution_failure = self._last_execution_failure = reason

    def _on_goal(self, request) -> GoalResponse:
        if not self._active or self.planner is None:
            self.get_logger().error("goal rejected: the planner is not active")
            return GoalResponse.REJECT
        try:
            ids, _, rotations = objects_to_tensors(self._objects or ObjectArray())[:3]
            goal_from_spec(request.goal, self.prm("world_frame"), ids, rotations,
                           self.prm("max_reach"), self.prm("table_height"))
        except ValueError as err:
            self.get_logger().error(f"goal rejected: {err}")
            return GoalResponse.REJECT
        if self._estop:
            self.get_logger().error("goal rejected: e-stop is active")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _execute(self, handle):
        with self._goal_ended:
            self._goals_running += 1
        try:
            return self._run_goal(handle)
        finally:
            with self._goal_ended:
                self._goals_running -= 1
                self._goal_ended.notify_all()

    def _run_goal(self, handle):
        self._goal_generation += 1
        generation = self._goal_generation
        result = R()
        started, wall0 = self.now_s(), time.perf_counter()
        spec = handle.request.goal
        budget = to_seconds(spec.time_budget) or self.prm("default_time_budget")
        period = 1.0 / self.prm("rate")
        steps = max(1, round(period / self.planner.dt))
        execute = max(self.prm("execute_steps"), steps)
        stale_since, iteration = None, 0
        settle = GoalSettle(self.prm("settle_cycles"))
        retreat = Retreat(self.prm("retreat_height"))
        pushed = PushedObject()
        lead = period    # how far ahead a plan starts: it must arrive before then
        recent = collections.deque(maxlen=5)     # planning times [s, node clock]
        self.planner.reset()
        with self._command_lock:     # a deactivation may be holding the arm on it meanwhile
            self.mirror = None
        self._execution_failure = None

        def finish(code, reason, success=False):
            self._hold()
            result.success, result.failure_code, result.failure_reason = success, code, reason
            result.iterations = iteration
            result.elapsed = to_duration_msg(self.now_s() - started)
            if reason:
                self.get_logger().error(f"goal ended: {reason}")
            if success:
                self.goals_succeeded += 1
            else:
                self.goals_failed += 1
            self._last_goal = "succeeded" if success else reason
            return result

        try:
            # A goal sent right after start-up may come before the first joint state (wall
            # clock: a simulated clock may not run yet either).
            self._joint_state_seen.wait(self.prm("first_state_wait"))
            world, stamp, _ = self._state()
            goal = goal_from_spec(spec, self.prm("world_frame"), world.object_ids,
                                  world.object_rotations, self.prm("max_reach"),
                                  self.prm("table_height"))
        except ValueError as err:
            handle.abort()
            return finish(R.REASON_INVALID_GOAL, str(err))
        if not self._controller_ready(self.prm("first_state_wait")):
            handle.abort()
            return finish(R.REASON_EXECUTION_FAILURE, f"no controller on {self.backend.target}")
        gripper = gripper_command(goal, world, self._scene())
        self.backend.gripper(gripper)
        next_tick = self.now_s()
        while True:
            if handle.is_cancel_requested:
                handle.canceled()
                return finish(R.REASON_CANCELED, "canceled")
            if generation != self._goal_generation or not self._active:
                handle.abort()
                return finish(R.REASON_CANCELED, "preempted by a new goal or deactivated")
            if self._estop:
                handle.abort()
                return finish(R.REASON_ESTOP, "e-stop")
            failure, self._execution_failure = self._execution_failure, None
            if failure is not None:
                handle.abort()
                return finish(R.REASON_EXECUTION_FAILURE, failure)
            if not self.backend.ready():   # nothing would move the arm: say so, now
                handle.abort()
                return finish(R.REASON_EXECUTION_FAILURE,
                              f"lost the controller on {self.backend.target}")
            now = self.now_s()
            try:
                world, stamp, objects = self._state()
            except ValueError as err:
                handle.abort()
                return finish(R.REASON_STALE_STATE, f"no usable state: {err}")
            if now - stamp > self.prm("state_timeout"):
                if stale_since is None:
                    self.get_logger().warn(f"joint state is {now - stamp:.2f} s old: holding")
                    self._hold()
                    stale_since = now
                if now - stale_since > self.prm("state_timeout"):
                    handle.abort()
                    return finish(R.REASON_STALE_STATE,
                                  f"joint state stale for {now - stamp:.2f} s")
                next_tick = self._wait(next_tick, period)
                continue
            stale_since = None
            ee = self.planner.cpu_chain.forward(world.joint_positions)
            sighting = last_sighting(objects, goal.object_id) if goal.kind == OBJECT else None
            tool_seen = self._tool_at(sighting)
            scene = self._scene()
            try:
                world = pushed.update(world, goal, now, ee[:3, 3], sighting, tool_seen,
                                      self.planner.last_stage == "push",
                                      to_seconds(objects.header.stamp), scene)
                judged = pushed.judged(goal, scene, now)
                position_error, angle = goal_error(goal, ee, world.object_ids,
                                                   world.object_positions,
                                                   world.object_rotations)
            except ValueError as err:     # the goal object left the scene memory
                handle.abort()
                return finish(R.REASON_WORLD_MODEL_FAILURE, str(err))
            result.final_position_error = position_error
            result.final_orientation_error = angle if math.isfinite(angle) else 0.0
            if settle.update(settles_on(judged, position_error, angle), now, sighting):
                if oriented(goal, angle):
                    handle.succeed()
                    return finish(R.REASON_NONE, "", success=True)
                handle.abort()
                return finish(R.REASON_EXECUTION_FAILURE,
                              f"object {goal.object_id} lies at its target turned {angle:.3f} "
                              f"rad from the target orientation, beyond orientation_tolerance "
                              f"{goal.orientation_tolerance}: a push does not turn it back")
            if now - started > budget:
                handle.abort()
                waiting = f", waiting for a newer sighting of object {goal.object_id} to " \
                    "confirm it" if settle.confirming else ""
                return finish(R.REASON_TIMEOUT, f"time budget of {budget:.1f} s used up "
                              f"(error {position_error:.3f} m{waiting})")
            if retreat.update(settle.confirming, ee):   # a new target: plan afresh
                self.planner.reset()
                if retreat.goal is not None:
                    # The goal seems met: the running push stops now, not when the lift's
                    # plan takes over a lead later (it would push the object on meanwhile).
                    self._hold()
            if retreat.reached(ee):
                # Withdrawn from the object, which seems there: wait for a newer sighting.
                self._hold()
                next_tick = self._wait(next_tick, period)
                continue
            start = now + lead     # the new trajectory takes over from the running one then
            try:
                plan = self.planner.plan(world, self._commanded(start, world.joint_positions),
                                         retreat.goal or judged, scene, gripper,
                                         self.prm("plan_budget"), start - stamp,
                                         sighting_age(pushed.as_of(sighting), start),
                                         None if pushed.reckoned else tool_seen)
            except (ValueError, RuntimeError) as err:
                handle.abort()
                return finish(R.REASON_WORLD_MODEL_FAILURE, f"planning failed: {err}")
            took = self.now_s() - now
            margin = 0.5 * self.planner.dt
            if self.now_s() > start - margin:
                # Too late to take over smoothly: the running trajectory (ending at rest)
                # goes on; later plans start further ahead.
                self.late_plans += 1
                self.get_logger().warn(f"plan took {took:.2f} s of its {lead:.2f} s lead, "
                                       f"less than {margin:.2f} s before its start: not sent",
                                       throttle_duration_sec=5.0)
            else:
                with self._command_lock:   # not after a deactivation has held the arm
                    if generation == self._goal_generation and self._active:
                        self._send(start, *executed_knots(plan.targets, plan.velocities,
                                                          plan.accelerations, execute,
                                                          self.planner.cpu_limits,
                                                          self.planner.dt))
            recent.append(took)
            lead = min(max(period, 1.5 * max(recent) + margin), MAX_LEAD)
            self.planner.advance(steps)
            iteration += 1
            self.cycles += 1
            self._plan_ms = took * 1e3
            feedback = PlanToGoal.Feedback(
                iteration=iteration, best_cost=plan.cost,
                predicted_success_probability=plan.success_probability,
                position_error=position_error,
                orientation_error=angle if math.isfinite(angle) else 0.0,
                stage="retreat" if retreat.goal is not None else plan.stage)
            handle.publish_feedback(feedback)
            self._publish_markers(plan, retreat.goal or goal, world)
            self.get_logger().debug(f"cycle {iteration}: cost {plan.cost:.3f}, "
                                    f"{plan.elapsed_s * 1e3:.0f} ms, wall "
                                    f"{time.perf_counter() - wall0:.1f} s")
            next_tick = self._wait(next_tick, period)

    def _wait(self, next_tick: float, period: float) -> float:
        """Sleep until the next cycle on the node's clock (sim time honoured)."""
        next_tick += period
        while self.now_s() < next_tick and self.context.ok() and self._active:
            time.sleep(0.002)
        return max(next_tick, self.now_s() - period)

    def _publish_markers(self, plan, goal, world) -> None:
        count = self.prm("markers.futures")
        if count == 0 or self.pub_markers.get_subscription_count() == 0:
            return
        header = Header(stamp=self.get_clock().now().to_msg(),
                        frame_id=self.prm("world_frame"))
        self.pub_markers.publish(plan_markers(plan, goal, header, world.object_extents, count))

    # ---- plan-only service ---------------------------------------------------------------
    def _on_plan(self, request, response):
        if not self._active or self.planner is None:
            response.success, response.message = False, "planner is not active"
            return response
        try:
            if request.start_state.name:
                q, qd, width = joint_state_to_tensors(request.start_state, self.arm_joints,
                                                      self.prm("gripper_joints"))
                objects = objects_to_tensors(self._objects or ObjectArray())
                world = WorldState(q, qd, width, *objects)
            else:
                world, _, _ = self._state()
            goal = goal_from_spec(request.goal, self.prm("world_frame"), world.object_ids,
                                  world.object_rotations, self.prm("max_reach"),
                                  self.prm("table_height"))
            anchor = (world.joint_positions, world.joint_velocities,
                      torch.zeros_like(world.joint_positions))
            scene = self._scene()
            gripper = gripper_command(goal, world, scene)
            self.planner.reset()
            plan = self.planner.plan(world, anchor, goal, scene, gripper,
                                     self.prm("plan_budget"))
        except (ValueError, RuntimeError) as err:
            self.get_logger().error(f"plan request refused: {err}")
            response.success, response.message = False, str(err)
            return response
        stamp = self.get_clock().now().to_msg()
        dt = self.planner.dt
        response.trajectory = knots_to_trajectory(self.arm_joints, stamp,
                                                  self.prm("world_frame"), dt, plan.targets,
                                                  plan.velocities, plan.accelerations)
        n = plan.futures.joint_positions.shape[0]
        actions = CandidateActions(joint_names=self.arm_joints, num_sequences=n,
                                   horizon=plan.targets.shape[0],
                                   step_duration=to_duration_msg(dt))
        response.futures = futures_to_msg(plan.futures, actions, response.trajectory.header,
                                          self.planner.predictor.name)
        response.futures.costs = plan.costs.float().cpu().tolist()
        response.best_cost = plan.cost
        response.predicted_success_probability = plan.success_probability
        response.success, response.message = True, (
            f"{plan.iterations} iterations in {plan.elapsed_s * 1e3:.0f} ms")
        return response


def main(args=None):
    run(PlannerNode, args, threads=3)   # goal, ~/plan, short callbacks


if __name__ == "__main__":
    main()
