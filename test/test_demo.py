"""The main job (sim_robot.demo) end to end: processes on one DDS graph, a reach goal, the
report, plot and animation written."""
import json
import subprocess
import sys

import numpy as np
import pytest

from sim_robot.demo import draw_polyline, project, stage_durations
from support.graph import REPO


def test_projection_and_drawing():
    K = np.array([[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]])
    cam = np.eye(4)             # optical frame = world: z forward
    uv = project(np.array([[0.0, 0.0, 1.0], [0.1, -0.05, 1.0], [0.0, 0.0, -1.0]]), K, cam)
    assert np.allclose(uv[:2], [[32, 24], [42, 19]]) and np.isnan(uv[2]).all()
    image = np.zeros((48, 64, 3), np.uint8)
    draw_polyline(image, uv, np.array([255, 0, 0], np.uint8))
    assert image[24, 32, 0] == 255 and image[19, 42, 0] == 255 and image[:, :, 1].max() == 0


@pytest.mark.parametrize("segmentation", ["masks", "tabletop"])
def test_demo_reaches_and_writes_its_report(tmp_path, segmentation):
    # tabletop: no instance masks; the memory finds the objects from depth, names them itself
    # and the demo picks the cube by where it stands.
    out = tmp_path / "demo"
    run = subprocess.run([sys.executable, "-m", "sim_robot.demo", "--output", str(out),
                          "--tasks", "reach", "--model", "static", "--goal-timeout", "15",
                          "--segmentation", segmentation],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr + (out / "processes.log").read_text()
    report = json.loads((out / "report.json").read_text())
    assert report[0]["task"] == "reach" and report[0]["success"], report
    assert report[0]["segmentation"] == segmentation
    # The table's three objects and nothing else (not the arm), named as the masks name them
    # or from 100 up.
    objects = report[0]["memory_objects"]
    assert objects == ([10, 11, 12] if segmentation == "masks" else [100, 101, 102]), report
    assert report[0]["final_error_m"] < 0.02
    assert report[0]["stages"].startswith("reach "), report
    # The arm does not touch the cube: the memory holds it where it stands, and fresh.
    assert report[0]["memory_error_max_m"] < 0.03, report
    assert report[0]["memory_error_end_m"] < 0.03, report
    # (1.27-1.39 s measured at half real time; 3.1-3.5 s while the camera streams and the
    # clock waited for each frame's integration)
    assert 0.0 <= report[0]["memory_age_mean_s"] < 2.0, report
    assert 0.0 <= report[0]["memory_unseen_max_s"] < 15.0, report
    for name in ("report.md", "errors.png", "demo.gif"):
        assert (out / name).stat().st_size > 100, name


def test_stage_durations_merge_repeats_in_order():
    stamped = [(0.0, "approach"), (0.5, "approach"), (1.0, "push"), (3.0, "approach"),
               (3.5, "hold"), (4.0, "hold")]
    assert stage_durations(stamped) == "approach 1.0 s, push 2.0 s, approach 0.5 s, hold 0.5 s"


def test_demo_refuses_bad_arguments(tmp_path):
    run = subprocess.run([sys.executable, "-m", "sim_robot.demo", "--output", str(tmp_path),
                          "--tasks", "fly"], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 2 and "tasks" in run.stderr
