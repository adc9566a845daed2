"""Joint-trajectory execution with ros2_control joint_trajectory_controller semantics.

ROS-free: times are plain float seconds on the controller's clock (sim time here).

- A trajectory's point times (time_from_start) are relative to its start time (the header
  stamp; a zero stamp means "now").
- Between points the commanded state is interpolated: linearly when points carry only
  positions, cubic when they carry velocities, quintic when they also carry accelerations.
- A new trajectory replaces whatever was queued from its start time on: the old one keeps
  running until then, and the new one's first segment starts from the state the old one
  commands at that time. Points that lie in the past when it arrives are skipped.
- After the last point the last position is held.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class TrajectoryRejected(ValueError):
    """A trajectory that must not be executed; the message says why."""


@dataclass
class _Knot:
    time: float          # absolute controller time [s]
    pos: np.ndarray      # (J,) [rad]
    vel: np.ndarray | None
    acc: np.ndarray | None


def _hermite(t: float, t0: float, t1: float, k0: _Knot, k1: _Knot):
    """Position, velocity and acceleration at t in [t0, t1] of the spline between two knots.

    The spline order follows what the later knot specifies (as joint_trajectory_controller
    does): positions only -> linear, +velocities -> cubic, +accelerations -> quintic.
    """
    T = t1 - t0
    s = t - t0
    p0, p1 = k0.pos, k1.pos
    zeros = np.zeros_like(p0)
    if k1.vel is None:
        v = (p1 - p0) / T
        return p0 + v * s, v, zeros
    v0 = k0.vel if k0.vel is not None else zeros
    v1 = k1.vel
    if k1.acc is None:
        # Cubic with endpoint positions and velocities.
        a2 = (3 * (p1 - p0) - (2 * v0 + v1) * T) / T**2
        a3 = (2 * (p0 - p1) + (v0 + v1) * T) / T**3
        pos = p0 + v0 * s + a2 * s**2 + a3 * s**3
        vel = v0 + 2 * a2 * s + 3 * a3 * s**2
        acc = 2 * a2 + 6 * a3 * s
        return pos, vel, acc
    acc0 = k0.acc if k0.acc is not None else zeros
    acc1 = k1.acc
    # Quintic with endpoint positions, velocities and accelerations.
    a0, a1, a2 = p0, v0, acc0 / 2
    dp = p1 - (a0 + a1 * T + a2 * T**2)
    dv = v1 - (a1 + 2 * a2 * T)
    da = acc1 - 2 * a2
    a3 = (10 * dp - 4 * dv * T + 0.5 * da * T**2) / T**3
    a4 = (-15 * dp + 7 * dv * T - da * T**2) / T**4
    a5 = (6 * dp - 3 * dv * T + 0.5 * da * T**2) / T**5
    pos = a0 + a1 * s + a2 * s**2 + a3 * s**3 + a4 * s**4 + a5 * s**5
    vel = a1 + 2 * a2 * s + 3 * a3 * s**2 + 4 * a4 * s**3 + 5 * a5 * s**4
    acc = 2 * a2 + 6 * a3 * s + 12 * a4 * s**2 + 20 * a5 * s**3
    return pos, vel, acc


class JointTrajectoryFollower:
    """Holds the queued trajectory of J joints and samples the commanded state at any time.

    Args:
        joint_names: the J joints in internal order.
        lower, upper: (J,) position limits [rad]; velocity: (J,) velocity limits [rad/s].
        initial_positions: (J,) state held until the first trajectory arrives.
        limit_tolerance: slack on the position limits [rad] and (relative) on velocities.
    """

    def __init__(self, joint_names, lower, upper, velocity, initial_positions,
                 limit_tolerance: float = 1e-3):
        self.joint_names = list(joint_names)
        self.lower = np.asarray(lower, float)
        self.upper = np.asarray(upper, float)
        self.velocity = np.asarray(velocity, float)
        self.tolerance = limit_tolerance
        self.reset(initial_positions)

    def reset(self, positions) -> None:
        """Forget every queued point and hold `positions`."""
        hold = _Knot(-np.inf, np.asarray(positions, float).copy(), None, None)
        # Pieces (start time, knots): a new trajectory is a new piece that takes over from its
        # start time, so the old piece's segments stay exactly as they were before it.
        self._pieces = [(-np.inf, [hold])]

    @property
    def end_time(self) -> float:
        """Time of the last queued point (-inf when only holding)."""
        return self._pieces[-1][1][-1].time

    def sample(self, t: float):
        """Commanded (position, velocity, acceleration), each (J,), at controller time t."""
        piece = self._pieces[0]
        for p in self._pieces:  # few pieces: those not yet superseded at the last command
            if p[0] <= t:
                piece = p
        knots = piece[1]
        if t >= knots[-1].time or t < knots[0].time:
            held = knots[-1] if t >= knots[-1].time else knots[0]
            zeros = np.zeros_like(held.pos)
            return held.pos.copy(), zeros, zeros
        i = int(np.searchsorted([k.time for k in knots], t, side="right"))
        return _hermite(t, knots[i - 1].time, knots[i].time, knots[i - 1], knots[i])

    def set_trajectory(self, now: float, start_time: float, joint_names, times,
                       positions, velocities=None, accelerations=None) -> int:
        """Validate and queue a trajectory; returns how many points were queued.

        Args:
            now: current controller time [s].
            start_time: the trajectory's header stamp [s]; <= 0 means now.
            joint_names: names of the columns of positions (any order, all joints).
            times: (P,) time_from_start of each point [s], strictly increasing.
            positions: (P, J); velocities, accelerations: (P, J) or None.
        Raises:
            TrajectoryRejected: with the reason; the queued trajectory is then unchanged.
        """
        names = list(joint_names)
        unknown = sorted(set(names) - set(self.joint_names))
        if unknown:
            raise TrajectoryRejected(f"unknown joint names {unknown}")
        if len(set(names)) != len(names):
            raise TrajectoryRejected(f"duplicate joint names in {names}")
        missing = [n for n in self.joint_names if n not in names]
        if missing:
            raise TrajectoryRejected(f"missing joints {missing} (partial goals are not allowed)")
        order = [names.index(n) for n in self.joint_names]
        times = np.asarray(times, float).reshape(-1)
        if times.size == 0:
            raise TrajectoryRejected("empty trajectory (no points)")
        pos = self._columns("positions", positions, times.size, len(names), order)
        if pos is None:
            raise TrajectoryRejected("every point needs positions")
        vel = self._columns("velocities", velocities, times.size, len(names), order)
        acc = self._columns("accelerations", accelerations, times.size, len(names), order)
        if acc is not None and vel is None:
            raise TrajectoryRejected("accelerations given without velocities")
        if not np.all(np.isfinite(times)):
            raise TrajectoryRejected("time_from_start is not finite")
        if times[0] < 0 or np.any(np.diff(times) <= 0):
            raise TrajectoryRejected(
                f"time_from_start must be >= 0 and strictly increasing, got {times.tolist()}")
        below = pos < self.lower - self.tolerance
        above = pos > self.upper + self.tolerance
        if below.any() or above.any():
            p, j = np.argwhere(below | above)[0]
            raise TrajectoryRejected(
                f"point {p}: {self.joint_names[j]} = {pos[p, j]:.4f} rad is outside "
                f"[{self.lower[j]:.4f}, {self.upper[j]:.4f}]")
        vmax = self.velocity * (1 + self.tolerance) + 1e-9
        if vel is not None and np.any(np.abs(vel) > vmax):
            p, j = np.argwhere(np.abs(vel) > vmax)[0]
            raise TrajectoryRejected(
                f"point {p}: {self.joint_names[j]} velocity {vel[p, j]:.3f} rad/s exceeds "
                f"the limit {self.velocity[j]:.3f}")

        start = now if start_time <= 0 else float(start_time)
        abs_times = start + times
        if abs_times[-1] <= now:
            raise TrajectoryRejected(
                f"trajectory ends in the past ({abs_times[-1]:.3f} s <= now {now:.3f} s)")
        # From `start` (or now, if the stamp is in the past) the new points replace the queue.
        splice = max(start, now)
        keep = abs_times > splice
        anchor_pos, anchor_vel, anchor_acc = self.sample(splice)
        knot_times = np.concatenate([[splice], abs_times[keep]])
        knot_pos = np.concatenate([anchor_pos[None], pos[keep]])
        steps = np.abs(np.diff(knot_pos, axis=0)) / np.diff(knot_times)[:, None]
        if np.any(steps > vmax):
            s, j = np.argwhere(steps > vmax)[0]
            raise TrajectoryRejected(
                f"segment {s}: {self.joint_names[j]} would move at {steps[s, j]:.3f} rad/s, "
                f"above the limit {self.velocity[j]:.3f}")

        knots = [_Knot(splice, anchor_pos, anchor_vel, anchor_acc)]
        for i in np.flatnonzero(keep):
            knots.append(_Knot(abs_times[i], pos[i],
                               None if vel is None else vel[i],
                               None if acc is None else acc[i]))
        # Drop pieces replaced from `splice` on, and pieces already superseded before now.
        pieces = [p for p in self._pieces if p[0] < splice] + [(splice, knots)]
        while len(pieces) > 1 and pieces[1][0] <= now:
            pieces.pop(0)
        self._pieces = pieces
        return int(keep.sum())

    @staticmethod
    def _columns(what, values, num_points, num_names, order):
        """(P, J) array in internal joint order, None if no point has the field."""
        if values is None:
            return None
        rows = [np.asarray(v, float).reshape(-1) for v in values]
        if all(r.size == 0 for r in rows):
            return None
        if len(rows) != num_points or any(r.size != num_names for r in rows):
            raise TrajectoryRejected(
                f"{what}: every point needs {num_names} values "
                f"(sizes {[r.size for r in rows]})")
        arr = np.stack(rows)[:, order]
        if not np.all(np.isfinite(arr)):
            raise TrajectoryRejected(f"{what} contain NaN or infinity")
        return arr
