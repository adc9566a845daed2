"""Differentiable 3D Gaussian splatting: one entry point, a gsplat (CUDA) and a PyTorch backend.

Both backends follow gsplat's "classic" 3DGS rasteriser:

* Projection. Camera-space centres p = R x + t from ``viewmats`` (world to camera, optical frame:
  x right, y down, z forward); 3D covariance R_q S S^T R_q^T; 2D covariance J Sigma_cam J^T with
  the perspective Jacobian J taken at the point pulled back into 1.3x the field of view; ``eps2d``
  added to its diagonal.
* Culling. A Gaussian is dropped from a camera when its centre depth is outside [near, far], its
  opacity is below 1/255, or the box that holds every pixel it can reach lies outside the image.
  The box is gsplat's opacity-aware one, +-ceil(k sqrt(Sigma_xx)), +-ceil(k sqrt(Sigma_yy)) with
  k = min(3.33, sqrt(2 ln(255 opacity))); it holds the whole alpha >= 1/255 region, so culling
  and tiling never change an image.
* Blending, per pixel centre (u + 0.5, v + 0.5): alpha_i = min(0.99, o_i exp(-d^T Sigma^-1 d / 2)),
  alphas below 1/255 skipped, Gaussians front to back by centre depth (ties by index). A
  Gaussian that would bring the transmittance T to 1e-4 or below ends the pixel and is left out.
  Weights w_i = alpha_i T_i.

Outputs: alpha = sum_i w_i (= 1 - T), rgb = sum_i w_i c_i + (1 - alpha) background, and the
expected depth sum_i w_i z_i / alpha (gsplat's "ED"), which is 0 where alpha < 1e-6.

The PyTorch backend is tile based: each Gaussian is paired with the TILE x TILE tiles its box
touches, pairs are sorted by (tile, depth), and tiles are evaluated in batches of similar list
length, front to back in blocks of Gaussians, until every pixel of a batch has ended. Within a
tile, log(alpha) of all pixels against a block is one matrix product (a quadratic in the pixel
offsets from the tile centre). The backward pass is written out and recomputes the blocks
instead of storing them, so memory stays at one block plus O(pairs).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .gaussians import Gaussians

# Small tiles: a tile's pixels are all evaluated against every Gaussian touching it, and most
# footprints are a few pixels across.
TILE = 8
ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.99
TRANSMITTANCE_MIN = 1e-4
EXTEND_MAX = 3.33
DEPTH_ALPHA_MIN = 1e-6
BACKENDS = ("auto", "gsplat", "torch")

# Work sizes of the PyTorch backend: tiles evaluated together, and Gaussians per block of a
# tile's depth-sorted list. A block holds TILES_PER_BATCH * TILE^2 * GAUSSIANS_PER_BLOCK values.
TILES_PER_BATCH = 32
GAUSSIANS_PER_BLOCK = 64
_LOG_ALPHA_MAX = math.log(ALPHA_MAX)
# Lowest log(alpha) evaluated, far below ALPHA_MIN; also that of the padding entries.
_LOG_ALPHA_FLOOR = -30.0


class RenderOutput(NamedTuple):
    rgb: torch.Tensor    # (C, H, W, 3)
    depth: torch.Tensor  # (C, H, W) expected camera-space depth [m], 0 where alpha < 1e-6
    alpha: torch.Tensor  # (C, H, W) accumulated opacity


def rasterize(
    means: torch.Tensor,
    quats: torch.Tensor,
    scales: torch.Tensor,
    opacities: torch.Tensor,
    colors: torch.Tensor,
    viewmats: torch.Tensor,
    Ks: torch.Tensor,
    width: int,
    height: int,
    near: float = 0.01,
    far: float = 100.0,
    backend: str = "auto",
    eps2d: float = 0.3,
    background: Optional[Union[torch.Tensor, Sequence[float]]] = None,
) -> RenderOutput:
    """Render N Gaussians into C pinhole cameras.

    Args:
        means: (N, 3) centres in the world frame [m].
        quats: (N, 4) rotations (w, x, y, z); normalised here.
        scales: (N, 3) standard deviations along the Gaussians' axes [m].
        opacities: (N,) peak opacities in [0, 1].
        colors: (N, 3) RGB in [0, 1].
        viewmats: (C, 4, 4) world-to-camera transforms, optical convention.
        Ks: (C, 3, 3) pinhole intrinsics [px].
        width, height: image size [px].
        near, far: depth range of the Gaussian centres that are drawn [m].
        backend: "torch", "gsplat" (CUDA tensors and the gsplat package), or "auto": gsplat
            when the tensors are on CUDA and gsplat imports, otherwise torch.
        eps2d: added to the diagonal of every 2D covariance [px^2].
        background: (3,) colour behind the Gaussians; black when None.

    Returns:
        RenderOutput(rgb (C, H, W, 3), depth (C, H, W), alpha (C, H, W)), differentiable with
        respect to means, quats, scales, opacities and colors.
    """
    _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if background is not None:
        background = torch.as_tensor(background, dtype=means.dtype, device=means.device)
        if background.shape != (3,):
            raise ValueError(f"background must have shape (3,), got {tuple(background.shape)}")
    viewmats, Ks = viewmats.to(means), Ks.to(means)

    gsplat = _import_gsplat() if backend != "torch" and means.is_cuda else None
    if backend == "gsplat" and gsplat is None:
        missing = "CUDA tensors" if not means.is_cuda else "the gsplat package"
        raise RuntimeError(f"backend='gsplat' needs CUDA tensors and the gsplat package; "
                           f"{missing} missing (tensors on {means.device}). "
                           f"Use backend='torch' or 'auto'.")
    if gsplat is not None:
        return _rasterize_gsplat(gsplat, means, quats, scales, opacities, colors, viewmats, Ks,
                                 width, height, near, far, eps2d, background)
    return _rasterize_torch(means, quats, scales, opacities, colors, viewmats, Ks,
                            width, height, near, far, eps2d, background)


def render_gaussians(g: Gaussians, viewmats: torch.Tensor, Ks: torch.Tensor, width: int,
                     height: int, **kwargs) -> RenderOutput:
    """``rasterize`` of a Gaussians map (its activated values); kwargs go to ``rasterize``."""
    return rasterize(g.means, g.unit_quats, g.scales, g.opacities, g.colors, viewmats, Ks,
                     width, height, **kwargs)


def look_at_viewmat(eye, target, up=(0.0, 0.0, 1.0)) -> torch.Tensor:
    """(4, 4) world-to-camera transform of a camera at ``eye`` looking at ``target``.

    Optical convention: z towards the target, x to the right, y down (so ``up`` points to -y in
    the image). Takes the dtype and device of ``eye`` when it is a tensor, else float32 on CPU.
    """
    like = eye if isinstance(eye, torch.Tensor) else torch.empty(0)
    eye, target, up = (torch.as_tensor(v, dtype=like.dtype, device=like.device)
                       for v in (eye, target, up))
    forward = target - eye
    right = torch.linalg.cross(forward, up)
    if forward.norm() == 0 or right.norm() <= 1e-9 * forward.norm() * up.norm():
        raise ValueError("look_at_viewmat: eye equals target, or the view direction is parallel "
                         "to up")
    z = forward / forward.norm()
    x = right / right.norm()
    rotation = torch.stack([x, torch.linalg.cross(z, x), z])
    viewmat = torch.eye(4, dtype=like.dtype, device=like.device)
    viewmat[:3, :3] = rotation
    viewmat[:3, 3] = -rotation @ eye
    return viewmat


def _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height):
    n = means.shape[0] if means.dim() == 2 else -1
    c = viewmats.shape[0] if viewmats.dim() == 3 else -1
    expected = {"means": (means, (n, 3)), "quats": (quats, (n, 4)), "scales": (scales, (n, 3)),
                "opacities": (opacities, (n,)), "colors": (colors, (n, 3)),
                "viewmats": (viewmats, (c, 4, 4)), "Ks": (Ks, (c, 3, 3))}
    for name, (tensor, shape) in expected.items():
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, expected {shape} "
                             f"(N Gaussians, C cameras)")
    if int(width) != width or int(height) != height or width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive integers, got {width}x{height}")


# --- gsplat backend ---------------------------------------------------------------------------

def _import_gsplat():
    try:
        import gsplat
    except ImportError:
        return None
    return gsplat


def _rasterize_gsplat(gsplat, means, quats, scales, opacities, colors, viewmats, Ks, width,
                      height, near, far, eps2d, background) -> RenderOutput:
    n_cameras = viewmats.shape[0]
    backgrounds = None if background is None else background.expand(n_cameras, 3).contiguous()
    render, alpha, _ = gsplat.rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, int(width), int(height),
        near_plane=near, far_plane=far, eps2d=eps2d, packed=False, render_mode="RGB+ED",
        rasterize_mode="classic", backgrounds=backgrounds)
    alpha = alpha[..., 0]
    # gsplat divides by max(alpha, 1e-10); below DEPTH_ALPHA_MIN the depth is set to 0.
    depth = torch.where(alpha >= DEPTH_ALPHA_MIN, render[..., 3], torch.zeros_like(alpha))
    return RenderOutput(render[..., :3], depth, alpha)


# --- PyTorch backend: projection ----------------------------------------------------------------

def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """(N, 4) quaternions (w, x, y, z), any norm -> (N, 3, 3) rotation matrices."""
    w, x, y, z = F.normalize(quats, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(-1, 3, 3)


def _to_camera(means, quats, scales, viewmats):
    """Centres (C, N, 3) and covariances (C, N, 3, 3) in each camera frame."""
    rotations = viewmats[:, :3, :3]
    means_c = torch.einsum("cij,nj->cni", rotations, means) + viewmats[:, None, :3, 3]
    # Sigma_cam = M M^T with M = R_cam R_q S.
    axes = quat_to_rotmat(quats) * scales[:, None, :]
    m = torch.einsum("cij,njk->cnik", rotations, axes)
    return means_c, m @ m.mT


def _project(means_c, covs_c, intrinsics, width, height, eps2d):
    """EWA projection as gsplat's pinhole model.

    means_c (..., 3) with z > 0, covs_c (..., 3, 3), intrinsics (..., 4) = (fx, fy, cx, cy)
    -> means2d (..., 2) [px] and blurred 2D covariances (..., 3) = (xx, xy, yy) [px^2].
    """
    fx, fy, cx, cy = intrinsics.unbind(-1)
    x, y, z = means_c.unbind(-1)
    u, v = x / z, y / z
    # J is taken at the direction clamped to 1.3x the field of view, so Gaussians far off to
    # the side do not get stretched footprints.
    margin_x, margin_y = 0.15 * width / fx, 0.15 * height / fy
    u_j = torch.minimum(torch.maximum(u, -cx / fx - margin_x), (width - cx) / fx + margin_x)
    v_j = torch.minimum(torch.maximum(v, -cy / fy - margin_y), (height - cy) / fy + margin_y)
    # J = [[j00, 0, j02], [0, j11, j12]]
    j00, j02 = fx / z, -fx * u_j / z
    j11, j12 = fy / z, -fy * v_j / z
    s = covs_c
    xx = j00 * j00 * s[..., 0, 0] + 2 * j00 * j02 * s[..., 0, 2] + j02 * j02 * s[..., 2, 2]
    xy = (j00 * j11 * s[..., 0, 1] + j00 * j12 * s[..., 0, 2] + j02 * j11 * s[..., 1, 2]
          + j02 * j12 * s[..., 2, 2])
    yy = j11 * j11 * s[..., 1, 1] + 2 * j11 * j12 * s[..., 1, 2] + j12 * j12 * s[..., 2, 2]
    means2d = torch.stack([fx * u + cx, fy * v + cy], dim=-1)
    return means2d, torch.stack([xx + eps2d, xy, yy + eps2d], dim=-1)


def _footprints(means2d, covs2d, opacities, width, height):
    """Half sizes (..., 2) [px] of the boxes holding each Gaussian's alpha >= 1/255 region, and
    whether the Gaussian is drawn at all (a positive-definite covariance, enough opacity, and a
    box that overlaps the image)."""
    xx, xy, yy = covs2d.unbind(-1)
    extend = torch.sqrt(2 * torch.log(opacities.clamp(min=ALPHA_MIN) / ALPHA_MIN))
    extend = extend.clamp(max=EXTEND_MAX)
    radii = torch.ceil(extend[..., None] * torch.stack([xx, yy], -1).clamp(min=0).sqrt())
    lo, hi = means2d - radii, means2d + radii
    drawn = ((xx * yy - xy * xy > 0) & (opacities >= ALPHA_MIN) & (radii > 0).any(-1)
             & (hi[..., 0] > 0) & (lo[..., 0] < width) & (hi[..., 1] > 0) & (lo[..., 1] < height))
    return radii, drawn


# --- PyTorch backend: tiles ---------------------------------------------------------------------

class _TilePlan(NamedTuple):
    """Which Gaussians each tile blends, and in which groups the tiles are evaluated.

    Slots number the tiles of all cameras, camera-major then row-major. A slot's pairs are
    contiguous and front to back. Each batch is (slots (B,), first pair (B,), pair count (B,),
    longest list) for tiles of similar list length.
    """
    pair_gaussian: torch.Tensor  # (Q,) drawn Gaussian of each (tile, Gaussian) pair
    pair_centres: torch.Tensor   # (Q, 2) centre of the pair's tile [px]
    pixels: torch.Tensor         # (P, 6) monomials of the pixel centres about the tile centre
    in_image: torch.Tensor       # (n_slots, P) whether the pixel lies inside the image
    n_slots: int
    batches: list


def _tile_pairs(means2d, radii, cameras, depths, width, height):
    """(Gaussian, slot) pairs for every tile a footprint box touches, sorted by (slot, depth).

    means2d, radii (M, 2), cameras (M,), depths (M,) of the drawn Gaussians
    -> pair Gaussian (Q,) and pair slot (Q,).
    """
    tiles_x, tiles_y = math.ceil(width / TILE), math.ceil(height / TILE)
    last = means2d.new_tensor([width - 1, height - 1])
    # First and last pixel whose centre lies inside the box. Integer work is int32: about twice
    # as fast as int64 for the divisions and the sort.
    lo = torch.ceil(means2d - radii - 0.5).clamp(min=0)
    hi = torch.minimum(torch.floor(means2d + radii - 0.5), last)
    touched = (hi >= lo).all(-1)
    lo, hi = (lo // TILE).int(), (hi // TILE).int()
    span = (hi - lo + 1) * touched[:, None]

    # Pairs are made front to back, so a stable sort by slot leaves each tile's list in depth
    # order (ties by index, as gsplat).
    by_depth = torch.argsort(depths, stable=True)
    span, lo, cameras = span[by_depth], lo[by_depth], cameras[by_depth].int()
    counts = span[:, 0] * span[:, 1]
    ranks = torch.repeat_interleave(torch.arange(len(counts), dtype=torch.int32,
                                                 device=means2d.device), counts)
    k = (torch.arange(ranks.shape[0], dtype=torch.int32, device=means2d.device)
         - torch.repeat_interleave(counts.cumsum(0, dtype=torch.int32) - counts, counts))
    columns = span[ranks, 0]
    tile_x, tile_y = (lo[ranks] + torch.stack([k % columns, k // columns], -1)).unbind(-1)
    slot, order = torch.sort((cameras[ranks] * tiles_y + tile_y) * tiles_x + tile_x, stable=True)
    return by_depth[ranks[order]], slot


def _make_plan(pair_gaussian, pair_slot, n_cameras, width, height, dtype) -> _TilePlan:
    device = pair_slot.device
    tiles_x, tiles_y = math.ceil(width / TILE), math.ceil(height / TILE)
    n_slots = n_cameras * tiles_x * tiles_y

    local = torch.arange(TILE, device=device, dtype=dtype) + 0.5 - TILE / 2
    y, x = torch.meshgrid(local, local, indexing="ij")
    x, y = x.reshape(-1), y.reshape(-1)
    pixels = torch.stack([0.5 * x * x, x * y, 0.5 * y * y, x, y, torch.ones_like(x)], dim=-1)

    slot = torch.arange(n_slots, device=device)
    tile_x, tile_y = slot % tiles_x, slot // tiles_x % tiles_y
    pixel = torch.arange(TILE, device=device)
    inside_x = (tile_x[:, None] * TILE + pixel) < width
    inside_y = (tile_y[:, None] * TILE + pixel) < height
    in_image = (inside_y[:, :, None] & inside_x[:, None, :]).reshape(n_slots, TILE * TILE)
    pair_tile = pair_slot % (tiles_x * tiles_y)
    pair_centres = (torch.stack([pair_tile % tiles_x, pair_tile // tiles_x], -1).to(dtype) * TILE
                    + TILE / 2)

    counts = torch.bincount(pair_slot, minlength=n_slots)
    firsts = counts.cumsum(0) - counts
    counts_sorted, slots_sorted = torch.sort(counts, descending=True, stable=True)
    n_busy = int((counts_sorted > 0).sum())
    longest = counts_sorted[:n_busy].tolist()
    batches = []
    for start in range(0, n_busy, TILES_PER_BATCH):
        slots = slots_sorted[start:start + TILES_PER_BATCH]
        batches.append((slots, firsts[slots], counts[slots], longest[start]))
    return _TilePlan(pair_gaussian, pair_centres, pixels, in_image, n_slots, batches)


def _pair_terms(gaussians, plan):
    """Per pair: (mean - tile centre) (dx, dy), conic (a, b, c), log opacity, and the gradient
    of d^T Sigma^-1 d / 2 at the tile centre (grad_x, grad_y)."""
    mean_x, mean_y, a, b, c, log_opacity = gaussians.index_select(0, plan.pair_gaussian).unbind(-1)
    dx, dy = mean_x - plan.pair_centres[:, 0], mean_y - plan.pair_centres[:, 1]
    return dx, dy, a, b, c, log_opacity, a * dx + b * dy, b * dx + c * dy


def _pair_coefficients(gaussians, plan):
    """(Q, 6) coefficients q with pixels @ q = log(opacity) - d^T Sigma^-1 d / 2 about each
    pair's tile centre."""
    dx, dy, a, b, c, log_opacity, grad_x, grad_y = _pair_terms(gaussians, plan)
    constant = log_opacity - 0.5 * (dx * grad_x + dy * grad_y)
    return torch.stack([-a, -b, -c, grad_x, grad_y, constant], -1)


