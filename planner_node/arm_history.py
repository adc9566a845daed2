"""The arm's recent measured states, to look up where it was when a camera frame was taken.

A camera-fed scene memory gives an object's pose as it was in a frame that is already old (a
few tenths of a second, more while the hand hides it), while the arm's state is measured
now. Whether the tool is still at the back of an object it pushes must be judged with both
at the same time: the tool as it was when the object was seen.
"""
from __future__ import annotations

import bisect
import collections

import torch

from robot_model.kinematics import KinematicChain


class ArmHistory:
    """The arm's measured joint positions over the last `span_s` seconds, in stamp order (a
    state no newer than the newest is dropped)."""

    def __init__(self, span_s: float = 3.0):
        self.span_s = span_s
        self._stamps: collections.deque = collections.deque()
        self._positions: collections.deque = collections.deque()

    def add(self, stamp: float, positions) -> None:
        if self._stamps and stamp <= self._stamps[-1]:
            return
        self._stamps.append(stamp)
        self._positions.append(torch.as_tensor(positions, dtype=torch.float32).clone())
        while self._stamps[0] < stamp - self.span_s:
            self._stamps.popleft()
            self._positions.popleft()

    def positions_at(self, t: float) -> torch.Tensor | None:
        """(J,) joint positions at t [s], linearly interpolated; None outside the history."""
        if not self._stamps or not self._stamps[0] <= t <= self._stamps[-1]:
            return None
        i = bisect.bisect_left(self._stamps, t)
        if self._stamps[i] == t:
            return self._positions[i].clone()
        t0, t1 = self._stamps[i - 1], self._stamps[i]
        return torch.lerp(self._positions[i - 1], self._positions[i], (t - t0) / (t1 - t0))

    def tool_position_at(self, chain: KinematicChain, t: float | None) -> torch.Tensor | None:
        """(3,) the tool's position at t [s] through chain (on the CPU); None outside the
        history or for t None."""
        q = None if t is None else self.positions_at(t)
        return None if q is None else chain.forward(q)[:3, 3]
