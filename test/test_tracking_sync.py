"""Object pose alignment (trimmed ICP) and approximate-time frame matching, without ROS."""
import math

import pytest
import torch

from gsplat_scene.frame_sync import FrameSync
from gsplat_scene.tracking import align_to_model, kabsch


def _rotation_z(angle):
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _box_surface(n=3000, half=(0.025, 0.04, 0.06), seed=0):
    g = torch.Generator().manual_seed(seed)
    pts = (torch.rand(n, 3, generator=g) * 2 - 1) * torch.tensor(half)
    face = torch.randint(0, 3, (n,), generator=g)
    sign = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    pts[torch.arange(n), face] = sign * torch.tensor(half)[face]
    return pts + torch.tensor([0.5, 0.1, 0.06])


def test_kabsch_recovers_exact_transform():
    src = torch.randn(50, 3, dtype=torch.float64)
    R = _rotation_z(0.4).double()
    t = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    T = kabsch(src, src @ R.T + t)
    torch.testing.assert_close(T[:3, :3], R)
    torch.testing.assert_close(T[:3, 3], t)


@pytest.mark.parametrize("shift, angle", [((0.0, 0.0, 0.0), 0.0), ((0.02, -0.01, 0.0), 0.1),
                                          ((0.005, 0.03, 0.0), -0.2)])
def test_icp_moves_model_onto_partial_observation(shift, angle):
    model = _box_surface()
    centre = model.mean(0)
    motion = torch.eye(4)
    motion[:3, :3] = _rotation_z(angle)
    motion[:3, 3] = torch.tensor(shift) + centre - _rotation_z(angle) @ centre
    moved = model @ motion[:3, :3].T + motion[:3, 3]
    # A camera at a corner sees the faces turned towards +x, -y and +z of the moved object.
    local = (moved - moved.mean(0)) @ motion[:3, :3]
    visible = (local[:, 0] > 0.024) | (local[:, 1] < -0.039) | (local[:, 2] > 0.059)
    noise = torch.randn(int(visible.sum()), 3, generator=torch.Generator().manual_seed(1))
    observed = moved[visible] + 0.0005 * noise
    delta, rmse, inliers = align_to_model(observed, model)
    err = (model @ delta[:3, :3].T + delta[:3, 3]) - moved
    assert err.norm(dim=1).max() < 0.003
    assert rmse < 0.002 and inliers > 0.7


def test_sync_matches_within_slop_and_drops_older():
    sync = FrameSync(["rgb", "depth"], ["mask"], slop=0.01)
    assert sync.add("rgb", 1.000, "c1") is None
    assert sync.add("depth", 1.004, "d1") == {"rgb": (1.000, "c1"), "depth": (1.004, "d1")}
    # An out-of-order stamp is refused; a far depth does not match.
    assert sync.add("rgb", 0.9, "old") is None and sync.out_of_order == 1
    sync.add("rgb", 2.0, "c2")
    assert sync.add("depth", 2.05, "d2") is None
    assert sync.unmatched() == [] or sync.unmatched() == ["depth"]


def test_sync_waits_for_optional_stream_that_publishes():
    sync = FrameSync(["rgb", "depth"], ["mask"], slop=0.01, wait_optional=0.1)
    sync.add("mask", 0.5, "m0")  # the mask stream exists
    sync.add("rgb", 1.0, "c1")
    assert sync.add("depth", 1.0, "d1") is None  # waits for the mask
    out = sync.add("mask", 1.0, "m1")
    assert out["mask"] == (1.0, "m1")
    # A frame whose mask never comes is emitted once a later message shows it is late.
    sync.add("rgb", 2.0, "c2")
    sync.add("depth", 2.0, "d2")
    out = sync.add("rgb", 2.2, "c3")
    assert out == {"rgb": (2.0, "c2"), "depth": (2.0, "d2")}


def test_sync_reports_required_stream_that_never_matches():
    sync = FrameSync(["rgb", "depth", "pose"], slop=0.01)
    for i in range(3):
        sync.add("rgb", float(i), f"c{i}")
        sync.add("depth", float(i), f"d{i}")
    assert sync.unmatched() == ["pose"]


def test_silhouette_refinement_fixes_the_turn_icp_leaves_free():
    # A box of small Gaussians seen from above at a slant, turned and shifted; the start
    # has the shift right and the turn wrong, as ICP on a flat top face leaves it.
    from gsplat_scene.gaussians import Gaussians
    from gsplat_scene.render import look_at_viewmat, render_gaussians
    from gsplat_scene.tracking import refine_pose
    points = _box_surface(4000, half=(0.03, 0.05, 0.03))
    n = points.shape[0]
    box = Gaussians(points, torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
                    torch.full((n, 3), -5.5), torch.full((n,), 3.0), torch.zeros(n, 3),
                    torch.full((n,), 10))
    centre = points.mean(0)
    truth = torch.eye(4)
    truth[:3, :3] = _rotation_z(0.25)
    truth[:3, 3] = centre + torch.tensor([0.02, 0.01, 0.0]) - _rotation_z(0.25) @ centre
    viewmat = look_at_viewmat((0.0, 0.1, 0.7), tuple(centre.tolist()))
    K = torch.tensor([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]])
    moved = Gaussians(points @ truth[:3, :3].T + truth[:3, 3], box.quats, box.log_scales,
                      box.opacity_logits, box.sh0, box.labels)
    out = render_gaussians(moved, viewmat[None], K[None], 320, 240)
    mask = out.alpha[0] > 0.5
    depth = torch.where(mask, out.depth[0], torch.zeros_like(out.depth[0]))
    start = torch.eye(4)
    start[:3, 3] = truth[:3, 3] + truth[:3, :3] @ centre - centre  # centre right, turn wrong
    refined, before, after = refine_pose(box, start, depth, mask, torch.ones_like(mask), K,
                                         viewmat, iterations=40)
    turn = lambda m: float(torch.arccos(((m[:3, :3].T @ truth[:3, :3]).trace() - 1) / 2))
    assert turn(start) > 0.24 and turn(refined) < 0.05, turn(refined)
    assert float((refined[:3, :3] @ centre + refined[:3, 3] - truth[:3, :3] @ centre -
                  truth[:3, 3]).norm()) < 0.005
    assert after < 0.05 < before
