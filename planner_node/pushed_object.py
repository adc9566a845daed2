"""Where an object the tool pushes is while perception lags or loses it.

The scene memory gives an object's pose as it was in its last sighting: seconds old while the
hand that pushes it hides it from every camera. Judged on that pose, a tool pushing the
object looks as if it had passed it (the push breaks off for a new approach), and the goal
cannot be seen to hold until the hand moves away. But a pushed
object cannot be behind the tool's face, nor farther along the push than the tool has gone
since it was seen: between those bounds it is reckoned where the tool's face is, and held
there until a newer sighting replaces it. Reckoned, the object's position is as old as the
tool's last push on it, not as its sighting (`costs.push_speed_limit`), and a goal is judged
on it with a margin: it runs ahead of the object where the tool's face is not flat on it.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from planner_node.costs import (OBJECT, Goal, Scene, face_reach, goal_object_index,
                                push_ceiling)
from world_model_node.predictor import WorldState


MOVED = 0.001        # m: less in STALLED_S [s] and the push has stopped
STALLED_S = 1.0


def pushed_position(seen: torch.Tensor, rotation: torch.Tensor, extent: torch.Tensor,
                    goal: Goal, tool: torch.Tensor, tool_seen: torch.Tensor,
                    scene: Scene) -> torch.Tensor | None:
    """(3,) where an object seen at `seen` (3,) (turned by rotation (3, 3), half sizes extent
    (3,)) is pushed by a tool now at `tool` (3,) that was at `tool_seen` (3,) then: moved
    along the line to the goal so that it is not behind the tool's face (`tool_radius` ahead
    of the tool centre point). None where the tool does not push it from there: off the line
    (beyond the object's half diagonal), above push height, behind its back, or farther on
    than the tool has gone since the sighting allows (the tool passed it)."""
    to_target = goal.position[:2] - seen[:2]
    direction = to_target / to_target.norm().clamp(min=1e-6)
    rel = tool[:2] - seen[:2]
    along = float((rel * direction).sum())          # negative behind the object
    sideways = float((rel - along * direction).norm())
    low = float(tool[2]) <= push_ceiling(scene)
    shift = along + face_reach(extent, rotation, direction) + scene.tool_radius
    travelled = float(((tool - tool_seen)[:2] * direction).sum())
    if not low or sideways > float(extent[:2].norm()) or shift <= 0 \
            or shift > travelled + scene.push_offset:
        return None
    return torch.cat([seen[:2] + shift * direction, seen[2:]])


class PushedObject:
    """The goal object's position as the memory last saw it or, while the newest frames
    hide it and a push moved it since, as reckoned from the tool (`pushed_position`)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.sighting = None        # [s] the sighting the reckoning starts from
        self.tool_seen = None       # (3,) the tool then (None: not known)
        self.position = None        # (3,) reckoned since (None: as seen)
        self.moved = None           # ([s], (3,)) when the reckoning last moved it a millimetre
        self.pushed_at = None       # [s] when the tool last pushed it on

    def update(self, world: WorldState, goal: Goal, now: float, tool: torch.Tensor,
               sighting: float | None, tool_seen: torch.Tensor | None, pushing: bool,
               frame: float, scene: Scene) -> WorldState:
        """The world with the goal object where it is reckoned at `now` [s]: the tool at tool
        (3,), the object last seen at `sighting` [s] (None: not an object goal) with the tool
        at tool_seen (3,) (None: not known), `pushing` whether the last cycle pushed it,
        `frame` [s] when the newest frame behind the objects was taken: only while that
        frame hides the object (shown, its pose is only late, and the push goes on as
        `costs.stage` judges it)."""
        if goal.kind != OBJECT or sighting is None or sighting >= frame:
            self.reset()
            return world
        if self.sighting is None or sighting > self.sighting:
            self.reset()
            self.sighting, self.tool_seen = sighting, tool_seen
        k = goal_object_index(goal, world.object_ids)
        seen = world.object_positions[k]
        if pushing and self.tool_seen is not None:
            pushed = pushed_position(seen, world.object_rotations[k], world.object_extents[k],
                                     goal, tool, self.tool_seen, scene)
            if pushed is not None and (self.position is None or float((pushed - seen).norm())
                                       > float((self.position - seen).norm())):
                self.position, self.pushed_at = pushed, now
        if self.position is None:
            return world
        if self.moved is None or float((self.position - self.moved[1]).norm()) >= MOVED:
            self.moved = (now, self.position)
        positions = world.object_positions.clone()
        positions[k] = self.position.to(positions)
        return replace(world, object_positions=positions)

    def judged(self, goal: Goal, scene: Scene, now: float) -> Goal:
        """The goal as the object's position is judged against it at `now` [s]: a reckoned
        position runs ahead of the object (the tool's face is not always flat on it), so
        while the push still moves it, it must lie `reckoning_margin` (at most half the
        tolerance) inside the tolerance. A push that has stopped short of that (not moved it
        a millimetre for `STALLED_S`) is judged on the tolerance: within it, the retreat
        lets a camera look instead of the push crawling on unseen."""
        if not self.reckoned or now - self.moved[0] >= STALLED_S:
            return goal
        tolerance = goal.position_tolerance
        return replace(goal, position_tolerance=tolerance - min(scene.reckoning_margin,
                                                                tolerance / 2))

    def as_of(self, sighting: float | None) -> float | None:
        """When [s] the goal object's position was last known: where reckoned, when the tool
        last pushed it on (it may have slid on since, as after a sighting), else its
        `sighting`."""
        return self.pushed_at if self.reckoned else sighting

    @property
    def reckoned(self) -> bool:
        """Whether the goal object is where the push took it rather than where it was seen."""
        return self.position is not None
