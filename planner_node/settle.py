"""When a goal counts as reached: it must hold for a number of cycles, and for an object
goal on sightings of the object that are new.

The object's pose comes from a perception that lags (the scene memory tracks frames that are
already old) and that holds a hidden object where it last saw it. A pose that was old when the
goal first seemed met says nothing about where a pushed object ended up, so after that first
cycle only sightings taken since count, each newer than the last counted one. Meanwhile the
tool withdraws straight up (`Retreat`): left where the push ended, the hand may hide the
object from every camera, and no newer sighting would come.
"""
from __future__ import annotations

import math

import torch

from planner_node.costs import END_EFFECTOR, OBJECT, Goal


def oriented(goal: Goal, angle: float) -> bool:
    """Whether a goal's orientation holds at `angle` [rad] from its target: free, or within
    its tolerance."""
    return goal.rotation is None or goal.orientation_tolerance < 0 or \
        angle <= goal.orientation_tolerance


def settles_on(goal: Goal, position_error: float, angle: float) -> bool:
    """Whether a cycle counts towards a goal's settling: its position within tolerance and,
    for an end-effector goal, its orientation. A push does not turn an object: an object
    goal settles on its position alone, and its orientation is judged once it has."""
    return position_error <= goal.position_tolerance and (
        goal.kind == OBJECT or oriented(goal, angle))


class GoalSettle:
    """Counts the cycles a goal has held; `update` says when `cycles` of them have."""

    def __init__(self, cycles: int):
        self.cycles = cycles
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.since = None            # [s] when the goal first held in this streak
        self.confirmed = -math.inf   # [s] the sighting the last counted cycle rested on

    def update(self, holds: bool, now: float, sighting: float | None = None) -> bool:
        """One cycle: whether the goal holds now [s], and for an object goal when the object
        was last seen [s, same clock]; None for a goal on the robot's own (current) state.
        Returns True once the goal has settled."""
        if not holds:
            self.reset()
            return False
        if sighting is None:
            self.count += 1
        elif sighting > self.confirmed and (self.since is None or sighting >= self.since):
            self.count += 1
            self.confirmed = sighting
        if self.since is None:
            self.since = now
        return self.count >= self.cycles

    @property
    def confirming(self) -> bool:
        """The goal holds on an object's sighting but is not settled yet: the arm should not
        push on until newer sightings confirm it (it would move the object past a target it
        has already reached), only withdraw (`Retreat`)."""
        return self.since is not None and self.confirmed > -math.inf and \
            self.count < self.cycles


class Retreat:
    """Where the tool withdraws to while an object goal is confirmed (`goal`, None otherwise):
    `height` [m] straight above where it was when the confirmation began, in any orientation,
    along that vertical (`Goal.path_start`): lifted, it leaves the object it pushed without
    dragging it, where a path the sampler bends sideways may sweep across it."""

    def __init__(self, height: float):
        self.height = height
        self.goal: Goal | None = None

    def update(self, confirming: bool, tool: torch.Tensor) -> bool:
        """Follow GoalSettle.confirming, the tool at pose (4, 4) now. Returns whether the
        target changed (a plan for the old one must not go on)."""
        if confirming == (self.goal is not None):
            return False
        here = tool[:3, 3]
        self.goal = Goal(END_EFFECTOR, here + here.new_tensor([0.0, 0.0, self.height]),
                         position_tolerance=0.01, path_start=here) if confirming else None
        return True

    def reached(self, tool: torch.Tensor) -> bool:
        """The tool at pose (4, 4) has withdrawn: it waits there for a newer sighting."""
        return self.goal is not None and \
            float((tool[:3, 3] - self.goal.position).norm()) <= self.goal.position_tolerance
