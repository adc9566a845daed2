"""The data-collection command records every episode (failed grasps included) as a bag."""
import subprocess
import sys

import yaml

from ros_io.bag import read_messages, topic_summary
from sim_robot.explore import LIFTED_THRESHOLD
from support.graph import REPO


def test_collect_two_grasp_episodes(tmp_path):
    out = tmp_path / "episodes"
    run = subprocess.run(
        [sys.executable, "-m", "sim_robot.collect", "--episodes", "2", "--kinds", "grasp",
         "--seed", "4", "--perturb", "--real-time-factor", "1.5", "--output", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    index = yaml.safe_load((out / "episodes.yaml").read_text())
    assert [e["seed"] for e in index] == [4, 5]
    for entry in index:
        assert entry["kind"] == "grasp" and isinstance(entry["success"], bool)
        summary = topic_summary(out / entry["bag"])
        assert sum(n for _, n in summary.values()) == entry["messages"]
        assert summary["/joint_trajectory_controller/joint_trajectory"][1] == 1
        assert summary["/gripper_controller/commands"][1] >= 2  # open, close
        assert summary["/camera/color/image_raw"][1] >= 15 * entry["duration_s"] * 0.9
        # The recorded ground truth agrees with the outcome in the index.
        heights = [next(o.pose.position.z for o in m.objects if o.name == entry["target_object"])
                   for _, _, _, m in read_messages(out / entry["bag"], ["/ground_truth/objects"])]
        assert (heights[-1] - heights[0] > LIFTED_THRESHOLD) == entry["success"]


def test_collect_rejects_bad_arguments(tmp_path):
    for args, message in [(["--kinds", "dance"], "unknown ['dance']"),
                          (["--episodes", "0"], "at least 1"),
                          (["--scenario", "/no/such.yaml"], "no such file")]:
        run = subprocess.run([sys.executable, "-m", "sim_robot.collect", "--output",
                              str(tmp_path), *args], cwd=REPO, capture_output=True, text=True)
        assert run.returncode == 2 and message in run.stderr, run.stderr


def test_a_late_reset_answer_is_asked_again_and_a_dead_simulator_is_named(monkeypatch):
    """The collector's reset survives an answer that does not come in time (it asks again and
    takes the second answer, not the late first one) and stops with a clear error, not a
    timeout, when the simulator process has exited."""
    import threading
    import time

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from sim_robot import collect
    from support.graph import ros_context
    from world_model_planning.srv import ResetSim

    monkeypatch.setattr(collect, "RESET_TIMEOUT_S", 1.0)
    with ros_context():
        seen = []

        def reset(request, response):
            seen.append(request.seed)
            if len(seen) == 1:
                time.sleep(1.5)   # past the collector's patience: this answer comes too late
                response.message = "late"
            else:
                response.success = True
            return response

        server = rclpy.create_node("fake_sim")
        server.create_service(ResetSim, "/sim_robot/reset", reset)
        executor = SingleThreadedExecutor()
        executor.add_node(server)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        collector = collect.Collector("mcap")
        try:
            collector.reset(REPO / "config" / "scenarios" / "default.yaml", False, 3)
            assert seen == [3, 3]

            collector.sim_proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(4)"])
            collector.sim_proc.wait()
            started = time.monotonic()
            try:
                collector.spin_until_time(collector.now() + 1e6, 60.0)
                raise AssertionError("waiting on a dead simulator did not fail")
            except RuntimeError as err:
                assert "the simulator exited (code 4)" in str(err)
            assert time.monotonic() - started < 5.0
        finally:
            executor.shutdown()
            spinner.join(timeout=5.0)
            collector.node.destroy_node()
            server.destroy_node()
