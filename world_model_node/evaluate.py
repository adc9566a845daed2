"""Replay recorded episodes through a world model: how well does it predict what happened?

    python -m world_model_node.evaluate --checkpoint models/world_model --bags output/episodes
    python -m world_model_node.evaluate --checkpoint my_model --bags robot_bags/ \
        --layout robot_layout.yaml --poses perceived --device cuda

Every window of `--horizon` seconds (one every `--stride` steps) of every bag is predicted
from its start state and the recorded actions (joint targets and gripper commands), and the
predicted object motion is compared with the recorded one, beside the `static` baseline
(nothing moves). Object poses are the bags' ground truth, or with `--poses perceived` the
poses the scene memory tracks over the bags' camera frames, which the model is fed and, where
a bag has ground truth, judged against (else against the perceived motion itself). Prints
the errors at 1 s and 2 s, and writes to `--output`: `evaluation.json` (those figures, the
error at every look-ahead and per episode), `episodes.csv` (one row per episode, the worst
first) and `errors.png` (error against look-ahead, the model beside the baseline). A bag
that cannot be read is reported and skipped; the others are used.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import torch

from world_model_node.dataset import Windows, coverage_90, make_windows, motion_errors, \
    predict_windows
from world_model_node.predictor import make_predictor
from world_model_node.episodes import with_ids_of
from world_model_node.train import (add_segmentation_args, bag_layout, check_device, find_bags,
                                    load_episodes, tabletop_config)

MOVING_M = 0.01    # an object that moved farther than this within a window counts as moving


def errors_at(windows: Windows, positions: torch.Tensor, rotations: torch.Tensor, step: float,
              seconds=(1, 2), keep: torch.Tensor | None = None, prefix: str = "") -> dict:
    """Errors of predicted poses (positions (W, H, K, 3), rotations (W, H, K, 3, 3)) at each
    look-ahead in `seconds` that the windows reach, over the (window, object) pairs in keep
    (W, K; default all): position, rotation, the static baseline's, the ratio of the two
    position errors and the number of pairs (at the last look-ahead)."""
    out = {}
    for s in seconds:
        h = round(s / step)
        if h > windows.target_q.shape[1]:
            continue
        e = motion_errors(windows, positions, rotations, h, keep)
        out.update({f"{prefix}pos_err_{s}s_m": e["position_m"],
                    f"{prefix}static_pos_err_{s}s_m": e["static_position_m"],
                    f"{prefix}ratio_{s}s": e["position_m"] / e["static_position_m"]
                    if e["static_position_m"] > 0 else float("nan"),
                    f"{prefix}rot_err_{s}s_deg": e["rotation_deg"],
                    f"{prefix}static_rot_err_{s}s_deg": e["static_rotation_deg"],
                    f"{prefix}pairs": e["pairs"]})
    return out


def accuracy(windows: Windows, positions: torch.Tensor, rotations: torch.Tensor,
             std: torch.Tensor | None, step: float, prefix: str = "") -> dict:
    """`errors_at` 1 s and 2 s over all objects and over those that moved more than
    `MOVING_M` in the window (`moving_`), and the calibration of the position std (W, H, K)
    (`coverage_90`; None: none). Keys as benchmarks/world_model.py prints them."""
    moved = (windows.ref_pos[:, -1] - windows.ref_pos[:, 0]).norm(dim=-1) > MOVING_M
    out = {**errors_at(windows, positions, rotations, step, prefix=prefix),
           **errors_at(windows, positions, rotations, step, keep=moved,
                       prefix=f"{prefix}moving_")}
    if std is not None:
        out[f"{prefix}coverage_90"] = coverage_90(windows, positions, std)
    return out


def score(predictor, windows: Windows, step: float, prefix: str = "") -> dict:
    """`accuracy` of a predictor's predictions of the windows."""
    return accuracy(windows, *predict_windows(predictor, windows), step, prefix)


