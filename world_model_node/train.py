"""Train the world model from recorded rosbag2 episodes.

    python -m world_model_node.train --bags output/episodes --output models/my_model
    torchrun --nproc_per_node 4 -m world_model_node.train --bags ... --device cuda

Reads every bag (our recorder's, or a robot's with `--layout` naming its topics and joints),
resamples it to the model's step, builds windows of `--horizon` steps and trains the ensemble
with a multi-step rollout loss (each member unrolls its own predictions). Object poses are the
bags' ground truth or, with `--poses perceived`, what the scene memory tracks over the bags'
camera frames (computed once and cached). Every `--eval-every` steps: the held-out errors at
1 s and 2 s beside the static baseline's, a row in <output>/metrics.csv, <output>/curves.png
and a checkpoint (safetensors + config.yaml with the normalisation statistics and the
uncertainty calibration). `--resume` continues from <output>. A bag that cannot be read is
reported and skipped; the others are used. For perceived poses, `--contact-radius` keeps the
memory's jitter of still objects out of the targets, `--pose-noise` teaches the model the
memory's offsets and `--replay` rehearses simulation ground truth beside them.
"""
from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import math
import os
import sys
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from gsplat_scene.segmentation import TabletopConfig
from robot_model.kinematics import KinematicChain
from world_model_node.checkpoint import load_checkpoint, save_checkpoint
from world_model_node.dataset import Windows, coverage_90, make_windows, motion_errors, \
    predict_windows
from world_model_node.episodes import APPEARANCE_DIM, BagLayout, Episode, read_episode, \
    with_ids_of
from world_model_node.model import ModelConfig, StepState, WorldModel, object_features, \
    robot_features, so3_exp, so3_log
from world_model_node.perception import MIN_VISIBLE, perceive_objects, perception_version
from world_model_node.predictor import LearnedPredictor

# Error scales of the loss terms: what counts as "one unit" of error per step.
POSITION_SCALE = 0.01   # m
ROTATION_SCALE = 0.1    # rad (Frobenius distance of rotation matrices ~ sqrt(2) angle)
JOINT_SCALE = 0.02      # rad
GRIPPER_SCALE = 0.005   # m
APPEARANCE_DROPOUT = 0.2  # share of training windows whose objects' colour is hidden


def find_bags(paths) -> list[Path]:
    """Bag directories among `paths` (a bag, or a directory searched for bags)."""
    bags = []
    for p in map(Path, paths):
        if (p / "metadata.yaml").exists() or list(p.glob("*.mcap")) or list(p.glob("*.db3")):
            bags.append(p)
        elif p.is_dir():
            bags += sorted(d for d in p.iterdir() if d.is_dir() and (
                (d / "metadata.yaml").exists() or list(d.glob("*.mcap"))))
        else:
            print(f"warning: {p} is not a bag or a directory of bags", file=sys.stderr)
    return bags


