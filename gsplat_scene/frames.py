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
from ros_io.images import colour_to_rgb, depth_to_metres, image_to_numpy


def pose_to_matrix(position, quat_xyzw) -> np.ndarray:
    """(4, 4) homogeneous transform from a position and a quaternion (x, y, z, w)."""
    m = np.eye(4)
    m[:3, :3] = Rotation.from_quat(quat_xyzw).as_matrix()
    m[:3, 3] = position
    return m


def frame_from_messages(rgb_msg, depth_msg, info_msg, cam_to_world, stamp: float,
                        instances_msg=None, downscale: int = 1) -> Frame:
    """Decode and check one matched set of camera messages.

    Args:
        rgb_msg, depth_msg: sensor_msgs/Image (rgb8/bgr8/rgba8/bgra8; 32FC1 m or 16UC1 mm).
        info_msg: sensor_msgs/CameraInfo of the colour image.
        cam_to_world: (4, 4) optical frame in the world frame.
        instances_msg: optional instance-id image of the same size.
        downscale: integer subsampling (keeps depth values and ids exact).
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
                 torch.from_numpy(instances.astype(np.int64)), stamp)
