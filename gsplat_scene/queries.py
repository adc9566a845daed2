"""Batched collision queries of points and spheres against a Gaussian map (and, for objects
held as boxes, `box_distance`).

A Gaussian's solid extent is its k-sigma ellipsoid
    E = {x : |A (x - mu)| <= k},   A = diag(1 / s) R^T      (R: rotation, s: std devs [m]),
|A (x - mu)| being the Mahalanobis distance of x. Gaussians fainter than `min_opacity` are
left out.

Spheres: a sphere (c, r) collides with E iff it intersects E, i.e. iff the Euclidean distance
from c to E is <= r (c lies in the Minkowski sum of E and the ball); this is exact, not an
approximation. The ellipsoid inflated by r along its own axes (semi-axes k s + r) lies
*inside* that Minkowski sum, so on its own it would miss spheres placed obliquely to the
axes: by up to 0.08 r for a 45 x 45 x 9 mm ellipsoid and a 5 cm sphere, 0.18 r for a disc as
wide as the sphere, 0.37 r for a needle of half-length 3 r. It serves only as a
certificate of collision. Pairs it cannot settle are dropped when outside the local box
|y| <= k s + r (which holds the Minkowski sum) or when a Lagrange dual bound (three
multipliers) proves the distance > r; the few left (~0.5 % of tested pairs) get the exact
distance by Newton's method in float64.

Index (pure tensor code on the Gaussians' device, no Python work per query, so CPU and CUDA
run the same code):
- Points: uniform grids, each Gaussian inserted into every cell its k-sigma axis-aligned
  bounding box overlaps, so a point needs only its own cell. So that this is at most
  3 x 3 x 3 cells, a Gaussian whose box half-width is e goes to the finest level l with cells
  cell_size * 2**l >= e; a point looks up its cell on each non-empty level (1-3 in typical
  maps), and one huge Gaussian costs 27 cells, not millions.
- Spheres: looser grids of sphere_cell_size * 2**l, each Gaussian inserted once, by its
  centre, on the finest level with cells >= 2 e. Each cell keeps the union of its Gaussians'
  boxes; a sphere visits the cells within r + (widest box half-width on that level) of its
  centre and skips those whose union box is farther than r. No query-radius limit is built
  in; large radii only visit more cells.
- Cells are found by searchsorted in the sorted cell keys (no dense volume, so the map's
  extent costs nothing) and hold contiguous runs of Gaussian ids (CSR), with no cap on their
  length. Runs are expanded into (query, Gaussian) pairs with repeat_interleave, in chunks
  of about `chunk_pairs` pairs, and reduced per query with scatter_reduce.
- Yes/no queries stop early: a first pass tests the first `first_pass` Gaussians of every
  visited cell (ids are shuffled within cells, so that is a spread-out sample), and only
  queries it leaves undecided test the rest. Most pairs belong to colliding queries, which
  the first pass usually settles.
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from gsplat_scene.gaussians import Gaussians

# Boxes are padded so that float32 rounding (of coordinates up to ~10 m) never drops a point
# on a k-sigma surface from its Gaussian's cells.
_PAD_REL, _PAD_ABS = 1e-5, 2e-6
_NEWTON_STEPS = 12  # float64 precision even for 1e5:1 ellipsoids, starting from t0 below


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """(N, 4) quaternions (w, x, y, z), any norm -> (N, 3, 3) rotation matrices."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(-1, 3, 3)


def box_half_widths(rotations: torch.Tensor, semi_axes: torch.Tensor) -> torch.Tensor:
    """Half-widths (N, 3) [m] of the axis-aligned boxes around ellipsoids with rotations
    (N, 3, 3) (columns: the ellipsoid's axes) and semi-axes (N, 3) [m]."""
    return (rotations * semi_axes[:, None, :]).square().sum(-1).sqrt()


def apply(matrices: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) @ (..., 3) -> (..., 3), elementwise in a fixed order so that the index
    and the brute-force references round identically."""
    return (matrices[..., 0] * vectors[..., None, 0] + matrices[..., 1] * vectors[..., None, 1]
            + matrices[..., 2] * vectors[..., None, 2])


def squared_norm(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (...,), in a fixed order (see apply)."""
    return v[..., 0].square() + v[..., 1].square() + v[..., 2].square()


