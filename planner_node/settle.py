"""When a goal counts as reached: it must hold for a number of cycles, and for an object
goal on sightings of the object that are new.

The object's pose comes from a perception that lags (the scene memory tracks frames that are
already old) and that holds a hidden object where it last saw it. A pose that was old when the
goal first seemed met says nothing about where a pushed object ended up, so after that first
cycle only sightings taken since count, each newer than the last counted one.
"""
from __future__ import annotations

import math


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
        """The goal holds on an object's sighting but is not settled yet: the arm should keep
        still until newer sightings confirm it (pushing on, it would move the object past a
        target it has already reached)."""
        return self.since is not None and self.confirmed > -math.inf and \
            self.count < self.cycles
