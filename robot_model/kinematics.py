"""Batched forward kinematics of a serial chain read from a URDF, in PyTorch.

`KinematicChain.from_urdf(text, base, tip)` walks the joints from `base` to `tip`;
`chain.link_poses(q)` gives every link frame on the way for any batch of joint positions in
one pass of small matrix products (on the GPU when q is there), `chain.forward(q)` the tip's.
Units and frames follow the URDF (REP-103): metres, radians, poses (4, 4) in the base frame.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import torch
from scipy.spatial.transform import Rotation


@dataclass(frozen=True)
class JointLimits:
    """Per actuated joint, in chain order: position [rad or m], velocity [rad/s or m/s]."""
    names: tuple
    lower: torch.Tensor
    upper: torch.Tensor
    velocity: torch.Tensor


def _floats(text: str | None, default: str) -> list:
    return [float(v) for v in (text or default).split()]


class KinematicChain:
    """Revolute, continuous, prismatic and fixed joints from a base link to a tip link."""

    def __init__(self, links: list, origins: torch.Tensor, axes: torch.Tensor,
                 kinds: list, limits: JointLimits):
        self.links = links            # child link of each joint, in order
        self.origins = origins        # (J, 4, 4) joint frame in its parent link
        self.axes = axes              # (J, 3) unit axis in the joint frame
        self.kinds = kinds            # 'revolute', 'prismatic' or 'fixed' per joint
        self.limits = limits
        self.actuated = [i for i, k in enumerate(kinds) if k != "fixed"]

    @property
    def dof(self) -> int:
        return len(self.actuated)

    @classmethod
    def from_urdf(cls, urdf: str, base: str, tip: str) -> "KinematicChain":
        """Chain from link `base` to link `tip` of a URDF document (its text)."""
        joints = {j.find("child").get("link"): j for j in ET.fromstring(urdf).iter("joint")}
        path, link = [], tip
        while link != base:
            if link not in joints:
                raise ValueError(f"no joint chain from link '{base}' to link '{tip}'")
            path.append(joints[link])
            link = joints[link].find("parent").get("link")
        path.reverse()
        origins, axes, kinds, names, lower, upper, velocity = [], [], [], [], [], [], []
        for joint in path:
            origin = joint.find("origin")
            xyz = _floats(origin.get("xyz") if origin is not None else None, "0 0 0")
            rpy = _floats(origin.get("rpy") if origin is not None else None, "0 0 0")
            frame = torch.eye(4, dtype=torch.float64)
            # URDF rpy: fixed axes, R = Rz(yaw) Ry(pitch) Rx(roll).
            frame[:3, :3] = torch.from_numpy(Rotation.from_euler("xyz", rpy).as_matrix())
            frame[:3, 3] = torch.tensor(xyz, dtype=torch.float64)
            origins.append(frame)
            axis = joint.find("axis")
            axes.append(_floats(axis.get("xyz") if axis is not None else None, "1 0 0"))
            kind = joint.get("type")
            if kind in ("revolute", "continuous"):
                kinds.append("revolute")
            elif kind in ("prismatic", "fixed"):
                kinds.append(kind)
            else:
                raise ValueError(f"joint '{joint.get('name')}': unsupported type '{kind}'")
            if kinds[-1] == "fixed":
                continue
            names.append(joint.get("name"))
            limit = joint.find("limit")
            bounded = kind != "continuous" and limit is not None
            lower.append(float(limit.get("lower", -math.inf)) if bounded else -math.inf)
            upper.append(float(limit.get("upper", math.inf)) if bounded else math.inf)
            velocity.append(float(limit.get("velocity", math.inf))
                            if limit is not None else math.inf)
        axes = torch.nn.functional.normalize(torch.tensor(axes, dtype=torch.float64), dim=1)
        limits = JointLimits(tuple(names), torch.tensor(lower), torch.tensor(upper),
                             torch.tensor(velocity))
        return cls([j.find("child").get("link") for j in path],
                   torch.stack(origins).float(), axes.float(), kinds, limits)

    def to(self, device) -> "KinematicChain":
        return KinematicChain(self.links, self.origins.to(device), self.axes.to(device),
                              self.kinds, self.limits)

    def link_poses(self, q: torch.Tensor) -> torch.Tensor:
        """Poses (..., J, 4, 4) of the child link of every joint, in the base frame, for
        joint positions q (..., dof) of the actuated joints in chain order."""
        if q.shape[-1] != self.dof:
            raise ValueError(f"expected {self.dof} joint positions, got {q.shape[-1]}")
        batch = q.shape[:-1]
        origins = self.origins.to(q.device, q.dtype)
        axes = self.axes.to(q.device, q.dtype)
        pose = torch.eye(4, device=q.device, dtype=q.dtype).expand(*batch, 4, 4)
        poses, k = [], 0
        for i, kind in enumerate(self.kinds):
            pose = pose @ origins[i]
            if kind != "fixed":
                motion = _joint_motion(kind, axes[i], q[..., k])
                pose = pose @ motion
                k += 1
            poses.append(pose)
        return torch.stack(poses, dim=-3)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        """Tip pose (..., 4, 4) in the base frame."""
        return self.link_poses(q)[..., -1, :, :]


def _joint_motion(kind: str, axis: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """(..., 4, 4) motion of a joint by value (...,) about / along its unit axis (3,)."""
    out = torch.eye(4, device=value.device, dtype=value.dtype).expand(
        *value.shape, 4, 4).clone()
    if kind == "prismatic":
        out[..., :3, 3] = value[..., None] * axis
        return out
    # Rodrigues: R = I + sin K + (1 - cos) K^2 with K the axis' cross-product matrix.
    x, y, z = axis
    K = torch.stack([torch.stack([0 * x, -z, y]), torch.stack([z, 0 * x, -x]),
                     torch.stack([-y, x, 0 * x])])
    s, c = torch.sin(value)[..., None, None], torch.cos(value)[..., None, None]
    out[..., :3, :3] = torch.eye(3, device=value.device, dtype=value.dtype) + s * K + \
        (1 - c) * (K @ K)
    return out