def ellipsoid_distance(local: torch.Tensor, semi_axes: torch.Tensor) -> torch.Tensor:
    """Euclidean distance (M,) float64 [m] from points (M, 3) to axis-aligned ellipsoids with
    semi-axes (M, 3) [m] centred at the origin; 0 inside.

    The closest surface point is x_j = a_j^2 y_j / (t + a_j^2), t >= 0 the root of
    h(t) = sum_j (a_j y_j / (t + a_j^2))^2 - 1, which is convex and decreasing: Newton's
    method from t0 = max_j (a_j |y_j| - a_j^2) <= t (one term alone is 1 there) climbs to the
    root without overshooting, and the root is at most ~sqrt(3) t0 away.
    """
    y = local.double().abs()
    a2 = semi_axes.double().square()
    ay = semi_axes.double() * y
    inside = (y.square() / a2).sum(-1) <= 1.0
    t = (ay - a2).amax(-1).clamp_min(0.0)
    for _ in range(_NEWTON_STEPS):
        d = t[:, None] + a2
        w2 = (ay / d).square()
        h = w2.sum(-1) - 1.0
        slope = -2.0 * (w2 / d).sum(-1)
        t = torch.where(h > 0, t - h / slope, t)
    gap = t[:, None] * y / (t[:, None] + a2)
    return torch.where(inside, torch.zeros_like(t), gap.norm(dim=-1))


def spheres_hit(local: torch.Tensor, semi_axes: torch.Tensor,
                radii: torch.Tensor) -> torch.Tensor:
    """bool (M,): spheres with centres local (M, 3) [m] in the frames of ellipsoids with
    semi-axes (M, 3) [m] and radii (M,) [m] intersect them (see the module doc)."""
    inflated = semi_axes + radii[:, None]
    hit = squared_norm(local / inflated) <= 1.0
    maybe = torch.nonzero((local.abs() <= inflated).all(-1) & ~hit).squeeze(1)
    y2, a, r = local[maybe].double().square(), semi_axes[maybe].double(), radii[maybe].double()
    # Weak duality: for any lam >= 0, sum_j y_j^2 lam / (a_j^2 + lam) - lam <= distance^2.
    # lam = r a_i is the exact multiplier where the closest point lies on axis i.
    lam = r[:, None, None] * a[:, :, None]
    dual = (y2[:, None, :] * lam / (a.square()[:, None, :] + lam)).sum(-1) - lam[:, :, 0]
    exact = torch.nonzero(dual.amax(-1) <= r.square()).squeeze(1)
    index = maybe[exact]
    hit[index] = ellipsoid_distance(local[index], semi_axes[index]) <= radii[index]
    return hit


