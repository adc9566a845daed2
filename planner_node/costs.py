"""Goals and the costs that score imagined futures against them.

Every term maps (futures, targets, context) to a cost per sequence (N,); the total is their
sum weighted by `CostWeights` (a weight of 0 switches a term off). Terms:

  object          predicted distance of the goal object to its target (object goals;
                  pushing, between where the tool's face is and where it has been:
                  `pushed_bound`)
  approach        object goals: the tool's distance from the contact point behind the
                  object where it is now, plus its depth below the approach funnel
                  (approach), or from the push line behind the predicted object (push:
                  sideways, too far back, off the push height); height errors count twice
  ee_position     end effector to the target position (end-effector goals)
  ee_orientation  rotation angle between end effector and target (when constrained; to
                  the nearest of the target's symmetric turns, `goal_angle`)
  ee_path         the tool's distance from the straight line from the goal's `path_start`
                  to its position (end-effector goals that set one: a withdrawal from an
                  object, which must not sweep across it)
  tool_pose       tilt of the tool axis away from straight down, and its x axis away from
                  the push direction, the stage's `heading` way round (object goals:
                  pushes were learned that way)
  tool_speed      tool speed above the push's limit [m/s] (`push_speed_limit`: at most
                  `Scene.push_speed`, the pushes the model learned from were that slow and
                  faster ones it can only guess at; slower as the object nears its target
                  the more the perception lags), from where the tool is measured on: each
                  step's speed, and the average speed from the measured tool to each knot,
                  which bounds how far a command may run ahead of an arm held up
  collision       arm spheres penetrating the table, obstacles of the scene memory or
                  objects other than the goal object (within a safety margin), or
                  (approach) the goal object where it is now
  joint_limits    joints within `limit_margin` of a position limit
  smoothness      squared joint accelerations of the targets
  uncertainty     predicted position std of the objects (risk aversion)

The goal terms (object, approach, ee_*, tool_pose, uncertainty) are averaged over the
horizon with later steps weighted more (the end of the horizon says where the plan leads);
the limits (ee_path, tool_speed, collision, joint_limits, smoothness) weigh every step
alike: the first steps are the ones executed.

The arm's terms score the commanded motion (joint targets through forward kinematics),
the objects' the prediction.

Object goals are staged (`stage`). `approach`: the tool comes down a funnel (a cone from
`approach_height` above the contact point, `approach_radius` away from it, to the point;
below it costs) to the contact point behind the object where it is now, without touching
the object. The world model's object predictions do not count then (the object term and
the uncertainty are off): a learned model asked about a tool that hovers near, but not
behind, an object predicts motion that does not happen, and the sampler would exploit or
flee from it. `push` starts within `engage_distance` of the contact point (height errors
counted twice) and lasts while the tool stays low at the object's back, along the push
direction from where the object is at the cycle's start (seen from a predicted object near
its target, the line to the target swings around). `hold`: the object is within tolerance
of its target; only keeping it there counts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch

from gsplat_scene.queries import box_distance
from planner_node.collision import DistanceField
from robot_model.spheres import ArmSpheres
from world_model_node.model import so3_exp
from world_model_node.predictor import Futures, WorldState

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
    path_start: torch.Tensor | None = None      # (3,) end-effector goals: the tool keeps
    #                                             to the line from here to `position`
    symmetry: int = 1                           # the rotation is reached at any of this many
    #                                             equal turns of it about the world vertical


@dataclass
class CostWeights:
    object: float = 20.0
    approach: float = 4.0
    ee_position: float = 10.0
    ee_orientation: float = 3.0
    ee_path: float = 100.0
    tool_pose: float = 2.0
    tool_speed: float = 30.0
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
    engage_distance: float = 0.025     # m from the contact point (height counted twice): push
    approach_height: float = 0.06      # m above the contact point from where the tool descends
    approach_radius: float = 0.02      # m around the contact point in which it descends
    push_speed: float = 0.1            # m/s of the tool while pushing, at most
    min_push_speed: float = 0.02       # m/s: the push slows to this near the target at most
    push_stop_time: float = 0.2        # s the tool and the object take to stop
    tool_radius: float = 0.0105        # m from the tool centre point to the face that pushes
    reckoning_margin: float = 0.01     # m inside the tolerance a reckoned object must be
    push_gripper_width: float = 0.03   # m between the finger pads while pushing, at most


PAD_INSET = 0.01   # m the finger pads' inner edges keep inside a pushed object's narrowest side


def push_opening(extent: torch.Tensor, widest: float) -> float:
    """Gripper width [m] for pushing an object of half sizes extent (3,): up to `widest`,
    with the pads' inner edges `PAD_INSET` inside its narrowest side (closed for a narrow
    object). Both fingers then meet the face it is pushed by, one on each side of the push
    line, and an object that starts to turn is pushed back square; a closed hand is a single
    contact, about which a push turns the object further."""
    return float(min(widest, max(0.0, 2 * float(extent[:2].min()) - 2 * PAD_INSET)))


def horizon_weights(h: int, device) -> torch.Tensor:
    """(H,) weights rising linearly to the end, summing to 1."""
    w = torch.arange(1, h + 1, dtype=torch.float32, device=device)
    return w / w.sum()


def rotation_angle(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Angle [rad] between rotations (..., 3, 3)."""
    trace = (a * b).sum((-1, -2))          # trace(a^T b)
    return torch.acos(((trace - 1) / 2).clamp(-1.0, 1.0))


