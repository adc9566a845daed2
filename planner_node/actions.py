"""From sampled accelerations to joint trajectories that respect the limits.

The samplers work on the joint velocity wanted at each step, u (N, H, J) [rad/s]; the
acceleration that reaches it is clamped to the limits (so a sequence of zeros brakes to
rest). Between knots (every `dt` seconds) the acceleration changes linearly, so positions are
cubic, the acceleration is continuous, its peak is the largest knot value and the jerk is
constant per step. `integrate` turns u into knot positions, velocities and accelerations,
starting from the state the controller is commanding (so a new plan continues the running
one without a jump, also in acceleration), and clamps on the way to the acceleration, jerk
and velocity limits and to the speed from which a joint can still brake before its position
limit. A joint_trajectory_controller given these knots (positions, velocities and
accelerations: quintic interpolation) reproduces the cubic exactly. `braking` gives the
knots that bring a moving command to rest the same way.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from robot_model.kinematics import KinematicChain

# Panda's acceleration [rad/s^2] and jerk [rad/s^3] limits (a URDF has none; MoveIt keeps
# them in joint_limits.yaml), the defaults of the planner's `max_acceleration` / `max_jerk`.
PANDA_ACCELERATION = (15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0)
PANDA_JERK = (7500.0, 3750.0, 5000.0, 6250.0, 7500.0, 10000.0, 10000.0)


@dataclass
class ArmLimits:
    """Per joint: position [rad], velocity [rad/s], acceleration [rad/s^2], jerk [rad/s^3];
    all (J,)."""
    lower: torch.Tensor
    upper: torch.Tensor
    velocity: torch.Tensor
    acceleration: torch.Tensor
    jerk: torch.Tensor
    gripper_max: float = 0.08   # m

    @classmethod
    def from_chain(cls, chain: KinematicChain, acceleration, jerk, scale: float = 1.0,
                   margin: float = 0.02, gripper_max: float = 0.08) -> "ArmLimits":
        """The URDF's position and velocity limits (positions shrunk by `margin` rad), the
        given accelerations and jerks; velocity, acceleration and jerk scaled by `scale`."""
        acc = torch.as_tensor(acceleration, dtype=torch.float32)
        jerk = torch.as_tensor(jerk, dtype=torch.float32)
        for what, value in (("max_acceleration", acc), ("max_jerk", jerk)):
            if value.shape != (chain.dof,) or not bool((value > 0).all()):
                raise ValueError(f"{what} needs {chain.dof} positive values, "
                                 f"got {value.tolist()}")
        if not 0 < scale <= 1:
            raise ValueError(f"limit scale must be in (0, 1], got {scale}")
        lim = chain.limits
        return cls(lim.lower.float() + margin, lim.upper.float() - margin,
                   lim.velocity.float() * scale, acc * scale, jerk * scale, gripper_max)

    def to(self, device) -> "ArmLimits":
        return ArmLimits(self.lower.to(device), self.upper.to(device),
                         self.velocity.to(device), self.acceleration.to(device),
                         self.jerk.to(device), self.gripper_max)


def integrate(q0: torch.Tensor, v0: torch.Tensor, a0: torch.Tensor, u: torch.Tensor,
              limits: ArmLimits, dt: float) -> tuple:
    """Knots of desired velocities u (N, H, J) from position q0, velocity v0 and
    acceleration a0 (each (J,) or (N, J)).

    Returns positions, velocities and accelerations, each (N, H, J), at the ends of the H
    steps, within the limits: |a| <= a_max, |a_k - a_{k-1}| <= j_max dt, |v| <= v_max, and
    v no faster towards a limit than braking at a_max allows (these win over the jerk bound
    when both cannot hold)."""
    n = u.shape[0]
    q, v, a = (x.expand(n, -1) for x in (q0, v0, a0))
    amax, vmax, dj = limits.acceleration, limits.velocity, limits.jerk * dt
    out_q, out_v, out_a = [], [], []
    for k in range(u.shape[1]):
        # The knot acceleration (u - v) / dt - a / 2 reaches a wanted velocity in two steps
        # without ringing (the trapezoidal velocity update makes the exact one-step answer,
        # 2 (u - v) / dt - a, alternate between the acceleration bounds).
        step = (u[:, k].clamp(-vmax, vmax) - v) / dt - a / 2
        step = torch.minimum(torch.maximum(step, torch.maximum(a - dj, -amax)),
                             torch.minimum(a + dj, amax))
        # Exact speed bounds for the knot, then the largest acceleration after which the
        # joint can still stop before each position limit.
        a_hi = torch.minimum((2 * (vmax - v) / dt - a).clamp(-amax, amax),
                             _stoppable(q, v, a, limits.upper, amax, dt))
        a_lo = torch.maximum((2 * (-vmax - v) / dt - a).clamp(-amax, amax),
                             -_stoppable(-q, -v, -a, -limits.lower, amax, dt))
        step = torch.minimum(torch.maximum(step, a_lo), torch.maximum(a_hi, a_lo))
        q = q + v * dt + (2 * a + step) * dt * dt / 6
        v = v + (a + step) * dt / 2
        a = step
        out_q.append(q)
        out_v.append(v)
        out_a.append(a)
    return torch.stack(out_q, 1), torch.stack(out_v, 1), torch.stack(out_a, 1)


def _stoppable(q, v, a, upper, amax, dt):
    """Largest knot acceleration s in [-amax, amax] after which the joint stops at or below
    `upper` (-amax when none does), if the knot after brakes at -amax and the braking then
    stays at -amax. With the acceleration linear between knots the positions after one and
    two steps are q1 = A1 + s dt^2 / 6 and q2 = A2 + s dt^2, the velocity after two steps
    v2 = C2 + s dt, and the stopping point q2 + max(v2, 0)^2 / (2 amax) rises with s: the
    bound is where it meets `upper` (linear while v2 <= 0, a quadratic root after)."""
    a1 = q + v * dt + a * dt * dt / 3
    a2 = a1 + (v + a * dt / 2) * dt - amax * dt * dt / 6
    c2 = v + (a - amax) * dt / 2
    s_linear = (upper - a2) / (dt * dt)
    disc = (amax * dt) ** 2 - 2 * amax * (a2 - upper - dt * c2)
    s_quadratic = torch.where(disc >= 0, (torch.sqrt(disc.clamp(min=0)) - amax * dt - c2) / dt,
                              -amax.expand_as(q))
    s = torch.where(s_linear <= -c2 / dt, s_linear, s_quadratic)
    s = torch.minimum(s, (upper - a1) * 6 / (dt * dt))    # q1 itself below the limit
    return torch.maximum(torch.minimum(s, amax), -amax)


def executed_knots(positions: torch.Tensor, velocities: torch.Tensor,
                   accelerations: torch.Tensor, steps: int, limits: ArmLimits,
                   dt: float) -> tuple:
    """What one MPC cycle sends: the first `steps` knots of a plan (each (H, J)) and a
    braking tail, so that the arm comes to rest by itself if no new plan follows."""
    pos, vel, acc = positions[:steps], velocities[:steps], accelerations[:steps]
    tail = braking(pos[-1], vel[-1], acc[-1], limits, dt)
    return tuple(torch.cat([a, b]) for a, b in zip((pos, vel, acc), tail))


def braking(position: torch.Tensor, velocity: torch.Tensor, acceleration: torch.Tensor,
            limits: ArmLimits, dt: float, max_steps: int = 100) -> tuple:
    """Knots (positions, velocities, accelerations; each (P, J), P >= 1) that bring the
    command at (position, velocity, acceleration) (J,) to rest within the limits."""
    q, v, a = position[None], velocity[None], acceleration[None]
    out = []
    for _ in range(max_steps):
        q, v, a = (x[:, 0] for x in integrate(q[0], v[0], a[0], torch.zeros_like(v)[:, None],
                                              limits, dt))
        out.append((q[0], v[0], a[0]))
        if float(v.abs().max()) < 1e-3 and float(a.abs().max()) < 1e-2:
            break
    pos, vel, acc = (torch.stack(x) for x in zip(*out))
    vel[-1], acc[-1] = 0.0, 0.0
    return pos, vel, acc
