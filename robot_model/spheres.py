"""Robot links as spheres, for collision tests and for telling the robot apart in depth images.

- `shape_spheres`: spheres covering one URDF collision cylinder, box or sphere (meshes are
  not approximated).
- `ArmSpheres.from_urdf`: the links of a kinematic chain as rows of spheres in their link
  frames (plus one at the tool centre point for the fingertips); `centres(link_poses)` places
  them for any batch of configurations from the chain's batched forward kinematics.
- `RobotBody.from_urdf`: every link of the robot with collision shapes, placed by named joint
  positions (as in sensor_msgs/JointState, mimic joints followed): the whole robot, fingers
  included, in the URDF's root frame.
"""
from __future__ import annotations

import bisect
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from robot_model.kinematics import KinematicChain

TCP_SPHERE_RADIUS = 0.012  # m, covers the closed finger pads around the tool centre point


@dataclass
class ArmSpheres:
    link_index: torch.Tensor   # (S,) index into the chain's link poses
    offsets: torch.Tensor      # (S, 3) centre in that link's frame [m]
    radii: torch.Tensor        # (S,) [m]

    @classmethod
    def from_urdf(cls, urdf: str, chain: KinematicChain) -> "ArmSpheres":
        root = ET.fromstring(urdf)
        index, offsets, radii = [], [], []
        for i, name in enumerate(chain.links):
            link = root.find(f"link[@name='{name}']")
            for collision in ([] if link is None else link.iter("collision")):
                for centre, radius in shape_spheres(collision):
                    index.append(i)
                    offsets.append(centre)
                    radii.append(radius)
        index.append(len(chain.links) - 1)   # the tip: fingertips around the TCP
        offsets.append(np.zeros(3))
        radii.append(TCP_SPHERE_RADIUS)
        return cls(torch.tensor(index), torch.tensor(np.array(offsets), dtype=torch.float32),
                   torch.tensor(radii, dtype=torch.float32))

    def to(self, device) -> "ArmSpheres":
        return ArmSpheres(self.link_index.to(device), self.offsets.to(device),
                          self.radii.to(device))

    def centres(self, link_poses: torch.Tensor) -> torch.Tensor:
        """(..., S, 3) sphere centres from link poses (..., L, 4, 4)."""
        poses = link_poses[..., self.link_index, :, :]
        return (poses[..., :3, :3] @ self.offsets[..., None])[..., 0] + poses[..., :3, 3]


def shape_spheres(collision) -> list:
    """(centre (3,), radius) spheres covering one URDF collision shape, in the link frame."""
    origin = collision.find("origin")
    xyz = np.array([float(v) for v in (origin.get("xyz", "0 0 0") if origin is not None
                                       else "0 0 0").split()])
    rpy = [float(v) for v in (origin.get("rpy", "0 0 0") if origin is not None
                              else "0 0 0").split()]
    rot = Rotation.from_euler("xyz", rpy).as_matrix()
    geometry = collision.find("geometry")
    shape = geometry[0] if geometry is not None and len(geometry) else None
    if shape is None:
        return []
    if shape.tag == "sphere":
        return [(xyz, float(shape.get("radius")))]
    if shape.tag == "cylinder":
        r, length = float(shape.get("radius")), float(shape.get("length"))
        axis = rot[:, 2]
        count = max(2, math.ceil(length / r) + 1)
        return [(xyz + axis * s, r) for s in np.linspace(-length / 2, length / 2, count)]
    if shape.tag == "box":
        half = np.array([float(v) for v in shape.get("size").split()]) / 2
        r = float(np.sort(half)[:2].max()) * math.sqrt(2) if half.min() > 0 else half.max()
        long_axis = int(np.argmax(half))
        count = max(1, math.ceil(2 * half[long_axis] / max(r, 1e-3)))
        along = np.linspace(-half[long_axis] + r, half[long_axis] - r, count) \
            if half[long_axis] > r else [0.0]
        return [(xyz + rot[:, long_axis] * s, r) for s in along]
    return []   # meshes: not approximated here


