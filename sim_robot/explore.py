"""Scripted exploration episodes (reach, push, grasp) for collecting robot-interaction data.

Plans are joint-space waypoints that a trajectory follower interpolates linearly; segment
durations respect the joint velocity limits. Grasp poses carry seeded noise so that some
grasps fail, which is wanted in the training data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from sim_robot import panda
from sim_robot.ik import ArmIK
from sim_robot.sim import PandaSim

EPISODE_KINDS = ("reach", "push", "grasp")
GRASPABLE = ("cube", "can")
PUSHABLE = ("cube", "can", "mug")

JOINT_SPEED_FRACTION = 0.4  # of the velocity limit, for free-space motion
CARTESIAN_SPEED = 0.1  # m/s of the TCP near objects
MIN_SEGMENT_TIME = 0.05  # s
APPROACH_HEIGHT = 0.12  # m above the contact pose
LIFT_HEIGHT = 0.15  # m
GRASP_POSITION_NOISE = 0.01  # m, standard deviation per horizontal axis
GRASP_HEIGHT_NOISE = 0.004  # m
GRASP_YAW_NOISE = 0.15  # rad
GRASP_CLOSE_TIME = 0.8  # s the arm holds still while the fingers close
LIFTED_THRESHOLD = 0.03  # m above the resting height that counts as a successful grasp
FINGERTIP_BELOW_TCP = 0.008  # m, how far the finger pads reach below the TCP
TABLE_CLEARANCE = 0.01  # m kept between finger pads and table
# Region of the table where objects may be pushed to, world frame, m.
PUSH_REGION_X = (0.3, 0.75)
PUSH_REGION_Y = (-0.4, 0.4)


@dataclass
class EpisodePlan:
    """One scripted episode; times are seconds from the episode start."""

    kind: str  # 'reach', 'push' or 'grasp'
    target_object: str | None  # object pushed or grasped
    arm_waypoints: list[tuple[float, np.ndarray]]  # (time, q (7,) rad), strictly increasing times
    gripper_events: list[tuple[float, float]]  # (time, finger-pad width m)
    duration: float  # s, including a final hold


class PlanningError(RuntimeError):
    """No collision-free, reachable motion was found for the sampled episode."""


def top_down_quat(yaw: float, tilt_axis=(1.0, 0.0, 0.0), tilt: float = 0.0) -> np.ndarray:
    """TCP orientation (quat xyzw) pointing down, fingers closing along (sin yaw, -cos yaw, 0),
    optionally tilted by ``tilt`` rad about a world-frame horizontal axis."""
    down = Rotation.from_euler("z", yaw) * Rotation.from_euler("x", math.pi)
    return (Rotation.from_rotvec(tilt * np.asarray(tilt_axis, float)) * down).as_quat()


def _wrap_half_turn(angle: float) -> float:
    """Equivalent gripper yaw in [-pi/2, pi/2): the two-finger gripper is symmetric under pi."""
    return (angle + math.pi / 2) % math.pi - math.pi / 2


def _object_yaw(quat_xyzw) -> float:
    x_axis = Rotation.from_quat(quat_xyzw).apply([1.0, 0.0, 0.0])
    return math.atan2(x_axis[1], x_axis[0])


def segment_time(q_from, q_to, speed_fraction: float = JOINT_SPEED_FRACTION) -> float:
    """Shortest duration (s) of a linear joint move that keeps every joint within
    ``speed_fraction`` of its velocity limit."""
    needed = np.abs(np.subtract(q_to, q_from)) / (speed_fraction * panda.ARM_LIMITS.velocity)
    return max(float(needed.max()), MIN_SEGMENT_TIME)


class _PlanBuilder:
    """Accumulates timed waypoints, solving IK for Cartesian targets from the last waypoint."""

    def __init__(self, ik: ArmIK, q_start: np.ndarray):
        self._ik = ik
        self.waypoints: list[tuple[float, np.ndarray]] = [(0.0, q_start.copy())]
        self.gripper_events: list[tuple[float, float]] = []

    @property
    def time(self) -> float:
        return self.waypoints[-1][0]

    @property
    def q(self) -> np.ndarray:
        return self.waypoints[-1][1]

    def _solve(self, position, quat) -> np.ndarray:
        result = self._ik.solve(position, quat, self.q)
        if not result.converged:
            raise PlanningError(f"IK failed for TCP position {np.round(position, 3)} (error {result.error:.4f})")
        return result.q

    def move_to(self, position, quat) -> None:
        """Free-space joint move to a TCP pose."""
        q = self._solve(position, quat)
        self.waypoints.append((self.time + segment_time(self.q, q), q))

    def move_linear(self, start, end, quat, speed: float = CARTESIAN_SPEED, step: float = 0.02) -> None:
        """Near-straight TCP line from ``start`` (the current TCP position) to ``end`` at ``speed`` m/s."""
        start = np.asarray(start, float)
        end = np.asarray(end, float)
        count = max(1, math.ceil(np.linalg.norm(end - start) / step))
        for k in range(1, count + 1):
            position = start + (end - start) * k / count
            q = self._solve(position, quat)
            duration = max(segment_time(self.q, q), np.linalg.norm(end - start) / count / speed)
            self.waypoints.append((self.time + duration, q))

    def hold(self, duration: float) -> None:
        self.waypoints.append((self.time + duration, self.q.copy()))

    def gripper(self, width: float) -> None:
        """Command the finger-pad width (m) at the time of the last waypoint."""
        self.gripper_events.append((self.time, width))


class ExplorationPolicy:
    """Seeded generator of exploration episodes; successive calls give different episodes."""

    def __init__(self, seed: int):
        self._rng = np.random.default_rng(seed)
        self._ik = ArmIK()

    def plan_episode(self, sim: PandaSim, kind: str | None = None, attempts: int = 20) -> EpisodePlan:
        """Plan an episode from the current state of ``sim``; ``kind`` is drawn when None."""
        if kind is None:
            kind = EPISODE_KINDS[self._rng.integers(len(EPISODE_KINDS))]
        planners = {"reach": self._plan_reach, "push": self._plan_push, "grasp": self._plan_grasp}
        if kind not in planners:
            raise ValueError(f"unknown episode kind '{kind}' (expected one of {EPISODE_KINDS})")
        for _ in range(attempts):
            try:
                return planners[kind](sim)
            except PlanningError:
                continue
        raise PlanningError(f"no feasible {kind} episode found in {attempts} attempts")

    # --- episode kinds ---

    def _plan_reach(self, sim: PandaSim) -> EpisodePlan:
        rng = self._rng
        plan = _PlanBuilder(self._ik, sim.arm_positions())
        for _ in range(rng.integers(1, 4)):
            position = rng.uniform([0.3, -0.35, 0.15], [0.65, 0.35, 0.45])
            axis_angle = rng.uniform(0, 2 * math.pi)
            quat = top_down_quat(
                rng.uniform(-math.pi / 2, math.pi / 2),
                tilt_axis=(math.cos(axis_angle), math.sin(axis_angle), 0.0),
                tilt=rng.uniform(0.0, 0.4),
            )
            plan.move_to(position, quat)
            plan.gripper(float(rng.uniform(0.0, panda.GRIPPER_MAX_WIDTH)))
            plan.hold(float(rng.uniform(0.2, 0.6)))
        return EpisodePlan("reach", None, plan.waypoints, plan.gripper_events, plan.time)

    def _plan_push(self, sim: PandaSim) -> EpisodePlan:
        rng = self._rng
        name = PUSHABLE[rng.integers(len(PUSHABLE))]
        position, _ = sim.object_poses()[name]
        extents = sim.object_extents()[name]
        distance = float(rng.uniform(0.05, 0.15))
        direction = self._push_direction(position, distance)
        # Start clear of the object's footprint; stop once the TCP is ``distance`` past the
        # object's near side, so the object ends up roughly ``distance`` further along.
        clearance = math.hypot(extents[0], extents[1]) + 0.03
        height = max(min(extents[2], 0.03), FINGERTIP_BELOW_TCP + TABLE_CLEARANCE)
        start = np.array([*(position[:2] - clearance * direction), height])
        end = start + np.array([*((clearance - extents[0] + distance) * direction), 0.0])
        quat = top_down_quat(_wrap_half_turn(math.atan2(direction[1], direction[0])))

        plan = _PlanBuilder(self._ik, sim.arm_positions())
        plan.gripper(0.0)
        above = start + [0.0, 0.0, APPROACH_HEIGHT]
        plan.move_to(above, quat)
        plan.move_linear(above, start, quat)
        plan.move_linear(start, end, quat)
        plan.move_linear(end, end + [0.0, 0.0, APPROACH_HEIGHT], quat)
        plan.hold(0.3)
        return EpisodePlan("push", name, plan.waypoints, plan.gripper_events, plan.time)

    def _push_direction(self, position, distance: float) -> np.ndarray:
        """Unit xy direction that keeps the pushed object inside the push region."""
        for _ in range(50):
            angle = self._rng.uniform(-math.pi, math.pi)
            direction = np.array([math.cos(angle), math.sin(angle)])
            goal = position[:2] + distance * direction
            if PUSH_REGION_X[0] <= goal[0] <= PUSH_REGION_X[1] and PUSH_REGION_Y[0] <= goal[1] <= PUSH_REGION_Y[1]:
                return direction
        raise PlanningError("object too close to the edge of the push region")

    def _plan_grasp(self, sim: PandaSim) -> EpisodePlan:
        rng = self._rng
        name = GRASPABLE[rng.integers(len(GRASPABLE))]
        position, quat_xyzw = sim.object_poses()[name]
        extents = sim.object_extents()[name]
        if name == "cube":
            # Close across a pair of faces: finger axis along the cube's x or y axis.
            yaw = _wrap_half_turn(_object_yaw(quat_xyzw) + math.pi / 2)
            if abs(yaw) > math.pi / 4:
                yaw = _wrap_half_turn(yaw + math.pi / 2)
        else:
            yaw = rng.uniform(-math.pi / 2, math.pi / 2)
        # Grip the top part of tall objects; keep the pads off the table for short ones.
        top = position[2] + extents[2]
        height = max(top - 0.035, FINGERTIP_BELOW_TCP + TABLE_CLEARANCE)
        target = np.array([position[0], position[1], height])
        target[:2] += rng.normal(0.0, GRASP_POSITION_NOISE, 2)
        target[2] += rng.normal(0.0, GRASP_HEIGHT_NOISE)
        target[2] = max(target[2], FINGERTIP_BELOW_TCP + TABLE_CLEARANCE)
        quat = top_down_quat(_wrap_half_turn(yaw + rng.normal(0.0, GRASP_YAW_NOISE)))

        plan = _PlanBuilder(self._ik, sim.arm_positions())
        plan.gripper(panda.GRIPPER_MAX_WIDTH)
        above = target + [0.0, 0.0, APPROACH_HEIGHT]
        plan.move_to(above, quat)
        plan.move_linear(above, target, quat)
        plan.gripper(0.0)
        plan.hold(GRASP_CLOSE_TIME)
        plan.move_linear(target, target + [0.0, 0.0, LIFT_HEIGHT], quat)
        plan.hold(0.5)
        return EpisodePlan("grasp", name, plan.waypoints, plan.gripper_events, plan.time)


def grasp_succeeded(sim: PandaSim, object_name: str) -> bool:
    """True when the object's centre is more than 3 cm above its upright resting height."""
    position, _ = sim.object_poses()[object_name]
    resting_height = sim.object_extents()[object_name][2]
    return bool(position[2] > resting_height + LIFTED_THRESHOLD)


