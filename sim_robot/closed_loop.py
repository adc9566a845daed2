"""Closed-loop episodes of the MPC planner on the simulated robot, in one process.

The simulation pauses while the planner thinks, so an episode measures what the plans do,
not how fast the machine is (the DDS demo, scripts/demo.py, runs the same loop in real
time). Objects come from the simulator's ground truth. Each cycle: read the state, plan
from what the controller commands at that moment, queue the plan's first steps plus a
braking tail with joint_trajectory_controller semantics, simulate one cycle.

Seeded tasks:
  reach  the tool centre point to a random pose (top-down, random yaw) above the table
  push   the cube to a random point 6-14 cm away on the table
"""
from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from planner_node.actions import braking, executed_knots
from planner_node.costs import (END_EFFECTOR, OBJECT, Goal, Scene, goal_error,
                                gripper_command, sighting_age)
from gsplat_scene.mapping import MappingConfig
from planner_node.arm_history import ArmHistory
from planner_node.mpc import MPCPlanner
from planner_node.pushed_object import PushedObject
from planner_node.settle import GoalSettle, Retreat, oriented, settles_on
from sim_robot import panda
from sim_robot.explore import PUSH_REGION_X, PUSH_REGION_Y, top_down_quat
from sim_robot.scene import OBJECT_IDS
from sim_robot.sim import PandaSim
from sim_robot.trajectory_follower import JointTrajectoryFollower
from world_model_node.predictor import WorldState

TASKS = ("reach", "push")
VIEW_SIZE = (320, 240)    # the simulated robot's camera image, as the scene memory maps it


@dataclass
class EpisodeResult:
    task: str
    seed: int
    success: bool
    position_error: float          # m at the end
    orientation_error: float       # rad (nan when free)
    time_s: float                  # sim time until success (or the timeout)
    cycles: int
    plan_ms: list = field(default_factory=list)
    peak_acceleration: np.ndarray | None = None    # (J,) rad/s^2 commanded
    peak_jerk: np.ndarray | None = None            # (J,) rad/s^3 commanded
    frames: list = field(default_factory=list)     # (rgb, plan) per cycle when recording
    hidden_s: float = 0.0          # sim time the goal's object was hidden (with occlusion)
    stages: list = field(default_factory=list)     # the plan's stage (costs.stage) per cycle


def sample_goal(task: str, poses: dict, rng: np.random.Generator) -> Goal:
    """A seeded goal; poses: object name -> (position (3,), quat) as PandaSim.object_poses()
    gives them."""
    if task == "reach":
        position = rng.uniform([0.35, -0.3, 0.15], [0.6, 0.3, 0.4])
        rotation = Rotation.from_quat(top_down_quat(rng.uniform(-math.pi / 2, math.pi / 2)))
        return Goal(END_EFFECTOR, torch.tensor(position, dtype=torch.float32),
                    torch.tensor(rotation.as_matrix(), dtype=torch.float32),
                    position_tolerance=0.02, orientation_tolerance=0.15)
    if task == "push":
        cube = np.asarray(poses["cube"][0], float)
        for _ in range(100):
            angle = rng.uniform(-math.pi, math.pi)
            target = cube[:2] + rng.uniform(0.06, 0.14) * np.array([math.cos(angle),
                                                                     math.sin(angle)])
            others = [np.asarray(p[:2]) for n, (p, _) in poses.items() if n != "cube"]
            if PUSH_REGION_X[0] <= target[0] <= PUSH_REGION_X[1] and \
                    PUSH_REGION_Y[0] <= target[1] <= PUSH_REGION_Y[1] and \
                    all(np.linalg.norm(target - o) > 0.12 for o in others):
                return Goal(OBJECT, torch.tensor([*target, cube[2]], dtype=torch.float32),
                            object_id=OBJECT_IDS["cube"], position_tolerance=0.02)
        raise RuntimeError("no push target inside the push region")
    raise ValueError(f"unknown task '{task}' (expected one of {TASKS})")


