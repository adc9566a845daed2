"""Rigid alignment of an object's Gaussians to its points in a new frame (trimmed ICP).

Observed points cover only the visible side of an object while the memory holds every side
seen so far, so the observed points are aligned to the model (each has a true partner there)
and the inverse moves the model. All starts run together as one batch: a handful of kernels
per iteration whatever the number of starts, and no host synchronisation inside the loop.
"""
from __future__ import annotations

import torch

from gsplat_scene.gaussians import Gaussians, quat_from_matrix, quat_multiply
from gsplat_scene.render import quat_to_rotmat, render_gaussians


def kabsch(source: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None):
    """Rigid transforms (..., 4, 4) minimising sum w |R s + t - t'|^2 for paired points.

    source, target (..., M, 3); weights (..., M), by default all equal.
    """
    w = torch.ones(source.shape[:-1], dtype=source.dtype, device=source.device) \
        if weights is None else weights
    w = w / w.sum(-1, keepdim=True).clamp_min(1e-12)
    mu_s = (w[..., None] * source).sum(-2)
    mu_t = (w[..., None] * target).sum(-2)
    cov = ((source - mu_s[..., None, :]) * w[..., None]).transpose(-1, -2) @ \
        (target - mu_t[..., None, :])
    u, _, vt = torch.linalg.svd(cov)
    v_ut = vt.transpose(-1, -2) @ u.transpose(-1, -2)
    fix = torch.ones(source.shape[:-2] + (3,), dtype=source.dtype, device=source.device)
    fix[..., 2] = torch.sign(torch.linalg.det(v_ut))
    rot = vt.transpose(-1, -2) @ torch.diag_embed(fix) @ u.transpose(-1, -2)
    out = torch.eye(4, dtype=source.dtype, device=source.device).expand(
        source.shape[:-2] + (4, 4)).clone()
    out[..., :3, :3] = rot
    out[..., :3, 3] = mu_t - (rot @ mu_s[..., None])[..., 0]
    return out


