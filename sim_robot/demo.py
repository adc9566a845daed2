"""The main job: the planning stack closes the loop on the simulated robot over DDS.

Starts the simulated robot, the scene memory (gsplat_scene, mapping both of the robot's
cameras unless --cameras says otherwise) and the MPC planner (planner_node, world model
in-process) as separate processes on one DDS graph, waits until the scene memory
has found the cube, then sends PlanToGoal goals: `reach` (the tool to a top-down pose) and
`push` (the cube to a point on the table). The planner sees only the camera-built scene
memory; a goal succeeds when the planner reports success and it holds on the simulator's
ground truth. Writes to --output:
  report.json / report.md   per goal: success, final error, time, planning cycles, the
                            time spent in each planner stage, the scene memory's cube
                            error (also a second after the goal ended, the arm at rest)
  errors.png                goal error over time: the planner's (from its feedback, on the
                            scene memory's poses) and the ground truth's; below it the scene
                            memory's cube against the truth: its xy error, the age of its
                            pose (how far the memory lags the camera) and how long the memory
                            had not seen it (hidden)
  demo.gif                  the camera view with the sampled futures (end-effector paths,
                            coloured by cost) and the chosen plan drawn over it

    python -m sim_robot.demo [--output output/demo] [--model learned|static] [--tasks reach,push]
                             [--segmentation masks|tabletop]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from ros_io.paths import share_path
from sim_robot.scene import CAMERA_NAMESPACES

REPO = Path(__file__).resolve().parent.parent


def _spec(task: str, poses: dict, rng, cube_id: int):
    """PlanToGoal goal for a task drawn like the closed-loop benchmark's; the cube is the
    scene memory's object `cube_id`."""
    from world_model_planning.msg import GoalSpec

    from sim_robot.closed_loop import sample_goal

    goal = sample_goal(task, poses, rng)
    spec = GoalSpec(position_tolerance=goal.position_tolerance,
                    orientation_tolerance=goal.orientation_tolerance)
    spec.target_type = GoalSpec.TARGET_OBJECT if task == "push" else \
        GoalSpec.TARGET_END_EFFECTOR
    spec.object_id = cube_id if task == "push" else 0
    spec.target_pose.header.frame_id = "world"
    p = spec.target_pose.pose
    p.position.x, p.position.y, p.position.z = (float(v) for v in goal.position)
    quat = Rotation.from_matrix(goal.rotation.numpy()).as_quat() if goal.rotation is not None \
        else (0.0, 0.0, 0.0, 1.0)
    (p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w) = (
        float(v) for v in quat)
    return spec, goal


def project(points: np.ndarray, K: np.ndarray, cam_to_world: np.ndarray) -> np.ndarray:
    """Pixel coordinates (P, 2) of world points (P, 3); NaN behind the camera."""
    local = (points - cam_to_world[:3, 3]) @ cam_to_world[:3, :3]
    z = local[:, 2:3]
    uv = (local[:, :2] / np.where(z > 1e-3, z, np.nan)) * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    return uv


