"""Benchmark one MPC planning cycle (sample, imagine, score, refit) on a push goal.

A scene of the three default objects plus distractors (8 objects), the arm at home; one
cycle = `iterations` iterations of `samples` sequences x `horizon` steps through the learned
world model and every cost term, then the plan and the best futures imagined once more for
display. Figures:
  plan_cycle_ms                 one cycle with the learned model and iCEM (the bar: <= 20 ms
                                on an H100 at 1024 x 16 x 3)
  cem_plan_cycle_ms, mppi_plan_cycle_ms   the same cycle with CEM and MPPI
  static_plan_cycle_ms          the same cycle with the static world model (the baseline:
                                everything but the learned prediction)
  model_share                   1 - static / learned: the world model's share of a cycle
  sampled_futures_per_s         samples x iterations / cycle time
  samples, horizon, iterations, objects, device

    python benchmarks/planner.py [--quick] [--json PATH] [--device cuda]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from benchmarks.report import report  # noqa: E402
from planner_node.costs import OBJECT, Goal, Scene  # noqa: E402
from planner_node.mpc import PlannerConfig, build_planner  # noqa: E402
from planner_node.samplers import SamplerConfig  # noqa: E402
from world_model_node.predictor import WorldState  # noqa: E402

CHECKPOINT = REPO / "models" / "world_model"


def scene_state(objects: int) -> WorldState:
    g = torch.Generator().manual_seed(0)
    q0 = torch.tensor([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])
    positions = torch.rand(objects, 3, generator=g) * torch.tensor([0.4, 0.6, 0.0]) \
        + torch.tensor([0.35, -0.3, 0.03])
    return WorldState(q0, torch.zeros(7), torch.tensor(0.0), list(range(10, 10 + objects)),
                      positions, torch.eye(3).repeat(objects, 1, 1),
                      torch.full((objects, 3), 0.025), torch.zeros(objects, 4))


def cycle_ms(model: str, sampler: str, samples: int, horizon: int, iterations: int,
             state: WorldState, device, repeats: int) -> float:
    config = PlannerConfig(sampler=sampler, horizon=horizon,
                           sampling=SamplerConfig(samples=samples, iterations=iterations,
                                                  elites=max(2, samples // 16)))
    planner = build_planner(model, CHECKPOINT, config, device=device)
    goal = Goal(OBJECT, state.object_positions[0] + torch.tensor([0.1, 0.0, 0.0]),
                object_id=state.object_ids[0])
    anchor = (state.joint_positions, torch.zeros(7), torch.zeros(7))

    def once():
        planner.plan(state, anchor, goal, Scene(), 0.0)
        if device.type == "cuda":
            torch.cuda.synchronize()
    once()
    tic = time.perf_counter()
    for _ in range(repeats):
        once()
    return (time.perf_counter() - tic) / repeats * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CPU run under a minute")
    ap.add_argument("--json", type=Path, help="write the figures as one flat JSON object")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    samples = 1024 if device.type == "cuda" else (64 if args.quick else 256)
    horizon, iterations, objects = 16, 3, 8
    repeats = 2 if args.quick else 10
    state = scene_state(objects)
    learned = cycle_ms("learned", "icem", samples, horizon, iterations, state, device, repeats)
    static = cycle_ms("static", "icem", samples, horizon, iterations, state, device, repeats)
    results = {"plan_cycle_ms": learned, "static_plan_cycle_ms": static,
               "model_share": 1 - static / learned}
    for name in ("cem", "mppi"):
        results[f"{name}_plan_cycle_ms"] = cycle_ms("learned", name, samples, horizon,
                                                    iterations, state, device, repeats)
    results.update({"sampled_futures_per_s": samples * iterations / (learned * 1e-3),
                    "samples": samples, "horizon": horizon, "iterations": iterations,
                    "objects": objects, "device": str(device),
                    "device_name": torch.cuda.get_device_name(device)
                    if device.type == "cuda" else "cpu"})
    report(results, args.json)


if __name__ == "__main__":
    main()