def _transform(points: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
    """points (P, 3) under each of poses (S, 4, 4) -> (S, P, 3)."""
    return points @ poses[:, :3, :3].transpose(1, 2) + poses[:, None, :3, 3]


def _nearest(moved: torch.Tensor, model: torch.Tensor):
    """(distance (S, P), index (S, P)) of each moved point's nearest model point."""
    best = torch.cdist(moved, model[None].expand(moved.shape[0], -1, -1)).min(dim=-1)
    return best.values, best.indices


def _icp(observed, model, poses, iterations, trim, max_correspondence):
    """Refine S starting poses (S, 4, 4) (observed -> model) together."""
    for _ in range(iterations):
        moved = _transform(observed, poses)
        dist, idx = _nearest(moved, model)
        # The closest trim fraction of pairs, and no pair beyond max_correspondence unless
        # the start is so far off that most pairs are (then twice the typical distance).
        cut = torch.quantile(dist, torch.tensor([trim, trim / 2], dtype=dist.dtype,
                                                device=dist.device), dim=1)
        limit = torch.minimum(cut[0], torch.clamp(2 * cut[1], min=max_correspondence))
        weights = (dist <= limit[:, None]).to(dist.dtype)
        poses = kabsch(moved, model[idx], weights) @ poses
    return poses


def align_to_model(observed: torch.Tensor, model: torch.Tensor, iterations: int = 30,
                   trim: float = 0.8, max_correspondence: float = 0.05,
                   search: float = 0.04, inlier_distance: float = 0.004):
    """Motion of the model that makes it explain the observed points.

    Args:
        observed: (P, 3) points of the object in the new frame [m, world].
        model: (M, 3) the object's Gaussian centres in memory [m, world].
        trim: fraction of closest pairs used per ICP iteration (robust to mask bleeding).
        max_correspondence: pairs farther apart are not used once ICP is close [m].
        search: ICP also starts from horizontal offsets of this size [m], so a push of a few
            centimetres between integrated frames does not trap it in a local minimum, and
            from the observed centroid moved onto the model's.
        inlier_distance: an observed point within this of the moved model is explained [m]
            (at least the pixel footprint on the object).
    Returns:
        (delta (4, 4), rmse of the explained points [m], fraction explained): apply delta to
        the model. Of the motions that explain (nearly) the most, the closest fit wins; a
        motion must explain clearly more than staying put (partial views bias ICP).
    """
    eye = torch.eye(4, dtype=observed.dtype, device=observed.device)
    offsets = torch.tensor([(dx * search, dy * search) for dx in (0, -1, 1) for dy in (0, -1, 1)],
                           dtype=observed.dtype, device=observed.device)
    starts = eye.repeat(len(offsets) + 1, 1, 1)
    starts[:-1, :2, 3] = offsets
    # And from the centroids matched: finds an object knocked farther than the search.
    starts[-1, :3, 3] = model.mean(0) - observed.mean(0)
    poses = torch.cat([eye[None], _icp(observed, model, starts, iterations, trim,
                                       max_correspondence)])
    dist, _ = _nearest(_transform(observed, poses), model)
    explained = dist <= inlier_distance
    fraction = explained.float().mean(1)
    rmse = ((dist ** 2 * explained).sum(1) / explained.sum(1).clamp_min(1)).sqrt()
    rmse = torch.where(explained.any(1), rmse, torch.full_like(rmse, float("inf")))
    # Of the starts that explain (nearly) as much as the best one, the closest fit.
    near_best = fraction >= fraction[1:].max() - 0.02
    near_best[0] = False
    best = int(torch.argmin(torch.where(near_best, rmse, torch.inf)))
    if float(fraction[best]) <= float(fraction[0]) + 0.1:
        best = 0
    # poses map observed -> model; the model moves by the inverse.
    return torch.linalg.inv(poses[best]), float(rmse[best]), float(fraction[best])


def _axis_angle_quat(w: torch.Tensor) -> torch.Tensor:
    """(4,) wxyz quaternion of a rotation vector (3,) [rad], differentiable at zero."""
    angle = torch.sqrt((w * w).sum() + 1e-12)
    return torch.cat([torch.cos(angle / 2)[None], torch.sin(angle / 2) / angle * w])


def refine_pose(g: Gaussians, motion: torch.Tensor, depth: torch.Tensor, mask: torch.Tensor,
                visible: torch.Tensor, K: torch.Tensor, viewmat: torch.Tensor,
                iterations: int = 20, depth_weight: float = 10.0):
    """Refine an object's rigid motion by rendering its Gaussians moved and matching the
    observed silhouette and depth (gradient descent on a twist about the object's centre).

    ICP pairs points and leaves a flat face free to turn; the silhouette pins the turn, and
    its soft edges resolve a fraction of a pixel.
    Args:
        g: the object's Gaussians in memory (before the motion).
        motion: (4, 4) starting estimate of the object's motion, world frame.
        depth: (H, W) observed depth [m]; mask: (H, W) bool, the object's observed pixels;
        visible: (H, W) bool, pixels where the object would not be hidden (not another
            object or the robot); K: (3, 3) renderer intrinsics; viewmat: (4, 4) world to camera.
    Returns:
        (motion (4, 4), loss at the start, loss at the end): the loss is the mean
        |alpha - mask| over the visible crop plus depth_weight times the mean depth error
        where both show the object.
    """
    rows, cols = torch.nonzero(mask, as_tuple=True)
    if rows.numel() == 0:
        return motion, float("inf"), float("inf")
    # Render only a box around the object (plus a margin it may have moved into).
    h, w = mask.shape
    r0, r1, c0, c1 = (int(v) for v in torch.stack([rows.min(), rows.max(), cols.min(),
                                                   cols.max()]).tolist())
    pad = max(8, (r1 - r0) // 3, (c1 - c0) // 3)
    r0, c0, r1, c1 = max(0, r0 - pad), max(0, c0 - pad), min(h, r1 + pad + 1), min(w, c1 + pad + 1)
    crop = (slice(r0, r1), slice(c0, c1))
    target, observed, weight = mask[crop].float(), depth[crop], visible[crop].float()
    Kc = K.clone()
    Kc[0, 2] -= c0
    Kc[1, 2] -= r0
    means = g.means @ motion[:3, :3].T + motion[:3, 3]
    quats = quat_multiply(quat_from_matrix(motion[:3, :3]).expand_as(g.quats), g.quats)
    centre = means.mean(0).detach()
    # Translation [m] and rotation vector [rad / 5], so one Adam step size suits both.
    twist = torch.zeros(6, device=means.device, requires_grad=True)
    optimiser = torch.optim.Adam([twist], lr=2e-3)
    n_mask = target.sum().clamp_min(1)

    def loss_of_twist():
        q = _axis_angle_quat(twist[3:] * 5.0)
        R = quat_to_rotmat(q[None])[0]
        moved = Gaussians((means - centre) @ R.T + centre + twist[:3],
                          quat_multiply(q.expand_as(quats), quats), g.log_scales,
                          g.opacity_logits, g.sh0, g.labels)
        out = render_gaussians(moved, viewmat[None], Kc[None], c1 - c0, r1 - r0)
        alpha, drawn = out.alpha[0], out.depth[0]
        silhouette = ((alpha - target).abs() * weight).sum() / weight.sum().clamp_min(1)
        inside = target * (alpha.detach() > 0.3)
        return silhouette + depth_weight * ((drawn - observed).abs() * inside).sum() / n_mask

    losses, twists = [], []
    for k in range(iterations + 1):
        loss = loss_of_twist()
        losses.append(loss.detach())
        twists.append(twist.detach().clone())
        if k == iterations:
            break
        # Adam moves by about its step size each step: shrink it tenfold over the last
        # 40 % of the steps so the pose settles instead of dithering by a step.
        late = max(0.0, (k - 0.6 * iterations) / max(1.0, 0.4 * iterations - 1))
        optimiser.param_groups[0]["lr"] = 2e-3 * 0.1 ** min(1.0, late)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    # The best twist seen (the last step may have overshot).
    best = int(torch.argmin(torch.stack(losses)))
    w = twists[best]
    R = quat_to_rotmat(_axis_angle_quat(w[3:] * 5.0)[None])[0]
    step = torch.eye(4, device=means.device)
    step[:3, :3] = R
    step[:3, 3] = centre + w[:3] - R @ centre
    return step @ motion, float(losses[0]), float(losses[best])
