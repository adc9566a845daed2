"""Object poses as the scene memory perceives them, from a bag's camera frames.

Replays the bag's colour, depth, camera_info, instance mask and camera pose of each camera
(`BagLayout.cameras`) through `SceneMemory.integrate`, exactly as the `gsplat_scene` node
would, and records every object's tracked pose after each frame. This is the input the world model sees on a robot,
so training on it teaches the model the memory's noise. A robot's bags without instance
masks are labelled as the node's `segmentation: tabletop` labels them: from depth, the robot
told apart by the bag's robot description and joint states (the URDF's root taken as the
world frame of the camera poses).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import sys

import numpy as np
from scipy.spatial.transform import Rotation

from gsplat_scene.frame_sync import FrameSync
from gsplat_scene.frames import frame_from_messages, pose_to_matrix
from gsplat_scene.mapping import MappingConfig, SceneMemory
from gsplat_scene.segmentation import TabletopConfig, TabletopSegmenter, object_boxes
from robot_model.spheres import RobotBody
from ros_io.bag import read_messages
from ros_io.stamps import to_seconds
from world_model_node.episodes import APPEARANCE_DIM

log = logging.getLogger(__name__)

MIN_VISIBLE = 0.8  # share of an object the frame must show for its pose to count as seen
JOINT_STATE_SLOP = 0.1  # s between a frame and the joint state placing the robot in it


@functools.cache
def perception_version() -> str:
    """A digest of the code that perceives poses (the scene memory and this module): poses
    cached by another version of the memory are stale."""
    digest = hashlib.sha1()
    for name in ("gsplat_scene.frame_sync", "gsplat_scene.frames", "gsplat_scene.gaussians",
                 "gsplat_scene.mapping", "gsplat_scene.render", "gsplat_scene.segmentation",
                 "gsplat_scene.tracking", "robot_model.spheres", __name__):
        with open(sys.modules[name].__file__, "rb") as source:
            digest.update(source.read())
    return digest.hexdigest()[:12]


def _frames(bag, layout, downscale: int, masks: bool = True):
    """Yield matched, validated Frames of a bag's cameras in stamp order (bad ones are
    skipped); with their instance masks where recorded, unless `masks` is False."""
    cameras = {camera: {k: v for k, v in topics.items() if masks or k != "instances"}
               for camera, topics in layout.cameras().items()}
    streams = {topic: (camera, stream) for camera, topics in cameras.items()
               for stream, topic in topics.items()}
    syncs = {camera: FrameSync(["rgb", "depth", "info", "pose"],
                               ["instances"] if "instances" in topics else [], slop=0.02)
             for camera, topics in cameras.items()}
    for topic, _, _, msg in read_messages(bag, set(streams)):
        camera, stream = streams[topic]
        matched = syncs[camera].add(stream, to_seconds(msg.header.stamp), msg)
        if matched is None:
            continue
        stamp = matched["rgb"][0]
        p, q = matched["pose"][1].pose.position, matched["pose"][1].pose.orientation
        try:
            yield frame_from_messages(
                matched["rgb"][1], matched["depth"][1], matched["info"][1],
                pose_to_matrix([p.x, p.y, p.z], [q.x, q.y, q.z, q.w]), stamp,
                matched["instances"][1] if "instances" in matched else None, downscale,
                camera)
        except ValueError as err:
            log.warning("%s: %s frame at %.2f s skipped: %s", bag, camera, stamp, err)


def tabletop_labeller(bag, layout, config: TabletopConfig, urdf: str | None = None):
    """labeller(memory, frame) -> the frame labelled from depth (gsplat_scene.segmentation),
    the robot placed by the bag's joint state nearest the frame; raises ValueError for a
    frame without one. urdf: the robot's, default the bag's robot description.
    Raises:
        ValueError: the bag has no robot description (and none is given) or joint states.
    """
    description, states = None, []
    for topic, _, _, m in read_messages(bag, {layout.robot_description, layout.joint_states}):
        if topic == layout.robot_description:
            description = description or m.data
        elif len(m.name) == len(m.position) and np.isfinite(m.position).all():
            states.append((to_seconds(m.header.stamp), dict(zip(m.name, m.position))))
    urdf = urdf or description
    if urdf is None:
        raise ValueError(f"bag {bag}: no {layout.robot_description or 'robot description'} "
                         f"to tell the robot apart in its frames (pass the URDF)")
    if not states:
        raise ValueError(f"bag {bag}: no joint states on {layout.joint_states} to place the "
                         f"robot in its frames")
    body = RobotBody.from_urdf(urdf)
    states.sort(key=lambda state: state[0])
    segmenter = TabletopSegmenter(config)

    def label(memory: SceneMemory, frame):
        robot = body.place_at(states, frame.stamp, JOINT_STATE_SLOP)
        labels = segmenter.segment(frame.depth, frame.K, frame.cam_to_world, robot,
                                   object_boxes(memory))
        return dataclasses.replace(frame, instances=labels)
    return label


def perceive_objects(bag, layout, times: np.ndarray, downscale: int = 2,
                     config: MappingConfig | None = None, device="cpu",
                     min_visible: float = MIN_VISIBLE, tabletop: TabletopConfig | None = None,
                     urdf: str | None = None) -> dict:
    """Map the bag's frames and sample each object's tracked pose at `times`; with
    `tabletop`, the frames are labelled from depth (`tabletop_labeller`), not by the bag's
    masks, and the objects carry the memory's own ids.

    Returns {id: {"pos" (T, 3), "quat" (T, 4) xyzw, "extent" (3,), "known" (T,), "seen" (T,),
    "visible" (T,), "appearance" (APPEARANCE_DIM,)}}: "known" where the memory holds the
    object (from its first observation on: the memory keeps objects that are hidden or leave
    the view where it last saw them), "visible" the share of it the frame shows
    (`ObjectRecord.visible`, 0 where not known), "seen" where it is known and visible is at
    least `min_visible`. A hidden object's pose is stale: as a
    training target it would teach the memory's lag, as an input it is what a robot has.
    Raises:
        ValueError: the bag has no usable camera frames (or, with `tabletop`, no robot
            description or joint states).
    """
    memory = SceneMemory(config or MappingConfig(iterations=3), device)
    label = tabletop_labeller(bag, layout, tabletop, urdf) if tabletop else None
    stamps, records = [], []
    for frame in _frames(bag, layout, downscale, masks=label is None):
        if label is not None:
            try:
                frame = label(memory, frame)
            except ValueError as err:
                log.warning("%s: %s frame at %.2f s skipped: %s", bag, frame.camera,
                            frame.stamp, err)
                continue
        memory.integrate(frame)
        stamps.append(frame.stamp)
        records.append({oid: (r.pose.cpu().numpy().copy(), r.half_extent.cpu().numpy().copy(),
                              r.visible) for oid, r in memory.objects.items()})
    if not stamps:
        raise ValueError(f"bag {bag}: no camera frames to perceive objects from")
    # Cameras' frames may arrive slightly out of stamp order; each record holds the memory
    # after every frame before it.
    stamps = np.maximum.accumulate(np.asarray(stamps))
    index = np.clip(np.searchsorted(stamps, times + 1e-9, side="right") - 1, 0, None)
    before = times < stamps[0] - 1e-9
    colours = memory.object_colours()
    tracks = {}
    extents = {oid: extent for r in records for oid, (_, extent, _) in r.items()}  # the latest
    for oid in sorted(extents):
        pos = np.zeros((len(times), 3))
        quat = np.tile([0.0, 0.0, 0.0, 1.0], (len(times), 1))
        known, visible = np.zeros(len(times), bool), np.zeros(len(times))
        for k, i in enumerate(index):
            if before[k] or oid not in records[i]:
                continue
            pose, _, visible[k] = records[i][oid]
            known[k] = True
            pos[k], quat[k] = pose[:3, 3], Rotation.from_matrix(pose[:3, :3]).as_quat()
        appearance = np.zeros(APPEARANCE_DIM)
        if oid in colours:
            appearance = np.concatenate([colours[oid].cpu().numpy(), [1.0]])
        tracks[oid] = {"pos": pos, "quat": quat, "known": known,
                       "seen": known & (visible >= min_visible), "visible": visible,
                       "extent": extents[oid],
                       "appearance": appearance}
    return tracks