def draw_polyline(image: np.ndarray, uv: np.ndarray, colour, width: int = 1) -> None:
    """Draw pixel polyline uv (P, 2) into image (H, W, 3) uint8, in place."""
    h, w = image.shape[:2]
    for a, b in zip(uv[:-1], uv[1:]):
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            continue
        n = int(max(abs(b - a).max(), 1)) + 1
        pts = np.round(a + (b - a) * np.linspace(0, 1, n)[:, None]).astype(int)
        for dx in range(-(width // 2), width // 2 + 1):
            for dy in range(-(width // 2), width // 2 + 1):
                x, y = pts[:, 0] + dx, pts[:, 1] + dy
                ok = (x >= 0) & (x < w) & (y >= 0) & (y < h)
                image[y[ok], x[ok]] = colour


def overlay(rgb: np.ndarray, markers, K: np.ndarray, cam_to_world: np.ndarray) -> np.ndarray:
    """The camera image with the futures' and the plan's LINE_STRIP markers drawn on it."""
    out = rgb.copy()
    if markers is None:
        return out
    for m in markers.markers:
        if m.type != m.LINE_STRIP or not m.points or m.ns not in ("futures", "plan"):
            continue
        uv = project(np.array([[p.x, p.y, p.z] for p in m.points]), K, cam_to_world)
        colour = np.array([m.color.r, m.color.g, m.color.b]) * 255
        draw_polyline(out, uv, colour.astype(np.uint8), 3 if m.ns == "plan" else 1)
    return out


class DemoClient:
    """Our side of the graph: goals out; camera, markers, ground truth and feedback in."""

    def __init__(self):
        import rclpy
        from rclpy.action import ActionClient
        from rclpy.parameter import Parameter
        from rclpy.qos import qos_profile_sensor_data
        from geometry_msgs.msg import PoseStamped
        from sensor_msgs.msg import CameraInfo, Image
        from visualization_msgs.msg import MarkerArray

        from world_model_planning.action import PlanToGoal
        from world_model_planning.msg import ObjectArray

        self.node = rclpy.create_node(
            "planning_demo", parameter_overrides=[Parameter("use_sim_time", value=True)])
        self.latest = {}
        for topic, cls, qos in (
                ("/camera/color/image_raw", Image, qos_profile_sensor_data),
                ("/camera/color/camera_info", CameraInfo, qos_profile_sensor_data),
                ("/camera/pose", PoseStamped, 10), ("/planner_node/futures", MarkerArray, 1),
                ("/ground_truth/objects", ObjectArray, 10),
                ("/ground_truth/tcp_pose", PoseStamped, 10),
                ("/gsplat_scene/objects", ObjectArray, 1)):
            self.node.create_subscription(
                cls, topic, lambda m, t=topic: self.latest.__setitem__(t, m), qos)
        self.action = ActionClient(self.node, PlanToGoal, "/planner_node/plan_to_goal")
        self.PlanToGoal = PlanToGoal
        self.cube_id = None   # the scene memory's id of the cube, once it has one

    def find_cube(self, labelled: bool) -> bool:
        """Whether the scene memory has the cube: by the simulator's instance id where the
        memory is fed its masks, else (objects found from depth, ids of the memory's own)
        the object within 3 cm of the true cube, as a user would pick it in RViz."""
        from sim_robot.scene import OBJECT_IDS

        objects = getattr(self.latest.get("/gsplat_scene/objects"), "objects", [])
        if labelled:
            found = [o.id for o in objects if o.id == OBJECT_IDS["cube"]]
        elif "/ground_truth/objects" in self.latest:
            true = self.truth()["cube"][0]
            found = [o.id for o in objects if np.linalg.norm(
                [o.pose.position.x - true[0], o.pose.position.y - true[1]]) < 0.03]
        else:
            found = []
        self.cube_id = found[0] if found else None
        return self.cube_id is not None

    def spin_until(self, condition, timeout: float) -> bool:
        import rclpy

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not condition():
            rclpy.spin_once(self.node, timeout_sec=0.05)
        return bool(condition())

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def truth(self) -> dict:
        from sim_robot.scene import OBJECT_IDS

        names = {v: k for k, v in OBJECT_IDS.items()}
        return {names.get(o.id, str(o.id)): (
            np.array([o.pose.position.x, o.pose.position.y, o.pose.position.z]),
            np.array([o.pose.orientation.x, o.pose.orientation.y, o.pose.orientation.z,
                      o.pose.orientation.w]))
            for o in self.latest["/ground_truth/objects"].objects}

    def frame(self):
        """(rgb with the futures drawn, sim time) of the latest camera image, or None."""
        from ros_io.images import image_to_numpy

        need = ("/camera/color/image_raw", "/camera/color/camera_info", "/camera/pose")
        if not all(k in self.latest for k in need):
            return None
        from gsplat_scene.frames import pose_to_matrix

        rgb = image_to_numpy(self.latest[need[0]])
        K = np.array(self.latest[need[1]].k).reshape(3, 3)
        p = self.latest[need[2]].pose
        cam = pose_to_matrix([p.position.x, p.position.y, p.position.z],
                             [p.orientation.x, p.orientation.y, p.orientation.z,
                              p.orientation.w])
        return overlay(rgb, self.latest.get("/planner_node/futures"), K, cam), self.now()

    def memory_error(self) -> tuple[float, float, float]:
        """(xy distance [m] of the scene memory's cube from the simulator's, age [s] of the
        memory's pose, how long [s] the memory has not seen the cube at that time), NaN
        while the memory has no cube."""
        objects = self.latest.get("/gsplat_scene/objects")
        cube = next((o for o in getattr(objects, "objects", []) if o.id == self.cube_id), None)
        if cube is None:
            return math.nan, math.nan, math.nan
        xy = np.array([cube.pose.position.x, cube.pose.position.y])
        stamp = objects.header.stamp.sec + objects.header.stamp.nanosec * 1e-9
        seen = cube.last_seen.sec + cube.last_seen.nanosec * 1e-9
        return (float(np.linalg.norm(xy - self.truth()["cube"][0][:2])), self.now() - stamp,
                stamp - seen)

    def true_error(self, task: str, target: np.ndarray) -> float:
        """The goal error on the simulator's ground truth: the cube's xy for a push, the
        tool's position for a reach."""
        if task == "push":
            return float(np.linalg.norm(self.truth()["cube"][0][:2] - target[:2]))
        if "/ground_truth/tcp_pose" not in self.latest:
            return math.nan
        p = self.latest["/ground_truth/tcp_pose"].pose.position
        return float(np.linalg.norm(np.array([p.x, p.y, p.z]) - target))

    def run_goal(self, spec, task: str, target: np.ndarray, timeout: float, frames: list,
                 frame_period: float) -> dict:
        feedback, truth, memory = [], [], []
        send = self.action.send_goal_async(self.PlanToGoal.Goal(goal=spec),
                                           feedback_callback=lambda m: feedback.append(
                                               (self.now(), m.feedback)))
        if not self.spin_until(send.done, 30.0) or not send.result().accepted:
            return {"accepted": False}
        result_future = send.result().get_result_async()
        next_frame = next_truth = 0.0
        deadline = time.monotonic() + timeout

        def done():
            nonlocal next_frame, next_truth
            now = self.now()
            if now >= next_frame:
                f = self.frame()
                if f is not None:
                    frames.append(f)
                    next_frame = now + frame_period
            if now >= next_truth:
                truth.append((now, self.true_error(task, target)))
                memory.append((now, *self.memory_error()))
                next_truth = now + 0.1
            return result_future.done()
        self.spin_until(done, max(1.0, deadline - time.monotonic()))
        if not result_future.done():
            return {"accepted": True, "success": False, "reason": "no result in time"}
        r = result_future.result().result
        _, memory_error, memory_age, unseen = np.array(memory or [(math.nan,) * 4]).T
        return {"accepted": True, "planner_success": bool(r.success),
                "reason": r.failure_reason, "iterations": int(r.iterations),
                "elapsed_s": r.elapsed.sec + r.elapsed.nanosec * 1e-9,
                "planner_final_error_m": float(r.final_position_error),
                "stages": stage_durations([(t, f.stage) for t, f in feedback]),
                "memory_error_mean_m": float(np.nanmean(memory_error)),
                "memory_error_max_m": float(np.nanmax(memory_error)),
                "memory_age_mean_s": float(np.nanmean(memory_age)),
                "memory_age_max_s": float(np.nanmax(memory_age)),
                "memory_unseen_max_s": float(np.nanmax(unseen)),
                "feedback": [(t, f.position_error) for t, f in feedback], "truth": truth,
                "memory": memory}


def stage_durations(stamped: list) -> str:
    """'approach 2.1 s, push 4.0 s, ...' from (time, stage) feedback in order."""
    spans = []
    for (t, stage), (t_next, _) in zip(stamped, stamped[1:] + stamped[-1:]):
        if spans and spans[-1][0] == stage:
            spans[-1][1] += t_next - t
        else:
            spans.append([stage, t_next - t])
    return ", ".join(f"{stage} {d:.1f} s" for stage, d in spans)


def memory_summary(run: dict) -> str:
    """'0.0042 / 0.0180, 0.41 / 1.20, 0.00, 0.0031' of a run's scene-memory figures (the
    last: the cube's xy error a second after the goal ended, the arm at rest), or ''."""
    if "memory_error_mean_m" not in run:
        return ""
    return (f"{run['memory_error_mean_m']:.4f} / {run['memory_error_max_m']:.4f}, "
            f"{run['memory_age_mean_s']:.2f} / {run['memory_age_max_s']:.2f}, "
            f"{run['memory_unseen_max_s']:.2f}, {run['memory_error_end_m']:.4f}")


def write_outputs(output: Path, runs: list, frames: list) -> None:
    import imageio.v2 as imageio
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = [{k: v for k, v in r.items() if k not in ("feedback", "truth", "memory")}
              for r in runs]
    (output / "report.json").write_text(json.dumps(report, indent=1))
    lines = ["# Planning demo on the simulated robot", "",
             "| task | success | final error [m] | sim time [s] | cycles | stages | "
             "memory's cube: xy error mean / max [m], age mean / max [s], unseen max [s], "
             "xy error at the end [m] | "
             "note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in report:
        lines.append(f"| {r['task']} | {r.get('success')} | "
                     f"{r.get('final_error_m', math.nan):.4f} | "
                     f"{r.get('elapsed_s', math.nan):.1f} | {r.get('iterations', 0)} | "
                     f"{r.get('stages', '')} | {memory_summary(r)} | {r.get('reason', '')} |")
    (output / "report.md").write_text("\n".join(lines) + "\n")
    fig, (ax, ax_memory) = plt.subplots(2, 1, figsize=(6, 6), sharex=True)
    ax_age = ax_memory.twinx()
    for r in runs:
        if r.get("feedback"):
            t, err = zip(*r["feedback"])
            line, = ax.plot(np.subtract(t, t[0]), err, label=f"{r['task']} (planner's view)")
            if r.get("truth"):
                tt, true = zip(*r["truth"])
                ax.plot(np.subtract(tt, t[0]), true, ls=":", color=line.get_color(),
                        label=f"{r['task']} (ground truth)")
            if r.get("memory"):
                tm, error, age, unseen = np.array(r["memory"]).T
                ax_memory.plot(tm - t[0], error, color=line.get_color(),
                               label=f"{r['task']}: xy error")
                ax_age.plot(tm - t[0], age, ls=":", color=line.get_color(),
                            label=f"{r['task']}: age")
                ax_age.plot(tm - t[0], unseen, ls="--", color=line.get_color(),
                            label=f"{r['task']}: unseen")
    ax.axhline(0.02, color="grey", ls="--", lw=0.8, label="2 cm")
    ax.set_ylabel("goal error [m]")
    ax.legend()
    ax_memory.set_xlabel("sim time since the goal [s]")
    ax_memory.set_ylabel("memory's cube xy error [m]")
    ax_age.set_ylabel("age of its pose (dotted), time unseen (dashed) [s]")
    ax_memory.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(output / "errors.png", dpi=100)
    plt.close(fig)
    if frames:
        imageio.mimsave(output / "demo.gif", [f for f, _ in frames], duration=0.2, loop=0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--output", type=Path, default=Path("output/demo"))
    ap.add_argument("--model", default="learned", choices=("learned", "static"))
    ap.add_argument("--tasks", default="reach,push")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--real-time-factor", type=float, default=0.5)
    ap.add_argument("--goal-timeout", type=float, default=25.0,
                    help="sim seconds each goal may take")
    ap.add_argument("--cameras", default="camera,side_camera",
                    help="cameras the scene memory maps (camera, side_camera or both)")
    ap.add_argument("--extra-camera-period", type=float, default=2.0,
                    help="the scene node's extra_camera_period [s]: the side camera's frames "
                         "are taken while the main camera's hides an object, else this "
                         "often (0 = every frame)")
    ap.add_argument("--segmentation", default="masks", choices=("masks", "tabletop"),
                    help="where the scene memory's objects come from: the simulator's "
                         "instance masks, or depth alone (the scene node's tabletop "
                         "segmentation, as on a robot without a segmenter)")
    args = ap.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    cameras = [c for c in args.cameras.split(",") if c]
    if not tasks or any(t not in ("reach", "push") for t in tasks) \
            or args.real_time_factor <= 0 or args.goal_timeout <= 0 \
            or not cameras or any(c not in CAMERA_NAMESPACES for c in cameras) \
            or not 0 <= args.extra_camera_period <= 3600:
        print("tasks must be reach and/or push, cameras camera and/or side_camera; the "
              "real-time factor and the goal timeout positive, the extra camera period in "
              "[0, 3600] s", file=sys.stderr)
        return 2

    import rclpy

    from sim_robot.collect import stop_process
    masks = args.segmentation == "masks"
    args.output.mkdir(parents=True, exist_ok=True)
    log = open(args.output / "processes.log", "w")

    def start(module, params, remaps=()):
        cmd = [sys.executable, "-m", module, "--ros-args"]
        cmd += [a for p in params for a in ("-p", p)] + [a for r in remaps for a in ("-r", r)]
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))

    procs = [
        start("sim_robot.sim_node", [f"real_time_factor:={args.real_time_factor}",
                                     "clock_rate:=50.0", "joint_state_rate:=50.0",
                                     "camera_rate:=5.0", "ground_truth_rate:=10.0",
                                     f"side_camera:={str('side_camera' in cameras).lower()}",
                                     f"publish_instances:={str(masks).lower()}"]),
        start("gsplat_scene.scene_node", ["use_sim_time:=true", "torch_threads:=1",
                                          f"cameras:=[{', '.join(cameras)}]",
                                          f"extra_camera_period:={args.extra_camera_period}",
                                          f"segmentation:={args.segmentation}"]
              # tabletop: the box the objects stand in, the table top and 0.8 m above it
              + ([] if masks else ["bounds:=[-0.3, -0.7, -0.05, 1.1, 0.7, 0.8]"])),
        start("planner_node.planner_node",
              [f"model:={args.model}", "use_sim_time:=true",
               f"checkpoint:={share_path('models', 'world_model')}", "torch_threads:=1",
               f"default_time_budget:={args.goal_timeout}"],
              ["objects:=/gsplat_scene/objects", "scene_cloud:=/gsplat_scene/gaussians"]),
    ]
    rclpy.init()
    runs, frames = [], []
    try:
        client = DemoClient()
        print("waiting for the planner and for the scene memory to find the cube ...",
              flush=True)
        if not client.action.wait_for_server(timeout_sec=120.0) or not client.spin_until(
                lambda: "/ground_truth/objects" in client.latest and client.find_cube(masks),
                180.0):
            print(f"the stack did not come up; see {args.output / 'processes.log'}",
                  file=sys.stderr)
            return 1
        rng = np.random.default_rng(args.seed)
        for task in tasks:
            spec, goal = _spec(task, client.truth(), rng, client.cube_id)
            print(f"{task}: goal {np.round(goal.position.numpy(), 3).tolist()}", flush=True)
            target = goal.position.numpy()
            run = {"task": task, "model": args.model, "segmentation": args.segmentation,
                   **client.run_goal(spec, task, target,
                                     args.goal_timeout / args.real_time_factor + 60,
                                     frames, 0.5)}
            client.spin_until(lambda: False, 1.0)    # ground truth after the arm stopped
            error = client.true_error(task, target)
            run["final_error_m"] = error
            run["memory_error_end_m"] = client.memory_error()[0]
            run["memory_objects"] = sorted(o.id for o in getattr(
                client.latest.get("/gsplat_scene/objects"), "objects", []))
            # As in benchmarks/closed_loop.py: the goal succeeded as the planner judged it
            # (for a reach also on the orientation), and it holds on the truth.
            run["success"] = bool(run.get("accepted")) and error <= goal.position_tolerance \
                and run.get("planner_success", False)
            print(f"{task}: success {run['success']}, error {error:.4f} m, "
                  f"{run.get('iterations', 0)} cycles ({run.get('stages', '')}) "
                  f"{run.get('reason', '')}", flush=True)
            if "memory_error_mean_m" in run:
                print(f"{task}: scene memory's cube xy error mean / max "
                      f"{run['memory_error_mean_m']:.4f} / {run['memory_error_max_m']:.4f} m, "
                      f"age of its pose mean / max {run['memory_age_mean_s']:.2f} / "
                      f"{run['memory_age_max_s']:.2f} s, unseen for up to "
                      f"{run['memory_unseen_max_s']:.2f} s, xy error at the end "
                      f"{run['memory_error_end_m']:.4f} m", flush=True)
            print(f"{task}: objects in the scene memory {run['memory_objects']} (the cube "
                  f"{client.cube_id})", flush=True)
            runs.append(run)
        write_outputs(args.output, runs, frames)
        print(f"report: {args.output / 'report.md'}, animation: {args.output / 'demo.gif'}")
        return 0
    finally:
        rclpy.try_shutdown()
        for p in procs:
            stop_process(p)
        log.close()


if __name__ == "__main__":
    sys.exit(main())
