"""Guide sequences: resolved-rate motions towards the goal, scored among the samples.

Random samples find the broad motion but are poor at the last centimetres, where a small
move helps the cost less than the noise of a 7-D sample hurts it. A damped-least-squares
step along the tool's pose error does exactly that small move, so each cycle the planner
also scores a few such sequences (`guides`). They are candidates only: a guide wins when the
world model and the costs say it is best, never by construction.

Targets follow the stages of `costs.stage`: an end-effector goal's pose; for an
object goal the approach target (above the contact point, then the contact point), then
the place the tool reaches when the object is at its target, the tool level and its x axis
along the stage's `heading`; none while holding.
"""
from __future__ import annotations

import math

import torch

from planner_node.actions import ArmLimits
from planner_node.costs import (OBJECT, Goal, Scene, Stage, contact_point, goal_object_index,
                                nearest_on_segment, nearest_target)
from robot_model.kinematics import KinematicChain
from world_model_node.model import so3_log

DRIVEN = 0.05    # rad: a turn moving a joint less towards its limit does not count there


def push_rotation(heading: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) the pushing tool's orientation: z axis down, x axis along heading (..., 2)."""
    x = torch.cat([heading, torch.zeros_like(heading[..., :1])], -1)
    z = torch.zeros_like(x)
    z[..., 2] = -1.0
    return torch.stack([x, torch.linalg.cross(z, x), z], -1)


def tool_heading(chain: KinematicChain, q: torch.Tensor, direction: torch.Tensor,
                 limits: ArmLimits, previous: torch.Tensor | None = None, room: float = 0.8,
                 margin: float = 0.1, damping: float = 0.05) -> torch.Tensor:
    """(2,) which way along the push direction (2,) the tool's x axis should point for the
    arm at q (J,) (pushes were learned with it along the push, either way round).

    The way that turns the tool the least, unless that leaves a joint within `room` [rad] of
    a position limit and the other way leaves more: a wrist turned to its limit cannot follow
    the push direction when it swings (the object slid, a new approach), and the way round is
    then a half turn that no small sample finds. The `previous` heading (2,) is kept while
    turning to it keeps every joint `margin` [rad] inside its limits: switching mid-push
    would break the push off for a half turn. The joints after each turn about the vertical
    are estimated by one damped least-squares step on the tool's pose (position held); only
    joints it drives towards a limit (by more than `DRIVEN` rad) count: an elbow bent near
    its limit is no reason to turn the wrist round."""
    direction = direction.to(q)
    headings = torch.stack([direction, -direction])
    x = chain.forward(q)[:2, 0]
    yaw = torch.atan2(x[0] * headings[:, 1] - x[1] * headings[:, 0], headings @ x)   # (2,)
    error = torch.zeros(2, 6, dtype=q.dtype, device=q.device)
    error[:, 5] = yaw
    turned = q + damped_step(pose_jacobian(chain, q), error, damping)      # (2, J)
    lower, upper = limits.lower.to(q), limits.upper.to(q)
    after = torch.minimum(turned - lower, upper - turned)
    driven = after < torch.minimum(q - lower, upper - q) - DRIVEN
    left = torch.where(driven, after, torch.full_like(after, math.inf)).min(-1).values.tolist()
    if previous is not None:
        kept = 0 if float(previous.to(q) @ direction) >= 0 else 1
        if left[kept] >= margin:
            return headings[kept]
    least = int(yaw.abs().argmin())
    other = 1 - least
    return headings[other] if left[least] < room and left[other] > left[least] \
        else headings[least]


def guide_target(goal: Goal, now: Stage, ee_pose: torch.Tensor, object_ids: list,
                 object_positions: torch.Tensor, extents: torch.Tensor,
                 scene: Scene) -> tuple | None:
    """Where the tool should head in stage `now`: (position (3,), rotation (3, 3) or None);
    None when holding (staying put is the guide)."""
    if goal.kind != OBJECT:
        return goal.position, None if goal.rotation is None else \
            nearest_target(ee_pose[:3, :3], goal)
    if now.name == "hold":
        return None
    k = goal_object_index(goal, object_ids)
    contact, direction = contact_point(object_positions[k], goal, extents[k], scene,
                                       now.direction)
    rotation = push_rotation(now.heading)
    if now.name == "approach":     # down the funnel: above the contact point, then into it
        if float((ee_pose[:2, 3] - contact[:2]).norm()) > scene.approach_radius:
            return contact + contact.new_tensor([0.0, 0.0, scene.approach_height]), rotation
        return contact, rotation
    # Push: the tool goes where it is when the object sits on its target.
    reach = float((object_positions[k, :2] - contact[:2]).norm())
    return torch.cat([goal.position[:2] - reach * direction, contact[2:]]), rotation


