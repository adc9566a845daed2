"""The simulated world as MJCF: floor, table, the Panda, manipulable objects, light and two cameras.

World frame: origin at the robot base on the table top, z up; the table top surface is z = 0
and spans x in [-0.2, 1.0] m, y in [-0.6, 0.6] m. Object body frames sit at the centre of the
object's bounding box, so an upright object rests on the table at z = its half height.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sim_robot import panda

if TYPE_CHECKING:
    from sim_robot.scenario import Scenario

TIMESTEP = 0.002  # s
CAMERA_NAME = "scene_camera"
SIDE_CAMERA_NAME = "side_camera"
# The cameras' ROS topic namespaces (sim_robot node) -> their names in the model.
CAMERA_NAMESPACES = {"camera": CAMERA_NAME, "side_camera": SIDE_CAMERA_NAME}
LIGHT_NAME = "key_light"
TABLE_X = (-0.2, 1.0)  # m, extent of the table top
TABLE_Y = (-0.6, 0.6)
TABLE_THICKNESS = 0.04
FLOOR_Z = -0.75
NEAR_CLIP = 0.01  # m
FAR_CLIP = 5.0  # m; depth beyond this counts as "nothing"

CUBE_HALF_SIZE = 0.025
CAN_RADIUS = 0.033
CAN_HALF_HEIGHT = 0.06
MUG_OUTER_RADIUS = 0.05
MUG_INNER_RADIUS = 0.042
MUG_HALF_HEIGHT = 0.045
MUG_BOTTOM_THICKNESS = 0.01
MUG_WALL_SEGMENTS = 12

MAX_DISTRACTORS = 16
MAIN_OBJECTS = ("cube", "can", "mug")
CONTAINERS = ("mug",)
BACKGROUND_ID = 0
ROBOT_ID = 1
OBJECT_IDS: dict[str, int] = {
    "background": BACKGROUND_ID,
    "robot": ROBOT_ID,
    "cube": 10,
    "can": 11,
    "mug": 12,
    **{f"distractor_{i}": 20 + i for i in range(MAX_DISTRACTORS)},
}

# Half extents (x, y, z) of each main object's bounding box in its body frame, m.
OBJECT_HALF_EXTENTS: dict[str, tuple[float, float, float]] = {
    "cube": (CUBE_HALF_SIZE,) * 3,
    "can": (CAN_RADIUS, CAN_RADIUS, CAN_HALF_HEIGHT),
    "mug": (MUG_OUTER_RADIUS, MUG_OUTER_RADIUS, MUG_HALF_HEIGHT),
}

_OBJECT_MASS = {"cube": 0.1, "can": 0.25, "mug": 0.3}  # kg
_OBJECT_RGBA = {
    "cube": (0.85, 0.15, 0.1, 1.0),
    "can": (0.2, 0.45, 0.85, 1.0),
    "mug": (0.95, 0.8, 0.2, 1.0),
}
# Distractors are placed away from the main objects within this region of the table.
_DISTRACTOR_X = (0.3, 0.75)
_DISTRACTOR_Y = (-0.4, 0.4)
_DISTRACTOR_CLEARANCE = 0.03  # m between bounding circles


@dataclass(frozen=True)
class DistractorSpec:
    """A small clutter object; pose is its resting pose on the table (world frame)."""

    name: str
    shape: str  # 'box' or 'cylinder'
    half_extents: tuple[float, float, float]  # m, body frame
    rgba: tuple[float, float, float, float]
    xyz: tuple[float, float, float]
    yaw: float  # rad


def _footprint_radius(half_extents) -> float:
    return math.hypot(half_extents[0], half_extents[1])


def distractor_specs(scenario: Scenario) -> list[DistractorSpec]:
    """Distractors of ``scenario``, drawn deterministically from ``scenario.seed``."""
    rng = np.random.default_rng(scenario.seed)
    occupied = [
        (np.asarray(pose.xyz[:2]), _footprint_radius(OBJECT_HALF_EXTENTS[name]))
        for name, pose in scenario.objects.items()
    ]
    specs = []
    for i in range(scenario.distractor_count):
        shape = "box" if rng.random() < 0.5 else "cylinder"
        if shape == "box":
            half = tuple(float(v) for v in rng.uniform([0.012, 0.012, 0.012], [0.03, 0.03, 0.035]))
        else:
            radius = float(rng.uniform(0.012, 0.028))
            half = (radius, radius, float(rng.uniform(0.015, 0.045)))
        rgba = (*(float(c) for c in rng.uniform(0.1, 0.95, 3)), 1.0)
        yaw = float(rng.uniform(-math.pi, math.pi))
        radius = _footprint_radius(half)
        for _ in range(200):
            xy = rng.uniform([_DISTRACTOR_X[0], _DISTRACTOR_Y[0]], [_DISTRACTOR_X[1], _DISTRACTOR_Y[1]])
            if all(np.linalg.norm(xy - c) > r + radius + _DISTRACTOR_CLEARANCE for c, r in occupied):
                break
        else:
            raise ValueError(f"cannot place {scenario.distractor_count} distractors without overlap")
        occupied.append((xy, radius))
        specs.append(DistractorSpec(f"distractor_{i}", shape, half, rgba, (float(xy[0]), float(xy[1]), half[2]), yaw))
    return specs


def _fmt(values) -> str:
    return " ".join(f"{float(v):.10g}" for v in np.ravel(values))


def _yaw_quat(yaw: float) -> str:
    return _fmt([math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)])


def camera_axes(position, look_at) -> np.ndarray:
    """World-frame rotation (3, 3) of a MuJoCo camera (x right, y up, looking along -z)."""
    forward = np.asarray(look_at, float) - np.asarray(position, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return np.column_stack([right, up, -forward])


def _add_free_object(worldbody: ET.Element, name: str, xyz, yaw: float) -> ET.Element:
    body = ET.SubElement(worldbody, "body", name=name, pos=_fmt(xyz), quat=_yaw_quat(yaw))
    ET.SubElement(body, "freejoint", name=f"{name}_free")
    return body


def _add_mug(body: ET.Element) -> None:
    rgba = _fmt(_OBJECT_RGBA["mug"])
    bottom_mass = 0.2 * _OBJECT_MASS["mug"]
    wall_mass = (_OBJECT_MASS["mug"] - bottom_mass) / MUG_WALL_SEGMENTS
    half_bottom = MUG_BOTTOM_THICKNESS / 2
    ET.SubElement(
        body, "geom", name="mug_bottom", type="cylinder", rgba=rgba, mass=_fmt([bottom_mass]),
        size=_fmt([MUG_OUTER_RADIUS, half_bottom]), pos=_fmt([0, 0, -MUG_HALF_HEIGHT + half_bottom]),
    )
    # Flat wall segments whose inner faces are MUG_INNER_RADIUS from the axis and whose outer
    # corners reach MUG_OUTER_RADIUS, so the ring closes without gaps.
    thickness = MUG_OUTER_RADIUS - MUG_INNER_RADIUS
    half_width = MUG_OUTER_RADIUS * math.tan(math.pi / MUG_WALL_SEGMENTS)
    half_wall_height = MUG_HALF_HEIGHT - half_bottom
    for k in range(MUG_WALL_SEGMENTS):
        angle = 2 * math.pi * k / MUG_WALL_SEGMENTS
        radius = MUG_INNER_RADIUS + thickness / 2
        ET.SubElement(
            body, "geom", name=f"mug_wall_{k}", type="box", rgba=rgba, mass=_fmt([wall_mass]),
            size=_fmt([thickness / 2, half_width, half_wall_height]),
            pos=_fmt([radius * math.cos(angle), radius * math.sin(angle), half_bottom]),
            quat=_yaw_quat(angle),
        )


def _add_objects(worldbody: ET.Element, scenario: Scenario) -> None:
    for name in MAIN_OBJECTS:
        pose = scenario.objects[name]
        body = _add_free_object(worldbody, name, pose.xyz, pose.yaw)
        mass = _fmt([_OBJECT_MASS[name]])
        rgba = _fmt(_OBJECT_RGBA[name])
        if name == "cube":
            ET.SubElement(body, "geom", name="cube", type="box", size=_fmt(OBJECT_HALF_EXTENTS["cube"]), mass=mass, rgba=rgba)
        elif name == "can":
            ET.SubElement(
                body, "geom", name="can", type="cylinder", size=_fmt([CAN_RADIUS, CAN_HALF_HEIGHT]), mass=mass, rgba=rgba
            )
        else:
            _add_mug(body)
    for spec in distractor_specs(scenario):
        body = _add_free_object(worldbody, spec.name, spec.xyz, spec.yaw)
        size = spec.half_extents if spec.shape == "box" else spec.half_extents[::2]
        ET.SubElement(
            body, "geom", name=spec.name, type=spec.shape, size=_fmt(size), rgba=_fmt(spec.rgba), density="400"
        )


def _add_table(worldbody: ET.Element) -> None:
    center = [(TABLE_X[0] + TABLE_X[1]) / 2, (TABLE_Y[0] + TABLE_Y[1]) / 2, -TABLE_THICKNESS / 2]
    half = [(TABLE_X[1] - TABLE_X[0]) / 2, (TABLE_Y[1] - TABLE_Y[0]) / 2, TABLE_THICKNESS / 2]
    ET.SubElement(worldbody, "geom", name="table_top", type="box", size=_fmt(half), pos=_fmt(center), material="table")
    leg_half_height = (-TABLE_THICKNESS - FLOOR_Z) / 2
    for i, (x, y) in enumerate([(sx, sy) for sx in TABLE_X for sy in TABLE_Y]):
        inset_x = x - math.copysign(0.05, x - center[0])
        inset_y = y - math.copysign(0.05, y - center[1])
        ET.SubElement(
            worldbody, "geom", name=f"table_leg_{i}", type="box", size=_fmt([0.025, 0.025, leg_half_height]),
            pos=_fmt([inset_x, inset_y, FLOOR_Z + leg_half_height]), material="table",
        )


def build_mjcf(scenario: Scenario) -> str:
    """MJCF text of the whole world for ``scenario``."""
    root = ET.Element("mujoco", model="panda_tabletop")
    ET.SubElement(root, "compiler", angle="radian", autolimits="true")
    ET.SubElement(root, "option", timestep=_fmt([TIMESTEP]), integrator="implicitfast", cone="elliptic", impratio="10")
    # extent = 1 makes znear / zfar metric.
    ET.SubElement(root, "statistic", extent="1", center="0.4 0 0.1")
    visual = ET.SubElement(root, "visual")
    # Off-screen buffer for the default sizes; PandaSim enlarges it for bigger renders.
    ET.SubElement(visual, "global", offwidth="640", offheight="480")
    # shadowclip 1.5 keeps the whole table inside the directional light's shadow box.
    ET.SubElement(visual, "map", znear=_fmt([NEAR_CLIP]), zfar=_fmt([FAR_CLIP]), shadowclip="1.5")
    ET.SubElement(visual, "headlight", ambient="0.25 0.25 0.25", diffuse="0.3 0.3 0.3", specular="0 0 0")
    # No multisampling: it halves the frame rate of software rendering.
    ET.SubElement(visual, "quality", shadowsize="1024", offsamples="0")

    # Stiffer-than-default contacts: grasped objects and resting objects sink < 1 mm.
    default = ET.SubElement(root, "default")
    ET.SubElement(default, "geom", solref="0.005 1", solimp="0.95 0.99 0.001")

    asset = ET.SubElement(root, "asset")
    ET.SubElement(
        asset, "texture", name="floor_checker", type="2d", builtin="checker", width="256", height="256",
        rgb1="0.32 0.33 0.36", rgb2="0.26 0.27 0.3",
    )
    ET.SubElement(asset, "material", name="floor", texture="floor_checker", texrepeat="6 6")
    ET.SubElement(asset, "material", name="table", rgba="0.6 0.46 0.32 1")

    worldbody = ET.SubElement(root, "worldbody")
    direction = np.asarray(scenario.light_direction, float)
    direction /= np.linalg.norm(direction)
    intensity = scenario.light_intensity
    ET.SubElement(
        worldbody, "light", name=LIGHT_NAME, directional="true", castshadow="true",
        pos=_fmt(np.array([0.4, 0.0, 0.0]) - 2.0 * direction), dir=_fmt(direction),
        diffuse=_fmt([intensity] * 3), specular=_fmt([0.2 * intensity] * 3),
    )
    for name, position, look_at, fovy in [
            (CAMERA_NAME, scenario.camera_position, scenario.camera_look_at,
             scenario.camera_fovy_deg),
            (SIDE_CAMERA_NAME, scenario.side_camera_position, scenario.side_camera_look_at,
             scenario.side_camera_fovy_deg)]:
        axes = camera_axes(position, look_at)
        ET.SubElement(worldbody, "camera", name=name, pos=_fmt(position),
                      xyaxes=_fmt([*axes[:, 0], *axes[:, 1]]), fovy=_fmt([fovy]))
    ET.SubElement(worldbody, "geom", name="floor", type="plane", size="3 3 0.1", pos=_fmt([0, 0, FLOOR_Z]), material="floor")
    _add_table(worldbody)
    worldbody.append(panda.mjcf_robot_body())
    _add_objects(worldbody, scenario)

    for element in panda.mjcf_robot_control():
        root.append(element)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")
