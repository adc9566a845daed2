"""Kinematic and dynamic description of a Franka-Panda-like 7-DoF arm with a parallel gripper.

Every link, joint origin and collision primitive is listed once in ``LINKS`` and ``JOINTS``;
both the URDF (for ROS) and the MJCF fragment (for MuJoCo) are generated from these tables so
the two descriptions cannot disagree. Joint origins follow franka_description (URDF convention:
``xyz`` in metres in the parent frame, ``rpy`` in radians as fixed-axis roll-pitch-yaw).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

ARM_JOINT_NAMES = tuple(f"panda_joint{i}" for i in range(1, 8))
FINGER_JOINT_NAMES = ("panda_finger_joint1", "panda_finger_joint2")
BASE_LINK = "panda_link0"
TCP_FRAME = "panda_hand_tcp"

GRIPPER_MAX_WIDTH = 0.08  # m, distance between the finger pads when fully open
FINGER_MAX_OPENING = GRIPPER_MAX_WIDTH / 2  # m, travel of each finger
GRIPPER_MAX_FORCE = 70.0  # N, sum of both fingers' pad forces
FINGER_MAX_VELOCITY = 0.1  # m/s per finger

HOME_POSITION = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])


@dataclass(frozen=True)
class JointLimits:
    """Per-joint limits; arrays of shape (n,), SI units (rad or m based)."""

    lower: np.ndarray
    upper: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    jerk: np.ndarray
    effort: np.ndarray


ARM_LIMITS = JointLimits(
    lower=np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973]),
    upper=np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973]),
    velocity=np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61]),
    acceleration=np.array([15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0]),
    jerk=np.array([7500.0, 3750.0, 5000.0, 6250.0, 7500.0, 10000.0, 10000.0]),
    effort=np.array([87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0]),
)


# --- Geometry primitives, all expressed in the owning link's frame (metres). ---


@dataclass(frozen=True)
class Cylinder:
    radius: float
    start: tuple[float, float, float]
    end: tuple[float, float, float]


@dataclass(frozen=True)
class Box:
    half_size: tuple[float, float, float]
    center: tuple[float, float, float]


@dataclass(frozen=True)
class Sphere:
    radius: float
    center: tuple[float, float, float]


Shape = Cylinder | Box | Sphere


@dataclass(frozen=True)
class Link:
    """A rigid link; ``mass`` 0 marks a massless frame (emitted as an MJCF site)."""

    name: str
    mass: float  # kg, spread uniformly over the volume of ``shapes``
    shapes: tuple[Shape, ...] = ()
    rgba: tuple[float, float, float, float] = (0.95, 0.95, 0.95, 1.0)


@dataclass(frozen=True)
class Joint:
    """Joint connecting ``parent`` to ``child``; origin is the child frame at q = 0."""

    name: str
    kind: str  # 'revolute', 'prismatic' or 'fixed'
    parent: str
    child: str
    xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rpy: tuple[float, float, float] = (0.0, 0.0, 0.0)
    axis: tuple[float, float, float] = (0.0, 0.0, 1.0)


_HALF_PI = math.pi / 2
_WHITE = (0.95, 0.95, 0.95, 1.0)
_DARK = (0.2, 0.2, 0.22, 1.0)

LINKS: tuple[Link, ...] = (
    Link("panda_link0", 3.06, (Cylinder(0.075, (0, 0, 0), (0, 0, 0.14)),), _WHITE),
    Link(
        "panda_link1",
        2.34,
        (Cylinder(0.06, (0, 0, -0.19), (0, 0, 0)), Cylinder(0.06, (0, -0.06, 0), (0, 0.06, 0))),
    ),
    Link(
        "panda_link2",
        2.36,
        (Cylinder(0.06, (0, 0, -0.06), (0, 0, 0.06)), Cylinder(0.06, (0, 0, 0), (0, -0.15, 0))),
    ),
    Link(
        "panda_link3",
        2.38,
        (
            Cylinder(0.06, (0, 0, -0.16), (0, 0, 0)),
            Cylinder(0.055, (0, 0, 0), (0.0825, 0, 0)),
            Cylinder(0.055, (0.0825, -0.055, 0), (0.0825, 0.055, 0)),
        ),
    ),
    Link(
        "panda_link4",
        2.43,
        (
            Cylinder(0.055, (0, 0, -0.055), (0, 0, 0.055)),
            Cylinder(0.055, (0, 0, 0), (-0.0825, 0.11, 0)),
        ),
        _DARK,
    ),
    Link(
        "panda_link5",
        3.5,
        (Cylinder(0.055, (0, 0, -0.26), (0, 0, 0)), Sphere(0.055, (0, 0, 0))),
    ),
    Link(
        "panda_link6",
        1.47,
        (
            Cylinder(0.05, (0, 0, -0.05), (0, 0, 0.05)),
            Cylinder(0.045, (0, 0, 0), (0.088, 0, 0)),
        ),
        _DARK,
    ),
    Link("panda_link7", 0.45, (Cylinder(0.045, (0, 0, -0.03), (0, 0, 0.1)),)),
    Link("panda_link8", 0.0),
    Link(
        "panda_hand",
        0.73,
        (
            Cylinder(0.04, (0, 0, 0), (0, 0, 0.02)),
            Box((0.02, 0.1, 0.02), (0, 0, 0.04)),
        ),
    ),
    Link("panda_leftfinger", 0.015, (Box((0.0105, 0.007, 0.0265), (0, 0.007, 0.0265)),), _DARK),
    Link("panda_rightfinger", 0.015, (Box((0.0105, 0.007, 0.0265), (0, -0.007, 0.0265)),), _DARK),
    Link(TCP_FRAME, 0.0),
)

JOINTS: tuple[Joint, ...] = (
    Joint("panda_joint1", "revolute", "panda_link0", "panda_link1", xyz=(0, 0, 0.333)),
    Joint("panda_joint2", "revolute", "panda_link1", "panda_link2", rpy=(-_HALF_PI, 0, 0)),
    Joint(
        "panda_joint3", "revolute", "panda_link2", "panda_link3",
        xyz=(0, -0.316, 0), rpy=(_HALF_PI, 0, 0),
    ),
    Joint(
        "panda_joint4", "revolute", "panda_link3", "panda_link4",
        xyz=(0.0825, 0, 0), rpy=(_HALF_PI, 0, 0),
    ),
    Joint(
        "panda_joint5", "revolute", "panda_link4", "panda_link5",
        xyz=(-0.0825, 0.384, 0), rpy=(-_HALF_PI, 0, 0),
    ),
    Joint("panda_joint6", "revolute", "panda_link5", "panda_link6", rpy=(_HALF_PI, 0, 0)),
    Joint(
        "panda_joint7", "revolute", "panda_link6", "panda_link7",
        xyz=(0.088, 0, 0), rpy=(_HALF_PI, 0, 0),
    ),
    Joint("panda_joint8", "fixed", "panda_link7", "panda_link8", xyz=(0, 0, 0.107)),
    Joint("panda_hand_joint", "fixed", "panda_link8", "panda_hand", rpy=(0, 0, -math.pi / 4)),
    Joint(
        "panda_finger_joint1", "prismatic", "panda_hand", "panda_leftfinger",
        xyz=(0, 0, 0.0584), axis=(0, 1, 0),
    ),
    Joint(
        "panda_finger_joint2", "prismatic", "panda_hand", "panda_rightfinger",
        xyz=(0, 0, 0.0584), axis=(0, -1, 0),
    ),
    Joint("panda_hand_tcp_joint", "fixed", "panda_hand", TCP_FRAME, xyz=(0, 0, 0.1034)),
)

# Servo gains of the simulated joint controllers: torque = KP (q* - q) + KD (qd* - qd).
ARM_KP = np.array([3000.0, 3000.0, 3000.0, 3000.0, 1500.0, 1500.0, 1000.0])  # Nm/rad
ARM_KD = np.array([150.0, 150.0, 120.0, 120.0, 50.0, 50.0, 30.0])  # Nm s/rad
ARM_ARMATURE = 0.1  # kg m^2, reflected rotor inertia; also keeps the stiff servo stable
ARM_DAMPING = 0.5  # Nm s/rad, viscous joint friction
GRIPPER_KP = 2000.0  # N/m on the finger-width error
FINGER_DAMPING = GRIPPER_MAX_FORCE / 2 / FINGER_MAX_VELOCITY  # N s/m; caps closing speed
FINGER_ARMATURE = 0.05  # kg, keeps the light fingers stable in contact

# Collision bits: the robot collides with the world and objects but not with itself.
ROBOT_CONTYPE = 2
ROBOT_CONAFFINITY = 1

_JOINT_BY_CHILD = {j.child: j for j in JOINTS}
_LINK_BY_NAME = {link.name: link for link in LINKS}


def joint_position_limits(name: str) -> tuple[float, float]:
    """(lower, upper) position limit of a movable joint, rad or m."""
    if name in ARM_JOINT_NAMES:
        i = ARM_JOINT_NAMES.index(name)
        return float(ARM_LIMITS.lower[i]), float(ARM_LIMITS.upper[i])
    if name in FINGER_JOINT_NAMES:
        return 0.0, FINGER_MAX_OPENING
    raise KeyError(name)


def _joint_velocity_effort(name: str) -> tuple[float, float]:
    if name in ARM_JOINT_NAMES:
        i = ARM_JOINT_NAMES.index(name)
        return float(ARM_LIMITS.velocity[i]), float(ARM_LIMITS.effort[i])
    return FINGER_MAX_VELOCITY, GRIPPER_MAX_FORCE / 2


def rpy_to_matrix(rpy) -> np.ndarray:
    """URDF fixed-axis roll-pitch-yaw (rad) -> rotation matrix (3, 3): Rz(yaw) Ry(pitch) Rx(roll)."""
    return Rotation.from_euler("xyz", rpy).as_matrix()


# --- Mass properties from the shape tables. ---


def _shape_volume(shape: Shape) -> float:
    if isinstance(shape, Cylinder):
        length = np.linalg.norm(np.subtract(shape.end, shape.start))
        return math.pi * shape.radius**2 * length
    if isinstance(shape, Box):
        return 8.0 * float(np.prod(shape.half_size))
    return 4.0 / 3.0 * math.pi * shape.radius**3


def _shape_center(shape: Shape) -> np.ndarray:
    if isinstance(shape, Cylinder):
        return (np.asarray(shape.start, float) + np.asarray(shape.end, float)) / 2
    return np.asarray(shape.center, float)


def _shape_inertia(shape: Shape, mass: float) -> np.ndarray:
    """Inertia tensor (3, 3) of a solid shape about its own centre, in the link frame."""
    if isinstance(shape, Sphere):
        return np.eye(3) * 0.4 * mass * shape.radius**2
    if isinstance(shape, Box):
        h2 = np.square(np.asarray(shape.half_size, float))
        return np.diag([h2[1] + h2[2], h2[0] + h2[2], h2[0] + h2[1]]) * mass / 3.0
    axis = np.subtract(shape.end, shape.start).astype(float)
    length = np.linalg.norm(axis)
    axis /= length
    along = 0.5 * mass * shape.radius**2
    across = mass * (3 * shape.radius**2 + length**2) / 12.0
    return across * np.eye(3) + (along - across) * np.outer(axis, axis)


def link_inertial(link: Link) -> tuple[np.ndarray, np.ndarray]:
    """(centre of mass (3,), inertia tensor about it (3, 3)) of a link with uniform density."""
    volumes = np.array([_shape_volume(s) for s in link.shapes])
    masses = link.mass * volumes / volumes.sum()
    centers = np.array([_shape_center(s) for s in link.shapes])
    com = masses @ centers / link.mass
    inertia = np.zeros((3, 3))
    for shape, m, c in zip(link.shapes, masses, centers):
        r = c - com
        inertia += _shape_inertia(shape, m) + m * (r @ r * np.eye(3) - np.outer(r, r))
    return com, inertia


# --- Output formatting helpers. ---


def _fmt(values) -> str:
    return " ".join(f"{float(v):.10g}" for v in np.ravel(values))


def _cylinder_pose(shape: Cylinder) -> tuple[np.ndarray, np.ndarray, float]:
    """(centre (3,), URDF rpy (3,), length) of a cylinder whose z axis runs start -> end."""
    axis = np.subtract(shape.end, shape.start).astype(float)
    length = float(np.linalg.norm(axis))
    # Rz(yaw) Ry(pitch) maps z onto (cos yaw sin pitch, sin yaw sin pitch, cos pitch).
    pitch = math.acos(np.clip(axis[2] / length, -1.0, 1.0))
    yaw = math.atan2(axis[1], axis[0])
    return _shape_center(shape), np.array([0.0, pitch, yaw]), length


# --- URDF ---


def _urdf_geometry(parent: ET.Element, tag: str, shape: Shape, rgba=None) -> None:
    element = ET.SubElement(parent, tag)
    geometry_element = ET.Element("geometry")
    if isinstance(shape, Cylinder):
        center, rpy, length = _cylinder_pose(shape)
        ET.SubElement(element, "origin", xyz=_fmt(center), rpy=_fmt(rpy))
        ET.SubElement(geometry_element, "cylinder", radius=_fmt([shape.radius]), length=_fmt([length]))
    elif isinstance(shape, Box):
        ET.SubElement(element, "origin", xyz=_fmt(shape.center), rpy="0 0 0")
        ET.SubElement(geometry_element, "box", size=_fmt(2 * np.asarray(shape.half_size)))
    else:
        ET.SubElement(element, "origin", xyz=_fmt(shape.center), rpy="0 0 0")
        ET.SubElement(geometry_element, "sphere", radius=_fmt([shape.radius]))
    element.append(geometry_element)
    if rgba is not None:
        material = ET.SubElement(element, "material", name=f"rgba_{_fmt(rgba).replace(' ', '_')}")
        ET.SubElement(material, "color", rgba=_fmt(rgba))


def urdf() -> str:
    """URDF of the arm, hand and fingers, with ``panda_link0`` fixed to a ``world`` link."""
    robot = ET.Element("robot", name="panda")
    ET.SubElement(robot, "link", name="world")
    for link in LINKS:
        element = ET.SubElement(robot, "link", name=link.name)
        if link.mass > 0:
            com, inertia = link_inertial(link)
            inertial = ET.SubElement(element, "inertial")
            ET.SubElement(inertial, "origin", xyz=_fmt(com), rpy="0 0 0")
            ET.SubElement(inertial, "mass", value=_fmt([link.mass]))
            ET.SubElement(
                inertial, "inertia",
                ixx=_fmt([inertia[0, 0]]), ixy=_fmt([inertia[0, 1]]), ixz=_fmt([inertia[0, 2]]),
                iyy=_fmt([inertia[1, 1]]), iyz=_fmt([inertia[1, 2]]), izz=_fmt([inertia[2, 2]]),
            )
        for shape in link.shapes:
            _urdf_geometry(element, "visual", shape, link.rgba)
            _urdf_geometry(element, "collision", shape)

    world_joint = ET.SubElement(robot, "joint", name="world_to_panda_link0", type="fixed")
    ET.SubElement(world_joint, "parent", link="world")
    ET.SubElement(world_joint, "child", link=BASE_LINK)
    ET.SubElement(world_joint, "origin", xyz="0 0 0", rpy="0 0 0")
    for joint in JOINTS:
        element = ET.SubElement(robot, "joint", name=joint.name, type=joint.kind)
        ET.SubElement(element, "parent", link=joint.parent)
        ET.SubElement(element, "child", link=joint.child)
        ET.SubElement(element, "origin", xyz=_fmt(joint.xyz), rpy=_fmt(joint.rpy))
        if joint.kind == "fixed":
            continue
        ET.SubElement(element, "axis", xyz=_fmt(joint.axis))
        lower, upper = joint_position_limits(joint.name)
        velocity, effort = _joint_velocity_effort(joint.name)
        ET.SubElement(
            element, "limit",
            lower=_fmt([lower]), upper=_fmt([upper]), velocity=_fmt([velocity]), effort=_fmt([effort]),
        )
        if joint.name == FINGER_JOINT_NAMES[1]:
            ET.SubElement(element, "mimic", joint=FINGER_JOINT_NAMES[0])
    ET.indent(robot)
    return '<?xml version="1.0"?>\n' + ET.tostring(robot, encoding="unicode")


# --- MJCF ---


def _mjcf_geom(parent: ET.Element, name: str, shape: Shape, link: Link) -> None:
    attributes = {
        "name": name,
        "rgba": _fmt(link.rgba),
        "contype": str(ROBOT_CONTYPE),
        "conaffinity": str(ROBOT_CONAFFINITY),
    }
    if isinstance(shape, Cylinder):
        attributes.update(type="cylinder", size=_fmt([shape.radius]), fromto=_fmt([*shape.start, *shape.end]))
    elif isinstance(shape, Box):
        attributes.update(type="box", size=_fmt(shape.half_size), pos=_fmt(shape.center))
    else:
        attributes.update(type="sphere", size=_fmt([shape.radius]), pos=_fmt(shape.center))
    if link.name in ("panda_leftfinger", "panda_rightfinger"):
        # Grippy pads with torsional friction so grasped objects do not spin out.
        attributes.update(friction="1.2 0.02 0.0001", condim="4")
    ET.SubElement(parent, "geom", attributes)


def _mjcf_link(parent_body: ET.Element, link: Link) -> None:
    joint = _JOINT_BY_CHILD[link.name]
    quat = Rotation.from_matrix(rpy_to_matrix(joint.rpy)).as_quat(scalar_first=True)
    if link.mass == 0 and not any(j.parent == link.name for j in JOINTS):
        ET.SubElement(parent_body, "site", name=link.name, pos=_fmt(joint.xyz), quat=_fmt(quat), size="0.005", group="3")
        return
    body = ET.SubElement(parent_body, "body", name=link.name, pos=_fmt(joint.xyz), quat=_fmt(quat), gravcomp="1")
    _mjcf_link_contents(body, link)


def _mjcf_link_contents(body: ET.Element, link: Link) -> None:
    joint = _JOINT_BY_CHILD.get(link.name)
    if joint is not None and joint.kind != "fixed":
        lower, upper = joint_position_limits(joint.name)
        attributes = {
            "name": joint.name,
            "type": "hinge" if joint.kind == "revolute" else "slide",
            "axis": _fmt(joint.axis),
            "range": _fmt([lower, upper]),
        }
        if joint.name in ARM_JOINT_NAMES:
            i = ARM_JOINT_NAMES.index(joint.name)
            attributes.update(
                armature=_fmt([ARM_ARMATURE]),
                damping=_fmt([ARM_DAMPING]),
                actuatorfrcrange=_fmt([-ARM_LIMITS.effort[i], ARM_LIMITS.effort[i]]),
            )
        else:
            attributes.update(armature=_fmt([FINGER_ARMATURE]), damping=_fmt([FINGER_DAMPING]))
        ET.SubElement(body, "joint", attributes)
    if link.mass > 0:
        com, inertia = link_inertial(link)
        ET.SubElement(
            body, "inertial", pos=_fmt(com), mass=_fmt([link.mass]),
            fullinertia=_fmt([inertia[0, 0], inertia[1, 1], inertia[2, 2], inertia[0, 1], inertia[0, 2], inertia[1, 2]]),
        )
    for k, shape in enumerate(link.shapes):
        _mjcf_geom(body, f"{link.name}_geom{k}", shape, link)
    for child_joint in JOINTS:
        if child_joint.parent == link.name:
            _mjcf_link(body, _LINK_BY_NAME[child_joint.child])


def mjcf_robot_body() -> ET.Element:
    """``<body name="panda_link0">`` with the whole arm; place it inside ``<worldbody>``.

    The TCP is the site ``panda_hand_tcp``. Bodies use gravity compensation so the position
    servos track without sag.
    """
    base = ET.Element("body", name=BASE_LINK, pos="0 0 0")
    _mjcf_link_contents(base, _LINK_BY_NAME[BASE_LINK])
    return base


def mjcf_robot_control() -> list[ET.Element]:
    """Top-level MJCF elements (tendon, equality, actuator) that drive the arm and gripper.

    Actuators in order: 7 arm position servos (ctrl: rad), 7 arm velocity servos (ctrl: rad/s,
    feed-forward), 1 gripper servo (ctrl: finger-pad distance in m, force capped so the two
    pads together press with at most GRIPPER_MAX_FORCE).
    """
    tendon = ET.Element("tendon")
    width = ET.SubElement(tendon, "fixed", name="gripper_width")
    for name in FINGER_JOINT_NAMES:
        ET.SubElement(width, "joint", joint=name, coef="1")

    equality = ET.Element("equality")
    ET.SubElement(
        equality, "joint", name="finger_coupling", joint1=FINGER_JOINT_NAMES[1], joint2=FINGER_JOINT_NAMES[0],
        polycoef="0 1 0 0 0", solref="0.005 1",
    )

    actuator = ET.Element("actuator")
    for i, name in enumerate(ARM_JOINT_NAMES):
        ET.SubElement(
            actuator, "position", name=f"{name}_position", joint=name, kp=_fmt([ARM_KP[i]]),
            ctrlrange=_fmt([ARM_LIMITS.lower[i], ARM_LIMITS.upper[i]]),
        )
    for i, name in enumerate(ARM_JOINT_NAMES):
        ET.SubElement(
            actuator, "velocity", name=f"{name}_velocity", joint=name, kv=_fmt([ARM_KD[i]]),
            ctrlrange=_fmt([-ARM_LIMITS.velocity[i], ARM_LIMITS.velocity[i]]),
        )
    # The tendon force acts on each finger, so half the total pad force is the cap.
    ET.SubElement(
        actuator, "position", name="gripper", tendon="gripper_width", kp=_fmt([GRIPPER_KP]),
        ctrlrange=_fmt([0.0, GRIPPER_MAX_WIDTH]),
        forcerange=_fmt([-GRIPPER_MAX_FORCE / 2, GRIPPER_MAX_FORCE / 2]),
    )
    return [tendon, equality, actuator]
