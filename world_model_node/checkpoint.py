"""World-model checkpoints: a directory with the weights as safetensors, a YAML config that
holds the model settings, the normalisation statistics, the uncertainty calibration and how
the model was trained, and the URDF its forward kinematics come from.

    <dir>/model.safetensors   parameters (no statistics)
    <dir>/config.yaml         model, robot, normalisation, calibration, training
    <dir>/robot.urdf
"""
from __future__ import annotations

from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from robot_model.kinematics import KinematicChain
from world_model_node.model import ModelConfig, WorldModel

FORMAT = 1
STAT_SUFFIXES = ("_mean", "_std")


def _is_stat(name: str) -> bool:
    return name.endswith(STAT_SUFFIXES)


def save_checkpoint(directory, model: WorldModel, urdf: str, base: str, tip: str,
                    calibration: dict, training: dict) -> Path:
    """Write a checkpoint directory (created if needed; files replaced atomically)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = {k: v for k, v in state.items() if not _is_stat(k)}
    config = {
        "format": FORMAT,
        "model": model.config.to_dict(),
        "robot": {"urdf": "robot.urdf", "base_link": base, "tip_link": tip},
        "normalisation": {k: [float(x) for x in v] for k, v in state.items() if _is_stat(k)},
        "calibration": {k: float(v) for k, v in calibration.items()},
        "training": training,
    }
    for name, write in (("model.safetensors", lambda p: save_file(weights, str(p))),
                        ("robot.urdf", lambda p: p.write_text(urdf)),
                        ("config.yaml", lambda p: p.write_text(
                            yaml.safe_dump(config, sort_keys=False, width=100)))):
        tmp = directory / f".{name}.tmp"
        write(tmp)
        tmp.replace(directory / name)
    return directory


def load_checkpoint(directory, device="cpu") -> tuple[WorldModel, KinematicChain, dict]:
    """Load (model in eval mode, TCP kinematic chain, config dict).

    Raises:
        ValueError: naming the file and what is wrong (missing, corrupt, truncated, or not
            matching the model the config describes).
    """
    directory = Path(directory)
    config_path = directory / "config.yaml"
    try:
        config = yaml.safe_load(config_path.read_text())
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise ValueError(f"not a format-{FORMAT} world-model config")
        model = WorldModel(ModelConfig(**config["model"]))
        urdf = (directory / config["robot"]["urdf"]).read_text()
        chain = KinematicChain.from_urdf(urdf, config["robot"]["base_link"],
                                         config["robot"]["tip_link"])
        stats = {k: torch.tensor(v, dtype=torch.float32)
                 for k, v in config["normalisation"].items()}
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"cannot load world-model checkpoint {config_path}: {err}") from err
    weights_path = directory / "model.safetensors"
    try:
        weights = load_file(str(weights_path))
    except (OSError, SafetensorError, ValueError, RuntimeError) as err:
        raise ValueError(f"world-model weights {weights_path} are missing or corrupt: "
                         f"{err}") from err
    state = {**weights, **stats}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(f"checkpoint {directory} does not match its config: missing "
                         f"{missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong[:5]}")
    bad = [k for k, v in state.items() if not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"checkpoint {directory} has non-finite values in {bad[:5]}")
    model.load_state_dict(state)
    return model.to(device).eval(), chain.to(device), config