def brute_force_mahalanobis(points: torch.Tensor, means: torch.Tensor, quats: torch.Tensor,
                            scales: torch.Tensor, opacities: torch.Tensor | None = None,
                            min_opacity: float = 0.0, chunk: int = 1 << 16) -> torch.Tensor:
    """Smallest Mahalanobis distance (P,) from points (P, 3) [m] to all Gaussians with
    opacity >= min_opacity (inf if none), testing every pair. Reference for the index."""
    keep = _opaque(opacities, min_opacity, len(means), means.device)
    means, whiten = means[keep], _whitening(quat_to_rotmat(quats[keep]), scales[keep])
    best = [squared_norm(apply(whiten, p[:, None] - means)).amin(1).sqrt() if len(means)
            else torch.full((len(p),), math.inf, device=p.device)
            for p in points.split(max(1, chunk // max(len(means), 1)))]
    return torch.cat(best) if best else points.new_zeros(0)


def brute_force_sphere_distance(centers: torch.Tensor, means: torch.Tensor,
                                quats: torch.Tensor, scales: torch.Tensor,
                                opacities: torch.Tensor | None = None, k_sigma: float = 3.0,
                                min_opacity: float = 0.0, chunk: int = 1 << 16) -> torch.Tensor:
    """Euclidean distance (S,) float64 [m] from centres (S, 3) [m] to the nearest k-sigma
    ellipsoid (0 inside one, inf if there are none), testing every pair with the exact
    distance. A sphere of radius r collides iff this is <= r. Reference for the index."""
    keep = _opaque(opacities, min_opacity, len(means), means.device)
    means, rot_t = means[keep], quat_to_rotmat(quats[keep]).transpose(1, 2)
    semi = k_sigma * scales[keep]
    best = []
    for c in centers.split(max(1, chunk // max(len(means), 1))):
        if len(means) == 0:
            best.append(torch.full((len(c),), math.inf, dtype=torch.float64, device=c.device))
            continue
        local = apply(rot_t, c[:, None] - means)
        dist = ellipsoid_distance(local.reshape(-1, 3), semi.repeat(len(c), 1))
        best.append(dist.view(len(c), -1).amin(1))
    return torch.cat(best) if best else centers.new_zeros(0, dtype=torch.float64)


class GaussianCollisionIndex:
    """Grid index of Gaussians' k-sigma ellipsoids for batched point and sphere queries.

    Args:
        means (N, 3) [m], quats (N, 4) (w, x, y, z), scales (N, 3) std devs [m] (> 0),
            opacities (N,) in [0, 1]: float tensors on the device the queries will use.
        k_sigma: a Gaussian's solid extent is its k-sigma ellipsoid.
        min_opacity: fainter Gaussians are ignored.
        cell_size: finest point-grid cell [m]; None: the median box half-width of the kept
            Gaussians (smaller: fewer Gaussians per cell to test, more cells per Gaussian).
        sphere_cell_size: finest sphere-grid cell [m], about the typical query radius.
        first_pass: Gaussians per visited cell tested before the rest (yes/no queries).
        chunk_queries, chunk_pairs: most queries / (query, Gaussian) pairs handled at once;
            None: sized for the CPU cache (2**15, 2**16) or for a GPU (2**22, 2**24).
    Queries take float tensors (moved to this device) and raise ValueError for bad shapes or
    non-finite values. The index is immutable; rebuild it when the map changes.
    """

    def __init__(self, means: torch.Tensor, quats: torch.Tensor, scales: torch.Tensor,
                 opacities: torch.Tensor, k_sigma: float = 3.0, min_opacity: float = 0.1,
                 cell_size: float | None = None, sphere_cell_size: float = 0.1,
                 first_pass: int = 4, chunk_queries: int | None = None,
                 chunk_pairs: int | None = None):
        n = means.shape[0]
        shapes = {"means": (means, (n, 3)), "quats": (quats, (n, 4)),
                  "scales": (scales, (n, 3)), "opacities": (opacities, (n,))}
        for name, (t, shape) in shapes.items():
            if tuple(t.shape) != shape:
                raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {shape}")
            if not torch.isfinite(t).all():
                raise ValueError(f"{name} has non-finite values")
        if not bool((scales > 0).all()):
            raise ValueError("scales must be positive")
        self.device = means.device
        cpu = self.device.type == "cpu"
        self.chunk_queries = chunk_queries or (1 << 15 if cpu else 1 << 22)
        self.chunk_pairs = chunk_pairs or (1 << 16 if cpu else 1 << 24)
        if k_sigma <= 0 or min(self.chunk_queries, self.chunk_pairs, first_pass) < 1:
            raise ValueError("k_sigma, first_pass and the chunk sizes must be positive")
        self.k_sigma, self.min_opacity, self.first_pass = float(k_sigma), min_opacity, first_pass

        keep = opacities >= min_opacity
        means, scales = means[keep].float(), scales[keep].float()
        rot = quat_to_rotmat(quats[keep].float())
        semi = self.k_sigma * scales
        # One row per Gaussian, so that a pair costs one gather.
        self._point_rows = torch.cat([means, _whitening(rot, scales).reshape(-1, 9)], 1)
        self._sphere_rows = torch.cat([means, rot.transpose(1, 2).reshape(-1, 9), semi], 1)
        half = box_half_widths(rot, semi) * (1 + _PAD_REL) + _PAD_ABS
        reach = half.amax(-1)
        if cell_size is None:
            cell_size = float(reach.median()) if len(reach) else 1.0
        if cell_size <= 0 or sphere_cell_size <= 0:
            raise ValueError("cell sizes must be positive")
        self.cell_size, self.sphere_cell_size = float(cell_size), float(sphere_cell_size)
        self._points = _PointGrid(means, half, reach, self.cell_size)
        self._spheres = _SphereGrid(means, half, reach, self.sphere_cell_size)

    @classmethod
    def from_gaussians(cls, gaussians: Gaussians, **kwargs) -> "GaussianCollisionIndex":
        return cls(gaussians.means, gaussians.quats, gaussians.scales, gaussians.opacities,
                   **kwargs)

    def __len__(self) -> int:
        """Number of indexed (opaque enough) Gaussians."""
        return len(self._point_rows)

    def mahalanobis(self, points: torch.Tensor) -> torch.Tensor:
        """Smallest Mahalanobis distance (P,) from points (P, 3) [m] to any indexed Gaussian
        where that is <= k_sigma; inf where it is larger (no Gaussian's box holds the point)."""
        return self._batched(self._mahalanobis, self._queries(points, 2, "points"))

    def points_in_collision(self, points: torch.Tensor) -> torch.Tensor:
        """bool (P,): points (P, 3) [m] inside some k-sigma ellipsoid (Mahalanobis distance
        <= k_sigma)."""
        return self._batched(self._points_in_collision, self._queries(points, 2, "points"))

    def spheres_in_collision(self, centers: torch.Tensor, radii: torch.Tensor) -> torch.Tensor:
        """bool (S,): spheres (centres (S, 3) [m], radii (S,) [m] >= 0) intersecting some
        k-sigma ellipsoid (exactly; see the module doc)."""
        return self._batched(self._spheres_in_collision, *self._spheres_in(centers, radii))

    def sphere_clearance(self, centers: torch.Tensor, radii: torch.Tensor,
                         max_distance: float = 0.1) -> torch.Tensor:
        """Distance (S,) [m] from each sphere's surface to the nearest k-sigma ellipsoid,
        capped at max_distance: <= 0 iff the sphere collides; -radius when its centre is
        inside an ellipsoid (so not a penetration depth). Tests every nearby pair exactly,
        several times the cost of spheres_in_collision."""
        if not max_distance >= 0:
            raise ValueError("max_distance must be >= 0")
        return self._batched(self._sphere_clearance, *self._spheres_in(centers, radii),
                             max_distance=float(max_distance))

    def _batched(self, fn, *queries, **kwargs):
        # Chunks small enough for the cache: on CPU, large temporaries cost more in page
        # faults than the arithmetic.
        parts = [fn(*chunk, **kwargs) for chunk in
                 zip(*(q.split(self.chunk_queries) for q in queries))]
        return torch.cat(parts) if parts else fn(*queries, **kwargs)

    def _point_d2(self, points, q, g):
        rows = self._point_rows.index_select(0, g)
        delta = points.index_select(0, q) - rows[:, :3]
        return squared_norm(apply(rows[:, 3:].view(-1, 3, 3), delta))

    def _mahalanobis(self, points):
        best = torch.full((len(points),), math.inf, device=self.device)
        owner, slots = self._points.hits(points)
        grid = self._points
        for q, g in _pairs(owner, grid.starts[slots], grid.counts[slots], grid.ids,
                           self.chunk_pairs):
            best.scatter_reduce_(0, q, self._point_d2(points, q, g), "amin")
        dist = best.sqrt()
        return torch.where(dist <= self.k_sigma, dist, math.inf)

    def _points_in_collision(self, points):
        def inside(q, g):
            return self._point_d2(points, q, g).sqrt() <= self.k_sigma
        return self._any(self._points, *self._points.hits(points), len(points), inside)

    def _spheres_in_collision(self, centers, radii):
        def hit(q, g):
            rows = self._sphere_rows.index_select(0, g)
            delta = centers.index_select(0, q) - rows[:, :3]
            return spheres_hit(apply(rows[:, 3:12].view(-1, 3, 3), delta), rows[:, 12:],
                               radii.index_select(0, q))
        return self._any(self._spheres, *self._spheres.hits(centers, radii), len(centers), hit)

    def _sphere_clearance(self, centers, radii, max_distance):
        best = torch.full((len(centers),), max_distance, device=self.device)
        grid = self._spheres
        owner, slots = grid.hits(centers, radii + max_distance)
        for q, g in _pairs(owner, grid.starts[slots], grid.counts[slots], grid.ids,
                           self.chunk_pairs):
            rows = self._sphere_rows.index_select(0, g)
            local = apply(rows[:, 3:12].view(-1, 3, 3), centers.index_select(0, q) - rows[:, :3])
            semi, r = rows[:, 12:], radii.index_select(0, q)
            # Branch and bound: the distance to the ellipsoid's box is a lower bound, the
            # distance to the radial projection onto its surface an upper one; only pairs
            # whose lower bound beats every upper bound so far need the exact distance.
            lower = squared_norm((local.abs() - semi).clamp_min(0)).sqrt() - r
            scale = squared_norm(local / semi).sqrt().clamp_min(1.0)
            upper = squared_norm(local).sqrt() * (1 - 1 / scale) - r
            best.scatter_reduce_(0, q, upper, "amin")
            near = torch.nonzero(lower <= best.index_select(0, q)).squeeze(1)
            gap = ellipsoid_distance(local[near], semi[near]).float() - r[near]
            best.scatter_reduce_(0, q[near], gap, "amin")
        return best

    def _any(self, grid, owner, slots, n_queries, test):
        """bool (n_queries,): test(q, g) -> bool (M,) holds for some Gaussian in the visited
        cells; first on up to first_pass Gaussians per cell, then the rest for the queries
        still open."""
        found = torch.zeros(n_queries, dtype=torch.int32, device=self.device)
        starts, counts = grid.starts[slots], grid.counts[slots]
        k = self.first_pass
        for q, g in _pairs(owner, starts, counts.clamp_max(k), grid.ids, self.chunk_pairs):
            found.index_add_(0, q, test(q, g).int())
        rest = torch.nonzero((counts > k) & (found[owner] == 0)).squeeze(1)
        for q, g in _pairs(owner[rest], starts[rest] + k, counts[rest] - k, grid.ids,
                           self.chunk_pairs):
            found.index_add_(0, q, test(q, g).int())
        return found > 0

    def _queries(self, x, dims: int, name: str) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float32, device=self.device)
        if x.dim() != dims or (dims == 2 and x.shape[1] != 3):
            raise ValueError(f"{name} has shape {tuple(x.shape)}, expected "
                             f"{'(n, 3)' if dims == 2 else '(n,)'}")
        if not torch.isfinite(x).all():
            raise ValueError(f"{name} has non-finite values")
        return x

    def _spheres_in(self, centers, radii):
        centers, radii = self._queries(centers, 2, "centers"), self._queries(radii, 1, "radii")
        if len(radii) != len(centers) or bool((radii < 0).any()):
            raise ValueError("radii must be one non-negative value per centre")
        return centers, radii


class _Cells:
    """Sparse cells on grid levels l = 0.. of cell size base * 2**l [m] from a common origin.

    keys (C,) sorted int64 cell keys; starts / counts (C,): their runs in ids (E,), the
    Gaussian ids of all entries.
    """

    def __init__(self, origin: torch.Tensor, base: float, levels: torch.Tensor,
                 cells: torch.Tensor, ids: torch.Tensor):
        """levels (E,), cells (E, 3) integer cell coordinates (>= 0), ids (E,): one entry
        each; a level's grid extends as far as its entries."""
        dev = origin.device
        self.origin, self.base = origin, base
        n_levels = int(levels.max()) + 1 if len(levels) else 1
        self.dims = torch.zeros(n_levels, 3, dtype=torch.long, device=dev).scatter_reduce(
            0, levels[:, None].expand(-1, 3), cells + 1, "amax")
        if float(self.dims.double().prod(-1).sum()) >= 2.0 ** 62:
            raise ValueError("grid too fine for the map's extent; raise the cell size")
        sizes = self.dims.prod(-1)
        self.key_base = sizes.cumsum(0) - sizes
        keys, _ = self.key(levels, cells)
        # Shuffle before the stable sort: runs come out in random order, so that the first
        # few Gaussians of a cell are a spread-out sample of it.
        shuffle = torch.randperm(len(keys), generator=torch.Generator().manual_seed(0))
        shuffle = shuffle.to(dev)
        keys, order = torch.sort(keys[shuffle], stable=True)
        self.ids = ids[shuffle][order]
        self.keys, self.counts = torch.unique_consecutive(keys, return_counts=True)
        self.starts = self.counts.cumsum(0) - self.counts
        self.levels = torch.unique(levels).tolist()

    def cell_of(self, x: torch.Tensor, level) -> torch.Tensor:
        """Integer cell coordinates (..., 3) of positions x (..., 3) [m] on level(s)."""
        return _cell_of(x, self.origin, _inv_size(self.base, level, x.device))

    def key(self, level, cells: torch.Tensor):
        """Keys (K,) and in-grid flags (K,) of cells (K, 3) on level(s) (int or (K,))."""
        dims, base = self.dims[level], self.key_base[level]
        valid = ((cells >= 0) & (cells < dims)).all(-1)
        c = torch.where(valid[:, None], cells, torch.zeros_like(cells))
        return base + (c[:, 0] * dims[..., 1] + c[:, 1]) * dims[..., 2] + c[:, 2], valid

    def find(self, keys: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Slots (K,) of the keys among the occupied cells, -1 where absent or invalid."""
        if len(self.keys) == 0:
            return torch.full_like(keys, -1)
        slot = torch.searchsorted(self.keys, keys).clamp_max(len(self.keys) - 1)
        return torch.where(valid & (self.keys[slot] == keys), slot, -1)


class _PointGrid(_Cells):
    """Each Gaussian in every cell its box overlaps, on the finest level whose cells are at
    least its largest box half-width (so in at most 3 x 3 x 3 cells)."""

    def __init__(self, means, half, reach, base: float):
        dev = means.device
        lo, hi = means - half, means + half
        origin = lo.amin(0) if len(means) else torch.zeros(3, device=dev)
        level = _level(reach, base)
        inv = _inv_size(base, level, dev)[:, None]
        first = _cell_of(lo, origin, inv)
        span = _cell_of(hi, origin, inv) - first + 1
        n_cells = span.prod(-1)
        gid = torch.repeat_interleave(torch.arange(len(means), device=dev), n_cells)
        k = torch.arange(len(gid), device=dev) - (n_cells.cumsum(0) - n_cells)[gid]
        s = span[gid]
        offset = torch.stack([k // (s[:, 1] * s[:, 2]), (k // s[:, 2]) % s[:, 1], k % s[:, 2]],
                             -1)
        super().__init__(origin, base, level[gid], first[gid] + offset, gid)

    def hits(self, points: torch.Tensor):
        """(query index (H,), occupied slot (H,)): each point's own cell on every level."""
        owner, slots = [], []
        q = torch.arange(len(points), device=points.device)
        for level in self.levels:
            slot = self.find(*self.key(level, self.cell_of(points, level)))
            found = torch.nonzero(slot >= 0).squeeze(1)
            owner.append(q[found])
            slots.append(slot[found])
        return _cat(owner, q), _cat(slots, q)


class _SphereGrid(_Cells):
    """Each Gaussian once, in the cell of its centre, on the finest level whose cells are at
    least its box width; box_lo / box_hi (C, 3) [m]: the union of each cell's boxes."""

    def __init__(self, means, half, reach, base: float):
        dev = means.device
        origin = means.amin(0) if len(means) else torch.zeros(3, device=dev)
        level = _level(2 * reach, base)
        cells = _cell_of(means, origin, _inv_size(base, level, dev)[:, None])
        super().__init__(origin, base, level, cells, torch.arange(len(means), device=dev))
        slot = torch.repeat_interleave(torch.arange(len(self.keys), device=dev), self.counts,
                                       output_size=len(self.ids))[:, None].expand(-1, 3)
        inf = torch.full((len(self.keys), 3), math.inf, device=dev)
        self.box_lo = inf.scatter_reduce(0, slot, (means - half)[self.ids], "amin")
        self.box_hi = (-inf).scatter_reduce(0, slot, (means + half)[self.ids], "amax")
        # Per level, how far (per axis) [m] a Gaussian's box may reach out of its cell.
        self.reach = {lv: half[level == lv].amax(0) for lv in self.levels}

    def hits(self, centers: torch.Tensor, radii: torch.Tensor):
        """(query index (H,), occupied slot (H,)): cells whose union box is within the
        radius of the centre."""
        owner, slots = [], []
        q = torch.arange(len(centers), device=centers.device)
        for level in self.levels:
            pad = radii[:, None] + self.reach[level]
            lo, hi = self.cell_of(centers - pad, level), self.cell_of(centers + pad, level)
            n = int((hi - lo).amax()) + 1 if len(centers) else 0
            steps = torch.tensor(list(itertools.product(range(n), repeat=3)),
                                 dtype=torch.long, device=centers.device).reshape(-1, 3)
            cells = (lo[:, None, :] + steps).reshape(-1, 3)
            inside = (cells <= hi.repeat_interleave(len(steps), 0)).all(-1)
            keys, valid = self.key(level, cells)
            cand = torch.nonzero(valid & inside).squeeze(1)
            slot = self.find(keys[cand], valid[cand])
            qi, slot = cand // len(steps), slot
            c = centers[qi]
            nearest = torch.minimum(torch.maximum(c, self.box_lo[slot]), self.box_hi[slot])
            near = (slot >= 0) & (squared_norm(c - nearest) <= radii[qi].square())
            near = torch.nonzero(near).squeeze(1)
            owner.append(qi[near])
            slots.append(slot[near])
        return _cat(owner, q), _cat(slots, q)


def _pairs(owner: torch.Tensor, starts: torch.Tensor, counts: torch.Tensor, ids: torch.Tensor,
           chunk: int):
    """Yield (query index (M,), Gaussian id (M,)) for runs ids[start:start + count] of hits
    with the given owners (H,), in chunks of M < 2 * chunk pairs unless one run is longer."""
    ends = counts.cumsum(0)
    ends_host = ends.cpu().numpy()  # the one host transfer: plan the chunks
    total = int(ends_host[-1]) if len(ends_host) else 0
    cuts = np.searchsorted(ends_host, np.arange(chunk, total, chunk), "right")
    bounds = np.unique(np.concatenate([[0], cuts, [len(counts)]])).tolist()
    for i0, i1 in zip(bounds[:-1], bounds[1:]):
        first = int(ends_host[i0 - 1]) if i0 else 0
        m = int(ends_host[i1 - 1]) - first
        if m == 0:
            continue
        hit = torch.repeat_interleave(torch.arange(i0, i1, device=counts.device),
                                      counts[i0:i1], output_size=m)
        # entry = the run's start + the position within the run
        shift = starts[i0:i1] - (ends[i0:i1] - counts[i0:i1] - first)
        entry = torch.arange(m, device=counts.device) + shift[hit - i0]
        yield owner[hit], ids[entry]


def _level(reach: torch.Tensor, base: float) -> torch.Tensor:
    """Finest level (N,) whose cells base * 2**l [m] are >= reach (N,) [m]."""
    return torch.log2(reach / base).ceil().clamp_min(0).long()


def _inv_size(base: float, level, device) -> torch.Tensor:
    """1 / cell size as float32, computed alike for building and querying."""
    level = torch.as_tensor(level, dtype=torch.float64, device=device)
    return (1.0 / (base * 2.0 ** level)).float()


def _cell_of(x: torch.Tensor, origin: torch.Tensor, inv_size: torch.Tensor) -> torch.Tensor:
    # Monotone in x, so a point inside a box lands in one of the box's cells.
    return torch.floor((x - origin) * inv_size).long()


def _cat(parts, like):
    return torch.cat(parts) if parts else like[:0]


def _whitening(rotations, scales):
    """diag(1 / s) R^T (N, 3, 3): maps offsets [m] to Mahalanobis coordinates."""
    return rotations.transpose(1, 2) / scales[:, :, None]


def _opaque(opacities, min_opacity, n, device):
    if opacities is None:
        return torch.ones(n, dtype=torch.bool, device=device)
    return opacities >= min_opacity


def box_distance(points: torch.Tensor, centres: torch.Tensor, rotations: torch.Tensor,
                 half_extents: torch.Tensor) -> torch.Tensor:
    """Distance (..., S, K) from points (..., S, 3) to K oriented boxes, given per batch as
    centres (..., K, 3), rotations (..., K, 3, 3) and half extents (K, 3) or (..., K, 3);
    0 inside."""
    rel = points[..., :, None, :] - centres[..., None, :, :]               # (..., S, K, 3)
    local = (rel[..., None, :] @ rotations[..., None, :, :, :])[..., 0, :]  # R^T rel
    excess = (local.abs() - half_extents[..., None, :, :]).clamp(min=0)
    return excess.norm(dim=-1)
