"""Benchmark the Gaussian-splat scene memory on the simulated table.

Maps a sweep of posed RGB-D views (ground-truth poses) of the table workspace, then renders
held-out views between them. Figures:
  psnr_db, depth_mae_m          held-out colour PSNR and depth mean absolute error over the
                                pixels whose true surface lies in the mapped workspace (the
                                table and what stands on it; the robot is not mapped)
  psnr_db_full_view, depth_mae_m_full_view   the same over every non-robot pixel with a depth
                                (the floor beyond the workspace included, which is not mapped)
  baseline_psnr_db, baseline_depth_mae_m   a plain back-projected point cloud of the same
                                frames (voxel-thinned, z-buffered, 1-pixel splats), same views
  memory_mb, baseline_memory_mb
  ingest_fps                    frames integrated per second (tracking, seeding, optimisation)
  render_views_per_s            views/s rendered in one batched call at the mapping size
  render_views_per_s_640x480_300k   views/s at 640x480 with 300,000 Gaussians
  point_tests_per_s, sphere_tests_per_s   collision queries against the map
  push_position_error_mean_m, push_position_error_max_m,
  push_rotation_error_mean_deg, push_rotation_error_max_deg
                                the mapped cube's pose against the simulator's while the arm
                                pushes it (a fixed camera streams 10 frames/s into the map);
                                push_distance_m is how far the cube went
  tabletop_*                    the same sweep and push with the objects found from depth
                                alone (gsplat_scene.segmentation; the robot told apart by its
                                joint states) instead of the simulator's instance masks, the
                                baseline here: tabletop_ingest_fps, segment_ms (per frame),
                                segment_share_of_ingest, segment_object_iou_mean / _min (each
                                confirmed object against its true mask), segment_robot_recall,
                                tabletop_objects (3 on this table), tabletop_push_position_error_
                                mean_m / _max_m, tabletop_push_rotation_error_mean_deg, and
                                tabletop_push_error_ratio (its mean position error over the
                                masks' one)
  device

    python benchmarks/scene_memory.py [--quick] [--json PATH] [--device cuda]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.report import report  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from gsplat_scene.gaussians import Gaussians  # noqa: E402
from gsplat_scene.mapping import Frame, MappingConfig, SceneMemory, render_K  # noqa: E402
from gsplat_scene.queries import GaussianCollisionIndex  # noqa: E402
from gsplat_scene.render import render_gaussians  # noqa: E402
from gsplat_scene.segmentation import TabletopConfig, TabletopSegmenter, object_boxes  # noqa: E402
from robot_model.spheres import RobotBody  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402

from sim_robot import panda  # noqa: E402
from sim_robot.explore import ExplorationPolicy, run_plan_open_loop  # noqa: E402
from sim_robot.scenario import load_scenario  # noqa: E402
from sim_robot.scene import OBJECT_IDS, TABLE_X, TABLE_Y  # noqa: E402
from sim_robot.sim import PandaSim  # noqa: E402
from sim_robot.views import arc_camera, render_view, sweep  # noqa: E402

ROBOT = 1
# The mapped workspace: the table top and 0.8 m above it, with a 10 cm margin.
WORKSPACE = ((TABLE_X[0] - 0.1, TABLE_Y[0] - 0.1, -0.05), (TABLE_X[1] + 0.1, TABLE_Y[1] + 0.1, 0.8))


def to_frame(view, device) -> Frame:
    return Frame(torch.from_numpy(view["rgb"]).to(device),
                 torch.from_numpy(view["depth"]).to(device),
                 torch.tensor(view["K"], dtype=torch.float32, device=device),
                 torch.tensor(view["cam_to_world"], dtype=torch.float32, device=device),
                 torch.from_numpy(view["instances"].astype(np.int64)).to(device))


class Tabletop:
    """Frames labelled from depth alone, the robot placed by the simulator's joints."""

    def __init__(self, sim, memory, device):
        self.sim, self.memory, self.device = sim, memory, device
        self.segmenter = TabletopSegmenter(TabletopConfig(bounds=WORKSPACE))
        self.body = RobotBody.from_urdf(panda.urdf())
        self.seconds, self.last = 0.0, None

    def frame(self, view) -> Frame:
        joints = dict(zip(panda.ARM_JOINT_NAMES, self.sim.arm_positions()))
        joints.update(zip(panda.FINGER_JOINT_NAMES, self.sim.finger_positions()))
        f = to_frame(view, self.device)
        start = time.perf_counter()
        self.last = self.segmenter.segment(f.depth, f.K, f.cam_to_world,
                                           self.body.place(joints), object_boxes(self.memory))
        self.seconds += time.perf_counter() - start
        return dataclasses.replace(f, instances=self.last)


