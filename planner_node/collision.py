"""Collision geometry for planning: obstacles as a distance field (the arm as spheres is
`robot_model.spheres.ArmSpheres`, distances to boxes `gsplat_scene.queries.box_distance`).

- `DistanceField.from_points`: Euclidean distance to the nearest obstacle point on a voxel
  grid (static scene from the scene memory), looked up per sphere centre on any device.
- The table is the plane z = table_height of the world frame.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage


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