def world_state(sim: PandaSim) -> WorldState:
    poses, extents = sim.object_poses(), sim.object_extents()
    names = sorted(poses)
    return WorldState(
        torch.tensor(sim.arm_positions(), dtype=torch.float32),
        torch.tensor(sim.arm_velocities(), dtype=torch.float32),
        torch.tensor(sim.gripper_width(), dtype=torch.float32),
        [OBJECT_IDS[n] for n in names],
        torch.tensor(np.array([poses[n][0] for n in names]), dtype=torch.float32),
        torch.tensor(Rotation.from_quat([poses[n][1] for n in names]).as_matrix(),
                     dtype=torch.float32),
        torch.tensor(np.array([extents[n] for n in names]), dtype=torch.float32),
        torch.zeros(len(names), 4))


def tcp_pose_matrix(sim: PandaSim) -> torch.Tensor:
    position, quat = sim.tcp_pose()
    pose = torch.eye(4)
    pose[:3, :3] = torch.tensor(Rotation.from_quat(quat).as_matrix())
    pose[:3, 3] = torch.tensor(position)
    return pose


def current_error(goal: Goal, sim: PandaSim) -> tuple:
    state = world_state(sim)
    return goal_error(goal, tcp_pose_matrix(sim), state.object_ids, state.object_positions,
                      state.object_rotations)


def within_tolerance(goal: Goal, error: tuple) -> bool:
    return error[0] <= goal.position_tolerance and oriented(goal, error[1])


class PerceivedObjects:
    """The objects as a camera-fed scene memory gives them: `latency_s` late and, with
    `cameras`, each held where it was last seen while none of those cameras (VIEW_SIZE)
    shows as many pixels of it as the memory needs to track it
    (MappingConfig.min_object_pixels): the arm hides it. cameras=None: nothing is hidden."""

    def __init__(self, latency_s: float = 0.0, cameras: tuple[str, ...] | None = None):
        self.latency_s, self.cameras = latency_s, cameras
        self.min_pixels = MappingConfig().min_object_pixels
        self._frames = collections.deque()   # (time, WorldState, (K,) shown)
        self._poses = None                   # (positions, rotations) as last seen
        self._sightings = None               # (K,) [s] when each was last seen

    def _shown(self, sim: PandaSim, object_ids: list) -> torch.Tensor:
        shown = torch.zeros(len(object_ids), dtype=torch.bool)
        for camera in self.cameras:
            instances = sim.render(*VIEW_SIZE, camera)[2]
            shown |= torch.tensor([int((instances == i).sum()) >= self.min_pixels
                                   for i in object_ids])
        return shown

    def see(self, sim: PandaSim, world: WorldState) -> tuple[WorldState, torch.Tensor, float]:
        """(world (the truth at sim.time) with the objects as perceived, (K,) float64 sim
        time [s] each was last seen (-inf: not yet; the scene memory's last_seen), the time
        of the frame that shows)."""
        now = sim.time
        shown = self._shown(sim, world.object_ids) if self.cameras else \
            torch.ones(len(world.object_ids), dtype=torch.bool)
        self._frames.append((now, world, shown))
        while len(self._frames) > 1 and self._frames[1][0] <= now - self.latency_s + 1e-9:
            self._frames.popleft()
        frame_time, old, seen = self._frames[0]
        if self._poses is None:
            self._poses = (old.object_positions.clone(), old.object_rotations.clone())
            self._sightings = torch.full((len(seen),), -math.inf, dtype=torch.float64)
        self._poses[0][seen] = old.object_positions[seen]
        self._poses[1][seen] = old.object_rotations[seen]
        self._sightings[seen] = frame_time
        return replace(world, object_positions=self._poses[0].clone(),
                       object_rotations=self._poses[1].clone()), \
            self._sightings.clone(), frame_time


def send_plan(follower: JointTrajectoryFollower, planner: MPCPlanner, now: float, plan,
              execute_steps: int) -> None:
    """Queue the plan's first knots and a braking tail, starting at `now`."""
    pos, vel, acc = executed_knots(plan.targets, plan.velocities, plan.accelerations,
                                   execute_steps, planner.cpu_limits, planner.dt)
    times = (np.arange(len(pos)) + 1) * planner.dt
    follower.set_trajectory(now, now, follower.joint_names, times, pos.numpy(),
                            vel.numpy(), acc.numpy())


