"""The gripper's state at a camera frame's stamp, from the robot's joint states.

The scene memory carries objects the gripper holds (`Frame.gripper`). On a robot the grasp
frame's pose may come from tf2 instead; the opening always comes from the finger joints.
"""
from __future__ import annotations

import bisect
import math
import xml.etree.ElementTree as ET

import torch

from gsplat_scene.mapping import Gripper
from world_model_node.kinematics import KinematicChain


def root_link(urdf: str) -> str:
    """The URDF's root link (the world, where a robot is fixed to one)."""
    tree = ET.fromstring(urdf)
    children = {j.find("child").get("link") for j in tree.iter("joint")}
    roots = [link.get("name") for link in tree.iter("link") if link.get("name") not in children]
    if len(roots) != 1:
        raise ValueError(f"the robot description has {len(roots)} root links, not one")
    return roots[0]


class JointHistory:
    """Stamped joint positions, interpolated at a stamp (the last `window` seconds kept)."""

    def __init__(self, window: float = 5.0, max_gap: float = 0.1):
        self.window, self.max_gap = window, max_gap
        self.stamps: list[float] = []
        self.positions: list[dict] = []

    def add(self, stamp: float, names, positions) -> None:
        """One joint state; non-finite positions are left out, older stamps ignored."""
        if self.stamps and stamp <= self.stamps[-1]:
            return
        self.stamps.append(stamp)
        self.positions.append({n: float(p) for n, p in zip(names, positions)
                               if math.isfinite(p)})
        while self.stamps[-1] - self.stamps[0] > self.window:
            self.stamps.pop(0)
            self.positions.pop(0)

    def at(self, stamp: float, names) -> list | None:
        """Positions of `names` at stamp (linear between the samples around it), or None
        where a name is missing or no sample is within max_gap."""
        i = bisect.bisect_left(self.stamps, stamp)
        around = [j for j in (i - 1, i) if 0 <= j < len(self.stamps)
                  and abs(self.stamps[j] - stamp) <= self.max_gap]
        if not around or any(n not in self.positions[j] for j in around for n in names):
            return None
        if len(around) == 1:
            return [self.positions[around[0]][n] for n in names]
        a, b = around
        f = (stamp - self.stamps[a]) / (self.stamps[b] - self.stamps[a])
        return [(1 - f) * self.positions[a][n] + f * self.positions[b][n] for n in names]


class GripperKinematics:
    """Gripper states from joint positions: the grasp frame by forward kinematics from the
    URDF's root link (the frame the camera poses are in), the opening as the sum of the
    finger joints (the Panda's fingers each open half of it)."""

    def __init__(self, urdf: str, gripper_link: str, finger_joints):
        self.chain = KinematicChain.from_urdf(urdf, root_link(urdf), gripper_link)
        self.finger_joints = list(finger_joints)

    def pose(self, history: JointHistory, stamp: float) -> torch.Tensor | None:
        q = history.at(stamp, self.chain.limits.names)
        return None if q is None else self.chain.forward(torch.tensor(q, dtype=torch.float32))

    def gripper(self, history: JointHistory, stamp: float, pose=None) -> Gripper | None:
        """The gripper at stamp (pose (4, 4): the grasp frame from elsewhere, e.g. tf2), or
        None where the joint states do not cover it."""
        fingers = history.at(stamp, self.finger_joints)
        pose = self.pose(history, stamp) if pose is None else pose
        if fingers is None or pose is None:
            return None
        return Gripper(pose, sum(fingers))