def symmetric_targets(goal: Goal) -> torch.Tensor:
    """(n, 3, 3) the goal's target rotation (which must be set) turned about the world
    vertical by each of its `symmetry` equal turns."""
    n = max(1, goal.symmetry)
    turns = torch.zeros(n, 3, dtype=goal.rotation.dtype, device=goal.rotation.device)
    turns[:, 2] = torch.arange(n).to(turns) * (2 * math.pi / n)   # rotation vectors
    return so3_exp(turns) @ goal.rotation


def goal_angle(rotation: torch.Tensor, goal: Goal) -> torch.Tensor:
    """Angle [rad] of rotations (..., 3, 3) from the goal's target rotation (which must be
    set): to the nearest of its symmetric turns (`symmetric_targets`)."""
    if goal.symmetry <= 1:
        return rotation_angle(rotation, goal.rotation)
    return rotation_angle(rotation[..., None, :, :], symmetric_targets(goal)).min(-1).values


def nearest_target(rotation: torch.Tensor, goal: Goal) -> torch.Tensor:
    """(3, 3) the goal's symmetric turn of its target rotation nearest to rotation (3, 3)."""
    targets = symmetric_targets(goal)
    return targets[int(rotation_angle(rotation, targets).argmin())]


def goal_object_index(goal: Goal, object_ids: list) -> int:
    if goal.object_id not in object_ids:
        raise ValueError(f"object {goal.object_id} is not in the scene (ids {object_ids})")
    return object_ids.index(goal.object_id)


def gripper_command(goal: Goal, world: WorldState, scene: Scene) -> float:
    """The gripper width [m] a goal is planned and executed with: the present one for an
    end-effector goal, apart for an object goal's push (`push_opening`)."""
    if goal.kind != OBJECT:
        return float(world.gripper)
    k = goal_object_index(goal, world.object_ids)
    return push_opening(world.object_extents[k], scene.push_gripper_width)


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
    angle = float(goal_angle(rot, goal)) if goal.rotation is not None else math.nan
    return pos, angle


def contact_point(obj: torch.Tensor, goal: Goal, extent: torch.Tensor, scene: Scene,
                  direction: torch.Tensor | None = None):
    """Where the pusher should be to push an object at obj (..., 3) towards the goal: behind
    it on the line from the target through it (or along a given unit direction (2,)), at
    push height. Returns (contact (..., 3), unit push direction (..., 2))."""
    if direction is None:
        to_target = goal.position[:2] - obj[..., :2]
        direction = to_target / to_target.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    reach = extent[:2].norm() + scene.push_offset
    contact = torch.cat([obj[..., :2] - reach * direction,
                         torch.full_like(obj[..., :1], scene.table_height
                                         + scene.push_height)], -1)
    return contact, direction