def hold(follower: JointTrajectoryFollower, planner: MPCPlanner, now: float) -> None:
    """Bring the command to rest from where it is at `now`, within the limits."""
    q, v, a = (torch.tensor(x, dtype=torch.float32) for x in follower.sample(now))
    pos, vel, acc = braking(q, v, a, planner.cpu_limits, planner.dt)
    times = (np.arange(len(pos)) + 1) * planner.dt
    follower.set_trajectory(now, now, follower.joint_names, times, pos.numpy(), vel.numpy(),
                            acc.numpy())


def run_episode(sim: PandaSim, planner: MPCPlanner, goal: Goal, task: str, seed: int,
                scene: Scene | None = None, timeout_s: float = 10.0, execute_steps: int = 2,
                settle_cycles: int = 2, record: bool = False,
                perception: PerceivedObjects | None = None,
                retreat_height: float = 0.1) -> EpisodeResult:
    """Plan and execute until the goal settles (planner_node.settle: settle_cycles cycles,
    on new sightings for the object goal of a push, the tool withdrawing retreat_height
    meanwhile) as the planner sees it, or timeout_s passes; success: it settled, and it holds
    on the truth at the end.

    perception: the planner sees the objects as it gives them (late, and held where the
    cameras lose them, as the scene memory does) and judges the goal on them as
    planner_node does; default: the truth, at once."""
    scene = scene or Scene()
    limits = panda.ARM_LIMITS
    follower = JointTrajectoryFollower(panda.ARM_JOINT_NAMES, limits.lower, limits.upper,
                                       limits.velocity, sim.arm_positions())
    gripper = gripper_command(goal, world_state(sim), scene)
    sim.set_gripper_width(gripper)
    planner.reset(seed)
    cycle = execute_steps * planner.dt
    t0 = sim.time
    result = EpisodeResult(task, seed, False, math.nan, math.nan, 0.0, 0)
    peak_acc = np.zeros(planner.joints)
    peak_jerk = np.zeros(planner.joints)
    settle = GoalSettle(settle_cycles)
    settled = False
    retreat = Retreat(retreat_height)
    pushed = PushedObject()
    last_acc = None
    perception = perception or PerceivedObjects()
    history = ArmHistory()
    history.add(sim.time, sim.arm_positions())
    while sim.time - t0 < timeout_s:
        now = sim.time
        world, sightings, frame_time = perception.see(sim, world_state(sim))
        sighting = None
        if goal.kind == OBJECT:
            sighting = float(sightings[world.object_ids.index(goal.object_id)])
            result.hidden_s += cycle if sighting < frame_time else 0.0
        tool = tcp_pose_matrix(sim)
        tool_seen = history.tool_position_at(planner.cpu_chain, sighting)
        world = pushed.update(world, goal, now, tool[:3, 3], sighting, tool_seen,
                              planner.last_stage == "push", frame_time, scene)
        error = goal_error(goal, tool, world.object_ids, world.object_positions,
                           world.object_rotations)
        judged = pushed.judged(goal, scene, now)
        settled = settle.update(settles_on(judged, *error), now, sighting)
        if settled:
            break
        if retreat.update(settle.confirming, tool):   # a new plan for a new target
            planner.reset()
        if retreat.reached(tool):
            hold(follower, planner, now)
        else:
            plan = planner.plan(world, follower.sample(now), retreat.goal or judged, scene,
                                gripper, sighting_age_s=sighting_age(pushed.as_of(sighting), now),
                                tool_seen=None if pushed.reckoned else tool_seen)
            result.plan_ms.append(plan.elapsed_s * 1e3)
            result.stages.append(plan.stage)
            send_plan(follower, planner, now, plan, execute_steps)
            if record:
                result.frames.append((sim.render()[0], plan))
            planner.advance(execute_steps)
        result.cycles += 1
        while sim.time < now + cycle - 0.5 * sim.timestep:
            q, qd, acc = follower.sample(sim.time)
            if last_acc is not None:
                peak_jerk = np.maximum(peak_jerk, np.abs(acc - last_acc) / sim.timestep)
            peak_acc = np.maximum(peak_acc, np.abs(acc))
            last_acc = acc
            sim.set_arm_targets(q, qd)
            sim.step()
            history.add(sim.time, sim.arm_positions())
    result.position_error, result.orientation_error = current_error(goal, sim)
    result.success = settled and within_tolerance(
        goal, (result.position_error, result.orientation_error))
    result.time_s = sim.time - t0
    result.peak_acceleration, result.peak_jerk = peak_acc, peak_jerk
    return result
