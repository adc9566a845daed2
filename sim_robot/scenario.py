"""Scenario: everything that varies between simulated episodes, loadable from YAML.

The perturbation settings follow the "can in the mug" generalisation protocol: shift the
manipulated objects and the container on the table, add distractors, vary the light and
jitter the camera viewpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import yaml

from sim_robot.scene import CONTAINERS, MAIN_OBJECTS, MAX_DISTRACTORS, OBJECT_HALF_EXTENTS


@dataclass(frozen=True)
class ObjectPose:
    """Initial pose of an object's body frame in the world frame."""

    xyz: tuple[float, float, float]  # m
    yaw: float = 0.0  # rad about world z


@dataclass(frozen=True)
class Perturbation:
    """Ranges from which ``Scenario.perturbed`` draws a variation."""

    object_shift: float = 0.0  # m, half-width of the uniform xy shift of cube and can
    container_shift: float = 0.0  # m, half-width of the uniform xy shift of the mug
    distractors: int = 0  # number of distractors in a perturbed scenario
    lighting: tuple[float, float] = (0.7, 0.7)  # range of the directional light's intensity
    camera_viewpoint: float = 0.0  # m, half-width of the uniform per-axis camera position jitter


def _resting(name: str, x: float, y: float, yaw: float = 0.0) -> ObjectPose:
    return ObjectPose((x, y, OBJECT_HALF_EXTENTS[name][2]), yaw)


def _default_objects() -> dict[str, ObjectPose]:
    return {
        "cube": _resting("cube", 0.45, -0.2, 0.3),
        "can": _resting("can", 0.5, 0.05),
        "mug": _resting("mug", 0.55, 0.27),
    }


@dataclass(frozen=True)
class Scenario:
    """One world configuration; positions in the world frame (m), angles in rad."""

    seed: int = 0  # drives the distractors' shapes, colours and placement
    objects: dict[str, ObjectPose] = field(default_factory=_default_objects)
    distractor_count: int = 0
    light_intensity: float = 0.7  # diffuse intensity of the directional light, 0..1
    light_direction: tuple[float, float, float] = (-0.4, 0.3, -1.0)  # direction the light travels
    camera_position: tuple[float, float, float] = (1.4, -0.7, 0.95)
    camera_look_at: tuple[float, float, float] = (0.4, 0.0, 0.22)
    camera_fovy_deg: float = 58.0
    # A second fixed camera across the table, on the robot's left: where the hand hides an
    # object from the main camera while pushing it, this one mostly sees it.
    side_camera_position: tuple[float, float, float] = (0.45, 1.0, 0.8)
    side_camera_look_at: tuple[float, float, float] = (0.45, 0.0, 0.05)
    side_camera_fovy_deg: float = 58.0
    perturbation: Perturbation = field(default_factory=Perturbation)

    def perturbed(self, rng_seed: int) -> Scenario:
        """A variation drawn from ``self.perturbation``; the same ``rng_seed`` gives the same result."""
        rng = np.random.default_rng(rng_seed)
        p = self.perturbation
        objects = {}
        for name, pose in sorted(self.objects.items()):
            shift = p.container_shift if name in CONTAINERS else p.object_shift
            dx, dy = rng.uniform(-shift, shift, 2)
            objects[name] = ObjectPose((pose.xyz[0] + dx, pose.xyz[1] + dy, pose.xyz[2]), pose.yaw)
        intensity = float(rng.uniform(*p.lighting))
        jitter = rng.uniform(-p.camera_viewpoint, p.camera_viewpoint, 3)
        seed = int(rng.integers(2**31 - 1))
        side_jitter = rng.uniform(-p.camera_viewpoint, p.camera_viewpoint, 3)  # drawn last:
        # the draws before it are those of scenarios without a side camera
        return replace(
            self,
            seed=seed,
            objects=objects,
            distractor_count=p.distractors,
            light_intensity=intensity,
            camera_position=tuple(float(v) for v in np.add(self.camera_position, jitter)),
            side_camera_position=tuple(float(v) for v in np.add(self.side_camera_position,
                                                                side_jitter)),
        )


# --- YAML loading with validation. ---


def _check_keys(mapping, allowed, where: str) -> None:
    if not isinstance(mapping, dict):
        raise ValueError(f"{where or 'scenario'}: expected a mapping, got {mapping!r}")
    for key in mapping:
        if key not in allowed:
            raise ValueError(f"unknown key '{where}{key}' (allowed: {', '.join(sorted(allowed))})")