def by_lookahead(windows: Windows, positions: torch.Tensor,
                 rotations: torch.Tensor, step: float) -> list[dict]:
    """The errors (`motion_errors`) at every step of the horizon, with its look-ahead [s]."""
    return [{"lookahead_s": round(h * step, 6),
             **motion_errors(windows, positions, rotations, h)}
            for h in range(1, windows.target_q.shape[1] + 1)]


def by_episode(windows: Windows, positions: torch.Tensor, rotations: torch.Tensor,
               step: float, names: list[str]) -> list[dict]:
    """Per episode (names by `Windows.episode` index): its windows and `errors_at` 1 s and
    2 s; the worst (largest 1 s ratio) first."""
    rows = []
    for index, name in enumerate(names):
        mine = windows.episode == index
        if bool(mine.any()):
            keep = mine[:, None].expand_as(windows.mask)
            rows.append({"episode": name, "windows": int(mine.sum()),
                         **errors_at(windows, positions, rotations, step, keep=keep)})

    def ratio(row):
        value = row.get("ratio_1s", float("nan"))
        return value if value == value else -1.0     # NaN (nothing moved) last
    return sorted(rows, key=ratio, reverse=True)


def _finite(value):
    """value with NaN and infinities (nothing to measure) as None: strict JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def plot(curve: list[dict], path: Path, title: str) -> None:
    """Position and rotation error against look-ahead, the model beside the baseline."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [row["lookahead_s"] for row in curve]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, unit in ((axes[0], "position", "m"), (axes[1], "rotation", "deg")):
        ax.plot(t, [row[f"{key}_{unit}"] for row in curve], "-o", ms=3, label="model")
        ax.plot(t, [row[f"static_{key}_{unit}"] for row in curve], "--", label="static")
        ax.set_xlabel("look-ahead [s]")
        ax.set_ylabel(f"object {key} error [{unit}]")
        ax.legend()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, required=True, help="checkpoint directory")
    ap.add_argument("--bags", nargs="+", required=True, type=Path,
                    help="bags, or directories holding bags")
    ap.add_argument("--model", choices=["learned", "static"], default="learned")
    ap.add_argument("--poses", choices=["ground_truth", "perceived"], default="ground_truth")
    ap.add_argument("--layout", type=Path, help="YAML with bag topic and joint names "
                    "(keys of world_model_node.episodes.BagLayout)")
    ap.add_argument("--horizon", type=float, default=2.0, help="seconds predicted per window")
    ap.add_argument("--stride", type=int, default=2, help="steps between window starts")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cache", type=Path, help="episode cache (perceived poses are mapped "
                    "once; default <output>/cache)")
    ap.add_argument("--downscale", type=int, default=2,
                    help="image subsampling for perceived poses")
    add_segmentation_args(ap)
    ap.add_argument("--output", type=Path, default=Path("output/evaluation"))
    args = ap.parse_args(argv)
    if not args.horizon > 0 or args.stride < 1 or args.downscale < 1:
        ap.error("--horizon must be positive, --stride and --downscale at least 1")
    if not (args.checkpoint / "config.yaml").is_file():
        ap.error(f"--checkpoint: {args.checkpoint} is not a checkpoint directory")
    check_device(ap, args.device)
    args.bag_layout = bag_layout(ap, args.layout)
    args.tabletop = tabletop_config(ap, args)
    try:    # before the work: a place the figures cannot go is known now
        args.output.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        ap.error(f"--output {args.output}: {err}")
    args.cache = args.cache or args.output / "cache"
    return args


