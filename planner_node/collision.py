"""Collision geometry for planning: the arm as spheres, obstacles as a distance field.

- `ArmSpheres.from_urdf`: each collision cylinder, box and sphere of the links on the
  kinematic chain becomes a row of spheres in its link's frame (plus one at the tool centre
  point for the fingertips); `centres(link_poses)` places them for any batch of
  configurations from the chain's batched forward kinematics.
- `DistanceField.from_points`: Euclidean distance to the nearest obstacle point on a voxel
  grid (static scene from the scene memory), looked up per sphere centre on any device.
- `box_distance`: distance from points to oriented boxes (objects, predicted poses).
- The table is the plane z = table_height of the world frame.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from scipy.spatial.transform import Rotation

from world_model_node.kinematics import KinematicChain

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
                for centre, radius in _shape_spheres(collision):
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


def _shape_spheres(collision) -> list:
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


class DistanceField:
    """Distance [m] to the nearest obstacle point, on a voxel grid over a box; points outside
    the box read the distance at the box's border plus their distance to it."""

    def __init__(self, distances: torch.Tensor, origin: torch.Tensor, resolution: float):
        self.distances = distances     # (X, Y, Z)
        self.origin = origin           # (3,) centre of voxel (0, 0, 0)
        self.resolution = resolution

    @classmethod
    def from_points(cls, points: np.ndarray, lower, upper, resolution: float = 0.02
                    ) -> "DistanceField":
        lower, upper = np.asarray(lower, float), np.asarray(upper, float)
        shape = np.maximum(np.ceil((upper - lower) / resolution).astype(int), 1)
        occupied = np.zeros(shape, bool)
        cells = np.floor((np.asarray(points, float).reshape(-1, 3) - lower) / resolution)
        cells = cells.astype(int)
        inside = np.all((cells >= 0) & (cells < shape), axis=1)
        occupied[tuple(cells[inside].T)] = True
        if occupied.any():
            dist = ndimage.distance_transform_edt(~occupied) * resolution
        else:
            dist = np.full(shape, 1e3)
        return cls(torch.tensor(dist, dtype=torch.float32),
                   torch.tensor(lower + resolution / 2, dtype=torch.float32), resolution)

    def to(self, device) -> "DistanceField":
        return DistanceField(self.distances.to(device), self.origin.to(device),
                             self.resolution)

    def distance(self, x: torch.Tensor) -> torch.Tensor:
        """(...,) distance at points x (..., 3), nearest voxel."""
        size = torch.tensor(self.distances.shape, device=x.device)
        cell = torch.round((x - self.origin) / self.resolution).long()
        clamped = torch.minimum(torch.maximum(cell, torch.zeros_like(cell)), size - 1)
        outside = ((cell - clamped).float() * self.resolution).norm(dim=-1)
        d = self.distances[clamped[..., 0], clamped[..., 1], clamped[..., 2]]
        return d + outside


def box_distance(points: torch.Tensor, centres: torch.Tensor, rotations: torch.Tensor,
                 half_extents: torch.Tensor) -> torch.Tensor:
    """Distance (..., S, K) from points (..., S, 3) to K oriented boxes, given per batch as
    centres (..., K, 3), rotations (..., K, 3, 3) and half extents (K, 3) or (..., K, 3);
    0 inside."""
    rel = points[..., :, None, :] - centres[..., None, :, :]               # (..., S, K, 3)
    local = (rel[..., None, :] @ rotations[..., None, :, :, :])[..., 0, :]  # R^T rel
    excess = (local.abs() - half_extents[..., None, :, :]).clamp(min=0)
    return excess.norm(dim=-1)
