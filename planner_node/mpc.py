"""Model-predictive control over imagined futures: sample, imagine, score, keep the best.

`MPCPlanner.plan()` is one planning cycle. Its decision variables per step are joint
velocities (turned into joint targets within the limits by `actions.integrate`, from the
position and velocity the controller is commanding when the plan starts) and a gripper
width. The world model predicts every candidate's future, `costs.evaluate` scores it, and
the sampler refits its distribution. The distribution's mean is kept, shifted by the steps
executed, as the next cycle's warm start.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from planner_node.actions import PANDA_ACCELERATION, PANDA_JERK, ArmLimits, integrate
from planner_node.costs import (OBJECT, CostWeights, Goal, Scene, evaluate, goal_error,
                                goal_object_index, push_speed_limit, stage,
                                success_probability)
from planner_node.guides import guide_target, guides, line_guides, tool_heading
from planner_node.samplers import SamplerConfig, make_sampler, shift
from robot_model.spheres import ArmSpheres
from world_model_node.predictor import Futures, Predictor, WorldState, make_predictor


@dataclass
class PlannerConfig:
    sampler: str = "icem"
    horizon: int = 16
    sampling: SamplerConfig = field(default_factory=SamplerConfig)
    init_std: float = 0.3          # of the velocity limit
    fine_radius: float = 0.1       # m: closer to the goal, the sampling std shrinks (to 20 %)
    gripper_std: float = 0.0       # m; 0 keeps the gripper at its current command
    guide_speeds: tuple = (0.25, 0.1)   # m/s of the resolved-rate guides scored each cycle
    push_speeds: tuple = (0.1, 0.05)    # m/s of the guides while pushing
    heading_room: float = 0.8      # rad a push's tool turn leaves its joints (`tool_heading`)
    weights: CostWeights = field(default_factory=CostWeights)
    top_futures: int = 16          # futures returned for display
    seed: int = 0


@dataclass
class Plan:
    """One cycle's plan; its targets, velocities, accelerations and gripper on the CPU."""
    targets: torch.Tensor          # (H, J) joint targets, one per step (knot positions)
    velocities: torch.Tensor       # (H, J) at the knots
    accelerations: torch.Tensor    # (H, J) at the knots
    gripper: torch.Tensor          # (H,) widths [m]
    cost: float
    terms: dict                    # weighted cost terms of the plan
    success_probability: float
    iterations: int
    elapsed_s: float
    futures: Futures               # of the plan (index 0) and the best other samples
    costs: torch.Tensor            # (M,) of those futures
    cost_history: list
    stage: str                     # costs.stage: reach, approach, push or hold