def in_workspace(view):
    """bool (H, W): the view's true surface lies in WORKSPACE."""
    h, w = view["depth"].shape
    rows, cols = np.mgrid[0:h, 0:w]
    z, K = view["depth"], view["K"]
    cam = np.stack([(cols - K[0, 2]) / K[0, 0] * z, (rows - K[1, 2]) / K[1, 1] * z, z], -1)
    world = cam @ view["cam_to_world"][:3, :3].T + view["cam_to_world"][:3, 3]
    with np.errstate(invalid="ignore"):
        return ((world >= WORKSPACE[0]) & (world <= WORKSPACE[1])).all(-1)


def image_errors(rgb, depth, view, workspace_only=True):
    """(PSNR dB, depth MAE m) of a rendering against a ground-truth view, robot excluded."""
    keep = view["instances"] != ROBOT
    if workspace_only:
        keep &= in_workspace(view)
    truth = view["rgb"].astype(np.float64) / 255
    mse = ((rgb - truth) ** 2)[keep].mean()
    valid = keep & np.isfinite(view["depth"])
    mae = np.abs(np.nan_to_num(depth, nan=0.0) - view["depth"])[valid].mean()
    return -10 * np.log10(max(mse, 1e-12)), float(mae)


def point_cloud_baseline(train, test, voxel):
    """Back-project every training pixel in the workspace, keep one point per voxel, z-buffer
    into the views."""
    pts, cols = [], []
    for v in train:
        keep = in_workspace(v) & (v["instances"] != ROBOT)
        rows, colsi = np.nonzero(keep)
        z = v["depth"][rows, colsi]
        K = v["K"]
        cam = np.stack([(colsi - K[0, 2]) / K[0, 0] * z, (rows - K[1, 2]) / K[1, 1] * z, z], 1)
        pts.append(cam @ v["cam_to_world"][:3, :3].T + v["cam_to_world"][:3, 3])
        cols.append(v["rgb"][rows, colsi] / 255.0)
    pts, cols = np.concatenate(pts), np.concatenate(cols)
    _, first = np.unique(np.floor(pts / voxel).astype(np.int64), axis=0, return_index=True)
    pts, cols = pts[first], cols[first]
    errors = []
    for v in test:
        h, w = v["depth"].shape
        w2c = np.linalg.inv(v["cam_to_world"])
        cam = pts @ w2c[:3, :3].T + w2c[:3, 3]
        front = cam[:, 2] > 0.01
        cam, c = cam[front], cols[front]
        u = np.round(cam[:, 0] / cam[:, 2] * v["K"][0, 0] + v["K"][0, 2]).astype(int)
        r = np.round(cam[:, 1] / cam[:, 2] * v["K"][1, 1] + v["K"][1, 2]).astype(int)
        inside = (u >= 0) & (u < w) & (r >= 0) & (r < h)
        u, r, z, c = u[inside], r[inside], cam[inside, 2], c[inside]
        order = np.argsort(-z)  # far first, so near points overwrite them
        rgb = np.zeros((h, w, 3))
        depth = np.full((h, w), np.nan)
        rgb[r[order], u[order]] = c[order]
        depth[r[order], u[order]] = z[order]
        errors.append(image_errors(rgb, depth, v) + image_errors(rgb, depth, v, False))
    memory_mb = (pts.astype(np.float32).nbytes + (cols * 255).astype(np.uint8).nbytes) / 1e6
    return np.mean(errors, axis=0), memory_mb