def run_plan_open_loop(sim: PandaSim, plan: EpisodePlan, observe=None,
                       observe_period: float = 0.1) -> None:
    """Execute ``plan`` from the current state with linear joint interpolation and velocity
    feed-forward, one servo update per physics step. For tests and offline use.

    observe: called with the sim every observe_period seconds of plan time (a camera, say).
    """
    every = max(1, int(round(observe_period / sim.timestep)))
    times = np.array([t for t, _ in plan.arm_waypoints])
    positions = np.array([q for _, q in plan.arm_waypoints])
    events = sorted(plan.gripper_events, key=lambda event: event[0])
    next_event = 0
    for k in range(int(round(plan.duration / sim.timestep)) + 1):
        t = k * sim.timestep
        while next_event < len(events) and events[next_event][0] <= t + 1e-9:
            sim.set_gripper_width(events[next_event][1])
            next_event += 1
        if t >= times[-1]:
            sim.set_arm_targets(positions[-1])
        else:
            i = int(np.searchsorted(times, t, side="right")) - 1
            span = times[i + 1] - times[i]
            velocity = (positions[i + 1] - positions[i]) / span
            sim.set_arm_targets(positions[i] + velocity * (t - times[i]), velocity)
        sim.step()
        if observe is not None and k % every == 0:
            observe(sim)