def _number(value, key: str, low: float = -math.inf, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"'{key}' must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"'{key}' must be in [{low}, {high}], got {value!r}")
    return float(value)


def _integer(value, key: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"'{key}' must be an integer in [{low}, {high}], got {value!r}")
    return value


def _vector(value, key: str, length: int) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != length:
        raise ValueError(f"'{key}' must be a list of {length} numbers, got {value!r}")
    return tuple(_number(v, key) for v in value)


def _parse_objects(raw, defaults: dict[str, ObjectPose]) -> dict[str, ObjectPose]:
    _check_keys(raw, MAIN_OBJECTS, "objects.")
    objects = dict(defaults)
    for name, entry in raw.items():
        _check_keys(entry, ("xyz", "yaw"), f"objects.{name}.")
        default = defaults[name]
        xyz = _vector(entry["xyz"], f"objects.{name}.xyz", 3) if "xyz" in entry else default.xyz
        yaw = _number(entry["yaw"], f"objects.{name}.yaw") if "yaw" in entry else default.yaw
        objects[name] = ObjectPose(xyz, yaw)
    return objects


def _parse_perturbation(raw) -> Perturbation:
    _check_keys(raw, {f.name for f in fields(Perturbation)}, "perturbation.")
    values = {}
    if "object_shift" in raw:
        values["object_shift"] = _number(raw["object_shift"], "perturbation.object_shift", 0.0, 0.3)
    if "container_shift" in raw:
        values["container_shift"] = _number(raw["container_shift"], "perturbation.container_shift", 0.0, 0.3)
    if "distractors" in raw:
        values["distractors"] = _integer(raw["distractors"], "perturbation.distractors", 0, MAX_DISTRACTORS)
    if "lighting" in raw:
        low, high = _vector(raw["lighting"], "perturbation.lighting", 2)
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"'perturbation.lighting' must be [low, high] with 0 <= low <= high <= 1, got {raw['lighting']!r}")
        values["lighting"] = (low, high)
    if "camera_viewpoint" in raw:
        values["camera_viewpoint"] = _number(raw["camera_viewpoint"], "perturbation.camera_viewpoint", 0.0, 0.5)
    return Perturbation(**values)


def scenario_from_dict(raw) -> Scenario:
    """Validated ``Scenario`` from a plain mapping (the YAML layout); missing keys keep defaults."""
    _check_keys(raw, ("seed", "objects", "distractor_count", "light", "camera", "side_camera",
                      "perturbation"), "")
    base = Scenario()
    values = {}
    if "seed" in raw:
        values["seed"] = _integer(raw["seed"], "seed", 0, 2**63 - 1)
    if "objects" in raw:
        values["objects"] = _parse_objects(raw["objects"], base.objects)
    if "distractor_count" in raw:
        values["distractor_count"] = _integer(raw["distractor_count"], "distractor_count", 0, MAX_DISTRACTORS)
    if "light" in raw:
        light = raw["light"]
        _check_keys(light, ("intensity", "direction"), "light.")
        if "intensity" in light:
            values["light_intensity"] = _number(light["intensity"], "light.intensity", 0.0, 1.0)
        if "direction" in light:
            direction = _vector(light["direction"], "light.direction", 3)
            if np.linalg.norm(direction) < 1e-6:
                raise ValueError("'light.direction' must be non-zero")
            values["light_direction"] = direction
    for key in ("camera", "side_camera"):
        if key in raw:
            values.update(_parse_camera(raw[key], key))
    if "perturbation" in raw:
        values["perturbation"] = _parse_perturbation(raw["perturbation"])
    scenario = replace(base, **values)
    # A camera's image x axis is horizontal, so it cannot look straight up or down.
    for key in ("camera", "side_camera"):
        if np.linalg.norm(np.subtract(getattr(scenario, f"{key}_look_at"),
                                      getattr(scenario, f"{key}_position"))[:2]) < 1e-6:
            raise ValueError(f"'{key}.look_at' must be horizontally offset from "
                             f"'{key}.position'")
    return scenario


def _parse_camera(camera, key: str) -> dict:
    """Scenario fields of one camera section (position, look_at, fovy_deg)."""
    _check_keys(camera, ("position", "look_at", "fovy_deg"), f"{key}.")
    values = {}
    if "position" in camera:
        values[f"{key}_position"] = _vector(camera["position"], f"{key}.position", 3)
    if "look_at" in camera:
        values[f"{key}_look_at"] = _vector(camera["look_at"], f"{key}.look_at", 3)
    if "fovy_deg" in camera:
        values[f"{key}_fovy_deg"] = _number(camera["fovy_deg"], f"{key}.fovy_deg", 1.0, 170.0)
    return values


def load_scenario(path: str | Path) -> Scenario:
    """Scenario from a YAML file; raises ValueError naming the offending key."""
    with open(path, encoding="utf-8") as stream:
        raw = yaml.safe_load(stream)
    return scenario_from_dict(raw if raw is not None else {})