# The cube looks the same turned by a quarter turn about the vertical (as the planner's
# oriented goals judge it): its tracked rotation is compared with the truth modulo those.
TURNS = [Rotation.from_euler("z", k * np.pi / 2) for k in range(4)]


def pose_matrix(position, quat_xyzw) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3] = Rotation.from_quat(quat_xyzw).as_matrix()
    out[:3, 3] = position
    return out


def push_tracking(sim, memory, device, width, height, period, name="cube", frame=None):
    """Push an object with the arm while a fixed camera streams a frame every `period` [s]
    into the map (`frame(view)` makes them: the simulator's masks by default).

    At every frame the memory's object pose is compared with the simulator's: the position
    error is that of the object's mapped centre against where the true motion since the start
    took it; the rotation error is the angle between the mapped and the true rotation since
    the start, up to quarter turns about the vertical (the cube's symmetry).
    Returns (position errors [m], rotation errors [deg], distance pushed [m]).
    """
    plan = next(p for p in (ExplorationPolicy(seed).plan_episode(sim, "push")
                            for seed in range(100)) if p.target_object == name)
    frame = frame or (lambda view: to_frame(view, device))
    camera = arc_camera(0.0, 0.9, radius=0.8, target=sim.object_poses()[name][0])
    for _ in range(3):  # the robot's camera has seen the scene from where it stands
        memory.integrate(frame(render_view(sim, *camera, width, height)))
    true_start = pose_matrix(*sim.object_poses()[name])
    oid = min(memory.objects, key=lambda o: np.linalg.norm(   # masks: OBJECT_IDS[name]
        memory.objects[o].pose[:3, 3].cpu().numpy() - true_start[:3, 3]))
    mapped_start = memory.objects[oid].pose.cpu().numpy().astype(np.float64)
    position_errors, rotation_errors = [], []

    def observe(sim):
        memory.integrate(frame(render_view(sim, *camera, width, height)))
        motion = pose_matrix(*sim.object_poses()[name]) @ np.linalg.inv(true_start)
        mapped = memory.objects[oid].pose.cpu().numpy().astype(np.float64)
        expected = motion[:3, :3] @ mapped_start[:3, 3] + motion[:3, 3]
        position_errors.append(np.linalg.norm(mapped[:3, 3] - expected))
        mapped_rotation = mapped[:3, :3] @ mapped_start[:3, :3].T
        error = Rotation.from_matrix(mapped_rotation.T @ motion[:3, :3])
        rotation_errors.append(np.degrees(min((error * turn).magnitude() for turn in TURNS)))

    run_plan_open_loop(sim, plan, observe, observe_period=period)
    distance = np.linalg.norm(sim.object_poses()[name][0] - true_start[:3, 3])
    return np.array(position_errors), np.array(rotation_errors), float(distance)