def push_ceiling(scene: Scene) -> float:
    """The highest [m] the tool centre point pushes from: `engage_distance` above push
    height."""
    return scene.table_height + scene.push_height + scene.engage_distance


def face_reach(extent: torch.Tensor, rotation: torch.Tensor, direction: torch.Tensor) -> float:
    """How far [m] a box of half sizes extent (3,) turned by rotation (3, 3) reaches from its
    centre along a horizontal unit direction (2,)."""
    local = rotation[:2, :].T @ direction             # the direction in the box's frame (3,)
    return float((local.abs() * extent).sum())


def pushed_bound(obj: torch.Tensor, tcp: torch.Tensor, origin: torch.Tensor,
                 direction: torch.Tensor, extent: torch.Tensor, rotation: torch.Tensor,
                 scene: Scene, follows: torch.Tensor | None = None) -> torch.Tensor:
    """(N, H, 3) predicted positions obj (N, H, 3) of an object (half sizes extent (3,),
    turned by rotation (3, 3)) pushed from origin (3,) along direction (2,), moved along it
    to where the tool at tcp (N, H, 3) can have put it, the tool low (`push_ceiling`):
      - no farther than the tool's face (`tool_radius` ahead of it) has been by then, plus
        the object's reach from its centre towards the tool, counting the steps where the
        tool was beside the object's line by at most its half diagonal: a learned model
        asked about a tool that stands or wanders behind the object may predict it moving
        anyway (the pushes it learned from all went on), and the sampler would exploit that
        instead of pushing;
      - not behind the tool's face where the tool is in front of its face (beside the
        predicted object by at most its smallest half size), for the sequences whose arm
        follows its command (follows (N,) bool; None: all): a model may predict a push
        that leaves the object where it is, and with the tool imagined passing through it
        "brake and stay" scores best. An arm held up (at a turned object's corner, say)
        does not follow, and the object stays where the model has it."""
    shift = torch.cat([direction, direction.new_zeros(1)])
    low = tcp[..., 2] <= push_ceiling(scene)

    def along_and_sideways(points):                       # of the tool from points (..., 3)
        rel = tcp[..., :2] - points[..., :2]
        along = (rel * direction).sum(-1)                 # negative behind the object
        return along, (rel - along[..., None] * direction).norm(dim=-1)

    along, sideways = along_and_sideways(origin)
    reach = face_reach(extent, rotation, direction)
    face = torch.where(low & (sideways <= float(extent[:2].norm())),
                       along + scene.tool_radius + reach, torch.zeros_like(along))
    pushed = face.clamp(min=0).cummax(-1).values
    progress = ((obj[..., :2] - origin[:2]) * direction).sum(-1)
    obj = obj - (progress - pushed).clamp(min=0)[..., None] * shift
    along, sideways = along_and_sideways(obj)
    inside = along + scene.tool_radius + float(extent[:2].min())
    front = low & (sideways <= float(extent[:2].min()))
    if follows is not None:
        front = front & follows[:, None]
    inside = torch.where(front, inside.clamp(min=0), torch.zeros_like(inside))
    return obj + inside[..., None] * shift


@dataclass
class Stage:
    """What a goal asks of the tool now (see `stage`)."""
    name: str                                   # reach, approach, push or hold
    weights: CostWeights
    direction: torch.Tensor | None = None       # (2,) object goals: of the push, from the
    #                                             object where it is now to its target
    contact: torch.Tensor | None = None         # (3,) approach: behind the object as it is
    object_pose: tuple | None = None            # approach and push: the object where it is
    #                                             at the cycle's start (position (3,),
    #                                             rotation (3, 3))
    tool: tuple | None = None                   # push: (measured tool position (3,), time
    #                                             [s] from its measurement to the first knot)
    speed: float | None = None                  # push: the tool's speed limit [m/s]
    heading: torch.Tensor | None = None         # (2,) approach and push: the way the tool's
    #                                             x axis should point, +-direction
    #                                             (`guides.tool_heading`; None: either)