class RobotBody:
    """The spheres of every link with collision shapes, for one configuration at a time."""

    def __init__(self, root: str, chains: list, spheres: list, mimic: dict):
        self.root = root          # the URDF's root link: the frame of the spheres
        self.chains = chains      # a KinematicChain from the root to each link with shapes
        self.spheres = spheres    # per chain: (offsets (S, 3) in its tip link, radii (S,))
        self.mimic = mimic        # joint -> (leader, multiplier, offset)

    @property
    def sphere_count(self) -> int:
        return sum(len(radii) for _, radii in self.spheres)

    @classmethod
    def from_urdf(cls, urdf: str) -> "RobotBody":
        """The body of a URDF document (its text); ValueError naming what is wrong with it."""
        try:
            return cls._from_document(urdf, ET.fromstring(urdf))
        except (ET.ParseError, AttributeError, TypeError) as err:   # malformed, or elements
            raise ValueError(f"not a usable URDF: {err}") from err  # missing their parts

    @classmethod
    def _from_document(cls, urdf: str, doc) -> "RobotBody":
        children = {j.find("child").get("link") for j in doc.iter("joint")}
        roots = [link.get("name") for link in doc.iter("link") if link.get("name") not in children]
        if len(roots) != 1:
            raise ValueError(f"a URDF has one root link, this one has {len(roots)}")
        chains, spheres = [], []
        for link in doc.iter("link"):
            shapes = [s for c in link.iter("collision") for s in shape_spheres(c)]
            if not shapes:
                continue
            name = link.get("name")
            chains.append(KinematicChain.from_urdf(urdf, roots[0], name) if name != roots[0]
                          else None)
            spheres.append((torch.tensor(np.array([c for c, _ in shapes]), dtype=torch.float32),
                            torch.tensor([r for _, r in shapes], dtype=torch.float32)))
        mimic = {}
        for joint in doc.iter("joint"):
            m = joint.find("mimic")
            if m is not None:
                mimic[joint.get("name")] = (m.get("joint"), float(m.get("multiplier", 1.0)),
                                            float(m.get("offset", 0.0)))
        return cls(roots[0], chains, spheres, mimic)

    def place(self, positions: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Sphere centres (S, 3) [m] in the root frame and radii (S,) for joint positions
        {name: rad or m}; a joint left out raises KeyError (a mimic joint follows its leader)."""
        def value(name: str) -> float:
            if name in self.mimic and name not in positions:
                leader, multiplier, offset = self.mimic[name]
                return multiplier * positions[leader] + offset
            return positions[name]

        centres, radii = [], []
        for chain, (offsets, r) in zip(self.chains, self.spheres):
            if chain is None:
                pose = torch.eye(4)
            else:
                q = torch.tensor([value(n) for n in chain.limits.names], dtype=torch.float32)
                pose = chain.forward(q)
            centres.append(offsets @ pose[:3, :3].T + pose[:3, 3])
            radii.append(r)
        if not centres:
            return torch.zeros(0, 3), torch.zeros(0)
        return torch.cat(centres), torch.cat(radii)

    def place_at(self, states: list, stamp: float, slop: float
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """`place` with the joint state nearest in time to `stamp` [s] among states, a list of
        (stamp, {name: position}) in stamp order (joint states as recorded). Raises
        ValueError when none lies within slop [s] or the nearest lacks a joint."""
        i = bisect.bisect_left(states, stamp, key=lambda state: state[0])
        near = [states[k] for k in (i - 1, i) if 0 <= k < len(states)]
        if not near:
            raise ValueError("no joint states: the robot cannot be placed")
        when, positions = min(near, key=lambda state: abs(state[0] - stamp))
        if abs(when - stamp) > slop:
            raise ValueError(f"no joint state within {slop} s of the frame (nearest "
                             f"{when - stamp:+.2f} s)")
        try:
            return self.place(positions)
        except KeyError as err:
            raise ValueError(f"joint state lacks joint {err}") from err