def _episodes(args, step: float) -> tuple[list, list, int]:
    """(episodes the model is fed, their references, how many have ground truth)."""
    def log(line):
        print(line, file=sys.stderr if line.startswith(("error", "warning")) else sys.stdout)

    bags = find_bags(args.bags)
    episodes = load_episodes(bags, args.poses, step, args.bag_layout, args.cache, log,
                             downscale=args.downscale, device=args.device,
                             tabletop=args.tabletop)
    if args.poses == "ground_truth":
        return episodes, episodes, len(episodes)
    # A robot's bags have no ground truth: reading it fails quietly, and the perceived
    # motion is its own reference.
    by_name = {b.name: b for b in bags}
    truth = {e.name: e for e in load_episodes([by_name[e.name] for e in episodes],
                                              "ground_truth", step, args.bag_layout,
                                              args.cache, lambda _: None)}
    references = [with_ids_of(truth[e.name], e)
                  if e.name in truth and len(truth[e.name]) == len(e) else e
                  for e in episodes]
    return episodes, references, sum(r is not e for r, e in zip(references, episodes))


def main(argv=None) -> int:
    args = _parse_args(argv)
    try:
        predictor = make_predictor(args.model, args.checkpoint, device=args.device)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    step = predictor.step
    episodes, references, with_truth = _episodes(args, step)
    if not episodes:
        print("error: no readable episodes in the bags", file=sys.stderr)
        return 1
    horizon = round(args.horizon / step)
    try:
        windows = make_windows(episodes, horizon, args.stride, references).to(args.device)
        positions, rotations, std = predict_windows(predictor, windows)
    except ValueError as err:    # episodes too short; joints the model does not have
        print(f"error: {err}", file=sys.stderr)
        return 1
    summary = {"model": args.model, "checkpoint": str(args.checkpoint), "poses": args.poses,
               "episodes": len(episodes), "episodes_with_ground_truth": with_truth,
               "windows": len(windows), "horizon_s": horizon * step,
               **accuracy(windows, positions, rotations, std, step)}
    names = [e.name for e in episodes]
    curve = by_lookahead(windows, positions, rotations, step)
    rows = by_episode(windows, positions, rotations, step, names)

    print(f"{summary['windows']} windows of {summary['horizon_s']:g} s from "
          f"{len(episodes)} episodes ({args.poses} poses"
          + (f", {with_truth} judged on ground truth" if args.poses == "perceived" else "")
          + f"; {args.model} model)")
    for s in (1, 2):
        if f"pos_err_{s}s_m" in summary:
            print(f"  {s} s ahead: position {summary[f'pos_err_{s}s_m']:.4f} m "
                  f"(static {summary[f'static_pos_err_{s}s_m']:.4f} m, ratio "
                  f"{summary[f'ratio_{s}s']:.3f}), rotation "
                  f"{summary[f'rot_err_{s}s_deg']:.2f} deg (static "
                  f"{summary[f'static_rot_err_{s}s_deg']:.2f}); moving objects "
                  f"{summary[f'moving_pos_err_{s}s_m']:.4f} m (static "
                  f"{summary[f'moving_static_pos_err_{s}s_m']:.4f} m)")
    if "pos_err_1s_m" not in summary:     # a horizon shorter than a second: its end
        end = curve[-1]
        print(f"  {end['lookahead_s']:g} s ahead: position {end['position_m']:.4f} m (static "
              f"{end['static_position_m']:.4f} m), rotation {end['rotation_deg']:.2f} deg "
              f"(static {end['static_rotation_deg']:.2f})")
    if "coverage_90" in summary:
        print(f"  errors inside the predicted 90 % region: {summary['coverage_90']:.3f}")
    if rows and "ratio_1s" in rows[0]:
        worst = rows[0]
        print(f"  worst episode: {worst['episode']} (1 s ratio {worst['ratio_1s']:.3f})")

    try:
        (args.output / "evaluation.json").write_text(json.dumps(
            _finite({**summary, "by_lookahead": curve, "by_episode": rows}), indent=1))
        with open(args.output / "episodes.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        plot(curve, args.output / "errors.png",
             f"{args.checkpoint.name} ({args.model}), {len(episodes)} episodes, {args.poses}")
    except OSError as err:    # the figures are printed above; say what was not written
        print(f"error: cannot write to {args.output}: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.output}/evaluation.json, episodes.csv, errors.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
