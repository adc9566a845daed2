"""Posed RGB-D views of the simulated scene from cameras on an arc around the table, for
mapping tests and benchmarks (ground-truth poses and intrinsics, ROS/OpenCV convention)."""
from __future__ import annotations

import math

import numpy as np
from scipy.spatial.transform import Rotation

from sim_robot.scene import CAMERA_NAME

TABLE_CENTRE = (0.45, 0.0, 0.05)


def arc_camera(azimuth: float, elevation: float, radius: float = 1.0, target=TABLE_CENTRE):
    """Camera position (3,) on a sphere around target; azimuth 0 looks along -x (from the
    front of the table towards the robot), angles in rad."""
    t = np.asarray(target, float)
    offset = radius * np.array([math.cos(elevation) * math.cos(azimuth),
                                math.cos(elevation) * math.sin(azimuth), math.sin(elevation)])
    return t + offset, t


def render_view(sim, position, look_at, width=None, height=None) -> dict:
    """Move the sim's main camera and render it (`camera_view`)."""
    sim.set_camera(position, look_at)
    return camera_view(sim, width=width, height=height)


def camera_view(sim, camera: str = CAMERA_NAME, width=None, height=None) -> dict:
    """Render one of the sim's fixed cameras where it stands: rgb, depth, instances,
    K (3, 3), cam_to_world (4, 4) and the camera's name."""
    rgb, depth, instances = sim.render(width, height, camera)
    fx, fy, cx, cy = sim.camera_intrinsics(width, height, camera)
    pos, quat = sim.camera_pose(camera)
    c2w = np.eye(4)
    c2w[:3, :3] = Rotation.from_quat(quat).as_matrix()
    c2w[:3, 3] = pos
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    return {"rgb": rgb, "depth": depth, "instances": instances, "K": K, "cam_to_world": c2w,
            "camera": camera}


def sweep(sim, count: int, width=None, height=None, azimuths=(-1.6, 1.6),
          elevations=(0.45, 0.9), radius: float = 1.0, offset: float = 0.0) -> list[dict]:
    """`count` views along an arc that rises while it sweeps; `offset` in (0, 1) shifts the
    views between those of offset 0 (held-out views)."""
    views = []
    for i in range(count):
        s = (i + offset) / max(count - 1, 1)
        az = azimuths[0] + s * (azimuths[1] - azimuths[0])
        el = elevations[0] + (elevations[1] - elevations[0]) * 0.5 * (1 - math.cos(2 * math.pi * s))
        views.append(render_view(sim, *arc_camera(az, el, radius), width, height))
    return views
