"""Goals and the costs that score imagined futures against them.

Every term maps (futures, targets, context) to a cost per sequence (N,); the total is their
sum weighted by `CostWeights` (a weight of 0 switches a term off). Terms:

  object          predicted distance of the goal object to its target (object goals)
  approach        end effector to the contact point behind the object, seen from the target
                  (object goals: brings the pusher into place before the object can move)
  ee_position     end effector to the target position (end-effector goals)
  ee_orientation  rotation angle between end effector and target (when constrained)
  tool_pose       tilt of the tool axis away from straight down, and its x axis away from
                  the push direction (object goals: pushes were learned that way)
  collision       arm spheres penetrating the table, obstacles of the scene memory, or
                  objects other than the goal object (within a safety margin)
  joint_limits    joints within `limit_margin` of a position limit
  smoothness      squared joint accelerations of the targets
  uncertainty     predicted position std of the objects (risk aversion)

Each term is averaged over the horizon with later steps weighted more (the end of the
horizon says where the plan leads; the beginning is what gets executed).

Object goals are staged (`stage`): until the tool is within `engage_distance` of the
contact point, the object term is off and the approach term doubled; while the tool is not
yet above the contact point, it approaches a point `approach_height` above it (so it comes
down behind the object, not onto it); once the object is within tolerance of its target,
only keeping it there counts. A learned model asked
about a tool that hovers near, but not behind, the object may predict motion that will not
happen; the sampler would find and exploit such futures.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch

from planner_node.collision import ArmSpheres, DistanceField, box_distance
from world_model_node.predictor import Futures

END_EFFECTOR, OBJECT = 0, 1   # GoalSpec.TARGET_*


@dataclass
class Goal:
    """What to achieve, in the world frame (REP-103: metres, radians)."""
    kind: int                                   # END_EFFECTOR or OBJECT
    position: torch.Tensor                      # (3,)
    rotation: torch.Tensor | None = None        # (3, 3); None: orientation free
    object_id: int | None = None
    position_tolerance: float = 0.02
    orientation_tolerance: float = -1.0         # < 0: not constrained


@dataclass
class CostWeights:
    object: float = 20.0
    approach: float = 4.0
    ee_position: float = 10.0
    ee_orientation: float = 3.0
    tool_pose: float = 2.0
    collision: float = 200.0
    joint_limits: float = 10.0
    smoothness: float = 1e-3
    uncertainty: float = 5.0

    @classmethod
    def names(cls) -> list:
        return [f.name for f in fields(cls)]


@dataclass
class Scene:
    """What the arm must not hit besides the objects: the table and a static distance field."""
    table_height: float = 0.0
    obstacles: DistanceField | None = None
    collision_margin: float = 0.01
    limit_margin: float = 0.1          # rad
    push_offset: float = 0.02          # m between the object's side and the contact point
    push_height: float = 0.025         # m above the table of the tool centre point
    engage_distance: float = 0.05      # m from the contact point at which pushing may start
    approach_height: float = 0.06      # m above the contact point from where the tool descends


def horizon_weights(h: int, device) -> torch.Tensor:
    """(H,) weights rising linearly to the end, summing to 1."""
    w = torch.arange(1, h + 1, dtype=torch.float32, device=device)
    return w / w.sum()


def rotation_angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle [rad] between rotations (..., 3, 3)."""
    trace = (a * b).sum((-1, -2))          # trace(a^T b)
    return torch.acos(((trace - 1) / 2).clamp(-1.0, 1.0))


def goal_object_index(goal: Goal, object_ids: list) -> int:
    if goal.object_id not in object_ids:
        raise ValueError(f"object {goal.object_id} is not in the scene (ids {object_ids})")
    return object_ids.index(goal.object_id)


def goal_error(goal: Goal, ee_pose: torch.Tensor, object_ids: list,
               object_positions: torch.Tensor, object_rotations: torch.Tensor) -> tuple:
    """(position error [m], orientation error [rad or nan]) of one state: ee_pose (4, 4),
    object positions (K, 3) and rotations (K, 3, 3). Object goals: horizontal distance on
    the table (the object rests on it)."""
    if goal.kind == OBJECT:
        k = goal_object_index(goal, object_ids)
        pos = float((object_positions[k, :2] - goal.position[:2]).norm())
        rot = object_rotations[k]
    else:
        pos = float((ee_pose[:3, 3] - goal.position).norm())
        rot = ee_pose[:3, :3]
    angle = float(rotation_angle(rot, goal.rotation)) if goal.rotation is not None \
        else math.nan
    return pos, angle


def contact_point(obj: torch.Tensor, goal: Goal, extent: torch.Tensor, scene: Scene):
    """Where the pusher should be to push an object at obj (..., 3) towards the goal: behind
    it on the line from the target through it, at push height. Returns (contact (..., 3),
    unit push direction (..., 2))."""
    to_target = goal.position[:2] - obj[..., :2]
    direction = to_target / to_target.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    reach = extent[:2].norm() + scene.push_offset
    contact = torch.cat([obj[..., :2] - reach * direction,
                         torch.full_like(obj[..., :1], scene.table_height
                                         + scene.push_height)], -1)
    return contact, direction


