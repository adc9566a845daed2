"""Benchmark the simulated robot and the recorder.

Figures (all on this machine's CPU; MuJoCo has no GPU path here):
  sim_steps_per_s          physics steps/s with the controller (trajectory follower) in the loop
  camera_fps_WxH           full camera frames/s (RGB + metric depth + instance mask)
  recorder_msgs_per_s      messages/s the recorder wrote while the sim node ran at real time
  recorder_mb_per_s        MB/s it wrote
  recorder_dropped         camera frames missing from the bag (gaps in the frame stamps)
Baselines measured in the same run:
  baseline_mj_steps_per_s  bare mujoco.mj_step on the same model
  baseline_rgb_fps_WxH     one plain RGB render pass (mujoco.Renderer)
  baseline_writer_msgs_per_s / _mb_per_s   the bag writer alone, same messages, no DDS

    python benchmarks/sim.py [--quick] [--json PATH]
"""
from __future__ import annotations

import argparse
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

import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from sim_robot import panda  # noqa: E402
from sim_robot.scenario import load_scenario  # noqa: E402
from sim_robot.sim import PandaSim  # noqa: E402
from sim_robot.trajectory_follower import JointTrajectoryFollower  # noqa: E402

SCENARIO = REPO / "config" / "scenarios" / "default.yaml"


def timed(fn, min_seconds: float) -> float:
    """Calls of fn per second, over at least min_seconds (after one warm-up call)."""
    fn()
    n, start = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return n / elapsed


def bench_physics(seconds: float) -> dict:
    sim = PandaSim(load_scenario(SCENARIO))
    limits = panda.ARM_LIMITS
    follower = JointTrajectoryFollower(panda.ARM_JOINT_NAMES, limits.lower, limits.upper,
                                       limits.velocity, sim.arm_positions())
    q0 = sim.arm_positions()
    follower.set_trajectory(0.0, 0.0, panda.ARM_JOINT_NAMES, [1e6], [q0 + 0.3])

    def controlled_chunk():
        for _ in range(100):
            q, qd, _ = follower.sample(sim.time)
            sim.set_arm_targets(q, qd)
            sim.step()

    model, data = sim.model, sim.data

    def bare_chunk():
        for _ in range(100):
            mujoco.mj_step(model, data)

    out = {"sim_steps_per_s": 100 * timed(controlled_chunk, seconds),
           "baseline_mj_steps_per_s": 100 * timed(bare_chunk, seconds)}
    sim.close()
    return out


def bench_camera(width: int, height: int, seconds: float) -> dict:
    sim = PandaSim(load_scenario(SCENARIO), width=width, height=height)
    full = timed(sim.render, seconds)
    renderer = mujoco.Renderer(sim.model, height, width)

    def rgb_only():
        renderer.update_scene(sim.data, camera="scene_camera")
        renderer.render()

    plain = timed(rgb_only, seconds)
    renderer.close()
    sim.close()
    return {f"camera_fps_{width}x{height}": full, f"baseline_rgb_fps_{width}x{height}": plain}


def bench_recorder(seconds: float) -> dict:
    """Record the sim node (own process, real time, 15 Hz camera) through the recorder."""
    import rclpy
    from rclpy.parameter import Parameter

    from ros_io.bag import BagWriter, read_messages, topic_summary
    from ros_io.recorder import Recorder
    from ros_io.stamps import to_seconds
    from sim_robot.collect import start_sim_process, stop_process
    import yaml

    camera_rate = 15.0
    topics = yaml.safe_load((REPO / "config" / "recorder.yaml").read_text())
    topics = topics["recorder"]["ros__parameters"]["topics"]
    tmp = Path(tempfile.mkdtemp(prefix="wmp_bench_"))
    proc = start_sim_process(SCENARIO, 1.0, camera_rate)
    rclpy.init()
    node = rclpy.create_node("bench_recorder",
                             parameter_overrides=[Parameter("use_sim_time", value=True)])
    try:
        # Wait for the simulator's camera before recording.
        deadline = time.monotonic() + 120
        while "/camera/color/image_raw" not in dict(node.get_topic_names_and_types()):
            if time.monotonic() > deadline:
                raise TimeoutError("the simulator did not come up")
            rclpy.spin_once(node, timeout_sec=0.1)
        recorder = Recorder(node, tmp / "bag", topics)
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            rclpy.spin_once(node, timeout_sec=0.05)
        wall = time.monotonic() - start
        counts = recorder.close()
        written = recorder.writer.bytes_written
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
        stop_process(proc)
    summary = topic_summary(tmp / "bag")
    assert {t: c for t, (_, c) in summary.items()} == counts
    stamps = np.array([to_seconds(m.header.stamp) for _, _, _, m in
                       read_messages(tmp / "bag", ["/camera/color/image_raw"])])
    gaps = np.round(np.diff(stamps) * camera_rate).astype(int) - 1 if stamps.size > 1 \
        else np.zeros(0, int)
    out = {"recorder_msgs_per_s": sum(counts.values()) / wall,
           "recorder_mb_per_s": written / wall / 1e6,
           "recorder_dropped": int(np.clip(gaps, 0, None).sum()),
           "recorder_camera_frames": int(stamps.size)}

    # Baseline: the bag writer alone, writing the recorded messages again as fast as it can.
    messages = []
    from rosbags.rosbag2 import Reader
    with Reader(tmp / "bag") as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        for conn, stamp, raw in reader.messages():
            messages.append((conn.topic, stamp, bytes(raw)))
    writer = BagWriter(tmp / "baseline")
    for topic, msgtype in types.items():
        writer.add_topic(topic, msgtype)
    start = time.perf_counter()
    for item in messages:
        writer.write(*item)
    writer.close()
    elapsed = time.perf_counter() - start
    out["baseline_writer_msgs_per_s"] = len(messages) / elapsed
    out["baseline_writer_mb_per_s"] = writer.bytes_written / elapsed / 1e6
    subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short CPU run (under a minute)")
    ap.add_argument("--json", type=Path, help="write the figures as one flat JSON object")
    args = ap.parse_args()
    seconds = 1.0 if args.quick else 5.0
    results = {"device": "cpu"}
    results.update(bench_physics(seconds))
    results.update(bench_camera(320, 240, seconds))
    results.update(bench_camera(640, 480, seconds))
    results.update(bench_recorder(8.0 if args.quick else 30.0))
    results["sim_steps_ratio_vs_bare"] = results["sim_steps_per_s"] / \
        results["baseline_mj_steps_per_s"]
    for size in ("320x240", "640x480"):
        results[f"camera_ratio_vs_rgb_{size}"] = results[f"camera_fps_{size}"] / \
            results[f"baseline_rgb_fps_{size}"]
    results["recorder_headroom"] = results["baseline_writer_msgs_per_s"] / \
        results["recorder_msgs_per_s"]
    report(results, args.json)


if __name__ == "__main__":
    main()
