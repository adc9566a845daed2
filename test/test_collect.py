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