def contact_miss(tcp: torch.Tensor, contact: torch.Tensor) -> torch.Tensor:
    """(...) distance of tool positions (..., 3) from contact points (..., 3), height errors
    counted twice (pushing high tips the object over)."""
    return ((tcp - contact) * tcp.new_tensor([1.0, 1.0, 2.0])).norm(dim=-1)


def push_line_miss(tcp: torch.Tensor, obj: torch.Tensor, contact: torch.Tensor,
                   direction: torch.Tensor) -> torch.Tensor:
    """(...) how far tool positions (..., 3) are off the push of objects at obj (..., 3)
    from their contact points (..., 3) along direction (2,): sideways, farther back than
    the contact point, or off its height (counted twice); nearer to the object than the
    contact point is pushing and costs nothing."""
    rel = tcp[..., :2] - obj[..., :2]
    along = (rel * direction).sum(-1)                       # negative behind the object
    sideways = (rel - along[..., None] * direction).norm(dim=-1)
    reach = (obj[..., :2] - contact[..., :2]).norm(dim=-1)
    back = (-along - reach).clamp(min=0)
    return torch.sqrt(sideways ** 2 + back ** 2 + (2 * (tcp[..., 2] - contact[..., 2])) ** 2)


def nearest_on_segment(points: torch.Tensor, start: torch.Tensor,
                       end: torch.Tensor) -> torch.Tensor:
    """(..., 3) the points of the segment from start (3,) to end (3,) nearest to points
    (..., 3)."""
    span = end - start
    along = ((points - start) * span).sum(-1) / (span * span).sum().clamp(min=1e-12)
    return start + along.clamp(0.0, 1.0)[..., None] * span


def segment_distance(points: torch.Tensor, start: torch.Tensor,
                     end: torch.Tensor) -> torch.Tensor:
    """(...) distance of points (..., 3) from the segment from start (3,) to end (3,)."""
    return (points - nearest_on_segment(points, start, end)).norm(dim=-1)


def funnel_distance(tcp: torch.Tensor, contact: torch.Tensor, scene: Scene) -> torch.Tensor:
    """(...) approach cost of tool positions (..., 3) for the contact point (3,): the
    distance to it (`contact_miss`) plus twice the depth below the approach funnel, a cone
    from `approach_height` above the point at `approach_radius` from it down to the point
    (the tool comes down behind the object, not across it)."""
    across = (tcp[..., :2] - contact[:2]).norm(dim=-1)
    floor = contact[2] + scene.approach_height * (across / scene.approach_radius).clamp(max=1)
    return contact_miss(tcp, contact) + 2 * (floor - tcp[..., 2]).clamp(min=0)


def reachable(tcp: torch.Tensor, position: torch.Tensor, direction: torch.Tensor,
              reach: torch.Tensor) -> tuple:
    """Tool positions tcp (N, H, 3) held back along the push direction (2,) to where the arm
    can be by each knot: at most reach (H,) [m] beyond the tool measured at position (3,). A
    command that runs ahead of an arm held up by the object pushes nothing yet. Returns them
    and whether each sequence's first knot lies within that reach (N,): the arm follows its
    command."""
    ahead = ((tcp[..., :2] - position[:2]) * direction).sum(-1) - reach
    held = tcp - ahead.clamp(min=0)[..., None] * torch.cat([direction, direction.new_zeros(1)])
    return held, ahead[:, 0] <= 0


