"""Benchmark collision queries against a Gaussian map (gsplat_scene.queries).

Scene: 100k Gaussians on the surfaces of a room corner (4 m^2 floor, 3 m^2 wall, a 1.2 x 0.8 m
table top, boxes of 5-25 cm on it), scales log-uniform in 3-15 mm with the smallest along the
surface normal, opacities uniform in [0, 1] (min_opacity 0.1 keeps ~90 %).
Queries: "workspace" uniform in the box above and around the table where an arm moves
(x +-0.8 m, y +-0.6 m, z 0.6-1.4 m); "surface" within 5 cm of a surface (worst case).

Figures:
  build_s                          index build time for the scene
  points_per_s_{workspace,surface} points_in_collision tests/s
  spheres_per_s_{workspace,surface} spheres_in_collision tests/s (radius 5 cm)
  clearance_per_s_workspace        sphere_clearance/s (radius 5 cm, max_distance 10 cm)
  points_colliding_workspace, spheres_colliding_workspace   fraction in collision
Baselines measured in the same run:
  baseline_brute_points_per_s / _spheres_per_s   every query against every Gaussian

    python benchmarks/gsplat_queries.py [--quick] [--device cpu|cuda] [--json PATH]
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.report import report  # noqa: E402

import torch  # noqa: E402

from gsplat_scene.queries import (GaussianCollisionIndex, brute_force_mahalanobis,  # noqa: E402
                                  brute_force_sphere_distance)

# Axis-aligned rectangles: (centre (3,), half sizes (3,) with 0 along the normal, normal axis,
# normal sign).
WORKSPACE = ((-0.8, 0.8), (-0.6, 0.6), (0.6, 1.4))


def scene_surfaces():
    rects = [((0, 0, 0), (1.0, 1.0, 0), 2, 1), ((0, 1.0, 0.75), (1.0, 0, 0.75), 1, -1),
             ((0, 0, 0.75), (0.6, 0.4, 0), 2, 1)]
    boxes = [((-0.3, -0.1), 0.05), ((0.0, 0.15), 0.10), ((0.25, -0.2), 0.25),
             ((0.4, 0.2), 0.08), ((-0.45, 0.25), 0.15)]
    for (x, y), size in boxes:
        h = size / 2
        z = 0.75 + h
        rects += [((x, y, z + h), (h, h, 0), 2, 1)]
        rects += [((x + s * h, y, z), (0, h, h), 0, s) for s in (-1, 1)]
        rects += [((x, y + s * h, z), (h, 0, h), 1, s) for s in (-1, 1)]
    return rects


def quat_mul(a, b):
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz,
                        aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw], -1)


# Rotation taking local z to the normal axis (+x, +y, +z), as (w, x, y, z).
_ALIGN = {0: (math.sqrt(0.5), 0, math.sqrt(0.5), 0), 1: (math.sqrt(0.5), -math.sqrt(0.5), 0, 0),
          2: (1.0, 0, 0, 0)}


def surface_samples(n: int, generator: torch.Generator):
    """n points uniformly on the scene's surfaces: positions (n, 3), normal axes (n,),
    normal signs (n,)."""
    rects = scene_surfaces()
    centre = torch.tensor([r[0] for r in rects], dtype=torch.float32)
    half = torch.tensor([r[1] for r in rects], dtype=torch.float32)
    area = torch.stack([half[:, 0] * half[:, 1], half[:, 0] * half[:, 2],
                        half[:, 1] * half[:, 2]], -1).amax(-1)
    which = torch.multinomial(area, n, replacement=True, generator=generator)
    u = torch.rand(n, 3, generator=generator) * 2 - 1
    pos = centre[which] + u * half[which]
    axis = torch.tensor([r[2] for r in rects])[which]
    sign = torch.tensor([float(r[3]) for r in rects])[which]
    return pos, axis, sign


def scene_gaussians(n: int = 100_000, seed: int = 0):
    """means (n, 3), quats (n, 4), scales (n, 3), opacities (n,) of the benchmark scene."""
    g = torch.Generator().manual_seed(seed)
    pos, axis, sign = surface_samples(n, g)
    normal = torch.nn.functional.one_hot(axis, 3).float() * sign[:, None]
    means = pos + normal * 0.001 * torch.randn(n, 1, generator=g)
    scales = torch.exp(torch.empty(n, 3).uniform_(math.log(0.003), math.log(0.015),
                                                  generator=g)).sort(-1, descending=True).values
    theta = torch.rand(n, generator=g) * 2 * math.pi
    spin = torch.stack([torch.cos(theta / 2), torch.zeros(n), torch.zeros(n),
                        torch.sin(theta / 2)], -1)
    align = torch.tensor([_ALIGN[i] for i in range(3)], dtype=torch.float32)[axis]
    quats = quat_mul(align, spin)
    opacities = torch.rand(n, generator=g)
    return means, quats, scales, opacities


def workspace_points(n: int, generator: torch.Generator) -> torch.Tensor:
    lo = torch.tensor([w[0] for w in WORKSPACE])
    hi = torch.tensor([w[1] for w in WORKSPACE])
    return lo + torch.rand(n, 3, generator=generator) * (hi - lo)


def near_surface_points(n: int, generator: torch.Generator) -> torch.Tensor:
    pos, axis, sign = surface_samples(n, generator)
    normal = torch.nn.functional.one_hot(axis, 3).float() * sign[:, None]
    return pos + normal * (torch.rand(n, 1, generator=generator) * 0.1 - 0.05)


def rate(fn, n_queries: int, min_seconds: float, device) -> float:
    """Queries/s of fn over at least min_seconds (after one warm-up call)."""
    fn()
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return calls * n_queries / elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short CPU run (under a minute)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", type=Path, help="write the figures as one flat JSON object")
    args = ap.parse_args()
    device = torch.device(args.device)
    seconds = 1.0 if args.quick else 3.0
    big = 1 if device.type == "cpu" else 10
    g = torch.Generator().manual_seed(1)

    scene = [t.to(device) for t in scene_gaussians()]
    results = {"device": str(device), "gaussians": len(scene[0]), "threads":
               torch.get_num_threads()}
    GaussianCollisionIndex(*scene)  # warm-up
    start = time.perf_counter()
    index = GaussianCollisionIndex(*scene)
    if device.type == "cuda":
        torch.cuda.synchronize()
    results["build_s"] = time.perf_counter() - start
    results["indexed_gaussians"] = len(index)

    n_points, n_spheres = 1_000_000 * big, 200_000 * big
    for name, sample in (("workspace", workspace_points), ("surface", near_surface_points)):
        points = sample(n_points, g).to(device)
        centers = sample(n_spheres, g).to(device)
        radii = torch.full((n_spheres,), 0.05, device=device)
        results[f"points_per_s_{name}"] = rate(lambda: index.points_in_collision(points),
                                               n_points, seconds, device)
        results[f"spheres_per_s_{name}"] = rate(
            lambda: index.spheres_in_collision(centers, radii), n_spheres, seconds, device)
        if name == "workspace":
            results["clearance_per_s_workspace"] = rate(
                lambda: index.sphere_clearance(centers, radii, 0.1), n_spheres, seconds, device)
            results["points_colliding_workspace"] = float(
                index.points_in_collision(points).float().mean())
            results["spheres_colliding_workspace"] = float(
                index.spheres_in_collision(centers, radii).float().mean())

    few = workspace_points(2000, g).to(device)
    results["baseline_brute_points_per_s"] = rate(
        lambda: brute_force_mahalanobis(few, *scene, min_opacity=0.1), len(few), seconds, device)
    few = few[:200]
    results["baseline_brute_spheres_per_s"] = rate(
        lambda: brute_force_sphere_distance(few, *scene, min_opacity=0.1), len(few), seconds,
        device)

    report(results, args.json)


if __name__ == "__main__":
    main()
