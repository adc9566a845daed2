"""Camera messages -> a validated `Frame` for the scene memory, ROS-free.

Works on rclpy messages and on messages read from bags by `rosbags` alike (same field names),
so the node and offline tools (world-model training on perceived object poses) build frames
the same way.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from gsplat_scene.mapping import Frame
from gsplat_scene.render import look_at_viewmat
from ros_io.images import colour_to_rgb, depth_to_metres, image_to_numpy


def pose_to_matrix(position, quat_xyzw) -> np.ndarray:
    """(4, 4) homogeneous transform from a position and a quaternion (x, y, z, w)."""
    m = np.eye(4)
    m[:3, :3] = Rotation.from_quat(quat_xyzw).as_matrix()
    m[:3, 3] = position
    return m


def look_at_camera(position, look_at, width: int, height: int,
                   fovy_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """(K (3, 3), cam_to_world (4, 4)) of a pinhole camera at `position` looking at `look_at`
    (optical frame, world z up). Raises ValueError if the two points coincide or the view is
    vertical."""
    f = 0.5 * height / np.tan(np.radians(fovy_deg) / 2)
    K = np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1.0]])
    viewmat = look_at_viewmat(torch.tensor(position, dtype=torch.float64),
                              torch.tensor(look_at, dtype=torch.float64))
    return K, np.linalg.inv(viewmat.numpy())


def frame_from_messages(rgb_msg, depth_msg, info_msg, cam_to_world, stamp: float,
                        instances_msg=None, downscale: int = 1,
                        camera: str | None = None) -> Frame:
    """Decode and check one matched set of camera messages.

    Args:
        rgb_msg, depth_msg: sensor_msgs/Image (rgb8/bgr8/rgba8/bgra8; 32FC1 m or 16UC1 mm).
        info_msg: sensor_msgs/CameraInfo of the colour image.
        cam_to_world: (4, 4) optical frame in the world frame.
        instances_msg: optional instance-id image of the same size.
        downscale: integer subsampling (keeps depth values and ids exact).
        camera: the camera's name in the memory (default: the colour image's frame_id).
    Raises:
        ValueError: naming what is wrong (encoding, size mismatch, invalid K, no valid depth).
    """
    rgb = colour_to_rgb(rgb_msg)
    depth = depth_to_metres(depth_msg)
    if rgb.shape[:2] != depth.shape or (info_msg.height, info_msg.width) != depth.shape:
        raise ValueError(f"size mismatch: colour {rgb.shape[:2]}, depth {depth.shape}, "
                         f"camera_info {(info_msg.height, info_msg.width)}")
    K = np.asarray(info_msg.k, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError("camera_info K is not a valid pinhole matrix")
    valid = np.isfinite(depth) & (depth > 0)
    if valid.mean() < 0.01:
        raise ValueError("depth has (almost) no valid pixels (NaN or zero)")
    instances = None
    if instances_msg is not None:
        instances = image_to_numpy(instances_msg)
        if instances.shape != depth.shape or instances.ndim != 2:
            raise ValueError(f"instance mask {instances.shape} does not match depth")
    if downscale > 1:
        rgb, depth = rgb[::downscale, ::downscale], depth[::downscale, ::downscale]
        instances = None if instances is None else instances[::downscale, ::downscale]
        K = K.copy()
        K[:2] /= downscale
    # np.array copies: decoded messages may be read-only views of their buffers.
    return Frame(torch.from_numpy(np.array(rgb)), torch.from_numpy(np.array(depth)),
                 torch.tensor(K, dtype=torch.float32),
                 torch.tensor(np.asarray(cam_to_world), dtype=torch.float32),
                 None if instances is None else
                 torch.from_numpy(instances.astype(np.int64)), stamp,
                 rgb_msg.header.frame_id if camera is None else camera)