def pose_jacobian(chain: KinematicChain, q: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """(..., 6, J) Jacobian of the tool's (position, rotation vector) in the world frame at
    q (..., J), by central differences (one batched forward pass)."""
    j = q.shape[-1]
    offsets = torch.cat([torch.eye(j), -torch.eye(j)]).to(q) * eps
    poses = chain.forward(q[..., None, :] + offsets)          # (..., 2J, 4, 4)
    plus, minus = poses[..., :j, :, :], poses[..., j:, :, :]
    dp = (plus[..., :3, 3] - minus[..., :3, 3]) / (2 * eps)
    dr = so3_log(plus[..., :3, :3] @ minus[..., :3, :3].transpose(-1, -2)) / (2 * eps)
    return torch.cat([dp, dr], -1).transpose(-1, -2)


def damped_step(jac: torch.Tensor, error: torch.Tensor, damping: float) -> torch.Tensor:
    """(..., J) damped least-squares joint step for a task error (..., E) through the
    Jacobian (..., E, J)."""
    jt = jac.transpose(-1, -2)
    gram = jac @ jt + damping ** 2 * torch.eye(jac.shape[-2]).to(jac)
    return (jt @ torch.linalg.solve(gram, error[..., None]))[..., 0]


def guides(chain: KinematicChain, q: torch.Tensor, target: tuple, limits: ArmLimits,
           dt: float, horizon: int, speeds=(0.25, 0.1), damping: float = 0.05) -> torch.Tensor:
    """(S, H, J) desired joint velocities that move the tool from its pose at q (J,) straight
    towards target (position (3,), rotation (3, 3) or None) at each Cartesian speed [m/s]
    (no faster than the velocity limits allow) and stop there. Damped least squares,
    linearised at q: the plan is re-guided every cycle."""
    position, rotation = (None if x is None else x.to(q) for x in target)
    pose = chain.forward(q)
    error = position - pose[:3, 3]
    jac = pose_jacobian(chain, q)
    if rotation is not None:
        error = torch.cat([error, so3_log(rotation @ pose[:3, :3].T)])
    else:
        jac = jac[:3]
    step = damped_step(jac, error, damping)                   # (J,) rad to the target
    distance = float(error[:3].norm())
    joint_time = float((step.abs() / limits.velocity.to(q)).max())
    out = []
    t = (torch.arange(horizon, dtype=q.dtype, device=q.device) + 1) * dt
    for speed in speeds:
        duration = max(distance / speed, joint_time, dt)
        # The share of each step spent moving, so the sequence covers exactly `step`.
        share = ((duration - (t - dt)) / dt).clamp(0.0, 1.0)
        out.append(share[:, None] * step / duration)
    return torch.stack(out)


def line_guides(chain: KinematicChain, q: torch.Tensor, line: tuple, limits: ArmLimits,
                dt: float, horizon: int, speeds=(0.25, 0.1),
                damping: float = 0.02) -> torch.Tensor:
    """(S, H, J) desired joint velocities that move the tool at q (J,) along the straight
    line (start (3,), end (3,)) to its end at each Cartesian speed [m/s] (no faster than
    the velocity limits allow) and stop there, orientation free. Each knot is solved for
    its own point on the line (a damped least-squares step from the knot before, whose
    residual the next step takes up): over a long move `guides`' single linearisation
    bends the path by centimetres, which a goal that must keep to a line
    (`Goal.path_start`) cannot afford. A tool off the line, such as a command that ran
    ahead of an arm held up by an object, comes back to it in the first steps, as far
    along it as the tool is."""
    start, end = (x.to(q) for x in line)
    tool = chain.forward(q)[:3, 3]
    start = nearest_on_segment(tool, start, end)
    distance = float((end - start).norm())
    step = damped_step(pose_jacobian(chain, q)[:3], end - tool, damping)
    joint_time = float((step.abs() / limits.velocity.to(q)).max())
    t = (torch.arange(horizon, dtype=q.dtype, device=q.device) + 1) * dt
    # A smooth start and stop (smoothstep: its peak speed is 1.5 times the mean): each
    # joint can follow it within its acceleration limit, where a jump to full speed would
    # leave some joints behind the others and bend the path.
    durations = 1.5 * torch.tensor([max(distance / speed, joint_time, dt)
                                    for speed in speeds]).to(q)
    tau = (t / durations[:, None]).clamp(max=1.0)
    share = tau * tau * (3 - 2 * tau)                         # (S, H) of the way along
    points = start + share[..., None] * (end - start)         # (S, H, 3)
    knot = q.expand(len(speeds), -1)
    knots = []
    for k in range(horizon):
        error = points[:, k] - chain.forward(knot)[..., :3, 3]
        knot = knot + damped_step(pose_jacobian(chain, knot)[..., :3, :], error, damping)
        knots.append(knot)
    path = torch.stack([q.expand(len(speeds), -1), *knots], 1)   # (S, H + 1, J)
    return (path[:, 1:] - path[:, :-1]) / dt