class MPCPlanner:
    def __init__(self, predictor: Predictor, limits: ArmLimits, spheres: ArmSpheres,
                 config: PlannerConfig | None = None):
        self.predictor = predictor
        self.config = config or PlannerConfig()
        self.device = predictor.device
        self.limits = limits.to(self.device)
        self.spheres = spheres.to(self.device)
        self.chain = predictor.chain
        # The same on the CPU, for the callers' kinematics of measured and sent states (tool
        # pose, braking), whatever device the planner samples on.
        self.cpu_chain = self.chain.to("cpu")
        self.cpu_limits = limits.to("cpu")
        self.cpu_spheres = spheres.to("cpu")
        self.sampler = make_sampler(self.config.sampler, self.config.sampling)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(self.config.seed)
        self.dt = predictor.step
        self._warm: torch.Tensor | None = None
        self._stage: str | None = None     # of the last cycle (stages have hysteresis)
        self._heading: torch.Tensor | None = None   # of the last approach or push cycle

    @property
    def joints(self) -> int:
        return self.chain.dof

    def reset(self, seed: int | None = None) -> None:
        """Forget the warm start (new goal, or the robot was moved by someone else); with a
        seed, also restart the sampling noise (reproducible episodes)."""
        self._warm = None
        self._stage = None
        self._heading = None
        if seed is not None:
            self.generator.manual_seed(seed)

    @property
    def last_stage(self) -> str | None:
        """The stage of the last cycle (`costs.stage`; None before the first)."""
        return self._stage

    def advance(self, steps: int) -> None:
        """The first `steps` steps of the last plan were executed: shift the warm start."""
        if self._warm is not None:
            fill = self._warm[-1].clone()
            fill[:self.joints] = 0.0      # at rest beyond the horizon
            self._warm = shift(self._warm, steps, fill)

    def _rollout(self, world: WorldState, anchor, actions):
        knots = integrate(*anchor, actions[..., :self.joints], self.limits, self.dt)
        gripper = actions[..., self.joints]
        futures = self.predictor.predict(world, knots[0], gripper)
        return knots, gripper, futures

    def plan(self, world: WorldState, anchor: tuple, goal: Goal, scene: Scene,
             gripper_command: float, budget_s: float | None = None,
             lead_s: float = 0.0, sighting_age_s: float = 0.0,
             tool_seen: torch.Tensor | None = None) -> Plan:
        """One cycle. world: the measured state (objects included); anchor: the position,
        velocity and acceleration (each (J,)) the controller commands when the plan starts,
        lead_s seconds after the state was measured; sighting_age_s: how old the goal
        object's pose is when the plan starts (`costs.sighting_age`: the push slows near the
        target accordingly); tool_seen: the tool's position (3,) when the goal's object was
        last seen (`costs.stage`; None: as now). Raises ValueError for a goal the state cannot
        serve (its object is not in the scene)."""
        start = time.perf_counter()
        c, dev = self.config, self.device
        world = world.to(dev)
        anchor = tuple(torch.as_tensor(x, dtype=torch.float32, device=dev) for x in anchor)
        goal = replace(goal, **{name: getattr(goal, name).to(dev).float()
                                for name in ("position", "rotation", "path_start")
                                if getattr(goal, name) is not None})
        if goal.kind == OBJECT:
            goal_object_index(goal, world.object_ids)
        j, h = self.joints, c.horizon
        vmax = self.limits.velocity
        ee_now = self.chain.forward(world.joint_positions)
        extents = world.object_extents.float()
        now = stage(c.weights, goal, ee_now, world.object_ids, world.object_positions,
                    world.object_rotations.float(), extents, scene, self._stage,
                    None if tool_seen is None else tool_seen.to(dev).float())
        error, _ = goal_error(goal, ee_now, world.object_ids, world.object_positions,
                              world.object_rotations)
        if now.name == "push":
            now = replace(now, tool=(ee_now[:3, 3], lead_s + self.dt),
                          speed=push_speed_limit(scene, error, sighting_age_s))
        if now.name in ("approach", "push"):
            self._heading = tool_heading(self.chain, anchor[0], now.direction, self.limits,
                                         self._heading, c.heading_room, scene.limit_margin)
            now = replace(now, heading=self._heading)
        if now.name == "hold" and self._stage != "hold":
            self._warm = None      # the push that got it there must not go on
        self._stage = now.name
        warm = self._warm is not None and self._warm.shape == (h, j + 1)
        mean = self._warm.clone() if warm else torch.zeros(h, j + 1, device=dev)
        if not warm or c.gripper_std <= 0:
            mean[:, j] = gripper_command
        std = torch.cat([vmax * c.init_std,
                         torch.tensor([max(c.gripper_std, 1e-6)], device=dev)])
        std = std.expand(h, -1).clone()
        # Near the goal large samples only overshoot: explore less the closer it is.
        std[:, :j] *= min(1.0, max(0.2, error / c.fine_radius))
        lower = torch.cat([-vmax, torch.zeros(1, device=dev)])
        upper = torch.cat([vmax, torch.tensor([self.limits.gripper_max], device=dev)])

        def cost_fn(actions):
            knots, _, futures = self._rollout(world, anchor, actions)
            links = self.chain.link_poses(knots[0])
            total, _ = evaluate(futures, knots[0], links, goal, now, self.spheres, scene,
                                self.limits, self.dt, extents)
            return total

        # Always candidates: brake and stay, and straight towards the stage's target.
        target = guide_target(goal, now, self.chain.forward(anchor[0]), world.object_ids,
                              world.object_positions, extents, scene)
        speeds = () if target is None else c.guide_speeds if now.name != "push" else \
            tuple(min(speed, now.speed) for speed in c.push_speeds)
        candidates = torch.zeros(1 + len(speeds), h, j + 1, device=dev)
        candidates[..., j] = gripper_command
        if speeds and goal.path_start is not None:     # a goal that keeps to a line
            # Knot by knot: a few dozen small steps, quicker on the CPU than on a GPU.
            line = (goal.path_start.cpu(), goal.position.cpu())
            candidates[1:, :, :j] = line_guides(self.cpu_chain, anchor[0].cpu(), line,
                                                self.cpu_limits, self.dt, h, speeds).to(dev)
        elif speeds:
            candidates[1:, :, :j] = guides(self.chain, anchor[0], target, self.limits,
                                           self.dt, h, speeds)
        result = self.sampler.optimize(cost_fn, mean, std, lower, upper, self.generator,
                                       budget_s, candidates)
        self._warm = result.mean.clone()

        # The plan and the best other samples, imagined once more for display and scoring.
        m = min(c.top_futures, result.samples.shape[0])
        others = result.samples[torch.topk(result.costs, m, largest=False).indices]
        shown = torch.cat([result.best[None], others[:m - 1]], 0)
        (targets, vel, acc), gripper, futures = self._rollout(world, anchor, shown)
        links = self.chain.link_poses(targets)
        total, terms = evaluate(futures, targets, links, goal, now, self.spheres, scene,
                                self.limits, self.dt, extents)
        prob = self._success_probability(futures, goal)
        # What is sent goes to the CPU; the futures stay on the device (for display).
        return Plan(targets[0].cpu(), vel[0].cpu(), acc[0].cpu(), gripper[0].cpu(),
                    float(total[0]),
                    {k: float(v[0]) for k, v in terms.items()}, float(prob[0]),
                    result.iterations, time.perf_counter() - start, futures, total,
                    result.cost_history, now.name)

    def _success_probability(self, futures: Futures, goal: Goal) -> torch.Tensor:
        """(M,) predicted probability that each future ends within the goal's tolerance."""
        if goal.kind == OBJECT:
            k = goal_object_index(goal, futures.object_ids)
            error = (futures.object_positions[:, -1, k, :2] - goal.position[:2]).norm(dim=-1)
            std = None if futures.object_position_std is None \
                else futures.object_position_std[:, -1, k]
        else:
            error = (futures.ee_poses[:, -1, :3, 3] - goal.position).norm(dim=-1)
            std = None
        return success_probability(error, std, goal.position_tolerance)


def build_planner(model: str, checkpoint, config: PlannerConfig | None = None,
                  acceleration=PANDA_ACCELERATION, jerk=PANDA_JERK, limit_scale: float = 0.5,
                  device="cpu") -> MPCPlanner:
    """A planner on the `learned` or `static` world model of a checkpoint directory (its
    robot.urdf gives the limits and the collision spheres)."""
    predictor = make_predictor(model, checkpoint, device=device)
    urdf = (Path(checkpoint) / "robot.urdf").read_text()
    limits = ArmLimits.from_chain(predictor.chain, acceleration, jerk, limit_scale)
    return MPCPlanner(predictor, limits, ArmSpheres.from_urdf(urdf, predictor.chain), config)
