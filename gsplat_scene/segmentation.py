"""Instance masks from depth alone, for a robot without a segmenter: objects on a table.

`TabletopSegmenter.segment(depth, K, cam_to_world, robot, objects)` labels every pixel of a
posed depth image, in the mask convention the scene memory reads:
- ROBOT where its point lies within the robot's link spheres (grown by robot_margin): the
  robot's own body, placed by its joint states (`robot_model.spheres.RobotBody`), except
  where a point outside the spheres lies on a known object's box (the face a finger
  pushes stays the object's: without it a push hid a third of the cube from tracking);
- an object id where its point belongs to a cluster standing above the table inside the
  workspace box (the connected components of those points on a voxel grid);
- UNKNOWN for a cluster that is not (yet) an object: it must be seen confirm_frames frames
  in a row, away from the robot, before it gets an id, so noise, a glimpse of a cable or a
  part of the robot the spheres miss are neither mapped nor tracked;
- BACKGROUND elsewhere.

Ids persist through the scene memory's objects (`objects`: id -> (pose (4, 4), half extent
(3,))): a cluster takes the id of the object whose box is nearest within match_distance (an
object the arm splits in two keeps one id; a cluster over two touching objects is divided
between them point by point), else the id of an object in view that it fits and whose place
the camera now sees through (moved while hidden, e.g. pushed under the hand), else it waits
as UNKNOWN and then becomes a new object (ids from first_id up, never reused).

World frame z is up (REP-103) and the table is a level plane: its height is found in every
frame near the nominal table_height (`_find_table`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from gsplat_scene.mapping import BACKGROUND, ROBOT, UNKNOWN, point_map
from gsplat_scene.queries import box_distance


@dataclass
class TabletopConfig:
    table_height: float = 0.0       # m, world z of the table top (where to look for it)
    # m about table_height searched for the table top in every frame (the densest level of
    # the points there, followed from frame to frame; 0 = table_height as given): a table
    # a centimetre off its nominal height would otherwise join everything on it or cut the
    # objects' feet off
    table_search: float = 0.03
    min_height: float = 0.008       # m above the table a point must stand to start a cluster
    noise_sigmas: float = 4.0       # ... and at least this many times the table's depth noise
    # m above the table; lower points under a cluster's footprint (an object's foot, which
    # depth noise on the table would otherwise join to its neighbours) join that cluster
    foot_height: float = 0.001
    # World box objects are looked for in ((xmin, ymin, zmin), (xmax, ymax, zmax)) [m]
    bounds: tuple = ((-0.3, -0.7, -0.05), (1.1, 0.7, 0.8))
    # m; points in touching voxels form one cluster (at least two pixel footprints: far
    # away, neighbouring pixels lie further apart)
    voxel: float = 0.01
    min_pixels: int = 20            # smaller clusters are UNKNOWN
    robot_margin: float = 0.02      # m around the robot's spheres (calibration, joint lag)
    robot_touch: float = 0.04       # m from the robot's spheres: a new cluster this close waits
    # m from a known object's box: a point there outside the robot's spheres (within the
    # margin) is the object's, so the face the fingers push keeps being tracked
    object_surface: float = 0.002
    match_distance: float = 0.04    # m from a cluster's centroid to a known object's box
    reidentify_distance: float = 0.3  # m a hidden object may have moved
    see_through: float = 0.015      # m the depth must lie beyond an object's box to read empty
    confirm_frames: int = 3
    first_id: int = 100


class TabletopSegmenter:
    def __init__(self, config: TabletopConfig | None = None):
        self.config = config or TabletopConfig()
        self.reset()

    def reset(self) -> None:
        self.next_id = self.config.first_id
        self.table_height = self.config.table_height   # as found in the latest frame
        self.table_noise = 0.0       # m, the table's depth noise (standard deviation)
        self._pending: list = []     # [centroid (3,), frames seen in a row]

    def segment(self, depth: torch.Tensor, K: torch.Tensor, cam_to_world: torch.Tensor,
                robot: tuple | None = None, objects: dict | None = None) -> torch.Tensor:
        """Labels (H, W) int64 of depth (H, W) [m; NaN or 0 invalid] seen by a pinhole K (3, 3)
        from cam_to_world (4, 4); robot: sphere centres (S, 3) and radii (S,) in the world
        frame, or None; objects: {id: (pose (4, 4), half extent (3,))} known so far."""
        cfg = self.config
        device = depth.device
        known = list(objects or {})
        poses = np.array([np.asarray(objects[o][0], float) for o in known]).reshape(-1, 4, 4)
        extents = np.array([np.asarray(objects[o][1], float) for o in known]).reshape(-1, 3)
        depth = depth.float()
        valid = torch.isfinite(depth) & (depth > 0)
        points = point_map(torch.where(valid, depth, torch.zeros_like(depth)), K.float(),
                           cam_to_world.float())
        labels = torch.full(depth.shape, BACKGROUND, dtype=torch.int64, device=device)
        near_robot = torch.zeros_like(valid)
        if robot is not None and robot[0].shape[0] > 0:
            centres, radii = (t.to(device, torch.float32) for t in robot)
            gap = torch.cdist(points.reshape(-1, 3), centres) - radii
            gap = gap.min(dim=1).values.reshape(depth.shape)
            band = valid & (gap >= 0) & (gap < cfg.robot_margin)
            labels[valid & (gap < cfg.robot_margin)] = ROBOT
            near_robot = valid & (gap < cfg.robot_touch)
            if known and band.any():   # an object the hand touches keeps its face
                on_object = _box_distances(points[band].cpu().numpy().astype(np.float64),
                                           poses, extents).min(axis=1) < cfg.object_surface
                band[band.clone()] = torch.from_numpy(on_object).to(device)
                labels[band] = BACKGROUND
        lo, hi = (torch.tensor(b, dtype=torch.float32, device=device) for b in cfg.bounds)
        inside = valid & (labels == BACKGROUND) & ((points >= lo) & (points <= hi)).all(-1)
        if cfg.table_search > 0:
            self._find_table(points[..., 2][inside])
        # Above the table's depth noise: at least noise_sigmas standard deviations
        min_height = max(cfg.min_height, cfg.noise_sigmas * self.table_noise)
        foot_height = max(cfg.foot_height, 0.5 * cfg.noise_sigmas * self.table_noise)
        height = points[..., 2] - self.table_height
        above = inside & (height > foot_height)
        pixels = torch.nonzero(above)
        tall = (height[above] > min_height).cpu().numpy()
        if not tall.any():
            self._pending = []
            return labels
        xyz = points[above].cpu().numpy().astype(np.float64)
        footprint = 2 * float(depth[above].median()) / float(K[0, 0])
        cluster = _clusters(xyz, tall, max(cfg.voxel, footprint))
        keep = cluster >= 0
        pixels, xyz, cluster = pixels[torch.from_numpy(keep).to(device)], xyz[keep], cluster[keep]
        ids = self._identify(xyz, cluster, near_robot[pixels[:, 0], pixels[:, 1]].cpu().numpy(),
                             depth, K, cam_to_world, known, poses, extents)
        labels[pixels[:, 0], pixels[:, 1]] = torch.from_numpy(ids).to(device)
        return labels

    def _find_table(self, z: torch.Tensor, bin_size: float = 0.002) -> None:
        """The table top's height (`table_height`): the median of the points within a bin of
        the fullest 2 mm level within table_search of the last height found; and its depth
        noise (`table_noise`, the points' median absolute deviation from it as a standard
        deviation). Both are kept where fewer than a tenth of the points lie there (the
        table hidden)."""
        cfg = self.config
        near = z[(z - self.table_height).abs() < cfg.table_search].double()
        if near.numel() < max(100, 0.1 * z.numel()):
            return
        levels = torch.floor((near - self.table_height + cfg.table_search) / bin_size).long()
        peak = self.table_height - cfg.table_search + (torch.bincount(levels).argmax() + 0.5) \
            * bin_size
        self.table_height = float(near[(near - peak).abs() <= 1.5 * bin_size].median())
        self.table_noise = 1.4826 * float((near - self.table_height).abs().median())

    def _identify(self, xyz, cluster, near_robot, depth, K, c2w, known, poses, extents
                  ) -> np.ndarray:
        """Per point (N,): the id of its cluster (see the module's description); known ids
        with their boxes' poses (O, 4, 4) and half extents (O, 3)."""
        cfg = self.config
        ids = np.full(len(xyz), UNKNOWN, dtype=np.int64)
        self.next_id = max([self.next_id] + [o + 1 for o in known])   # e.g. a loaded map's
        matched, unmatched = set(), []
        for c in range(cluster.max() + 1):
            members = np.flatnonzero(cluster == c)
            if len(members) < cfg.min_pixels:
                continue
            near = _box_distances(xyz[members], poses, extents)      # (M, O)
            close = np.flatnonzero(near.mean(axis=0) < cfg.match_distance) if known else []
            if len(close) == 0:
                unmatched.append(members)
                continue
            ids[members] = np.asarray(known)[close[np.argmin(near[:, close], axis=1)]]
            matched.update(known[i] for i in close)
        pending = []
        for members in unmatched:
            centroid = xyz[members].mean(axis=0)
            hidden = self._moved_while_hidden(xyz[members], centroid, known, poses, extents,
                                              matched, depth, K, c2w)
            if hidden is not None:
                ids[members] = hidden
                matched.add(hidden)
                continue
            seen = 1 + max((n for p, n in self._pending
                            if np.linalg.norm(p - centroid) < cfg.match_distance), default=0)
            if near_robot[members].any():
                seen = 0     # what touches the robot may be the robot: wait until it is apart
            if seen >= cfg.confirm_frames:
                ids[members] = self.next_id
                self.next_id += 1
            else:
                pending.append((centroid, seen))
        self._pending = pending
        return ids

    def _moved_while_hidden(self, xyz, centroid, known, poses, extents, matched, depth, K,
                            c2w):
        """The id of a known object no cluster took, within reidentify_distance, that the
        cluster's size fits and whose place the camera sees through (the depth at its centre's
        pixel lies beyond where that pixel's ray enters its box); else None."""
        cfg = self.config
        size = np.linalg.norm(xyz.max(axis=0) - xyz.min(axis=0))
        c2w = c2w.cpu().numpy().astype(np.float64)
        Kn = K.cpu().numpy().astype(np.float64)
        h, w = depth.shape
        best, best_distance = None, cfg.reidentify_distance
        for oid, pose, half in zip(known, poses, extents):
            distance = np.linalg.norm(pose[:3, 3] - centroid)
            if oid in matched or distance >= best_distance or size > 2.5 * np.linalg.norm(half):
                continue
            cam = c2w[:3, :3].T @ (pose[:3, 3] - c2w[:3, 3])
            if cam[2] <= 0:
                continue
            u, v = (Kn[:2, :2] @ cam[:2] / cam[2] + Kn[:2, 2]).round().astype(int)
            if not (0 <= u < w and 0 <= v < h):
                continue
            ray = np.linalg.solve(Kn, [u, v, 1.0])        # camera frame, z = 1: t is depth
            entry = _ray_box_entry(pose[:3, :3].T @ (c2w[:3, 3] - pose[:3, 3]),
                                   pose[:3, :3].T @ (c2w[:3, :3] @ ray), half)
            seen = float(depth[v, u])
            if entry is not None and np.isfinite(seen) and seen > entry + cfg.see_through:
                best, best_distance = oid, distance
        return best


def _ray_box_entry(origin: np.ndarray, direction: np.ndarray, half: np.ndarray):
    """Ray parameter where origin + t direction (box frame) enters the box |x| <= half, or
    None if it misses it (slab test)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t1, t2 = (-half - origin) / direction, (half - origin) / direction
    near = np.nanmax(np.minimum(t1, t2))
    far = np.nanmin(np.maximum(t1, t2))
    return near if far >= max(near, 0.0) else None


def _clusters(xyz: np.ndarray, tall: np.ndarray, voxel: float) -> np.ndarray:
    """Per point (N,) the index of its cluster, or -1: the tall points' connected components
    (26-neighbour voxels); the others join the cluster whose footprint (its voxel columns,
    grown by one) they stand in."""
    cells = np.floor(xyz / voxel).astype(np.int64)
    cells -= cells.min(axis=0)
    grid = np.zeros(cells.max(axis=0) + 1, dtype=bool)
    grid[tuple(cells[tall].T)] = True
    components, _ = ndimage.label(grid, structure=np.ones((3, 3, 3), dtype=bool))
    cluster = components[tuple(cells.T)] - 1
    footprint = ndimage.grey_dilation(components.max(axis=2), size=(3, 3))
    cluster[~tall] = footprint[cells[~tall, 0], cells[~tall, 1]] - 1
    return cluster


def _box_distances(xyz: np.ndarray, poses: np.ndarray, half_extents: np.ndarray
                   ) -> np.ndarray:
    """(N, O) distance [m] of points (N, 3) to boxes: poses (O, 4, 4), half extents (O, 3)."""
    return box_distance(torch.from_numpy(xyz), torch.from_numpy(poses[:, :3, 3]),
                        torch.from_numpy(poses[:, :3, :3]),
                        torch.from_numpy(half_extents)).numpy()


def object_boxes(memory) -> dict:
    """{id: (pose (4, 4), half extent (3,))} of a SceneMemory's objects, as `segment` takes
    them."""
    return {oid: (r.pose.cpu().numpy(), r.half_extent.cpu().numpy())
            for oid, r in memory.objects.items()}