def _pair_coefficients_vjp(gaussians, plan, grad_q):
    """Gradient (M, 6) w.r.t. the Gaussians' (mean x, mean y, a, b, c, log opacity) from the
    gradient (Q, 6) w.r.t. ``_pair_coefficients``."""
    dx, dy, a, b, c, _, grad_x, grad_y = _pair_terms(gaussians, plan)
    g_a, g_b, g_c, g_x, g_y, g_1 = grad_q.unbind(-1)
    per_pair = torch.stack([
        a * g_x + b * g_y - g_1 * grad_x,
        b * g_x + c * g_y - g_1 * grad_y,
        -g_a + dx * g_x - 0.5 * dx * dx * g_1,
        -g_b + dy * g_x + dx * g_y - dx * dy * g_1,
        -g_c + dy * g_y - 0.5 * dy * dy * g_1,
        g_1,
    ], -1)
    return torch.zeros_like(gaussians).index_add_(0, plan.pair_gaussian, per_pair)


def _blend(pixels, coeffs, transmittance, with_clamped=False):
    """Front-to-back blending of one block of depth-sorted Gaussians in B tiles.

    pixels (P, 6) for the P pixels of a tile; coeffs (B, K, 6); transmittance (B, P, 1) =
    product of (1 - alpha) over the tiles' earlier blocks, 0 once a pixel has ended.
    Returns alpha, 1 - alpha and the weights alpha * T_before (0 from the Gaussian that ends the
    pixel on), all (B, P, K), the transmittance after the block (B, P, 1), and with
    ``with_clamped`` where alpha was clamped to ALPHA_MAX.
    """
    log_alpha = torch.matmul(pixels, coeffs.mT)
    # The lower clamp keeps exp off its slow underflow path; such alphas are cut below anyway.
    log_alpha.clamp_(min=_LOG_ALPHA_FLOOR, max=_LOG_ALPHA_MAX)
    clamped = log_alpha == _LOG_ALPHA_MAX if with_clamped else None
    alpha = F.threshold_(log_alpha.exp_(), ALPHA_MIN, 0.0)
    one_minus = 1.0 - alpha
    after = torch.cumprod(one_minus, dim=-1).mul_(transmittance)
    # Transmittances at or below the cut mark the Gaussian that ends the pixel and all behind it.
    F.threshold_(after, TRANSMITTANCE_MIN, 0.0)
    weights = torch.div(after, one_minus).mul_(alpha)
    return alpha, one_minus, weights, after[..., -1:], clamped