def tabletop_figures(sim, train, config, device, width, height, period,
                     masks_push_error) -> dict:
    """The sweep and the push again, the objects found from depth alone (a fresh map)."""
    sim.reset()
    memory = SceneMemory(config, device=device)
    tabletop = Tabletop(sim, memory, device)
    ious, robot_recall = [], []
    start = time.perf_counter()
    for view in train:
        memory.integrate(tabletop.frame(view))
        labels, truth = tabletop.last.cpu().numpy(), view["instances"].astype(int)
        robot = truth == ROBOT
        robot_recall.append(((labels == ROBOT) & robot).sum() / max(robot.sum(), 1))
        for label in np.unique(labels[labels >= tabletop.segmenter.config.first_id]):
            true_id = np.bincount(truth[labels == label]).argmax()
            ious.append(((labels == label) & (truth == true_id)).sum()
                        / ((labels == label) | (truth == true_id)).sum())
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    segment_s = tabletop.seconds / len(train)
    objects = len(memory.objects)
    sim.reset()
    position, rotation, _ = push_tracking(sim, memory, device, width, height, period,
                                          frame=tabletop.frame)
    return {"tabletop_ingest_fps": len(train) / seconds, "segment_ms": 1000 * segment_s,
            "segment_share_of_ingest": segment_s / (seconds / len(train)),
            "segment_object_iou_mean": float(np.mean(ious)) if ious else float("nan"),
            "segment_object_iou_min": float(np.min(ious)) if ious else float("nan"),
            "segment_robot_recall": float(np.mean(robot_recall)),
            "tabletop_objects": objects,
            "tabletop_push_position_error_mean_m": position.mean(),
            "tabletop_push_position_error_max_m": position.max(),
            "tabletop_push_rotation_error_mean_deg": rotation.mean(),
            "tabletop_push_error_ratio": position.mean() / masks_push_error}


def timed(fn, min_seconds: float) -> float:
    """Calls per second of fn over at least min_seconds, after one warm-up call."""
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds or n == 0:
        fn()
        n += 1
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return n / (time.perf_counter() - start)