def _cache_key(bag: Path, poses: str, step: float, layout: BagLayout,
               perception: str = "") -> str:
    stamp = max((f.stat().st_mtime_ns, f.stat().st_size) for f in bag.iterdir())
    text = f"{bag.resolve()}|{stamp}|{poses}|{step}|{layout}|{perception}"
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def load_episodes(bags, poses: str, step: float, layout: BagLayout, cache: Path | None,
                  log=print, downscale: int = 2, min_visible: float | None = None,
                  device="cpu", tabletop: TabletopConfig | None = None,
                  urdf: str | None = None) -> list[Episode]:
    """Read bags (through an .npz cache), reporting and skipping those that fail.

    Perceived poses are mapped on `device`; they count as seen (training targets) where the
    frame shows at least min_visible of the object (default `perception.MIN_VISIBLE`); the
    cache keeps each frame's share, so another threshold needs no new mapping. With
    `tabletop`, the frames' objects are found from depth (bags without instance masks), the
    robot told apart by `urdf` (default: each bag's robot description).
    """
    perception, settings = None, ""
    if poses == "perceived":
        perception = functools.partial(perceive_objects, downscale=downscale, device=device,
                                       tabletop=tabletop, urdf=urdf)
        settings = f"downscale {downscale} memory {perception_version()}"
        if tabletop is not None:
            urdf_key = hashlib.sha1((urdf or "").encode()).hexdigest()[:12]
            settings += f" {tabletop} urdf {urdf_key}"
        min_visible = MIN_VISIBLE if min_visible is None else min_visible
    episodes = []
    for bag in bags:
        key = _cache_key(bag, poses, step, layout, settings)
        path = cache / f"{bag.name}-{key}.npz" if cache else None
        ep = None
        if path is not None and path.exists():
            try:
                with np.load(path) as data:
                    ep = Episode(name=bag.name, step=step, poses=poses, **dict(data))
            # Damaged (truncated, not a zip) or of an older layout (fields missing).
            except (TypeError, ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
                log(f"warning: cache entry {path.name} unreadable ({err}): reading the bag")
        cached = ep is not None
        try:
            if not cached:
                ep = read_episode(bag, layout, step, poses, perception)
                for note in ep.notes:
                    log(f"warning: {bag.name}: {note}")
        except (ValueError, OSError) as err:
            log(f"error: skipped {bag}: {err}")
            continue
        if path is not None and not cached:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez(path, **ep.arrays())
            except OSError as err:  # the episode is read: use it uncached
                log(f"warning: cache entry {path.name} not written ({err})")
        if poses == "perceived":
            ep.object_seen = ep.object_visible >= min_visible  # 0 where not known
        episodes.append(ep)
    return episodes


def split(episodes: list[Episode], held_out: float) -> tuple[list, list]:
    """Deterministic train / held-out split by a hash of the episode name."""
    def score(e):
        return int(hashlib.sha1(e.name.encode()).hexdigest()[:8], 16) / 16 ** 8
    val = [e for e in episodes if score(e) < held_out]
    train = [e for e in episodes if score(e) >= held_out]
    if not train:
        raise ValueError(f"no training episodes among {len(episodes)}")
    return train, val or train[-1:]


def fit_statistics(model: WorldModel, chain: KinematicChain, w: Windows) -> None:
    """Input and output normalisation from teacher-forced first steps of the windows."""
    s = StepState(w.q0[None], w.qd0[None], w.w0[None], w.pos0[None], w.rot0[None])
    tcp, target_tcp = chain.forward(w.q0)[None], chain.forward(w.target_q[:, 0])[None]
    rf = robot_features(s, tcp, w.target_q[None, :, 0], w.target_w[None, :, 0], target_tcp)[0]
    of = object_features(s, w.extent, w.appearance, tcp, target_tcp, w.w0[None],
                         w.target_w[None, :, 0], model.config.finger_offset)[0][w.mask]
    robot_delta = torch.cat([w.q[:, 0] - w.target_q[:, 0], (w.w[:, 0] - w.w0)[:, None]], -1)
    valid = w.seen[:, 0] & w.mask
    turn = so3_log(w.rot[:, 0] @ w.rot0.transpose(-1, -2))
    object_delta = torch.cat([w.pos[:, 0] - w.pos0, turn], -1)[valid]
    # Inputs are centred; outputs (increments) keep zero as "nothing happens", only scaled.
    with torch.no_grad():
        for name, x in (("robot", rf), ("object", of)):
            getattr(model, f"{name}_mean").copy_(x.mean(0))
            getattr(model, f"{name}_std").copy_(x.std(0).clamp_min(1e-2))
        for name, x in (("robot_delta", robot_delta), ("object_delta", object_delta)):
            getattr(model, f"{name}_std").copy_(x.std(0).clamp_min(1e-3))


def perception_noise(w: Windows, position_std: float, rotation_std: float) -> Windows:
    """The windows with each object's whole track offset by one random error, as a perceiver
    that sees it a little off (position_std m per axis, world frame; rotation_std rad per
    axis, object frame): start pose and targets move together, so the motion is unchanged
    and the model learns not to hang a contact on millimetres it will not be given."""
    b, k = w.pos0.shape[:2]
    shift = torch.randn(b, 1, k, 3, device=w.pos0.device) * position_std
    turn = so3_exp(torch.randn(b, 1, k, 3, device=w.pos0.device) * rotation_std)
    return replace(w, pos0=w.pos0 + shift[:, 0], pos=w.pos + shift,
                   rot0=w.rot0 @ turn[:, 0], rot=w.rot @ turn)


def hold_untouched(w: Windows, chain: KinematicChain, radius: float,
                   only: torch.Tensor | None = None) -> Windows:
    """The windows with each object's targets held at its start pose until the tool has come
    within `radius` m of the object's box (its start position, plus its half-extent's norm);
    only (W,) bool limits it to those windows.

    For perceived poses: the memory's estimate of a still object jumps by millimetres when
    the arm hides part of it and its box is re-fitted, which would teach the model motion
    where nothing touched. Targets that are not known (`seen`) stay unknown.
    """
    q = torch.cat([w.q0[:, None], w.q], 1)                                  # (W, H + 1, J)
    tool = chain.forward(q)[..., :3, 3]
    reach = radius + w.extent.norm(dim=-1)                                  # (W, K)
    near = (tool[:, :, None] - w.pos0[:, None]).norm(dim=-1) < reach[:, None]
    held = ~near.cummax(1).values[:, 1:]                                    # (W, H, K)
    if only is not None:
        held &= only[:, None, None]
    return replace(w, pos=torch.where(held[..., None], w.pos0[:, None], w.pos),
                   rot=torch.where(held[..., None, None], w.rot0[:, None], w.rot))


def _moved_back(before: Windows, after: Windows, only: torch.Tensor) -> str:
    """How many of the known targets of windows `only` (W,) `hold_untouched` moved, and
    how far."""
    known = before.seen & before.mask[:, None] & only[:, None, None]
    shift = (after.pos - before.pos).norm(dim=-1)[known]
    shift = shift[shift > 0]
    text = f"{len(shift)} of {int(known.sum())} moved back to the start pose"
    if len(shift):
        text += f" (mean {float(shift.mean()):.4f} m, max {float(shift.max()):.4f} m)"
    return text


def rollout_loss(predictor: LearnedPredictor, w: Windows, weights: torch.Tensor) -> torch.Tensor:
    """Multi-step loss of every member's own rollout; weights (E, B) bootstrap weights."""
    states = predictor.rollout(w.state(), w.target_q, w.target_w, w.mask)
    pos = torch.stack([s.obj_pos for s in states], 2)
    rot = torch.stack([s.obj_rot for s in states], 2)
    q = torch.stack([s.q for s in states], 2)
    grip = torch.stack([s.gripper for s in states], 2)
    valid = (w.seen & w.mask[:, None]).float()                       # (B, H, K)
    obj = ((pos - w.pos) ** 2).sum(-1) / POSITION_SCALE ** 2 \
        + ((rot - w.rot) ** 2).sum((-1, -2)) / (2 * ROTATION_SCALE ** 2)
    obj = (obj * valid).sum((-1, -2)) / valid.sum((-1, -2)).clamp_min(1)
    robot = ((q - w.q) ** 2).mean((-1, -2)) / JOINT_SCALE ** 2 \
        + ((grip - w.w) ** 2).mean(-1) / GRIPPER_SCALE ** 2
    return ((obj + 0.1 * robot) * weights).sum() / weights.sum()


def evaluate(w: Windows, positions, rotations, std, step: float) -> dict:
    """Held-out errors at 1 s and 2 s (as far as the horizon reaches) and the calibration."""
    out = {}
    horizon = w.target_q.shape[1]
    for seconds in (1, 2):
        e = motion_errors(w, positions, rotations, min(horizon, round(seconds / step)))
        out.update({f"pos_err_{seconds}s_m": e["position_m"],
                    f"rot_err_{seconds}s_deg": e["rotation_deg"],
                    f"static_pos_err_{seconds}s_m": e["static_position_m"],
                    f"static_rot_err_{seconds}s_deg": e["static_rotation_deg"]})
    if std is not None:
        out["coverage_90"] = coverage_90(w, positions, std)
    return out


def calibrate(predictor: LearnedPredictor, w: Windows, positions, spread) -> dict:
    """Fit std = sqrt((scale * spread)^2 + floor^2) to held-out errors (Gaussian likelihood);
    positions and spread (W, H, K) come from the uncalibrated predictor."""
    valid = w.seen & w.mask[:, None]
    s2, e2 = spread[valid] ** 2, ((positions - w.pos) ** 2).sum(-1)[valid]
    params = torch.tensor([0.0, math.log(1e-3)], device=s2.device, requires_grad=True)
    opt = torch.optim.Adam([params], lr=0.05)
    for _ in range(300):
        var = torch.exp(2 * params[0]) * s2 + torch.exp(2 * params[1])
        nll = (1.5 * torch.log(var) + 1.5 * e2 / var).mean()
        opt.zero_grad()
        nll.backward()
        opt.step()
    scale, floor = (float(v) for v in params.detach().exp())
    predictor.std_scale, predictor.std_floor = scale, floor
    return {"scale": scale, "floor": floor}


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.semilogy(steps, [r["train_loss"] for r in rows], label="train loss")
    a.set_xlabel("step")
    a.legend()
    for key, style in (("pos_err_1s_m", "-"), ("pos_err_2s_m", "-"),
                       ("static_pos_err_1s_m", "--"), ("static_pos_err_2s_m", "--")):
        b.plot(steps, [r[key] for r in rows], style, label=key)
    b.set_xlabel("step")
    b.set_ylabel("held-out object position error [m]")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _save_optimizer(path: Path, opt: torch.optim.Optimizer) -> None:
    tensors = {}
    for i, state in opt.state_dict()["state"].items():
        for k, v in state.items():
            tensors[f"{i}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous().reshape(-1) \
                if k == "step" else v.detach().cpu().contiguous()
    save_file(tensors, str(path))


def _load_optimizer(path: Path, opt: torch.optim.Optimizer) -> None:
    tensors = load_file(str(path))
    sd = opt.state_dict()
    for key, v in tensors.items():
        i, k = key.split(".", 1)
        sd["state"].setdefault(int(i), {})[k] = v.reshape(()) if k == "step" else v
    opt.load_state_dict(sd)


def perception_gap(perceived: list[Episode], bags, args, layout, log) -> dict:
    """How far the perceived object motion is from the ground truth's over 1 s, where the
    bags have ground truth: the noise the perceived-pose model learns from."""
    by_name = {b.name: b for b in bags}
    truth = load_episodes([by_name[e.name] for e in perceived], "ground_truth", args.step,
                          layout, args.cache, lambda _: None)
    truth = {e.name: e for e in truth}
    pairs = [(e, with_ids_of(truth[e.name], e)) for e in perceived if e.name in truth
             and len(truth[e.name]) == len(e)]
    if not pairs:
        log("no ground truth in the bags: perceived poses not compared")
        return {}
    h = round(1.0 / args.step)
    w = make_windows([p for p, _ in pairs], h, stride=2, references=[t for _, t in pairs])
    e = motion_errors(w, w.pos, w.rot, h)
    # The model learns only from pairs whose object the memory sees at both ends; what the
    # hidden ones leave out is mostly motion.
    seen = w.seen[:, h - 1]
    kept = motion_errors(w, w.pos, w.rot, h, keep=seen)
    moving = (w.ref_pos[:, h] - w.ref_pos[:, 0]).norm(dim=-1) > 0.01
    hidden = motion_errors(w, w.pos, w.rot, h, keep=moving & ~seen)
    n_moving = int((moving & w.ref_seen[:, h] & w.mask).sum())
    log(f"perceived vs ground-truth object motion over 1 s: {e['position_m']:.4f} m, "
        f"{e['rotation_deg']:.2f} deg (true motion {e['static_position_m']:.4f} m) "
        f"in {len(pairs)} episodes; where the memory sees the object at both ends "
        f"({kept['pairs']} of {e['pairs']} pairs, the training targets): "
        f"{kept['position_m']:.4f} m, {kept['rotation_deg']:.2f} deg; of the {n_moving} pairs "
        f"moving over 1 cm, {hidden['pairs']} are hidden (off the truth by "
        f"{hidden['position_m']:.4f} m)")
    return {"motion_1s_m": e["position_m"], "motion_1s_deg": e["rotation_deg"],
            "true_motion_1s_m": e["static_position_m"], "seen_motion_1s_m": kept["position_m"],
            "seen_motion_1s_deg": kept["rotation_deg"],
            "seen_share": kept["pairs"] / max(1, e["pairs"]),
            "moving_hidden_share": hidden["pairs"] / max(1, n_moving)}


def _parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--bags", nargs="+", required=True, type=Path,
                    help="bags, or directories holding bags")
    ap.add_argument("--output", type=Path, required=True, help="checkpoint directory")
    ap.add_argument("--poses", choices=["ground_truth", "perceived"], default="ground_truth")
    ap.add_argument("--layout", type=Path, help="YAML with bag topic and joint names "
                    "(keys of world_model_node.episodes.BagLayout)")
    ap.add_argument("--urdf", type=Path, help="robot URDF (default: the bags' robot_description)")
    ap.add_argument("--base-link", default="panda_link0")
    ap.add_argument("--tip-link", default="panda_hand_tcp")
    ap.add_argument("--step", type=float, default=0.1, help="seconds per action")
    ap.add_argument("--horizon", type=int, default=20, help="rollout steps in the loss")
    ap.add_argument("--steps", type=int, default=3000, help="optimiser steps in all")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--ensemble", type=int, default=5)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--held-out", type=float, default=0.15, help="fraction of episodes")
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's default)")
    ap.add_argument("--cache", type=Path, help="episode cache (default <output>/cache)")
    add_segmentation_args(ap)
    ap.add_argument("--downscale", type=int, default=2,
                    help="image subsampling for perceived poses")
    ap.add_argument("--min-visible", type=float, default=None,
                    help="perceived poses: the share of an object a frame must show for its "
                    f"pose to be a training target (default {MIN_VISIBLE})")
    ap.add_argument("--pose-noise", nargs=2, type=float, default=[0.0, 0.0],
                    metavar=("M", "DEG"), help="training objects' poses offset by a random "
                    "error of this std per axis (position, rotation), the same over a window: "
                    "a model for a perceiver's poses (default 0 0)")
    ap.add_argument("--contact-radius", type=float, default=0.0, metavar="M",
                    help="training targets of an object held where they start until the tool "
                    "comes this near its box: for perceived poses, whose still objects jitter "
                    "as the arm hides them (default 0: off)")
    ap.add_argument("--replay", nargs="+", type=Path, default=[], metavar="BAG",
                    help="bags (or folders) whose ground-truth poses join the training "
                    "split: simulation data rehearsed while fine-tuning on a robot's "
                    "perceived poses, so the run does not forget the dynamics it learned")
    ap.add_argument("--resume", action="store_true", help="continue the run in --output")
    ap.add_argument("--init", type=Path, help="start from this checkpoint's weights and "
                    "normalisation (e.g. a model trained in simulation, fine-tuned on a "
                    "robot's perceived poses); its width, layers and ensemble are kept")
    args = ap.parse_args(argv)
    for name in ("steps", "batch", "horizon", "ensemble", "eval_every", "layers", "downscale"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.width < 4 or args.width % 4:
        ap.error("--width must be a positive multiple of 4 (attention heads)")
    if not (args.step > 0 and args.lr > 0):
        ap.error("--step and --lr must be positive")
    if not 0.0 < args.held_out < 1.0:
        ap.error("--held-out must be in (0, 1)")
    if not (0.0 <= args.pose_noise[0] < 1.0 and 0.0 <= args.pose_noise[1] <= 30.0):
        ap.error("--pose-noise: position std in [0, 1) m, rotation std in [0, 30] deg")
    if not 0.0 <= args.contact_radius < 1.0:
        ap.error("--contact-radius must be in [0, 1) m")
    if args.min_visible is not None and not 0.0 < args.min_visible <= 1.0:
        ap.error("--min-visible must be in (0, 1]")
    check_device(ap, args.device)
    if args.init and args.resume:
        ap.error("--init starts a new run; --resume continues one: pass one of them")
    if args.init and not (args.init / "config.yaml").is_file():
        ap.error(f"--init: {args.init} is not a checkpoint directory")
    if args.urdf and not args.urdf.is_file():
        ap.error(f"--urdf: no such file {args.urdf}")
    args.bag_layout = bag_layout(ap, args.layout)
    args.tabletop = tabletop_config(ap, args)
    args.cache = args.cache or args.output / "cache"
    return args


def check_device(ap: argparse.ArgumentParser, device: str) -> None:
    """A --device that torch does not know, or CUDA where there is none, is a usage error."""
    try:
        torch.device(device)
    except RuntimeError as err:
        ap.error(f"--device: {err}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        ap.error(f"--device {device}: CUDA is not available")


def bag_layout(ap: argparse.ArgumentParser, path: Path | None) -> BagLayout:
    """The BagLayout of a --layout file (the default without one); a bad file is a usage
    error naming what is wrong."""
    if path is None:
        return BagLayout()
    try:
        return BagLayout.from_yaml(path)
    except ValueError as err:
        ap.error(f"--layout {path}: {err}")


def _replay_episodes(args, layout: BagLayout, held_out: set, log) -> list[Episode]:
    """The --replay bags' ground-truth episodes, less any the run holds out."""
    if not args.replay:
        return []
    bags = find_bags(args.replay)
    episodes = load_episodes(bags, "ground_truth", args.step, layout,
                             args.cache, log)
    kept = [e for e in episodes if e.name not in held_out]
    if not kept:
        raise SystemExit(f"--replay: no readable episodes to replay in {len(bags)} bags")
    dropped = len(episodes) - len(kept)
    log(f"replaying the ground truth of {len(kept)} episodes" +
        (f" ({dropped} held out by this run left out)" if dropped else ""))
    return kept


def add_segmentation_args(ap) -> None:
    """--segmentation and --table-height: how perceived poses find a bag's objects."""
    ap.add_argument("--segmentation", choices=["masks", "tabletop"], default="masks",
                    help="perceived poses: objects from the bags' instance masks, or from "
                         "depth alone (bags of a robot without a segmenter; the robot told "
                         "apart by the bags' robot description and joint states)")
    ap.add_argument("--table-height", type=float, default=0.0,
                    help="tabletop: world z of the table top [m]")


def tabletop_config(ap: argparse.ArgumentParser, args) -> TabletopConfig | None:
    """The TabletopConfig the segmentation flags ask for (None: masks); flags that cannot
    apply are usage errors."""
    if args.segmentation != "tabletop":
        return None
    if args.poses != "perceived":
        ap.error("--segmentation tabletop finds the objects of perceived poses: add "
                 "--poses perceived")
    if not math.isfinite(args.table_height):
        ap.error(f"--table-height must be finite, got {args.table_height}")
    return TabletopConfig(table_height=args.table_height)


def _robot_urdf(args, bags, layout: BagLayout) -> str:
    if args.urdf:
        return args.urdf.read_text()
    from ros_io.bag import read_messages
    for bag in bags:
        try:
            for _, _, _, msg in read_messages(bag, {layout.robot_description}):
                return msg.data
        except ValueError:
            continue
    raise SystemExit(f"no {layout.robot_description} in the bags: pass --urdf")


def main(argv=None) -> int:
    args = _parse_args(argv)
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank = int(os.environ.get("RANK", "0"))
    if distributed:
        import torch.distributed as dist
        dist.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
        world = dist.get_world_size()
        if args.device.startswith("cuda"):
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    else:
        world = 1

    def log(text):
        if rank == 0:
            print(text, flush=True)

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # the same initial weights on every rank
    layout = args.bag_layout
    bags = find_bags(args.bags)
    if not bags:
        raise SystemExit(f"no bags in {[str(p) for p in args.bags]}")
    episodes = load_episodes(bags, args.poses, args.step, layout,
                             args.cache, log, args.downscale,
                             args.min_visible, args.device, args.tabletop,
                             args.urdf.read_text() if args.urdf else None)
    if len(episodes) < 2:
        raise SystemExit(f"only {len(episodes)} readable episodes in {len(bags)} bags")
    perception_error = perception_gap(episodes, bags, args, layout, log) \
        if args.poses == "perceived" else {}
    train_eps, val_eps = split(episodes, args.held_out)
    replay = _replay_episodes(args, layout, {e.name for e in val_eps}, log)
    train = make_windows(train_eps + replay, args.horizon).to(args.device)
    val = make_windows(val_eps, args.horizon, stride=2).to(args.device)
    log(f"{len(episodes)} episodes ({len(train_eps)} train, {len(val_eps)} held out), "
        f"{len(train)} / {len(val)} windows of {args.horizon} x {args.step} s, "
        f"poses: {args.poses}")
    urdf = _robot_urdf(args, bags, layout)
    chain = KinematicChain.from_urdf(urdf, args.base_link, args.tip_link).to(args.device)
    if args.contact_radius:
        # The replayed ground truth has no jitter to hold.
        own = train.episode < len(train_eps)
        held = hold_untouched(train, chain, args.contact_radius, own)
        log(f"targets held until the tool comes within {args.contact_radius} m: "
            f"{_moved_back(train, held, own)}")
        train = held
    rows, start = [], 0
    if args.resume and (args.output / "config.yaml").exists():
        model, _, config = load_checkpoint(args.output, args.device)
        start = int(config["training"]["step"])
        with open(args.output / "metrics.csv") as f:
            rows = [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]
        log(f"resuming at step {start}")
    elif args.init:
        try:
            model, _, config = load_checkpoint(args.init, args.device)
        except ValueError as err:
            raise SystemExit(f"--init: {err}")
        if (model.config.joints, model.config.appearance) != (chain.dof, APPEARANCE_DIM):
            raise SystemExit(f"--init {args.init}: a model of {model.config.joints} joints "
                             f"cannot start one of {chain.dof}")
        if abs(model.config.step - args.step) > 1e-9:
            raise SystemExit(f"--init {args.init}: trained at {model.config.step} s per "
                             f"action, not --step {args.step}")
        before = config.get("training") or {}
        log(f"starting from {args.init} ({before.get('step', '?')} steps on "
            f"{before.get('poses', '?')} poses)")
    else:
        model = WorldModel(ModelConfig(joints=chain.dof, appearance=APPEARANCE_DIM,
                                       width=args.width, layers=args.layers,
                                       ensemble=args.ensemble, step=args.step)).to(args.device)
        fit_statistics(model, chain, train)
    model.train()
    torch.manual_seed(args.seed * 1000 + rank + start)  # each rank its own batches
    predictor = LearnedPredictor(model, chain, {}, "training", args.device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    if start and (args.output / "optimizer.safetensors").exists():
        _load_optimizer(args.output / "optimizer.safetensors", opt)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(1.0, (i + start) / args.steps))))
    e = model.config.ensemble
    tic, losses = time.perf_counter(), []
    for step in range(start + 1, args.steps + 1):
        idx = torch.randint(len(train), (args.batch,), device=args.device)
        weights = torch.poisson(torch.ones(e, args.batch, device=args.device))  # bootstrap
        batch = train[idx]
        # Appearance is not always known (objects given over the wire without colour).
        unknown = torch.rand(args.batch, 1, 1, device=args.device) < APPEARANCE_DROPOUT
        batch.appearance = batch.appearance.masked_fill(unknown, 0.0)
        if args.pose_noise[0] or args.pose_noise[1]:
            batch = perception_noise(batch, args.pose_noise[0], math.radians(args.pose_noise[1]))
        loss = rollout_loss(predictor, batch, weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if distributed:
            for p in model.parameters():
                dist.all_reduce(p.grad)
                p.grad /= world
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if step % args.eval_every and step != args.steps:
            continue
        if distributed:  # every rank must hold the same weights
            total = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()
            sums = [torch.zeros_like(total) for _ in range(world)]
            dist.all_gather(sums, total)
            if len({float(x) for x in sums}) != 1:
                raise RuntimeError(f"ranks diverged: parameter sums {sums}")
        model.eval()
        predictor.std_scale, predictor.std_floor = 1.0, 0.0
        positions, rotations, spread = predict_windows(predictor, val)
        calibration = calibrate(predictor, val, positions, spread)
        metrics = evaluate(val, positions, rotations, predictor.calibrated_std(spread), args.step)
        model.train()
        rate = (step - start) / (time.perf_counter() - tic)
        row = {"step": step, "train_loss": float(np.mean(losses[-args.eval_every:])), **metrics}
        rows.append(row)
        log(f"step {step}/{args.steps}  loss {row['train_loss']:.3f}  held-out position error "
            f"1 s {metrics['pos_err_1s_m']:.4f} m (static {metrics['static_pos_err_1s_m']:.4f})"
            f"  2 s {metrics['pos_err_2s_m']:.4f} m (static {metrics['static_pos_err_2s_m']:.4f})"
            f"  {rate:.1f} steps/s, {(args.steps - step) / rate / 60:.1f} min left")
        if rank == 0:
            training = {"step": step, "poses": args.poses, "horizon": args.horizon,
                        "initialised_from": str(args.init) if args.init else None,
                        "contact_radius_m": args.contact_radius,
                        "pose_noise": {"position_m": args.pose_noise[0],
                                       "rotation_deg": args.pose_noise[1]},
                        "episodes": [ep.name for ep in train_eps],
                        "replay_ground_truth": [ep.name for ep in replay],
                        "held_out": [ep.name for ep in val_eps],
                        "bag_layout": {k: list(v) if isinstance(v, tuple) else v
                                       for k, v in vars(layout).items()},
                        "perception_error": perception_error,
                        "metrics": {k: float(v) for k, v in metrics.items()}}
            save_checkpoint(args.output, model, urdf, args.base_link, args.tip_link,
                            calibration, training)
            _save_optimizer(args.output / "optimizer.safetensors", opt)
            with open(args.output / "metrics.csv", "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[-1]))
                writer.writeheader()
                writer.writerows(rows)
            _plot(rows, args.output / "curves.png")
    if distributed:
        dist.destroy_process_group()
    log(f"checkpoint: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