def evaluate(futures: Futures, targets: torch.Tensor, link_poses: torch.Tensor,
             goal: Goal, weights: CostWeights, spheres: ArmSpheres, scene: Scene,
             limits, dt: float, extents: torch.Tensor,
             approach_target: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Total cost (N,) and each weighted term (N,) of N futures.

    targets (N, H, J) joint targets; link_poses (N, H, L, 4, 4) of the predicted joints;
    extents (K, 3) object half sizes; limits an ArmLimits; approach_target (3,): where the
    tool approaches to, fixed (see `stage`); None: the contact point behind the predicted
    object."""
    n, h, _ = targets.shape
    w = horizon_weights(h, targets.device)
    ee = futures.ee_poses                                   # (N, H, 4, 4)
    tcp = ee[..., :3, 3]
    terms = {}

    def over_horizon(x):                                    # (N, H) -> (N,)
        return (x * w).sum(-1)

    goal_k = None
    if goal.kind == OBJECT:
        goal_k = goal_object_index(goal, futures.object_ids)
        obj = futures.object_positions[:, :, goal_k]        # (N, H, 3)
        to_target = goal.position[:2] - obj[..., :2]
        terms["object"] = over_horizon(to_target.norm(dim=-1))
        contact, direction = contact_point(obj, goal, extents[goal_k], scene)
        if approach_target is not None:
            contact = approach_target.expand_as(contact)
        # Height errors count twice: a tool pushing high tips the object over.
        miss = (tcp - contact) * tcp.new_tensor([1.0, 1.0, 2.0])
        # Once the object is at its target the pusher has nothing left to do.
        done = (to_target.norm(dim=-1) < goal.position_tolerance / 2).float()
        terms["approach"] = over_horizon(miss.norm(dim=-1) * (1 - done))
        # Tool z axis down (its world z component -1), x axis along the push (either sign).
        along = (ee[..., :2, 0] * direction).sum(-1)
        terms["tool_pose"] = over_horizon(1 + ee[..., 2, 2] + (1 - along ** 2))
        if futures.object_position_std is not None:
            terms["uncertainty"] = over_horizon(futures.object_position_std[:, :, goal_k])
    else:
        terms["ee_position"] = over_horizon((tcp - goal.position).norm(dim=-1))
        if goal.rotation is not None:
            terms["ee_orientation"] = over_horizon(rotation_angle(ee[..., :3, :3],
                                                                  goal.rotation))
        if futures.object_position_std is not None and futures.object_ids:
            terms["uncertainty"] = over_horizon(futures.object_position_std.mean(-1))

    centres = spheres.centres(link_poses)                   # (N, H, S, 3)
    radii = spheres.radii
    depth = (scene.table_height + radii + scene.collision_margin - centres[..., 2]).clamp(min=0)
    penetration = depth.sum(-1)
    if scene.obstacles is not None:
        free = scene.obstacles.distance(centres) - radii - scene.collision_margin
        penetration = penetration + (-free).clamp(min=0).sum(-1)
    others = [k for k in range(len(futures.object_ids)) if k != goal_k]
    if others:
        d = box_distance(centres, futures.object_positions[:, :, others],
                         futures.object_rotations[:, :, others], extents[others])
        free = d - radii[:, None] - scene.collision_margin
        penetration = penetration + (-free).clamp(min=0).sum((-1, -2))
    terms["collision"] = over_horizon(penetration)

    margin = scene.limit_margin
    near = ((limits.lower + margin - targets).clamp(min=0)
            + (targets - limits.upper + margin).clamp(min=0))
    terms["joint_limits"] = over_horizon(near.sum(-1))
    if h > 2:
        acc = (targets[:, 2:] - 2 * targets[:, 1:-1] + targets[:, :-2]) / (dt * dt)
        terms["smoothness"] = (acc ** 2).sum(-1).mean(-1)

    weighted = {name: getattr(weights, name) * value for name, value in terms.items()}
    return sum(weighted.values()), weighted


def stage(weights: CostWeights, goal: Goal, ee_pose: torch.Tensor, object_ids: list,
          object_positions: torch.Tensor, extents: torch.Tensor, scene: Scene) -> tuple:
    """(weights, approach target (3,) or None) for the current state (tool pose (4, 4),
    objects (K, 3)): object goals approach a fixed point above, then at, the contact point
    behind the object where it is now, then push (None: the approach follows the
    predicted object)."""
    if goal.kind != OBJECT:
        return weights, None
    k = goal_object_index(goal, object_ids)
    if float((object_positions[k, :2] - goal.position[:2]).norm()) <= goal.position_tolerance:
        # There: keep it there. (The contact point, behind the object on the line from the
        # target, swings around when the object is near its target; chasing it would push
        # the object off again.)
        return replace(weights, approach=0.0), None
    contact, _ = contact_point(object_positions[k], goal, extents[k], scene)
    tcp = ee_pose[:3, 3]
    if float((tcp - contact).norm()) <= scene.engage_distance:
        return weights, None
    if float((tcp[:2] - contact[:2]).norm()) > scene.engage_distance:
        contact = contact + contact.new_tensor([0.0, 0.0, scene.approach_height])
    # A fixed target: futures in which the model imagines the object sliding towards the
    # tool do not bring the tool any closer.
    return replace(weights, object=0.0, approach=2 * weights.approach), contact


def success_probability(error: torch.Tensor, std: torch.Tensor | None,
                        tolerance: float) -> torch.Tensor:
    """Probability that a predicted error (N,) [m] with std (N,) [m] ends within tolerance
    (the error treated as Gaussian along the line to the target); a step function without
    a std."""
    if std is None:
        return (error <= tolerance).float()
    z = (tolerance - error) / std.clamp(min=1e-6)
    return 0.5 * (1 + torch.erf(z / math.sqrt(2)))