def _blocks(plan, table_q, table_f, batch, with_clamped=False):
    """Yield (pair indices (B*K,), features (B, K, 5), ``_blend`` results) for the blocks of
    one batch, front to back, until every in-image pixel of the batch has ended."""
    slots, firsts, counts, longest = batch
    transmittance = table_q.new_ones(slots.shape[0], plan.pixels.shape[0], 1)
    live = plan.in_image[slots][..., None]
    pad = table_q.shape[0] - 1
    for k0 in range(0, longest, GAUSSIANS_PER_BLOCK):
        k = torch.arange(k0, min(k0 + GAUSSIANS_PER_BLOCK, longest), device=slots.device)
        index = torch.where(k < counts[:, None], firsts[:, None] + k, pad).view(-1)
        shape = (slots.shape[0], k.shape[0], -1)
        blended = _blend(plan.pixels, table_q.index_select(0, index).view(shape),
                         transmittance, with_clamped)
        yield index, table_f.index_select(0, index).view(shape), blended
        transmittance = blended[3]
        if not bool(((transmittance > 0) & live).any()):
            return


def _pair_tables(gaussians, features, plan):
    """Coefficients (Q + 1, 6) and features (Q + 1, 5) = (r, g, b, depth, 1) of the pairs, with
    a last padding row that never reaches ALPHA_MIN."""
    pad_q = gaussians.new_zeros(1, 6)
    pad_q[0, 5] = _LOG_ALPHA_FLOOR
    table_q = torch.cat([_pair_coefficients(gaussians, plan), pad_q])
    table_f = torch.cat([features, features.new_ones(len(features), 1)], 1)
    table_f = table_f.index_select(0, plan.pair_gaussian)
    return table_q, torch.cat([table_f, features.new_zeros(1, 5)])


