"""Benchmark the world model on held-out simulated episodes, beside the `static` baseline.

Records fresh push and grasp episodes (seeds disjoint from the training data) through the
simulated robot and the recorder, then predicts every window of 2 s from its start state and
the recorded actions. Figures:
  pos_err_1s_m, pos_err_2s_m          object position error of the learned model 1 s and 2 s
                                       ahead (ground-truth poses in and out), mean over objects
  static_pos_err_1s_m, static_pos_err_2s_m   the same for "objects never move"
  ratio_1s, ratio_2s                   learned / static (the bar: at most 0.3)
  rot_err_1s_deg, rot_err_2s_deg, static_rot_err_*   rotation errors
  moving_*                             the same over objects that moved more than 1 cm
  coverage_90                          share of errors inside the predicted 90 % region
  perceived_*                          (full run) the model trained on perceived poses, fed
                                       the scene memory's poses of the held-out bags, judged
                                       on the true motion
  gt_trained_on_perceived_input_*      (full run) the ground-truth model fed those poses
  perceived_trained_on_gt_input_*      (full run) the perceived-pose model on all held-out
                                       bags' ground-truth poses
  perceived_pose_err_mean_m, _p95_m    (full run) the scene memory's object positions against
  perceived_moving_pose_err_mean_m     the truth over those bags (every object and step; the
                                       last over objects more than 1 cm from where they began)
  predict_ms, steps_per_s, batch, horizon, objects   one prediction of `batch` sequences x
                                       `horizon` steps with `objects` objects
  static_predict_ms                    the baseline's call, same batch
  service_ms, service_overhead_ratio   the same request through the node's ~/predict service
                                       over DDS (serialisation included), and its ratio to the
                                       in-process predict_ms
  device

    python benchmarks/world_model.py [--quick] [--json PATH] [--device cuda] [--timing-only]
        [--bags DIR] [--cache DIR] [--perceived-episodes N]
"""
from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.report import report  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ros_io.services import call_repeatable  # noqa: E402
from world_model_node.dataset import make_windows  # noqa: E402
from world_model_node.episodes import BagLayout  # noqa: E402
from world_model_node.evaluate import score  # noqa: E402
from world_model_node.predictor import LearnedPredictor, StaticPredictor, WorldState  # noqa: E402
from world_model_node.train import find_bags, load_episodes  # noqa: E402

CHECKPOINT = REPO / "models" / "world_model"
PERCEIVED_CHECKPOINT = REPO / "models" / "world_model_perceived"
HELD_OUT_SEED = 900_000


def collect(episodes: int, output: Path) -> list[Path]:
    cmd = [sys.executable, "-m", "sim_robot.collect", "--episodes", str(episodes),
           "--output", str(output), "--real-time-factor", "0", "--camera-rate", "10",
           "--kinds", "push,grasp", "--perturb", "--seed", str(HELD_OUT_SEED)]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if run.returncode:
        raise RuntimeError(f"recording held-out episodes failed:\n{run.stderr[-2000:]}")
    return find_bags([output])


def held_out_accuracy(args, learned, bags: list[Path], device) -> dict:
    """Errors on the held-out bags; in a full run also the perceived-pose figures."""
    step = learned.step
    truth = load_episodes(bags, "ground_truth", step, BagLayout(), args.cache)
    windows = make_windows(truth, round(2.0 / step), stride=2).to(device)
    results = score(learned, windows, step)
    results["episodes"] = len(truth)
    if not args.quick and args.perceived_checkpoint.exists():
        # Mapped at the recorded size (320x240), as the shipped perceived model's bags were.
        perceived = load_episodes(bags[:args.perceived_episodes], "perceived", step,
                                  BagLayout(), args.cache, downscale=1, device=device)
        by_name = {e.name: e for e in truth}
        references = [by_name[e.name] for e in perceived]
        pw = make_windows(perceived, round(2.0 / step), stride=2,
                          references=references).to(device)
        results["perceived_episodes"] = len(perceived)
        results.update(pose_errors(perceived, references))
        perceived_model = LearnedPredictor.from_checkpoint(args.perceived_checkpoint, device)
        results.update(score(perceived_model, pw, step, "perceived_"))
        results.update(score(learned, pw, step, "gt_trained_on_perceived_input_"))
        results.update(score(perceived_model, windows, step, "perceived_trained_on_gt_input_"))
    return results


