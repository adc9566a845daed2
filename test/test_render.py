"""The Gaussian splatting rasteriser: a brute-force reference, analytic footprints, depth,
gradients, batching and backend selection."""
import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.spatial.transform import Rotation

from gsplat_scene import render
from gsplat_scene.gaussians import SH_C0, Gaussians
from gsplat_scene.render import RenderOutput, look_at_viewmat, rasterize, render_gaussians

HAS_CUDA = torch.cuda.is_available()
HAS_GSPLAT = importlib.util.find_spec("gsplat") is not None
OUTPUT_FIELDS = ("rgb", "depth", "alpha")


@pytest.fixture(autouse=True)
def one_thread():
    """The scenes here are tiny: one thread avoids OpenMP hand-offs, which stall badly when
    another process shares the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def intrinsics(fx, fy, cx, cy, dtype=torch.float32):
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=dtype)


def reference_render(means, quats, scales, opacities, colors, viewmat, K, width, height,
                     near=0.01, far=100.0, eps2d=0.3, background=None):
    """gsplat's classic kernel written out in NumPy float64: every pixel against every
    Gaussian in depth order, one Gaussian at a time, no tiles and no footprint culling."""
    means, quats, scales, opacities, colors, viewmat, K = (
        np.asarray(t.detach().cpu(), dtype=np.float64)
        for t in (means, quats, scales, opacities, colors, viewmat, K))
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    rot_cam, t_cam = viewmat[:3, :3], viewmat[:3, 3]
    rot = Rotation.from_quat(quats[:, [1, 2, 3, 0]]).as_matrix()
    cov_world = rot @ (scales[:, :, None] ** 2 * np.eye(3)) @ rot.transpose(0, 2, 1)
    cov_cam = rot_cam @ cov_world @ rot_cam.T
    p_cam = means @ rot_cam.T + t_cam

    u, v = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    pix = np.stack([u.ravel(), v.ravel()], -1)
    transmittance = np.ones(len(pix))
    done = np.zeros(len(pix), bool)
    acc_rgb, acc_depth = np.zeros((len(pix), 3)), np.zeros(len(pix))
    lim_x = (cx / fx + 0.15 * width / fx, (width - cx) / fx + 0.15 * width / fx)
    lim_y = (cy / fy + 0.15 * height / fy, (height - cy) / fy + 0.15 * height / fy)
    for i in np.argsort(p_cam[:, 2], kind="stable"):
        x, y, z = p_cam[i]
        if not near <= z <= far:
            continue
        tx = z * np.clip(x / z, -lim_x[0], lim_x[1])
        ty = z * np.clip(y / z, -lim_y[0], lim_y[1])
        jac = np.array([[fx / z, 0, -fx * tx / z ** 2], [0, fy / z, -fy * ty / z ** 2]])
        cov2d = jac @ cov_cam[i] @ jac.T + eps2d * np.eye(2)
        conic = np.linalg.inv(cov2d)
        d = pix - [fx * x / z + cx, fy * y / z + cy]
        sigma = 0.5 * np.einsum("pi,ij,pj->p", d, conic, d)
        alpha = np.minimum(0.99, opacities[i] * np.exp(-sigma))
        use = ~done & (alpha >= 1 / 255)
        after = transmittance * (1 - alpha)
        ends = use & (after <= 1e-4)
        done |= ends
        use &= ~ends
        weight = np.where(use, alpha * transmittance, 0.0)
        acc_rgb += weight[:, None] * colors[i]
        acc_depth += weight * z
        transmittance = np.where(use, after, transmittance)
    alpha = 1 - transmittance
    depth = np.where(alpha >= 1e-6, acc_depth / np.maximum(alpha, 1e-6), 0.0)
    if background is not None:
        acc_rgb += (1 - alpha)[:, None] * np.asarray(background)
    shape = (height, width)
    return acc_rgb.reshape(*shape, 3), depth.reshape(shape), alpha.reshape(shape), done.sum()


def random_scene(n, seed, dtype=torch.float64, spread=1.0):
    gen = torch.Generator().manual_seed(seed)
    rand = lambda *s: torch.rand(*s, generator=gen, dtype=dtype)  # noqa: E731
    means = (rand(n, 3) - 0.5) * 2 * spread + torch.tensor([0.0, 0.0, 0.5], dtype=dtype)
    quats = torch.randn(n, 4, generator=gen, dtype=dtype)
    scales = torch.exp(rand(n, 3) * 2.5 - 4.5)
    opacities = 0.05 + 0.95 * rand(n)
    colors = rand(n, 3)
    return means, quats, scales, opacities, colors


@pytest.fixture
def small_blocks(monkeypatch):
    """Force many batches and blocks so the carried transmittance and early stops are used."""
    monkeypatch.setattr(render, "TILES_PER_BATCH", 1)
    monkeypatch.setattr(render, "GAUSSIANS_PER_BLOCK", 3)


def reference_scene(dtype):
    means, quats, scales, opacities, colors = random_scene(60, seed=3, dtype=dtype)
    eye = torch.tensor([0.3, -2.5, 1.2], dtype=dtype)
    viewmat = look_at_viewmat(eye, torch.tensor([0.0, 0.0, 0.5], dtype=dtype))
    forward, right = viewmat[2, :3], viewmat[0, :3]
    # Five broad opaque Gaussians stacked in front of the left half end pixels early; two sit
    # behind the camera; one is beyond far; one is far outside the image but large.
    extra_means = torch.stack([eye + (1.0 + 0.1 * k) * forward - (0.2 + 0.05 * k) * right
                               for k in range(5)]
                              + [eye - 0.5 * forward, eye - 2.0 * forward + 0.1,
                                 eye + 20.0 * forward, eye + 1.0 * forward + 1.6 * right])
    extra_scales = torch.tensor([[0.35, 0.25, 0.02], [0.3, 0.35, 0.02], [0.4, 0.3, 0.05],
                                 [0.3, 0.3, 0.03], [0.4, 0.4, 0.02],
                                 [0.3, 0.3, 0.3], [0.5, 0.5, 0.5], [1.0, 1.0, 1.0],
                                 [0.6, 0.3, 0.1]], dtype=dtype)
    n_extra = len(extra_scales)
    means = torch.cat([means, extra_means])
    quats = torch.cat([quats, torch.randn(n_extra, 4, generator=torch.Generator().manual_seed(4),
                                          dtype=dtype)])
    scales = torch.cat([scales, extra_scales])
    opacities = torch.cat([opacities, torch.tensor([1.0, 1.0, 0.995, 1.0, 0.98, 0.9, 0.9, 0.9,
                                                    0.8], dtype=dtype)])
    colors = torch.cat([colors, torch.rand(n_extra, 3, generator=torch.Generator().manual_seed(5),
                                           dtype=dtype)])
    K = intrinsics(18.0, 17.0, 11.3, 9.6, dtype)
    return (means, quats, scales, opacities, colors, viewmat, K)


@pytest.mark.parametrize("blocks", ["default", "small"])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-9), (torch.float32, 1e-5)])
def test_tiles_match_brute_force_reference(request, blocks, dtype, tol):
    if blocks == "small":
        request.getfixturevalue("small_blocks")
    means, quats, scales, opacities, colors, viewmat, K = reference_scene(dtype)
    width, height, far = 24, 18, 10.0
    background = [0.2, 0.4, 0.6]
    out = rasterize(means, quats, scales, opacities, colors, viewmat[None], K[None], width,
                    height, far=far, background=background, backend="torch")
    rgb, depth, alpha, n_ended = reference_render(means, quats, scales, opacities, colors,
                                                  viewmat, K, width, height, far=far,
                                                  background=background)
    # The scene exercises what it is meant to: saturated pixels, empty pixels, partial cover.
    assert n_ended > 10
    assert (alpha < 1e-3).sum() > 5 and ((alpha > 0.1) & (alpha < 0.9)).sum() > 20
    assert out.rgb.shape == (1, height, width, 3) and out.rgb.dtype == dtype
    np.testing.assert_allclose(out.rgb[0].numpy(), rgb, atol=tol, rtol=0)
    np.testing.assert_allclose(out.alpha[0].numpy(), alpha, atol=tol, rtol=0)
    np.testing.assert_allclose(out.depth[0].numpy(), depth, atol=tol * 10, rtol=0)


def test_single_gaussian_footprint_is_analytic():
    fx, z, s = 50.0, 2.0, 0.1
    size = 41  # the principal point (20.5, 20.5) is the centre of pixel (20, 20)
    K = intrinsics(fx, fx, size / 2, size / 2)[None]
    viewmat = torch.eye(4)[None]
    means = torch.tensor([[0.0, 0.0, z]])
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    scales = torch.full((1, 3), s)
    colors = torch.tensor([[1.0, 0.5, 0.25]])
    for opacity, peak in [(0.6, 0.6), (1.0, 0.99)]:
        out = rasterize(means, quats, scales, torch.tensor([opacity]), colors, viewmat, K,
                        size, size, backend="torch")
        assert out.alpha[0].max() == out.alpha[0, 20, 20]
        assert out.alpha[0, 20, 20].item() == pytest.approx(peak, abs=1e-6)
        torch.testing.assert_close(out.rgb[0, 20, 20], peak * colors[0])
        assert out.depth[0, 20, 20].item() == pytest.approx(z, abs=1e-5)

    for eps2d in (0.0, 0.3):
        out = rasterize(means, quats, scales, torch.tensor([0.6]), colors, viewmat, K, size,
                        size, eps2d=eps2d, backend="torch")
        row, col = out.alpha[0, 20].double(), out.alpha[0, :, 20].double()
        torch.testing.assert_close(row, col, rtol=0, atol=1e-7)  # isotropic
        k = torch.arange(1, 7)
        variance = k ** 2 / (2 * torch.log(row[20] / row[20 + k]))
        # The footprint's variance is (fx s / z)^2 plus the eps2d blur.
        torch.testing.assert_close(variance - eps2d, torch.full_like(variance, (fx * s / z) ** 2),
                                   rtol=2e-4, atol=0)


def test_opaque_layer_renders_its_depth():
    fx, width, height = 40.0, 64, 48
    K = intrinsics(fx, fx, width / 2, height / 2)[None]
    grid = torch.stack(torch.meshgrid(torch.arange(-0.9, 0.91, 0.03),
                                      torch.arange(-0.7, 0.71, 0.03), indexing="ij"), -1)
    grid = grid.reshape(-1, 2)
    n = len(grid)
    means = torch.cat([torch.cat([grid, torch.full((n, 1), z)], 1) for z in (2.0, 3.0)])
    scales = torch.tensor([0.03, 0.03, 0.002]).repeat(2 * n, 1)
    quats = torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(2 * n, 1)
    opacities = torch.full((2 * n,), 0.98)
    colors = torch.cat([torch.tensor([[1.0, 0.0, 0.0]]).repeat(n, 1),
                        torch.tensor([[0.0, 0.0, 1.0]]).repeat(n, 1)])
    out = rasterize(means, quats, scales, opacities, colors, torch.eye(4)[None], K, width,
                    height, backend="torch")
    # The front layer spans |x| <= 0.9 m, |y| <= 0.7 m: +-18 px, +-14 px about the centre.
    inner = (slice(None), slice(24 - 12, 24 + 12), slice(32 - 16, 32 + 16))
    # A pixel ends before the Gaussian that would take T to 1e-4, so alpha >= 1 - 1e-4 / 0.01.
    assert out.alpha[inner].min() > 0.99
    assert (out.depth[inner] - 2.0).abs().max() < 1e-3
    assert out.rgb[inner][..., 2].max() < 1e-3  # the back layer is hidden
    assert out.alpha[0, :3, :3].max() < 1e-3 and out.depth[0, :3, :3].max() == 0
    # Only the back layer, +-12 px by +-9 px: its own depth.
    out = rasterize(means[n:], quats[n:], scales[n:], opacities[n:], colors[n:],
                    torch.eye(4)[None], K, width, height, backend="torch")
    inner = (slice(None), slice(24 - 7, 24 + 7), slice(32 - 10, 32 + 10))
    assert out.alpha[inner].min() > 0.99
    assert (out.depth[inner] - 3.0).abs().max() < 1e-3
    # Nothing at all: alpha 0, depth 0 (not NaN), background colour.
    far_away = rasterize(means, quats, scales, opacities, colors, torch.eye(4)[None], K, width,
                         height, far=1.5, background=(0.1, 0.2, 0.3), backend="torch")
    assert far_away.alpha.abs().max() == 0 and far_away.depth.abs().max() == 0
    torch.testing.assert_close(far_away.rgb, torch.tensor([0.1, 0.2, 0.3]).expand(1, height,
                                                                                  width, 3))


@pytest.mark.parametrize("blocks", ["default", "small"])
def test_gradients_match_finite_differences(request, blocks):
    if blocks == "small":
        request.getfixturevalue("small_blocks")
    dtype = torch.float64
    gen = torch.Generator().manual_seed(7)
    n = 8
    means = (torch.rand(n, 3, generator=gen, dtype=dtype) - 0.5) * torch.tensor([1.0, 0.7, 0.4],
                                                                                dtype=dtype)
    means[:, 2] += 2.0
    means[:4, :2] = torch.tensor([[-0.2, 0.0], [-0.25, 0.05], [-0.2, 0.1], [-0.15, 0.0]],
                                 dtype=dtype)
    quats = torch.randn(n, 4, generator=gen, dtype=dtype)
    scales = 0.05 + 0.1 * torch.rand(n, 3, generator=gen, dtype=dtype)
    scales[:4] += 0.2
    # Four nearly opaque ones overlap, so some pixels end early.
    opacities = torch.cat([torch.full((4,), 0.98, dtype=dtype),
                           0.2 + 0.7 * torch.rand(n - 4, generator=gen, dtype=dtype)])
    # A broad fully opaque one, clamped to alpha = 0.99 over a few pixels.
    scales[4], opacities[4] = 0.5, 1.0
    colors = torch.rand(n, 3, generator=gen, dtype=dtype)
    K = intrinsics(20.0, 20.0, 10.0, 7.0, dtype)[None]
    viewmat = torch.eye(4, dtype=dtype)[None]
    w_rgb, w_depth, w_alpha = (torch.rand(*s, generator=gen, dtype=dtype)
                               for s in [(1, 14, 20, 3), (1, 14, 20), (1, 14, 20)])

    def losses(means, quats, scales, opacities, colors):
        out = rasterize(means, quats, scales, opacities, colors, viewmat, K, 20, 14,
                        background=(0.5, 0.5, 0.5), backend="torch")
        return torch.stack([(out.rgb * w_rgb).sum(), (out.depth * w_depth).sum(),
                            (out.alpha * w_alpha).sum()])

    assert reference_render(means, quats, scales, opacities, colors, viewmat[0], K[0], 20,
                            14)[3] > 0
    inputs = [t.clone().requires_grad_() for t in (means, quats, scales, opacities, colors)]
    assert torch.autograd.gradcheck(losses, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)


def test_fitting_colours_and_means_reduces_the_loss():
    torch.manual_seed(0)
    n, width, height = 50, 64, 48
    K = intrinsics(60.0, 60.0, width / 2, height / 2)[None]
    viewmat = torch.eye(4)[None]
    means = (torch.rand(n, 3) - 0.5) * torch.tensor([1.6, 1.2, 0.5]) + torch.tensor([0, 0, 3.0])
    quats = torch.randn(n, 4)
    scales = 0.05 + 0.1 * torch.rand(n, 3)
    opacities = 0.5 + 0.4 * torch.rand(n)
    colors = torch.rand(n, 3)
    target = rasterize(means, quats, scales, opacities, colors, viewmat, K, width, height,
                       backend="torch").rgb

    fit_means = (means + 0.05 * torch.randn(n, 3)).requires_grad_()
    fit_color_logits = torch.zeros(n, 3, requires_grad=True)
    optimiser = torch.optim.Adam([{"params": [fit_means], "lr": 0.01},
                                  {"params": [fit_color_logits], "lr": 0.1}])
    losses = []
    for _ in range(100):
        rgb = rasterize(fit_means, quats, scales, opacities, torch.sigmoid(fit_color_logits),
                        viewmat, K, width, height, backend="torch").rgb
        loss = (rgb - target).square().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]


def test_batched_cameras_equal_single_calls():
    dtype = torch.float64
    means, quats, scales, opacities, colors = random_scene(400, seed=11, dtype=dtype)
    target = torch.tensor([0.0, 0.0, 0.5], dtype=dtype)
    viewmats = torch.stack([look_at_viewmat(torch.tensor(eye, dtype=dtype), target)
                            for eye in ([2.0, 0.0, 1.0], [0.0, -2.5, 1.5], [-1.5, 1.5, 0.5])])
    Ks = torch.stack([intrinsics(40.0, 40.0, 32.0, 24.0, dtype),
                      intrinsics(30.0, 32.0, 30.5, 25.0, dtype),
                      intrinsics(50.0, 50.0, 33.0, 22.0, dtype)])
    params = [t.clone().requires_grad_() for t in (means, quats, scales, opacities, colors)]
    batched = rasterize(*params, viewmats, Ks, 64, 48, backend="torch")
    assert batched.alpha.amax(dim=(1, 2)).min() > 0.5  # every camera sees the scene
    (batched.rgb.sum() + batched.depth.sum()).backward()
    grads = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    for c in range(3):
        single = rasterize(*params, viewmats[c:c + 1], Ks[c:c + 1], 64, 48, backend="torch")
        (single.rgb.sum() + single.depth.sum()).backward()
        for name in OUTPUT_FIELDS:
            torch.testing.assert_close(getattr(batched, name)[c:c + 1], getattr(single, name),
                                       rtol=0, atol=1e-12)
    for grad, p in zip(grads, params):
        torch.testing.assert_close(p.grad, grad, rtol=1e-10, atol=1e-10)


def test_render_gaussians_and_look_at():
    eye, target = torch.tensor([1.0, -2.0, 1.5]), torch.tensor([0.2, 0.3, 0.4])
    viewmat = look_at_viewmat(eye, target)
    torch.testing.assert_close(viewmat[:3, :3] @ viewmat[:3, :3].T, torch.eye(3))
    assert torch.linalg.det(viewmat[:3, :3]).item() == pytest.approx(1.0, abs=1e-6)
    target_c = viewmat[:3, :3] @ target + viewmat[:3, 3]
    torch.testing.assert_close(target_c, torch.tensor([0.0, 0.0, (target - eye).norm().item()]))
    assert (viewmat[:3, :3] @ torch.tensor([0.0, 0.0, 1.0]))[1] < 0  # world up is image up
    with pytest.raises(ValueError):
        look_at_viewmat([0, 0, 0], [0, 0, 1])

    means, quats, scales, opacities, colors = random_scene(100, seed=2, dtype=torch.float32)
    g = Gaussians(means, quats * 3.0, scales.log(), torch.logit(opacities),
                  (colors - 0.5) / SH_C0, torch.zeros(100, dtype=torch.int64))
    K = intrinsics(30.0, 30.0, 16.0, 12.0)[None]
    via_map = render_gaussians(g, viewmat[None], K, 32, 24, backend="torch")
    direct = rasterize(means, quats, scales, opacities, colors, viewmat[None], K, 32, 24,
                       backend="torch")
    for name in OUTPUT_FIELDS:
        torch.testing.assert_close(getattr(via_map, name), getattr(direct, name))


def test_backend_selection_and_input_errors():
    means, quats, scales, opacities, colors = random_scene(50, seed=1, dtype=torch.float32)
    viewmat = look_at_viewmat(torch.tensor([0.0, -3.0, 0.5]), torch.tensor([0.0, 0.0, 0.5]))[None]
    K = intrinsics(30.0, 30.0, 16.0, 12.0)[None]
    args = (means, quats, scales, opacities, colors, viewmat, K, 32, 24)
    with pytest.raises(RuntimeError, match="backend='gsplat' needs CUDA tensors"):
        rasterize(*args, backend="gsplat")
    auto, torch_out = rasterize(*args), rasterize(*args, backend="torch")
    for name in OUTPUT_FIELDS:
        assert torch.equal(getattr(auto, name), getattr(torch_out, name))
    assert auto.alpha.max() > 0.5
    with pytest.raises(ValueError, match="backend"):
        rasterize(*args, backend="cuda")
    with pytest.raises(ValueError, match="colors has shape"):
        rasterize(means, quats, scales, opacities, colors[:, :2], viewmat, K, 32, 24)
    with pytest.raises(ValueError, match="background"):
        rasterize(*args, background=(1.0, 0.0))


def test_nothing_drawn_still_backpropagates():
    means = torch.tensor([[0.0, 0.0, -1.0]], requires_grad=True)  # behind the camera
    out = rasterize(means, torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.1),
                    torch.tensor([0.9]), torch.tensor([[1.0, 1.0, 1.0]]), torch.eye(4)[None],
                    intrinsics(10.0, 10.0, 8.0, 8.0)[None], 16, 16, backend="torch")
    assert out.alpha.abs().max() == 0
    out.rgb.sum().backward()
    assert torch.equal(means.grad, torch.zeros(1, 3))


def assert_float32_renders_agree(out, ref):
    """Agreement up to float32 rounding: isolated pixels may differ by up to ~1e-2 where an
    alpha sits on the 1/255 cut or a transmittance on the 1e-4 cut, elsewhere ~1e-6."""
    for name in ("rgb", "alpha"):
        diff = (getattr(out, name) - getattr(ref, name)).abs()
        assert diff.mean() < 1e-4, name
        assert (diff > 1e-3).float().mean() < 1e-3, name
        assert diff.max() < 3e-2, name
    solid = (ref.alpha > 0.5) & (out.alpha > 0.5)
    assert ((out.depth - ref.depth).abs()[solid] > 1e-3).float().mean() < 1e-3


def gpu_scene():
    means, quats, scales, opacities, colors = random_scene(3000, seed=21, dtype=torch.float32)
    # gsplat < 1.6 clamps alpha at 0.999 rather than 0.99: stay below both.
    opacities = opacities.clamp(max=0.95)
    viewmats = torch.stack([look_at_viewmat(torch.tensor(eye), torch.tensor([0.0, 0.0, 0.5]))
                            for eye in ([2.0, 0.0, 1.0], [0.0, -2.5, 1.5])])
    Ks = torch.stack([intrinsics(100.0, 100.0, 64.0, 48.0), intrinsics(90.0, 95.0, 60.5, 50.0)])
    return [means, quats, scales, opacities, colors, viewmats, Ks, 128, 96]


@pytest.mark.skipif(not HAS_CUDA, reason="needs CUDA")
def test_torch_backend_on_cuda_matches_cpu():
    args = gpu_scene()
    cpu = rasterize(*args, backend="torch")
    gpu = rasterize(*(t.cuda() if isinstance(t, torch.Tensor) else t for t in args),
                    backend="torch")
    assert_float32_renders_agree(RenderOutput(*(t.cpu() for t in gpu)), cpu)


@pytest.mark.skipif(not (HAS_CUDA and HAS_GSPLAT), reason="needs CUDA and gsplat")
def test_gsplat_and_torch_backends_agree():
    args = [t.cuda() if isinstance(t, torch.Tensor) else t for t in gpu_scene()]
    ref = rasterize(*args, backend="torch", background=(0.1, 0.2, 0.3))
    out = rasterize(*args, backend="gsplat", background=(0.1, 0.2, 0.3))
    assert out.alpha.max() > 0.5
    assert_float32_renders_agree(out, ref)


@pytest.mark.skipif(not (HAS_CUDA and HAS_GSPLAT), reason="needs CUDA and gsplat")
def test_gsplat_and_torch_backends_agree_on_gradients():
    """Same loss, both backends: gradients agree in direction and size (float32 on each side,
    different summation orders; Gaussians on the 1/255 or 1e-4 cuts differ most)."""
    scene = [t.cuda() if isinstance(t, torch.Tensor) else t for t in gpu_scene()]
    target = torch.rand(2, 96, 128, 3, generator=torch.Generator().manual_seed(3)).cuda()
    grads = {}
    for backend in ("torch", "gsplat"):
        params = [t.clone().requires_grad_(True) for t in scene[:5]]
        out = rasterize(*params, *scene[5:], backend=backend)
        loss = ((out.rgb - target) ** 2).mean() + out.depth.mean() + out.alpha.mean()
        loss.backward()
        grads[backend] = [p.grad for p in params]
    for name, ours, theirs in zip(("means", "quats", "scales", "opacities", "colors"),
                                  grads["torch"], grads["gsplat"]):
        cosine = F.cosine_similarity(ours.flatten(), theirs.flatten(), dim=0)
        ratio = ours.norm() / theirs.norm()
        assert cosine > 0.99 and abs(ratio - 1) < 0.02, (name, float(cosine), float(ratio))
