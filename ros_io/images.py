"""sensor_msgs/Image <-> NumPy, byte-exact, for machines without cv_bridge.

Arrays are (H, W) for single-channel encodings and (H, W, C) otherwise.
"""
from __future__ import annotations

import numpy as np

# encoding -> (dtype, channels)
ENCODINGS = {
    "rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1), "8UC1": (np.uint8, 1), "8UC3": (np.uint8, 3),
    "mono16": (np.uint16, 1), "16UC1": (np.uint16, 1),
    "32FC1": (np.float32, 1), "64FC1": (np.float64, 1),
}


def image_to_numpy(msg) -> np.ndarray:
    """Decode a sensor_msgs/Image; raises ValueError for unknown encodings or wrong sizes."""
    if msg.encoding not in ENCODINGS:
        raise ValueError(f"unsupported image encoding '{msg.encoding}'")
    dtype, channels = ENCODINGS[msg.encoding]
    dt = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    row_bytes = msg.width * channels * dt.itemsize
    if msg.height == 0 or msg.width == 0:
        raise ValueError("image has zero size")
    if msg.step < row_bytes or len(msg.data) < msg.step * msg.height:
        raise ValueError(
            f"image data of {len(msg.data)} bytes (step {msg.step}) does not hold "
            f"{msg.height}x{msg.width} '{msg.encoding}' pixels")
    raw = np.frombuffer(bytes(msg.data), dtype=np.uint8, count=msg.step * msg.height)
    rows = raw.reshape(msg.height, msg.step)[:, :row_bytes]
    arr = np.ascontiguousarray(rows).view(dt).astype(dtype, copy=False)
    return arr.reshape(msg.height, msg.width) if channels == 1 else \
        arr.reshape(msg.height, msg.width, channels)


def numpy_to_image(array: np.ndarray, encoding: str, stamp=None, frame_id: str = ""):
    """Encode an array as a sensor_msgs/Image (little endian, packed rows)."""
    from sensor_msgs.msg import Image

    if encoding not in ENCODINGS:
        raise ValueError(f"unsupported image encoding '{encoding}'")
    dtype, channels = ENCODINGS[encoding]
    array = np.asarray(array)
    expect_ndim = 2 if channels == 1 else 3
    if array.ndim != expect_ndim or (channels > 1 and array.shape[2] != channels):
        raise ValueError(f"array of shape {array.shape} does not fit encoding '{encoding}'")
    array = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * channels * array.dtype.itemsize
    msg.data = array.tobytes()
    return msg


def depth_to_metres(msg) -> np.ndarray:
    """Depth image in metres: 32FC1 as is, 16UC1 millimetres scaled; else ValueError."""
    if msg.encoding == "32FC1":
        return image_to_numpy(msg).astype(np.float32)
    if msg.encoding in ("16UC1", "mono16"):
        return image_to_numpy(msg).astype(np.float32) * 1e-3
    raise ValueError(f"depth encoding '{msg.encoding}' is not 32FC1 or 16UC1")


def colour_to_rgb(msg) -> np.ndarray:
    """Colour image as (H, W, 3) uint8 RGB from rgb8/bgr8/rgba8/bgra8; else ValueError."""
    if msg.encoding not in ("rgb8", "bgr8", "rgba8", "bgra8"):
        raise ValueError(f"colour encoding '{msg.encoding}' is not rgb8/bgr8/rgba8/bgra8")
    arr = image_to_numpy(msg)
    if msg.encoding == "rgb8":
        return arr
    if msg.encoding == "bgr8":
        return arr[..., ::-1].copy()
    if msg.encoding == "rgba8":
        return arr[..., :3].copy()
    return arr[..., 2::-1].copy()  # bgra8