def random_gaussians(n, device):
    g = torch.Generator().manual_seed(0)
    means = torch.rand(n, 3, generator=g) * torch.tensor([1.2, 1.2, 0.3]) + \
        torch.tensor([-0.2, -0.6, 0.0])
    return Gaussians(means, torch.randn(n, 4, generator=g),
                     torch.log(torch.rand(n, 3, generator=g) * 0.01 + 0.003),
                     torch.randn(n, generator=g), torch.randn(n, 3, generator=g),
                     torch.zeros(n, dtype=torch.int64)).to(device)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CPU run under a minute")
    ap.add_argument("--json", type=Path, help="write the figures as one flat JSON object")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--frames", type=int, help="frames in the sweep (default 100; quick 24)")
    ap.add_argument("--size", help="WxH of the views (default 640x480; quick 160x120)")
    ap.add_argument("--iterations", type=int,
                    help="optimisation steps per frame (default 3)")
    ap.add_argument("--views-per-step", type=int,
                    help="views rendered together per optimisation step (default 8; quick 1)")
    ap.add_argument("--keyframes", type=int, help="keyframe window (default 16; quick 8)")
    args = ap.parse_args()
    width, height = map(int, (args.size or ("160x120" if args.quick else "640x480")).split("x"))
    frames = args.frames or (24 if args.quick else 100)
    device = torch.device(args.device)

    sim = PandaSim(load_scenario(REPO / "config" / "scenarios" / "default.yaml"), width, height)
    train = sweep(sim, frames)
    test = sweep(sim, frames, offset=0.5)[1:-1:max(1, frames // 6)]
    config = MappingConfig(iterations=args.iterations or 3,
                           views_per_step=args.views_per_step or (1 if args.quick else 8),
                           keyframes=args.keyframes or (8 if args.quick else 16),
                           bounds=WORKSPACE)
    # Untimed warm-up on a throwaway map: library initialisation and first-call kernel loads
    # are not ingest cost.
    warm_up = SceneMemory(config, device=device)
    for view in train[:2]:
        warm_up.integrate(to_frame(view, device))
    memory = SceneMemory(config, device=device)
    start = time.perf_counter()
    for view in train:
        memory.integrate(to_frame(view, device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    ingest_fps = frames / (time.perf_counter() - start)

    errors = []
    for view in test:
        f = to_frame(view, device)
        with torch.no_grad():
            out = memory.render(torch.linalg.inv(f.cam_to_world)[None], f.K[None], width, height)
        depth = out.depth[0].cpu().numpy()
        depth[out.alpha[0].cpu().numpy() < 1e-3] = np.nan
        rgb = out.rgb[0].clamp(0, 1).cpu().numpy()
        errors.append(image_errors(rgb, depth, view) + image_errors(rgb, depth, view, False))
    errors = np.mean(errors, axis=0)
    baseline, base_mb = point_cloud_baseline(train, test, voxel=0.002)

    # Batched rendering of the map, and of 300k Gaussians at 640x480.
    views = [to_frame(v, device) for v in test]
    viewmats = torch.stack([torch.linalg.inv(v.cam_to_world) for v in views])
    Ks = render_K(torch.stack([v.K for v in views]))
    seconds = 1.0 if args.quick else 3.0
    with torch.no_grad():
        render_rate = len(views) * timed(
            lambda: render_gaussians(memory.gaussians, viewmats, Ks, width, height), seconds)
        big = random_gaussians(300_000, device)
        sim640 = sweep(PandaSim(load_scenario(REPO / "config" / "scenarios" / "default.yaml"),
                                640, 480), 2)
        vm640 = torch.stack([torch.linalg.inv(torch.tensor(v["cam_to_world"],
                                                           dtype=torch.float32))
                             for v in sim640]).to(device)
        K640 = render_K(torch.stack([torch.tensor(v["K"], dtype=torch.float32)
                                     for v in sim640])).to(device)
        big_rate = 2 * timed(lambda: render_gaussians(big, vm640, K640, 640, 480), seconds)

    # --quick: a frame every 0.2 s of the push (and the tabletop sweep over every third
    # view), to stay within a minute on a 2-core CPU
    period = 0.2 if args.quick else 0.1
    push_position, push_rotation, push_distance = push_tracking(sim, memory, device, width,
                                                               height, period)

    tabletop = tabletop_figures(sim, train[::3] if args.quick else train, config, device,
                                width, height, period, push_position.mean())

    index = GaussianCollisionIndex.from_gaussians(memory.gaussians)
    g = torch.Generator().manual_seed(1)
    points = (torch.rand(100_000, 3, generator=g) * torch.tensor([1.2, 1.2, 0.5]) +
              torch.tensor([-0.2, -0.6, -0.05])).to(device)
    radii = torch.full((100_000,), 0.05, device=device)
    point_rate = points.shape[0] * timed(lambda: index.points_in_collision(points), seconds)
    sphere_rate = points.shape[0] * timed(lambda: index.spheres_in_collision(points, radii),
                                          seconds)

    results = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "width": width, "height": height, "frames": frames,
        "iterations_per_frame": config.iterations, "views_per_step": config.views_per_step,
        "keyframes": config.keyframes,
        "num_gaussians": len(memory),
        "psnr_db": errors[0], "depth_mae_m": errors[1],
        "psnr_db_full_view": errors[2], "depth_mae_m_full_view": errors[3],
        "memory_mb": memory.memory_bytes() / 1e6,
        "baseline_psnr_db": baseline[0], "baseline_depth_mae_m": baseline[1],
        "baseline_psnr_db_full_view": baseline[2], "baseline_depth_mae_m_full_view": baseline[3],
        "baseline_memory_mb": base_mb,
        "ingest_fps": ingest_fps, "render_views_per_s": render_rate,
        "render_views_per_s_640x480_300k": big_rate,
        "point_tests_per_s": point_rate, "sphere_tests_per_s": sphere_rate,
        "push_position_error_mean_m": push_position.mean(),
        "push_position_error_max_m": push_position.max(),
        "push_rotation_error_mean_deg": push_rotation.mean(),
        "push_rotation_error_max_deg": push_rotation.max(),
        "push_distance_m": push_distance, "push_frames": len(push_position),
        **tabletop,
    }
    results = {k: float(v) if isinstance(v, np.floating) else v for k, v in results.items()}
    results["psnr_gain_db_vs_baseline"] = results["psnr_db"] - results["baseline_psnr_db"]
    report(results, args.json)


if __name__ == "__main__":
    main()
