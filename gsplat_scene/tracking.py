"""Rigid alignment of an object's Gaussians to its points in a new frame (trimmed ICP).

Observed points cover only the visible side of an object while the memory holds every side
seen so far, so the observed points are aligned to the model (each has a true partner there)
and the inverse moves the model.
"""
from __future__ import annotations

import torch


def kabsch(source: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None):
    """Rigid transform (4, 4) minimising sum w |R s + t - t'|^2 for paired (M, 3) points."""
    w = torch.ones(source.shape[0], dtype=source.dtype, device=source.device) \
        if weights is None else weights
    w = w / w.sum()
    mu_s = (w[:, None] * source).sum(0)
    mu_t = (w[:, None] * target).sum(0)
    cov = ((source - mu_s) * w[:, None]).T @ (target - mu_t)
    u, _, vt = torch.linalg.svd(cov)
    d = torch.sign(torch.linalg.det(vt.T @ u.T))
    fix = torch.diag(torch.stack([torch.ones_like(d), torch.ones_like(d), d]))
    rot = vt.T @ fix @ u.T
    out = torch.eye(4, dtype=source.dtype, device=source.device)
    out[:3, :3] = rot
    out[:3, 3] = mu_t - rot @ mu_s
    return out


def _transform(points: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
    return points @ pose[:3, :3].T + pose[:3, 3]


def nearest(query: torch.Tensor, reference: torch.Tensor, chunk: int = 4096):
    """(distance (Q,), index (Q,)) of each query point's nearest reference point."""
    dists, idx = [], []
    for start in range(0, query.shape[0], chunk):
        d = torch.cdist(query[start:start + chunk], reference)
        best = d.min(dim=1)
        dists.append(best.values)
        idx.append(best.indices)
    return torch.cat(dists), torch.cat(idx)


def _icp(observed, model, pose, iterations, trim, max_correspondence):
    """Refine pose (observed -> model); returns (pose, rmse, inlier fraction)."""
    rmse, inliers = float("inf"), 0.0
    for _ in range(iterations):
        moved = _transform(observed, pose)
        dist, idx = nearest(moved, model)
        keep = dist <= torch.quantile(dist, trim)
        keep &= dist <= max(max_correspondence, float(dist[keep].median()) * 2.0)
        if keep.sum() < 6:
            break
        pose = kabsch(moved[keep], model[idx[keep]]) @ pose
        new_rmse = float(dist[keep].pow(2).mean().sqrt())
        inliers = float(keep.float().mean())
        converged = abs(rmse - new_rmse) < 1e-6
        rmse = new_rmse
        if converged:
            break
    return pose, rmse, inliers


def align_to_model(observed: torch.Tensor, model: torch.Tensor, iterations: int = 30,
                   trim: float = 0.8, max_correspondence: float = 0.05,
                   search: float = 0.04, inlier_distance: float = 0.004):
    """Motion of the model that makes it explain the observed points.

    Args:
        observed: (P, 3) points of the object in the new frame [m, world].
        model: (M, 3) the object's Gaussian centres in memory [m, world].
        trim: fraction of closest pairs used per ICP iteration (robust to mask bleeding).
        max_correspondence: pairs farther apart are never used [m].
        search: ICP also starts from horizontal offsets of this size [m], so a push of a few
            centimetres between integrated frames does not trap it in a local minimum.
        inlier_distance: an observed point within this of the moved model is explained [m].
    Returns:
        (delta (4, 4), rmse of the explained points [m], fraction explained): apply delta to
        the model. Starts are ranked by the fraction explained; "no motion" wins ties.
    """
    def score(pose):
        dist, _ = nearest(_transform(observed, pose), model)
        explained = dist <= inlier_distance
        rmse = float(dist[explained].pow(2).mean().sqrt()) if explained.any() else float("inf")
        return rmse, float(explained.float().mean())

    still = torch.eye(4, dtype=observed.dtype, device=observed.device)
    best = (still, *score(still))
    if best[2] >= 0.8:
        return still, best[1], best[2]  # the object stayed put: the common case
    offsets = [(0.0, 0.0)] + [(dx * search, dy * search) for dx in (-1, 0, 1)
                              for dy in (-1, 0, 1) if dx or dy]
    for dx, dy in offsets:
        start = still.clone()
        start[0, 3], start[1, 3] = dx, dy
        pose, _, _ = _icp(observed, model, start, iterations, trim, max_correspondence)
        rmse, fraction = score(pose)
        # A motion must explain clearly more than staying put (partial views bias ICP).
        if fraction > best[2] + 0.1:
            best = (pose, rmse, fraction)
    pose, rmse, fraction = best
    # pose maps observed -> model; the model moves by its inverse.
    return torch.linalg.inv(pose), rmse, fraction