class _TileComposite(torch.autograd.Function):
    """Blending of the drawn Gaussians along each tile's list.

    gaussians (M, 6) = (mean x, mean y, conic a, b, c, log opacity) [px, 1/px^2],
    features (M, 4) = (r, g, b, depth) -> (n_slots, 5, P) per pixel sums of
    w * (r, g, b, depth, 1). Only per-Gaussian inputs and the output are kept for backward;
    the blocks are recomputed there, so memory is bounded by one block plus O(pairs).
    """
    # Products are arranged so the 5 channels are the short side of each matrix product, which
    # is several times faster than the other way round.

    @staticmethod
    def forward(ctx, gaussians, features, plan: _TilePlan):
        table_q, table_f = _pair_tables(gaussians, features, plan)
        n_pixels = plan.pixels.shape[0]
        out = gaussians.new_zeros(plan.n_slots, 5, n_pixels)
        for batch in plan.batches:
            acc = out.new_zeros(batch[0].shape[0], 5, n_pixels)
            for _, feats, blended in _blocks(plan, table_q, table_f, batch):
                acc.baddbmm_(feats.mT, blended[2].mT)
            out[batch[0]] = acc
        ctx.save_for_backward(gaussians, features, out)
        ctx.plan = plan
        return out

    @staticmethod
    def backward(ctx, grad_out):
        gaussians, features, out = ctx.saved_tensors
        plan = ctx.plan
        grad_q, grad_f = _pair_gradients(gaussians, features, out, grad_out, plan)
        grad_features = torch.zeros_like(features).index_add_(0, plan.pair_gaussian,
                                                              grad_f[:-1, :4])
        return _pair_coefficients_vjp(gaussians, plan, grad_q[:-1]), grad_features, None