def pose_errors(perceived: list, truth: list) -> dict:
    """The perceived object positions' distances from the true ones, pooled over episodes."""
    errors, moved = [], []
    for p, t in zip(perceived, truth):
        index = [list(t.object_ids).index(i) for i in p.object_ids]
        true = t.object_positions[:, index]
        errors.append(np.linalg.norm(p.object_positions - true, axis=-1).ravel())
        moved.append((np.linalg.norm(true - true[:1], axis=-1) > 0.01).ravel())
    errors, moved = np.concatenate(errors), np.concatenate(moved)
    return {"perceived_pose_err_mean_m": float(errors.mean()),
            "perceived_pose_err_p95_m": float(np.percentile(errors, 95)),
            "perceived_moving_pose_err_mean_m": float(errors[moved].mean())
            if moved.any() else math.nan}


def synthetic_request(predictor, batch: int, horizon: int, objects: int, device):
    g = torch.Generator().manual_seed(0)
    j = predictor.joints
    q0 = torch.tensor([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])[:j]
    state = WorldState(q0, torch.zeros(j), torch.tensor(0.04), list(range(10, 10 + objects)),
                       torch.rand(objects, 3, generator=g) * torch.tensor([0.4, 0.6, 0.0])
                       + torch.tensor([0.35, -0.3, 0.03]),
                       torch.eye(3).repeat(objects, 1, 1), torch.full((objects, 3), 0.03),
                       torch.zeros(objects, 4))
    noise = torch.randn(batch, horizon, j, generator=g).cumsum(1) * 0.02
    targets = (q0 + noise).to(device)
    widths = torch.full((batch, horizon), 0.04, device=device)
    return state, targets, widths


def time_call(fn, device, repeats: int) -> float:
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    tic = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - tic) / repeats * 1e3