def evaluate(futures: Futures, targets: torch.Tensor, link_poses: torch.Tensor,
             goal: Goal, now: Stage, spheres: ArmSpheres, scene: Scene,
             limits, dt: float, extents: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Total cost (N,) and each weighted term (N,) of N futures in the stage `now`.

    targets (N, H, J) joint targets; link_poses (N, H, L, 4, 4) at the targets, the tool
    last (the arm's terms score what the controller is told to do, which a stiff position
    controller does: a model's guess that the arm lags behind its targets must not make a
    violent command look gentle); extents (K, 3) object half sizes; limits an ArmLimits."""
    n, h, _ = targets.shape
    weights = now.weights
    w = horizon_weights(h, targets.device)
    ee = link_poses[..., -1, :, :]                          # (N, H, 4, 4) tool
    tcp = ee[..., :3, 3]
    terms = {}

    def over_horizon(x):                                    # (N, H) -> (N,)
        return (x * w).sum(-1)

    goal_k = None
    if goal.kind == OBJECT:
        goal_k = goal_object_index(goal, futures.object_ids)
        obj = futures.object_positions[:, :, goal_k]        # (N, H, 3)
        if now.name == "push":
            position, seconds = now.tool                    # measured, to the first knot
            times = seconds + dt * torch.arange(h, dtype=torch.float32, device=tcp.device)
            limit = scene.push_speed if now.speed is None else now.speed
            if now.object_pose is not None:
                origin, rotation = now.object_pose
                tool, follows = reachable(tcp, position, now.direction, limit * times)
                obj = pushed_bound(obj, tool, origin, now.direction, extents[goal_k],
                                   rotation, scene, follows)
        to_target = goal.position[:2] - obj[..., :2]
        terms["object"] = over_horizon(to_target.norm(dim=-1))
        contact, direction = contact_point(obj, goal, extents[goal_k], scene, now.direction)
        if now.contact is not None:
            terms["approach"] = over_horizon(funnel_distance(tcp, now.contact, scene))
        else:
            # On the push line behind the predicted object (no "done" switch on it: a model
            # that imagines the object at its target would set the tool free; `stage`
            # switches on the measured one).
            terms["approach"] = over_horizon(push_line_miss(tcp, obj, contact, direction))
        # Tool z axis down (its world z component -1), x axis along the push: along the
        # heading, costing more the more it is turned from it (the heading's sign), else
        # either way round.
        if now.heading is None:
            along = (ee[..., :2, 0] * direction).sum(-1)
            turned = 1 - along ** 2
        else:
            along = (ee[..., :2, 0] * now.heading.to(ee)).sum(-1)
            turned = 1 - along * along.abs()
        terms["tool_pose"] = over_horizon(1 + ee[..., 2, 2] + turned)
        if now.name == "push":
            # From where the tool is: a command that ran ahead of an arm held up by the
            # object counts as fast, so plans that let it wind up cost. The average speed
            # from the measured tool to each knot keeps costing until the arm has caught
            # up: a stiff controller chasing a wound-up command presses the tool down on
            # the object until table friction locks it (step speeds alone let the lead
            # grow by a step's allowance every cycle).
            path = torch.cat([position.expand(n, 1, 3), tcp], 1)        # (N, H + 1, 3)
            speed = (path[:, 1:] - path[:, :-1]).norm(dim=-1) / times.diff(
                prepend=times.new_zeros(1))
            average = (tcp - position).norm(dim=-1) / times
            terms["tool_speed"] = ((speed - limit).clamp(min=0)
                                   + (average - limit).clamp(min=0)).mean(-1)
        if futures.object_position_std is not None:
            terms["uncertainty"] = over_horizon(futures.object_position_std[:, :, goal_k])
    else:
        terms["ee_position"] = over_horizon((tcp - goal.position).norm(dim=-1))
        if goal.path_start is not None:
            terms["ee_path"] = segment_distance(tcp, goal.path_start, goal.position).mean(-1)
        if goal.rotation is not None:
            terms["ee_orientation"] = over_horizon(goal_angle(ee[..., :3, :3], goal))
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
    if now.name == "approach":
        position, rotation = now.object_pose
        d = box_distance(centres, position.expand(n, h, 1, 3), rotation.expand(n, h, 1, 3, 3),
                         extents[goal_k:goal_k + 1])
        # No margin: the contact point itself lies close to the object.
        penetration = penetration + (radii[:, None] - d).clamp(min=0).sum((-1, -2))
    if others:
        d = box_distance(centres, futures.object_positions[:, :, others],
                         futures.object_rotations[:, :, others], extents[others])
        free = d - radii[:, None] - scene.collision_margin
        penetration = penetration + (-free).clamp(min=0).sum((-1, -2))
    terms["collision"] = penetration.mean(-1)

    margin = scene.limit_margin
    near = ((limits.lower + margin - targets).clamp(min=0)
            + (targets - limits.upper + margin).clamp(min=0))
    terms["joint_limits"] = near.sum(-1).mean(-1)
    if h > 2:
        acc = (targets[:, 2:] - 2 * targets[:, 1:-1] + targets[:, :-2]) / (dt * dt)
        terms["smoothness"] = (acc ** 2).sum(-1).mean(-1)

    weighted = {name: getattr(weights, name) * value for name, value in terms.items()}
    return sum(weighted.values()), weighted


def stage(weights: CostWeights, goal: Goal, ee_pose: torch.Tensor, object_ids: list,
          object_positions: torch.Tensor, object_rotations: torch.Tensor,
          extents: torch.Tensor, scene: Scene, previous: str | None = None,
          tool_seen: torch.Tensor | None = None) -> Stage:
    """The stage of the current state: tool pose (4, 4), objects (K, 3) and (K, 3, 3);
    `previous` the stage of the last cycle (a push goes on while the tool stays at the
    object's back); tool_seen: the tool's position (3,) when the goal's object was seen,
    where perception lags (a pushed object has moved on with the tool since; None: now)."""
    if goal.kind != OBJECT:
        return Stage("reach", weights)
    k = goal_object_index(goal, object_ids)
    obj = object_positions[k]
    if float((obj[:2] - goal.position[:2]).norm()) <= goal.position_tolerance:
        # There: keep it there, wherever the tool is (and however it is turned).
        return Stage("hold", replace(weights, approach=0.0, tool_pose=0.0))
    contact, direction = contact_point(obj, goal, extents[k], scene)
    tcp = ee_pose[:3, 3]
    then = tcp if tool_seen is None else tool_seen
    if float(contact_miss(tcp, contact)) <= scene.engage_distance or (
            previous == "push" and at_the_back(then, obj, extents[k], direction, scene)
            and float(tcp[2]) <= float(then[2]) + scene.engage_distance):
        return Stage("push", weights, direction, object_pose=(obj, object_rotations[k]))
    return Stage("approach", replace(weights, object=0.0, uncertainty=0.0,
                                     approach=2 * weights.approach),
                 direction, contact, (obj, object_rotations[k]))


def push_speed_limit(scene: Scene, remaining: float, lag: float) -> float:
    """Fastest push [m/s] that does not carry the object past its target unseen: seen
    `remaining` [m] from the target `lag` [s] ago, the object may already be speed * lag
    further on, and it takes `push_stop_time` to stop. Between `min_push_speed` and
    `push_speed`."""
    unseen = max(lag, 0.0) + scene.push_stop_time
    return min(scene.push_speed, max(scene.min_push_speed, remaining / unseen))


def sighting_age(sighting: float | None, now: float) -> float:
    """How old [s] at `now` the goal object's pose is (last seen at `sighting`; None: not an
    object goal, 0). Hidden or not: a frame that hides the object while the tool pushes it
    says nothing about how far it has gone since (`push_speed_limit`)."""
    return 0.0 if sighting is None else max(0.0, now - sighting)


def at_the_back(tcp: torch.Tensor, obj: torch.Tensor, extent: torch.Tensor,
                direction: torch.Tensor, scene: Scene) -> bool:
    """Whether a tool at tcp (3,) is low (below the object's top for a cube on the table),
    near (at most `engage_distance` beyond the contact point) and behind an object at obj
    (3,) as seen along the push direction (2,) (within 45 degrees of it)."""
    behind = obj[:2] - tcp[:2]
    distance = float(behind.norm())
    low = float(tcp[2]) <= push_ceiling(scene)
    near = distance <= float(extent[:2].norm()) + scene.push_offset + scene.engage_distance
    return low and near and float((behind * direction).sum()) >= math.sqrt(0.5) * distance


def success_probability(error: torch.Tensor, std: torch.Tensor | None,
                        tolerance: float) -> torch.Tensor:
    """Probability that a predicted error (N,) [m] with std (N,) [m] ends within tolerance
    (the error treated as Gaussian along the line to the target); a step function without
    a std."""
    if std is None:
        return (error <= tolerance).float()
    z = (tolerance - error) / std.clamp(min=1e-6)
    return 0.5 * (1 + torch.erf(z / math.sqrt(2)))
