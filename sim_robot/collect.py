"""Collect training data: drive the simulated robot with the scripted exploration policy over
a real ROS 2 graph and record each episode as a rosbag2 bag.

The simulator runs as its own process (the `sim_robot` node); this process resets it per
episode through its reset service, sends the episode's JointTrajectory and gripper commands,
and records the topics of config/recorder.yaml. Every episode is kept, failed grasps
included, and listed in <output>/episodes.yaml with its kind, seed and outcome.

    python -m sim_robot.collect --episodes 10 --output data/episodes --perturb
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

from ros_io.services import call_repeatable

EPISODE_SETTLE_S = 0.5  # sim time between reset and the first command
START_DELAY_S = 0.3  # trajectories are stamped this far ahead, so they start on time
END_HOLD_S = 0.5  # recorded after the plan's end
RESET_TIMEOUT_S = 10.0  # wall time for one reset call
RESET_ATTEMPTS = 3


def _parse_args(argv=None):
    from ros_io.paths import share_path

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--episodes", type=int, default=3, help="number of episodes (default 3)")
    ap.add_argument("--output", type=Path, default=Path("output/episodes"),
                    help="directory for the bags and episodes.yaml")
    ap.add_argument("--scenario", type=Path,
                    default=share_path("config", "scenarios", "default.yaml"))
    ap.add_argument("--perturb", action="store_true",
                    help="apply the scenario's perturbations, seeded per episode")
    ap.add_argument("--seed", type=int, default=0, help="seed of the first episode")
    ap.add_argument("--kinds", default="reach,push,grasp",
                    help="comma-separated episode kinds to draw from")
    ap.add_argument("--real-time-factor", type=float, default=1.0,
                    help="sim seconds per wall second (0 = as fast as possible)")
    ap.add_argument("--camera-rate", type=float, default=15.0, help="camera rate [Hz]")
    ap.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    args = ap.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    from sim_robot.explore import EPISODE_KINDS
    bad = [k for k in kinds if k not in EPISODE_KINDS]
    if bad or not kinds:
        ap.error(f"--kinds: unknown {bad}; choose from {list(EPISODE_KINDS)}")
    if args.episodes < 1:
        ap.error("--episodes must be at least 1")
    if not args.scenario.is_file():
        ap.error(f"--scenario: no such file {args.scenario}")
    args.kinds = kinds
    return args


def start_sim_process(scenario: Path, real_time_factor: float, camera_rate: float,
                      extra_params=()) -> subprocess.Popen:
    """Start the sim_robot node in a child process with the given parameters."""
    params = [f"scenario:={scenario}", f"real_time_factor:={real_time_factor}",
              f"camera_rate:={camera_rate}", *extra_params]
    cmd = [sys.executable, "-m", "sim_robot.sim_node", "--ros-args"]
    for p in params:
        cmd += ["-p", p]
    return subprocess.Popen(cmd, env=dict(os.environ, PYTHONUNBUFFERED="1"))


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Ctrl-C a node process (so it shuts down cleanly), killing it if it does not exit."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Collector:
    """The ROS side of data collection: reset, command, record, judge the outcome."""

    def __init__(self, storage: str, sim_proc: subprocess.Popen | None = None):
        import rclpy
        from rclpy.parameter import Parameter
        from std_msgs.msg import Float64MultiArray
        from trajectory_msgs.msg import JointTrajectory
        from world_model_planning.msg import ObjectArray
        from world_model_planning.srv import ResetSim

        self.node = rclpy.create_node(
            "data_collector", parameter_overrides=[Parameter("use_sim_time", value=True)])
        self.storage = storage
        self.sim_proc = sim_proc
        self.pub_traj = self.node.create_publisher(
            JointTrajectory, "/joint_trajectory_controller/joint_trajectory", 10)
        self.pub_gripper = self.node.create_publisher(
            Float64MultiArray, "/gripper_controller/commands", 10)
        self.reset_client = self.node.create_client(ResetSim, "/sim_robot/reset")
        self.objects = None
        self.node.create_subscription(ObjectArray, "/ground_truth/objects",
                                      lambda m: setattr(self, "objects", m), 10)

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def spin_until(self, condition, timeout_wall: float, what: str) -> None:
        import rclpy

        deadline = time.monotonic() + timeout_wall
        while not condition():
            if self.sim_proc is not None and self.sim_proc.poll() is not None:
                raise RuntimeError(f"the simulator exited (code {self.sim_proc.returncode}) "
                                   f"while waiting for {what}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out waiting for {what}")
            rclpy.spin_once(self.node, timeout_sec=0.02)

    def spin_until_time(self, t: float, timeout_wall: float) -> None:
        self.spin_until(lambda: self.now() >= t, timeout_wall, f"sim time {t:.2f} s")

    def reset(self, scenario: Path, perturb: bool, seed: int) -> None:
        from world_model_planning.srv import ResetSim

        self.spin_until(lambda: self.reset_client.service_is_ready(), 60.0, "the simulator")
        request = ResetSim.Request(scenario_path=str(scenario), perturb=perturb, seed=seed)

        def wait(condition, timeout):
            try:
                self.spin_until(condition, timeout, "the reset service")
                return True
            except TimeoutError:
                return False
        response = call_repeatable(  # a reset may be carried out twice
            self.reset_client, request, wait, RESET_TIMEOUT_S, RESET_ATTEMPTS,
            lambda _: self.node.get_logger().warning(
                f"no answer from the reset service in {RESET_TIMEOUT_S:.0f} s; asking again"))
        if response is None:
            raise TimeoutError(f"no answer from the reset service in {RESET_ATTEMPTS} tries")
        if not response.success:
            raise RuntimeError(f"reset failed: {response.message}")

    def run_episode(self, plan, bag: Path, wall_timeout: float) -> dict:
        """Record one episode of `plan`; returns the final ground-truth object positions."""
        from std_msgs.msg import Float64MultiArray
        from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

        from ros_io.paths import share_path
        from ros_io.recorder import Recorder
        from ros_io.stamps import to_duration_msg, to_time_msg
        from sim_robot import panda

        topics = yaml.safe_load(share_path("config", "recorder.yaml").read_text())
        recorder = Recorder(self.node, bag, topics["recorder"]["ros__parameters"]["topics"],
                            self.storage)
        try:
            self.spin_until_time(self.now() + 0.2, wall_timeout)  # let subscriptions match
            start = self.now() + START_DELAY_S
            msg = JointTrajectory(joint_names=list(panda.ARM_JOINT_NAMES))
            msg.header.stamp = to_time_msg(start)
            for t, q in plan.arm_waypoints:
                msg.points.append(JointTrajectoryPoint(
                    positions=[float(v) for v in q], time_from_start=to_duration_msg(t)))
            self.pub_traj.publish(msg)
            for t, width in sorted(plan.gripper_events, key=lambda e: e[0]):
                self.spin_until_time(start + t, wall_timeout)
                self.pub_gripper.publish(Float64MultiArray(data=[float(width)]))
            self.spin_until_time(start + plan.duration + END_HOLD_S, wall_timeout)
        finally:
            counts = recorder.close()
        final = {o.name: [o.pose.position.x, o.pose.position.y, o.pose.position.z]
                 for o in (self.objects.objects if self.objects else [])}
        return {"final_positions": final, "messages": sum(counts.values()),
                "topics": len(counts)}


def collect(args) -> list[dict]:
    import rclpy

    from sim_robot.explore import LIFTED_THRESHOLD, ExplorationPolicy, PlanningError
    from sim_robot.scenario import load_scenario
    from sim_robot.sim import PandaSim

    args.output.mkdir(parents=True, exist_ok=True)
    index_path = args.output / "episodes.yaml"
    index = yaml.safe_load(index_path.read_text()) if index_path.exists() else []
    base = load_scenario(args.scenario)
    sim_proc = start_sim_process(args.scenario, args.real_time_factor, args.camera_rate)
    rclpy.init()
    collector = Collector(args.storage, sim_proc)
    rng = np.random.default_rng(args.seed)
    try:
        for i in range(args.episodes):
            seed = args.seed + i
            scenario = base.perturbed(seed) if args.perturb else base
            # The policy plans on a local copy of the scene: same scenario, same initial state.
            local = PandaSim(scenario)
            kind = str(rng.choice(args.kinds))
            try:
                plan = ExplorationPolicy(seed).plan_episode(local, kind=kind)
            except PlanningError as err:
                print(f"episode seed {seed}: no {kind} plan ({err}); skipped", flush=True)
                continue
            rest = {n: p[0].copy() for n, p in local.object_poses().items()}
            local.close()
            collector.reset(args.scenario, args.perturb, seed)
            collector.spin_until_time(collector.now() + EPISODE_SETTLE_S, 60.0)
            name = f"episode_{len(index):04d}_{kind}"
            wall_timeout = 60.0 + 5.0 * plan.duration / max(args.real_time_factor, 0.05)
            result = collector.run_episode(plan, args.output / name, wall_timeout)
            entry = {"bag": name, "kind": kind, "seed": seed, "perturbed": args.perturb,
                     "target_object": plan.target_object, "duration_s": round(float(plan.duration), 3),
                     "messages": result["messages"]}
            final = result["final_positions"]
            if plan.target_object and plan.target_object in final:
                moved = np.asarray(final[plan.target_object]) - rest[plan.target_object]
                entry["object_displacement_m"] = round(float(np.linalg.norm(moved[:2])), 4)
                if kind == "grasp":
                    entry["success"] = bool(moved[2] > LIFTED_THRESHOLD)
            index.append(entry)
            index_path.write_text(yaml.safe_dump(index, sort_keys=False))
            print(f"{name}: {entry}", flush=True)
    finally:
        collector.node.destroy_node()
        rclpy.try_shutdown()
        stop_process(sim_proc)
    return index


def main(argv=None):
    args = _parse_args(argv)
    index = collect(args)
    grasps = [e for e in index if e["kind"] == "grasp"]
    print(f"{len(index)} episodes in {args.output} "
          f"({sum(e.get('success', False) for e in grasps)}/{len(grasps)} grasps lifted)")


if __name__ == "__main__":
    main()
