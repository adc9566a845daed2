"""Launch files name only executables, parameter files, arguments and parameters that exist.

`launch` is not installable here, so the files are checked statically: every Node of this
package names an executable in nodes/, every config path exists, every LaunchConfiguration
is declared, and every parameter a YAML file or the launch file sets is declared by the node.
"""
import ast
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
# Executable -> module whose node declares its parameters.
NODE_MODULES = {"sim_robot": "sim_robot/sim_node.py", "recorder": "ros_io/recorder_node.py",
                "gsplat_scene": "gsplat_scene/scene_node.py",
                "world_model_node": "world_model_node/predictor_node.py",
                "planner_node": "planner_node/planner_node.py"}


def _calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def _kw(call, key):
    for k in call.keywords:
        if k.arg == key:
            return k.value
    return None


def declared_parameters(module_path):
    tree = ast.parse((REPO / module_path).read_text())
    names = {c.args[0].value for c in _calls(tree, "p") + _calls(tree, "declare_parameter")
             if c.args and isinstance(c.args[0], ast.Constant)}
    names |= {c.args[1].value for c in _calls(tree, "declare")       # declare(node, name, ...)
              if len(c.args) > 1 and isinstance(c.args[1], ast.Constant)}
    if _calls(tree, "Diagnostics"):     # ros_io.diagnostics declares its period
        names.add("diagnostics_period")
    if module_path.startswith("planner_node"):   # weights.<term>, declared in a loop
        from planner_node.costs import CostWeights
        names |= {f"weights.{n}" for n in CostWeights.names()}
    return names | {"use_sim_time"}


def test_there_are_launch_files():
    assert LAUNCH_FILES


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_references_exist(path):
    source = path.read_text()
    tree = ast.parse(source)
    declared = {c.args[0].value for c in _calls(tree, "DeclareLaunchArgument")}
    used = {c.args[0].value for c in _calls(tree, "LaunchConfiguration")}
    assert used <= declared, f"undeclared launch arguments {used - declared}"
    assert declared <= used, f"declared but unused launch arguments {declared - used}"

    for rel in re.findall(r'"config", "([^"]+)"(?:, "([^"]+)")?', source):
        assert (REPO / "config" / Path(*[r for r in rel if r])).exists(), rel

    ours = [c for c in _calls(tree, "Node") + _calls(tree, "LifecycleNode")
            if getattr(_kw(c, "package"), "value", None) == "world_model_planning"]
    included = re.findall(r'"launch", "([^"]+)"', source)
    assert ours or included, "starts none of our nodes"
    for name in included:
        assert (REPO / "launch" / name).is_file(), f"includes missing launch/{name}"
    for call in ours:
        exe = _kw(call, "executable").value
        assert (REPO / "nodes" / exe).is_file(), f"no executable nodes/{exe}"
        params = declared_parameters(NODE_MODULES[exe])
        for item in getattr(_kw(call, "parameters"), "elts", []):
            if isinstance(item, ast.Dict):
                keys = {k.value for k in item.keys}
                assert keys <= params, f"{exe}: undeclared parameters {keys - params}"


def _flatten(params, prefix=""):
    """Nested YAML parameters as ROS names: {a: {b: 1}} -> {"a.b": 1}."""
    flat = {}
    for key, value in params.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def test_rviz_configs_parse_and_name_our_topics():
    for path in (REPO / "config").glob("*.rviz"):
        config = yaml.safe_load(path.read_text())
        displays = config["Visualization Manager"]["Displays"]
        topics = {d["Topic"]["Value"] for d in displays if "Topic" in d}
        assert "/gsplat_scene/gaussians" in topics, path.name


@pytest.mark.parametrize("exe, module", NODE_MODULES.items())
def test_parameter_files_match_declared_parameters(exe, module):
    path = REPO / "config" / f"{exe}.yaml"
    params = _flatten(yaml.safe_load(path.read_text())[exe]["ros__parameters"])
    undeclared = set(params) - declared_parameters(module)
    assert not undeclared, f"{path.name} sets undeclared parameters {undeclared}"


def test_node_executables_import_their_main():
    for exe in (REPO / "nodes").iterdir():
        text = exe.read_text()
        module = re.search(r"from (\S+) import main", text).group(1)
        assert (REPO / (module.replace(".", "/") + ".py")).is_file(), exe.name
        assert exe.stat().st_mode & 0o111, f"{exe.name} is not executable"
