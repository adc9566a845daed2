"""The package builds with colcon from a clean copy of the source tree in a workspace's src/,
registers its tests for `colcon test`, and the built interfaces import from the install."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _source_files():
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                         check=True, capture_output=True, text=True).stdout
    return [f for f in out.split("\0") if f and (REPO / f).is_file()]


def test_colcon_build_and_test_registration_from_clean_tree(tmp_path):
    src = tmp_path / "ws" / "src" / "world_model_planning"
    for rel in _source_files():
        dst = src / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes((REPO / rel).read_bytes())
        os.chmod(dst, (REPO / rel).stat().st_mode)
    ws = tmp_path / "ws"
    venv = Path(sys.prefix)
    env = dict(os.environ, CMAKE_PREFIX_PATH=str(venv), AMENT_PREFIX_PATH=str(venv))
    build = subprocess.run(
        ["colcon", "build", "--cmake-args", f"-DPython3_EXECUTABLE={sys.executable}",
         "-DBUILD_TESTING=ON"],
        cwd=ws, env=env, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    install = ws / "install" / "world_model_planning"
    share = install / "share" / "world_model_planning"
    for rel in ["package.xml", "launch/sim_robot.launch.py", "config/sim_robot.yaml",
                "config/panda.urdf", "config/scenarios/default.yaml", "msg/PredictedFutures.msg",
                "action/PlanToGoal.action"]:
        assert (share / rel).is_file(), rel
    for exe in (REPO / "nodes").iterdir():
        assert os.access(install / "lib" / "world_model_planning" / exe.name, os.X_OK), exe.name

    listed = subprocess.run(["colcon", "test", "--ctest-args", "-N"], cwd=ws, env=env,
                            capture_output=True, text=True, timeout=300)
    assert listed.returncode == 0, listed.stdout[-3000:]
    ctest_log = "".join(p.read_text() for p in (ws / "log" / "latest_test").rglob("stdout*.log"))
    assert "pytest" in ctest_log and "Total Tests: 1" in ctest_log, ctest_log

    probe = subprocess.run(
        ["bash", "-c", f"source {ws}/install/setup.bash && {sys.executable} -c "
         "'import world_model_planning.msg as m, world_model_planning.action as a, sim_robot, "
         "ros_io; print(m.PredictedFutures.__module__, a.PlanToGoal.__name__, sim_robot.__file__)'"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    assert str(install) in probe.stdout