def _pair_gradients(gaussians, features, out, grad_out, plan):
    """Gradients (Q + 1, 6) and (Q + 1, 5) w.r.t. the rows of ``_pair_tables`` from the gradient
    (n_slots, 5, P) w.r.t. the ``_TileComposite`` output ``out``."""
    # With s_i = w_i (f_i . g) and S_i the sum of s_j over the Gaussians behind i,
    # dL/dalpha_i = (s_i - S_i alpha_i / (1 - alpha_i)) / alpha_i, and alpha_i = exp(x_i).
    table_q, table_f = _pair_tables(gaussians, features, plan)
    pixels_t = plan.pixels.mT
    grad_q, grad_f = torch.zeros_like(table_q), torch.zeros_like(table_f)
    for batch in plan.batches:
        g = grad_out[batch[0]]
        # Sum of s over the Gaussians not yet visited; S_i is this minus the running sum up to
        # i within the block.
        total = (out[batch[0]] * g).sum(1)[..., None]
        for index, feats, blended in _blocks(plan, table_q, table_f, batch, with_clamped=True):
            alpha, one_minus, weights, _, clamped = blended
            grad_f.index_copy_(0, index, torch.bmm(g, weights).mT.reshape(-1, 5))
            s = torch.bmm(g.mT, feats.mT).mul_(weights)
            minus_behind = torch.cumsum(s, dim=-1).sub_(total)
            total = -minus_behind[..., -1:]
            d_log_alpha = s.addcmul_(minus_behind, alpha.div_(one_minus))
            d_log_alpha.masked_fill_(clamped, 0.0)
            grad_q.index_copy_(0, index, torch.matmul(pixels_t, d_log_alpha).mT.reshape(-1, 6))
    return grad_q, grad_f