def service_ms(checkpoint: Path, device: str, state: WorldState, targets, widths,
               repeats: int) -> float:
    """Round trip of the same request through the node's ~/predict over DDS."""
    import rclpy
    from sensor_msgs.msg import JointState

    from ros_io.stamps import to_duration_msg
    from world_model_planning.msg import ObjectArray, ObjectState
    from world_model_planning.srv import Predict
    from scipy.spatial.transform import Rotation

    node_proc = subprocess.Popen(
        [sys.executable, "-m", "world_model_node.predictor_node", "--ros-args",
         "-p", f"checkpoint:={checkpoint}", "-p", f"device:={device}",
         "-p", "markers.futures:=0"],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rclpy.init()
    node = rclpy.create_node("world_model_benchmark")
    try:
        client = node.create_client(Predict, "/world_model_node/predict")
        if not client.wait_for_service(timeout_sec=60.0):
            raise RuntimeError("world_model_node did not come up")
        req = Predict.Request()
        names = [f"panda_joint{i}" for i in range(1, 8)]
        req.robot_state = JointState(name=names, position=state.joint_positions.tolist(),
                                     velocity=state.joint_velocities.tolist())
        quats = Rotation.from_matrix(state.object_rotations.double().numpy()).as_quat()
        objects = ObjectArray()
        for k, oid in enumerate(state.object_ids):
            o = ObjectState(id=oid)
            o.pose.position.x, o.pose.position.y, o.pose.position.z = \
                (float(v) for v in state.object_positions[k])
            (o.pose.orientation.x, o.pose.orientation.y, o.pose.orientation.z,
             o.pose.orientation.w) = (float(v) for v in quats[k])
            o.half_extent.x = o.half_extent.y = o.half_extent.z = 0.03
            objects.objects.append(o)
        req.objects = objects
        a = req.actions
        a.joint_names = names
        a.num_sequences, a.horizon = targets.shape[0], targets.shape[1]
        a.step_duration = to_duration_msg(0.1)
        a.joint_targets = targets.cpu().numpy().ravel().tolist()
        a.gripper_widths = widths.cpu().numpy().ravel().tolist()

        def wait(done, timeout):
            deadline = time.monotonic() + timeout
            while not done() and time.monotonic() < deadline:
                rclpy.spin_once(node, timeout_sec=0.05)
            return done()

        def call(attempts=1):
            response = call_repeatable(client, req, wait, 60.0, attempts)
            if response is None or not response.success:
                raise RuntimeError(f"predict failed: {response}")

        call(attempts=3)  # the first reply to a new client can be lost
        return time_call(call, torch.device("cpu"), repeats)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        node_proc.terminate()
        node_proc.wait(timeout=10)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CPU run under a minute")
    ap.add_argument("--json", type=Path, help="write the figures as one flat JSON object")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    ap.add_argument("--perceived-checkpoint", type=Path, default=PERCEIVED_CHECKPOINT)
    ap.add_argument("--bags", type=Path, help="held-out bags to use instead of recording new")
    ap.add_argument("--episodes", type=int, help="held-out episodes to record "
                                                 "(default 4 quick, 30 full)")
    ap.add_argument("--perceived-episodes", type=int,
                    help="map only the first N held-out episodes for the perceived figures "
                         "(default all: the ground-truth figures' episodes; mapping takes "
                         "minutes an episode on a CPU)")
    ap.add_argument("--cache", type=Path, help="episode cache (as the training command's): "
                    "held-out bags mapped once are read from it in later runs")
    ap.add_argument("--no-service", action="store_true", help="skip the DDS round trip")
    ap.add_argument("--timing-only", action="store_true",
                    help="only the prediction timings (no episodes recorded: for a machine "
                         "without ROS 2, such as a borrowed GPU)")
    args = ap.parse_args()
    if args.timing_only and (args.bags or args.episodes):
        ap.error("--timing-only records and reads no episodes: drop --bags / --episodes")
    if args.perceived_episodes is not None and args.perceived_episodes < 1:
        ap.error("--perceived-episodes must be at least 1")
    device = torch.device(args.device)
    learned = LearnedPredictor.from_checkpoint(args.checkpoint, device)
    static = StaticPredictor(learned.chain, learned.step, device)
    results = {}
    if not args.timing_only:
        with tempfile.TemporaryDirectory() as tmp:
            bags = find_bags([args.bags]) if args.bags else \
                collect(args.episodes or (4 if args.quick else 30), Path(tmp) / "held_out")
            results.update(held_out_accuracy(args, learned, bags, device))
    batch = 1024 if device.type == "cuda" else 256
    horizon, objects = 16, 8
    state, targets, widths = synthetic_request(learned, batch, horizon, objects, device)
    repeats = 3 if args.quick else 10
    ms = time_call(lambda: learned.predict(state, targets, widths), device, repeats)
    results.update({
        "predict_ms": ms, "steps_per_s": batch * horizon / (ms * 1e-3),
        "static_predict_ms": time_call(lambda: static.predict(state, targets, widths),
                                       device, repeats),
        "batch": batch, "horizon": horizon, "objects": objects,
        "ensemble": learned.model.config.ensemble})
    if not args.no_service:
        results["service_ms"] = service_ms(args.checkpoint, str(device), state, targets.cpu(),
                                           widths.cpu(), repeats)
        results["service_overhead_ratio"] = results["service_ms"] / ms
    results["device"] = str(device)
    results["device_name"] = torch.cuda.get_device_name(device) if device.type == "cuda" \
        else "cpu"
    report(results, args.json)


if __name__ == "__main__":
    main()
