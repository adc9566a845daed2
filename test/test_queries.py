"""Collision queries against Gaussians: agreement with brute force, known geometry, edge cases."""
import math

import pytest
import torch

from gsplat_scene.gaussians import Gaussians
from gsplat_scene.queries import (GaussianCollisionIndex, brute_force_mahalanobis,
                                  brute_force_sphere_distance, ellipsoid_distance,
                                  quat_to_rotmat)

K = 3.0


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # These are many small tensor ops; on a shared 2-core machine, OpenMP threads waiting on
    # each other make them tens of times slower than one thread.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def random_scene(n, seed, extent=0.4, big=0):
    """Anisotropic, randomly rotated Gaussians (scales 1-20 mm, some 1:20 flat) plus `big`
    Gaussians of 5-10 cm; opacities uniform."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n + big, 3, generator=g) * extent
    quats = torch.randn(n + big, 4, generator=g)
    log_s = torch.empty(n + big, 3).uniform_(math.log(0.001), math.log(0.02), generator=g)
    log_s[n:] = torch.empty(big, 3).uniform_(math.log(0.05), math.log(0.1), generator=g)
    return means, quats, log_s.exp(), torch.rand(n + big, generator=g)


def probe_points(means, quats, scales, n, seed, cell, extent=0.4):
    """Uniform points, points on/near the k-sigma surfaces, and points on cell borders."""
    g = torch.Generator().manual_seed(seed)
    uniform = torch.rand(n, 3, generator=g) * (extent + 0.1) - 0.05
    pick = torch.randint(0, len(means), (n,), generator=g)
    u = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    factor = 1 + (torch.rand(n, 1, generator=g) - 0.5) * 0.02  # within 1 % of the surface
    rot = quat_to_rotmat(quats[pick])
    surface = means[pick] + (rot @ (K * scales[pick] * u * factor)[:, :, None])[:, :, 0]
    border = uniform.clone()
    border[:, 0] = torch.round(border[:, 0] / cell) * cell  # on (or next to) cell borders
    border[: n // 2, 1] = torch.round(border[: n // 2, 1] / cell) * cell
    return torch.cat([uniform, surface, border])


@pytest.mark.parametrize("seed,chunks", [(0, {}), (1, {"chunk_queries": 777, "chunk_pairs": 50})])
def test_points_agree_with_brute_force(seed, chunks):
    scene = random_scene(1500, seed, big=3)
    index = GaussianCollisionIndex(*scene, cell_size=0.01, **chunks)
    assert len(index._points.levels) > 1  # the big Gaussians sit on coarser levels
    points = probe_points(*scene[:3], 4000, seed, index.cell_size)
    reference = brute_force_mahalanobis(points, *scene, min_opacity=0.1)
    inside = reference <= K
    assert 0.2 < inside.float().mean() < 0.8
    dist = index.mahalanobis(points)
    assert torch.equal(torch.isinf(dist), ~inside)
    assert (dist[inside] - reference[inside]).abs().max() <= 1e-5
    assert torch.equal(index.points_in_collision(points), inside)


def test_spheres_agree_with_brute_force():
    scene = random_scene(600, 2, big=1)
    index = GaussianCollisionIndex(*scene, sphere_cell_size=0.04, chunk_pairs=1000)
    g = torch.Generator().manual_seed(3)
    centers = probe_points(*scene[:3], 800, 3, 0.04)
    radii = torch.rand(len(centers), generator=g) * 0.05
    radii[:100] = 0.0
    reference = brute_force_sphere_distance(centers, *scene, k_sigma=K, min_opacity=0.1)
    expected = reference <= radii
    assert 0.2 < expected.float().mean() < 0.8
    assert torch.equal(index.spheres_in_collision(centers, radii), expected)
    # Radius 0 is a point test.
    assert torch.equal(expected[:100], index.points_in_collision(centers[:100]))

    clearance = index.sphere_clearance(centers, radii, max_distance=0.03)
    want = (reference - radii.double()).clamp(max=0.03).float()
    assert (clearance - want).abs().max() <= 1e-5
    assert torch.equal(clearance <= 0, expected)


def inflated_ellipsoid_hits(centers, radii, means, quats, scales):
    """Brute force: centre inside the k-sigma ellipsoid inflated by r along its axes."""
    local = torch.einsum("nji,snj->sni", quat_to_rotmat(quats), centers[:, None] - means)
    return ((local / (K * scales + radii[:, None, None])).square().sum(-1) <= 1).any(-1)


def test_inflated_ellipsoid_is_inside_the_exact_test():
    scene = random_scene(400, 4)
    index = GaussianCollisionIndex(*scene, min_opacity=0.0)
    g = torch.Generator().manual_seed(5)
    centers = torch.rand(3000, 3, generator=g) * 0.5 - 0.05
    radii = torch.rand(3000, generator=g) * 0.04
    inflated = inflated_ellipsoid_hits(centers, radii, *scene[:3])
    exact = index.spheres_in_collision(centers, radii)
    assert (exact | ~inflated).all()  # every inflated-ellipsoid hit is a real hit
    assert (exact & ~inflated).any()  # and the inflated ellipsoid misses some real ones


def test_oblique_sphere_touching_a_flat_gaussian():
    # A flat Gaussian (k-sigma disc of radius 3 cm in the xy plane); a 3 cm sphere whose
    # centre sits at 45 degrees over the rim, 2.9 cm from it, touches it; the ellipsoid
    # inflated by r along its axes (semi-axes 6, 6, 3 cm) does not contain that centre.
    means, quats = torch.zeros(1, 3), torch.tensor([[1.0, 0, 0, 0]])
    scales, opacities = torch.tensor([[0.01, 0.01, 1e-5]]), torch.ones(1)
    index = GaussianCollisionIndex(means, quats, scales, opacities)
    d = 0.029 / math.sqrt(2)
    center, radius = torch.tensor([[0.03 + d, 0.0, d]]), torch.tensor([0.03])
    assert not inflated_ellipsoid_hits(center, radius, means, quats, scales).item()
    assert index.spheres_in_collision(center, radius).item()
    clearance = index.sphere_clearance(center, radius).item()
    assert clearance == pytest.approx(-0.001, abs=1e-5)


def test_ellipsoid_distance_matches_dense_surface_sampling():
    g = torch.Generator().manual_seed(6)
    semi = torch.exp(torch.empty(20, 3).uniform_(math.log(0.001), math.log(0.05),
                                                 generator=g)).double()
    points = torch.randn(20, 3, generator=g).double() * 0.05
    # ~500k surface points per ellipsoid on a latitude/longitude grid.
    th = torch.linspace(0, math.pi, 700, dtype=torch.float64)
    ph = torch.linspace(0, 2 * math.pi, 700, dtype=torch.float64)
    th, ph = torch.meshgrid(th, ph, indexing="ij")
    unit = torch.stack([th.sin() * ph.cos(), th.sin() * ph.sin(), th.cos()], -1).reshape(-1, 3)
    exact = ellipsoid_distance(points, semi)
    for i in range(20):
        sampled = (unit * semi[i] - points[i]).norm(dim=-1).min()
        inside = ((points[i] / semi[i]).square().sum() <= 1).item()
        if inside:
            assert exact[i] == 0
        else:
            assert exact[i] <= sampled + 1e-12
            assert sampled - exact[i] <= 2e-4 * semi[i].max()


def surface_gaussians(spacing=0.0025):
    """Flat Gaussians (3 sigma: 6 mm across the surface, 3 mm along the normal) on a 20 x 20
    cm table top (z = 0) and on the five free faces of a 5 cm cube standing on it."""
    def face(centre, u, v, normal, half_u, half_v):
        a = torch.arange(-half_u, half_u + 1e-9, spacing)
        b = torch.arange(-half_v, half_v + 1e-9, spacing)
        a, b = torch.meshgrid(a, b, indexing="ij")
        pts = torch.tensor(centre) + a.reshape(-1, 1) * torch.tensor(u) \
            + b.reshape(-1, 1) * torch.tensor(v)
        rot = torch.stack([torch.tensor(u), torch.tensor(v), torch.tensor(normal)], -1)
        return pts, rot.expand(len(pts), 3, 3)

    h = 0.025
    faces = [face((0, 0, 0), (1., 0, 0), (0, 1., 0), (0, 0, 1.), 0.1, 0.1),
             face((0, 0, 2 * h), (1., 0, 0), (0, 1., 0), (0, 0, 1.), h, h),
             face((h, 0, h), (0, 1., 0), (0, 0, 1.), (1., 0, 0), h, h),
             face((-h, 0, h), (0, 0, 1.), (0, 1., 0), (-1., 0, 0), h, h),
             face((0, h, h), (0, 0, 1.), (1., 0, 0), (0, 1., 0), h, h),
             face((0, -h, h), (1., 0, 0), (0, 0, 1.), (0, -1., 0), h, h)]
    means = torch.cat([f[0] for f in faces]).float()
    rots = torch.cat([f[1] for f in faces]).float()
    n = len(means)
    quats = rotmat_to_quat(rots)
    scales = torch.tensor([0.002, 0.002, 0.001]).expand(n, 3).contiguous()
    return Gaussians(means=means, quats=quats, log_scales=scales.log(),
                     opacity_logits=torch.full((n,), 5.0), sh0=torch.zeros(n, 3),
                     labels=torch.zeros(n, dtype=torch.int64))


def rotmat_to_quat(r):
    """(N, 3, 3) proper rotations -> (N, 4) (w, x, y, z) (fine away from 180 degrees)."""
    w = (1 + r[:, 0, 0] + r[:, 1, 1] + r[:, 2, 2]).clamp_min(1e-12).sqrt() / 2
    x = (r[:, 2, 1] - r[:, 1, 2]) / (4 * w)
    y = (r[:, 0, 2] - r[:, 2, 0]) / (4 * w)
    z = (r[:, 1, 0] - r[:, 0, 1]) / (4 * w)
    return torch.stack([w, x, y, z], -1)


@pytest.fixture(scope="module")
def box_scene():
    gaussians = surface_gaussians()
    assert torch.allclose(quat_to_rotmat(gaussians.quats)[:, :, 2].abs().sum(-1),
                          torch.ones(len(gaussians)))  # the helper builds proper rotations
    return GaussianCollisionIndex.from_gaussians(gaussians)


def box_surface_points(n, offset, seed):
    """Points on the cube's five free faces (away from edges), `offset` [m] along the outward
    normal."""
    g = torch.Generator().manual_seed(seed)
    uv = (torch.rand(n, 2, generator=g) * 2 - 1) * 0.02
    which = torch.randint(0, 5, (n,), generator=g)
    normals = torch.tensor([[0, 0, 1.], [1., 0, 0], [-1., 0, 0], [0, 1., 0], [0, -1., 0]])
    tangents_u = torch.tensor([[1., 0, 0], [0, 1., 0], [0, 1., 0], [1., 0, 0], [1., 0, 0]])
    normal = normals[which]
    tu = tangents_u[which]
    tv = torch.cross(normal, tu, dim=-1)
    centre = torch.tensor([0, 0, 0.025]) + 0.025 * normal
    return centre + uv[:, :1] * tu + uv[:, 1:] * tv + offset * normal


def test_points_around_a_box_on_a_table(box_scene):
    on_surface = box_surface_points(500, 0.0, 0)
    within_shell = box_surface_points(500, 0.002, 1)  # the shell is 3 mm thick each side
    just_outside = box_surface_points(500, 0.006, 2)
    far_outside = box_surface_points(500, 0.021, 3)
    g = torch.Generator().manual_seed(4)
    table = torch.cat([torch.rand(500, 2, generator=g) * 0.05 + 0.04, torch.zeros(500, 1)], 1)
    assert box_scene.points_in_collision(on_surface).all()
    assert box_scene.points_in_collision(within_shell).all()
    assert box_scene.points_in_collision(table).all()
    assert box_scene.points_in_collision(table + torch.tensor([0, 0, 0.0015])).all()
    assert not box_scene.points_in_collision(just_outside).any()
    assert not box_scene.points_in_collision(far_outside).any()
    assert not box_scene.points_in_collision(table + torch.tensor([0, 0, 0.021])).any()
    # The map is a shell: the cube's centre is free space to a point query.
    assert not box_scene.points_in_collision(torch.tensor([[0, 0, 0.025]])).any()


def test_spheres_around_a_box_on_a_table(box_scene):
    top = torch.tensor([0.005, -0.003, 0.05])
    up = torch.tensor([0, 0, 1.0])
    r = 0.01
    centers = torch.stack([top + 0.0125 * up, top + 0.0145 * up, top + 0.03 * up])
    radii = torch.full((3,), r)
    # The shell reaches 3 mm above the top face: gaps -0.5 mm, +1.5 mm, +17 mm.
    assert box_scene.spheres_in_collision(centers, radii).tolist() == [True, False, False]
    clearance = box_scene.sphere_clearance(centers, radii, max_distance=0.01)
    assert clearance.tolist() == pytest.approx([-0.0005, 0.0015, 0.01], abs=3e-4)
    # Spheres at the cube's centre: inside the hollow shell until they reach its inner side
    # (2.5 cm - 3 mm away).
    inner = box_scene.spheres_in_collision(torch.tensor([[0, 0, 0.025]] * 2),
                                           torch.tensor([0.021, 0.0235]))
    assert inner.tolist() == [False, True]
    # Spheres grazing the table beside the cube.
    beside = torch.tensor([[0.07, 0.07, 0.0]] * 2) + torch.tensor([[0, 0, 0.012], [0, 0, 0.014]])
    assert box_scene.spheres_in_collision(beside, torch.full((2,), r)).tolist() == [True, False]


def test_empty_index():
    for scene in [(torch.zeros(0, 3), torch.zeros(0, 4), torch.zeros(0, 3), torch.zeros(0)),
                  random_scene(50, 7)[:3] + (torch.zeros(50),)]:  # all below min_opacity
        index = GaussianCollisionIndex(*scene)
        assert len(index) == 0
        points = torch.rand(100, 3)
        assert torch.isinf(index.mahalanobis(points)).all()
        assert not index.points_in_collision(points).any()
        assert not index.spheres_in_collision(points, torch.full((100,), 0.5)).any()
        assert (index.sphere_clearance(points, torch.full((100,), 0.1), 0.2) == 0.2).all()
    full = GaussianCollisionIndex(*random_scene(50, 7))
    empty = torch.zeros(0, 3)
    assert full.mahalanobis(empty).shape == (0,)
    assert full.spheres_in_collision(empty, torch.zeros(0)).shape == (0,)


def test_opacity_filter():
    means = torch.tensor([[0.0, 0, 0], [1.0, 0, 0]])
    quats = torch.tensor([[1.0, 0, 0, 0]] * 2)
    scales = torch.full((2, 3), 0.01)
    opacities = torch.tensor([0.05, 0.5])
    default = GaussianCollisionIndex(means, quats, scales, opacities)
    assert len(default) == 1
    assert default.points_in_collision(means).tolist() == [False, True]
    beside = means + torch.tensor([0.035, 0, 0])  # 3.5 cm from the centres, 3 cm k-sigma
    assert default.spheres_in_collision(beside, torch.full((2,), 0.01)).tolist() == [False, True]
    permissive = GaussianCollisionIndex(means, quats, scales, opacities, min_opacity=0.01)
    assert permissive.points_in_collision(means).tolist() == [True, True]
    assert permissive.mahalanobis(means + torch.tensor([0.02, 0, 0])).tolist() == \
        pytest.approx([2.0, 2.0])


def test_queries_far_outside_the_map():
    index = GaussianCollisionIndex(*random_scene(200, 8))
    far = torch.tensor([[-1e6, 0, 0], [1e6, 1e6, 1e6], [0.2, 0.2, -50.0], [0.2, 0.2, 50.0]])
    assert not index.points_in_collision(far).any()
    assert not index.spheres_in_collision(far, torch.full((4,), 1.0)).any()
    # A huge sphere sees everything.
    assert index.spheres_in_collision(torch.tensor([[0.2, 0.2, 0.2]]), torch.tensor([5.0]))


def test_huge_gaussians_stay_cheap():
    scene = list(random_scene(100, 9))
    scene[2][0] = torch.tensor([3.0, 2.0, 1.0])  # a 9 m wide background Gaussian
    scene[3][0] = 1.0
    index = GaussianCollisionIndex(*scene, cell_size=0.005)
    assert len(index._points.ids) <= 27 * len(index)
    points = torch.tensor([[5.0, 0.5, 0.5], [20.0, 0, 0]])
    assert index.points_in_collision(points).tolist() == [True, False]


def test_rejects_bad_input():
    scene = random_scene(20, 10)
    index = GaussianCollisionIndex(*scene)
    with pytest.raises(ValueError, match="non-finite"):
        index.points_in_collision(torch.tensor([[0.0, float("nan"), 0]]))
    with pytest.raises(ValueError, match="shape"):
        index.points_in_collision(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="radii"):
        index.spheres_in_collision(torch.zeros(2, 3), torch.tensor([0.1, -0.1]))
    with pytest.raises(ValueError, match="radii"):
        index.spheres_in_collision(torch.zeros(2, 3), torch.zeros(3))
    bad_scales = scene[2].clone()
    bad_scales[0, 0] = 0
    with pytest.raises(ValueError, match="scales"):
        GaussianCollisionIndex(scene[0], scene[1], bad_scales, scene[3])
    with pytest.raises(ValueError, match="means"):
        GaussianCollisionIndex(scene[0][:, :2], *scene[1:])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    scene = random_scene(2000, 11, big=2)
    points = probe_points(*scene[:3], 5000, 11, 0.01)
    radii = torch.rand(len(points), generator=torch.Generator().manual_seed(0)) * 0.05
    cpu = GaussianCollisionIndex(*scene)
    gpu = GaussianCollisionIndex(*[t.cuda() for t in scene])
    assert torch.equal(gpu.points_in_collision(points.cuda()).cpu(),
                       cpu.points_in_collision(points))
    assert torch.equal(gpu.spheres_in_collision(points.cuda(), radii.cuda()).cpu(),
                       cpu.spheres_in_collision(points, radii))
    assert torch.allclose(gpu.mahalanobis(points.cuda()).cpu(), cpu.mahalanobis(points),
                          atol=1e-5)