def _rasterize_torch(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                     near, far, eps2d, background) -> RenderOutput:
    n_cameras = viewmats.shape[0]
    means_c, covs_c = _to_camera(means, quats, scales, viewmats)
    depths = means_c[..., 2]
    in_range = (depths >= near) & (depths <= far)
    # Gaussians out of range are projected from a harmless point so no inf/NaN reaches autograd.
    safe_means_c = torch.where(in_range[..., None], means_c, means_c.new_tensor([0.0, 0.0, 1.0]))
    intrinsics = torch.stack([Ks[:, 0, 0], Ks[:, 1, 1], Ks[:, 0, 2], Ks[:, 1, 2]], -1)[:, None]
    means2d, covs2d = _project(safe_means_c, covs_c, intrinsics, width, height, eps2d)
    with torch.no_grad():
        radii, drawn = _footprints(means2d, covs2d, opacities.expand_as(depths), width, height)
        drawn &= in_range
    cameras, index = drawn.nonzero(as_tuple=True)

    means2d, covs2d = means2d[cameras, index], covs2d[cameras, index]
    depths = depths[cameras, index]
    xx, xy, yy = covs2d.unbind(-1)
    det = xx * yy - xy * xy
    gaussians = torch.stack([means2d[:, 0], means2d[:, 1], yy / det, -xy / det, xx / det,
                             torch.log(opacities[index])], -1)
    features = torch.cat([colors[index], depths[:, None]], -1)

    pair_gaussian, pair_slot = _tile_pairs(means2d.detach(), radii[cameras, index], cameras,
                                           depths.detach(), width, height)
    plan = _make_plan(pair_gaussian, pair_slot, n_cameras, width, height, means.dtype)
    sums = _TileComposite.apply(gaussians, features, plan)

    tiles_x, tiles_y = math.ceil(width / TILE), math.ceil(height / TILE)
    image = (sums.view(n_cameras, tiles_y, tiles_x, 5, TILE, TILE).permute(0, 1, 4, 2, 5, 3)
             .reshape(n_cameras, tiles_y * TILE, tiles_x * TILE, 5)[:, :height, :width])
    rgb, weighted_depth, alpha = image[..., :3], image[..., 3], image[..., 4]
    covered = alpha >= DEPTH_ALPHA_MIN
    depth = torch.where(covered, weighted_depth / alpha.clamp(min=DEPTH_ALPHA_MIN),
                        torch.zeros_like(alpha))
    if background is not None:
        rgb = rgb + (1.0 - alpha)[..., None] * background
    return RenderOutput(rgb, depth, alpha)
