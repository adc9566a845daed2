"""Recorded episodes (rosbag2 bags) -> fixed-rate training sequences, ROS-free.

A bag is resampled onto a grid of `step` seconds. At grid time t_k the state is the arm's
joint positions and velocities, the gripper width and every object's pose; the action of
step k is what the controller was commanded to reach at t_k + step: the joint targets of the
recorded JointTrajectory messages replayed with joint_trajectory_controller semantics, and the
last gripper command. Object poses come from the bag's ground truth or, with
`poses="perceived"`, from running the scene memory over the bag's camera frames.

Topic and joint names are configurable (`BagLayout`), so a robot's own bags can be read.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

from ros_io.bag import read_messages
from ros_io.stamps import to_seconds

log = logging.getLogger(__name__)

APPEARANCE_DIM = 4  # mean colour (3) + 1 if the colour was observed


@dataclass
class BagLayout:
    """Where things are in a bag. Empty topic = not recorded."""
    joint_states: str = "/joint_states"
    trajectory: str = "/joint_trajectory_controller/joint_trajectory"
    gripper_command: str = "/gripper_controller/commands"
    ground_truth_objects: str = "/ground_truth/objects"
    robot_description: str = "/robot_description"
    color: str = "/camera/color/image_raw"
    depth: str = "/camera/depth/image_raw"
    camera_info: str = "/camera/color/camera_info"
    instances: str = "/camera/instances/image_raw"
    camera_pose: str = "/camera/pose"
    # Further cameras by namespace, each with the topics NS/color/image_raw,
    # NS/depth/image_raw, NS/color/camera_info, NS/instances/image_raw and NS/pose; a bag
    # without them (one camera) reads as before.
    extra_cameras: tuple = ("/side_camera",)
    arm_joints: tuple = tuple(f"panda_joint{i}" for i in range(1, 8))
    # The gripper width is the sum of these joints' positions (Panda: each finger opens
    # half the width).
    gripper_joints: tuple = ("panda_finger_joint1", "panda_finger_joint2")

    def cameras(self) -> dict[str, dict[str, str]]:
        """Camera name -> {stream: topic} ("rgb", "depth", "info", "pose" and, where
        recorded, "instances"); the main camera ("camera") first."""
        def streams(rgb, depth, info, pose, instances):
            return {k: v for k, v in dict(rgb=rgb, depth=depth, info=info, pose=pose,
                                          instances=instances).items() if v}
        out = {"camera": streams(self.color, self.depth, self.camera_info, self.camera_pose,
                                 self.instances)}
        for ns in self.extra_cameras:
            name = ns.strip("/")
            out[name] = streams(f"/{name}/color/image_raw", f"/{name}/depth/image_raw",
                                f"/{name}/color/camera_info", f"/{name}/pose",
                                f"/{name}/instances/image_raw" if self.instances else "")
        return out

    @classmethod
    def from_dict(cls, values: dict) -> "BagLayout":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown bag layout keys {unknown}; known: {sorted(known)}")
        defaults = cls()
        out = {}
        for key, value in values.items():
            if isinstance(getattr(defaults, key), tuple):  # lists of names
                if not isinstance(value, list) or \
                        not all(isinstance(v, str) and v for v in value):
                    raise ValueError(f"bag layout '{key}' must be a list of names, got "
                                     f"{value!r}")
                value = tuple(value)
            elif not isinstance(value, str):
                raise ValueError(f"bag layout '{key}' must be a topic name, got {value!r}")
            out[key] = value
        return cls(**out)

    @classmethod
    def from_yaml(cls, path) -> "BagLayout":
        """A layout from a YAML file of BagLayout keys; ValueError naming what is wrong."""
        import yaml

        try:
            return cls.from_dict(yaml.safe_load(Path(path).read_text()) or {})
        except (OSError, yaml.YAMLError, TypeError) as err:
            raise ValueError(str(err)) from err


@dataclass
class Episode:
    """One episode on a fixed time grid. T steps, J arm joints, K objects."""
    name: str
    step: float                      # s between grid points
    times: np.ndarray                # (T,) s, bag time
    joint_positions: np.ndarray      # (T, J) rad
    joint_velocities: np.ndarray     # (T, J) rad/s
    gripper: np.ndarray              # (T,) m
    target_positions: np.ndarray     # (T, J) rad, commanded at times + step
    target_gripper: np.ndarray       # (T,) m
    object_ids: np.ndarray           # (K,) instance ids
    object_positions: np.ndarray     # (T, K, 3) m, world
    object_quats: np.ndarray         # (T, K, 4) x y z w
    object_extents: np.ndarray       # (K, 3) half sizes, m
    object_appearance: np.ndarray    # (K, APPEARANCE_DIM)
    object_seen: np.ndarray          # (T, K) bool: the pose is observed at that time
    # (T, K) share of the object the frame shows (perceived poses: `ObjectRecord.visible`,
    # 0 before the memory has it; ground truth: 1 where observed)
    object_visible: np.ndarray
    poses: str = "ground_truth"      # or "perceived"
    notes: list = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.times)

    def arrays(self) -> dict:
        """The numeric fields, for np.savez."""
        return {f.name: getattr(self, f.name) for f in fields(self)
                if isinstance(getattr(self, f.name), np.ndarray)}


def _interp(times: np.ndarray, stamps: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Linear interpolation of (N, D) samples at `times`, per column."""
    return np.stack([np.interp(times, stamps, values[:, d]) for d in range(values.shape[1])], 1)


def _previous(times: np.ndarray, stamps: np.ndarray) -> np.ndarray:
    """Index of the last sample at or before each time (0 before the first)."""
    return np.clip(np.searchsorted(stamps, times + 1e-9, side="right") - 1, 0, None)


def _joint_samples(messages, names) -> tuple:
    stamps, pos, vel = [], [], []
    for t, msg in messages:
        index = {n: i for i, n in enumerate(msg.name)}
        if any(n not in index for n in names):
            continue
        p = np.array([msg.position[index[n]] for n in names], float)
        if len(msg.velocity) == len(msg.name):
            v = np.array([msg.velocity[index[n]] for n in names], float)
        else:
            v = np.full(len(names), np.nan)
        if not np.all(np.isfinite(p)):
            continue
        stamps.append(t)
        pos.append(p)
        vel.append(v)
    return np.array(stamps), np.array(pos).reshape(-1, len(names)), \
        np.array(vel).reshape(-1, len(names))


def _replay_trajectories(messages, arm_joints, q_start, sample_times) -> np.ndarray:
    """Commanded joint positions at sample_times: the recorded JointTrajectory messages
    replayed in arrival order, each replacing the queue from its start time."""
    from sim_robot.trajectory_follower import JointTrajectoryFollower, TrajectoryRejected

    n = len(arm_joints)
    follower = JointTrajectoryFollower(arm_joints, np.full(n, -np.inf), np.full(n, np.inf),
                                       np.full(n, np.inf), q_start)
    out = np.empty((len(sample_times), n))
    pending = sorted(messages, key=lambda m: m[0])
    i = 0
    for k, t in enumerate(sample_times):
        while i < len(pending) and pending[i][0] <= t:
            received, msg = pending[i]
            i += 1
            if not set(arm_joints) <= set(msg.joint_names):
                continue
            cols = [list(msg.joint_names).index(j) for j in arm_joints]
            try:
                follower.set_trajectory(
                    received, to_seconds(msg.header.stamp), arm_joints,
                    [to_seconds(p.time_from_start) for p in msg.points],
                    np.array([[p.positions[c] for c in cols] for p in msg.points]),
                    _optional_columns(msg.points, "velocities", cols),
                    _optional_columns(msg.points, "accelerations", cols))
            except (TrajectoryRejected, IndexError) as err:
                log.warning("skipped a recorded trajectory: %s", err)
        out[k] = follower.sample(t)[0]
    return out


def _optional_columns(points, attr, cols):
    if all(len(getattr(p, attr)) > max(cols) for p in points):
        return np.array([[getattr(p, attr)[c] for c in cols] for p in points])
    return None


def _quat_from_pose(pose) -> list:
    o = pose.orientation
    return [o.x, o.y, o.z, o.w]


def _ground_truth_objects(messages, times) -> dict:
    """{id: (positions (T, 3), quats (T, 4), half_extent (3,), seen (T,))} from ObjectArrays."""
    stamps = np.array([t for t, _ in messages])
    nearest = _previous(times, stamps)
    tracks = {}
    for k, idx in enumerate(nearest):
        for obj in messages[idx][1].objects:
            p = obj.pose.position
            e = obj.half_extent
            track = tracks.setdefault(int(obj.id), {
                "pos": np.zeros((len(times), 3)), "quat": np.tile([0, 0, 0, 1.0], (len(times), 1)),
                "extent": np.array([e.x, e.y, e.z]), "seen": np.zeros(len(times), bool)})
            track["pos"][k] = [p.x, p.y, p.z]
            track["quat"][k] = _quat_from_pose(obj.pose)
            track["seen"][k] = abs(stamps[idx] - times[k]) <= 0.1  # not stale
    return tracks


def _fill_unseen(pos, quat, seen):
    """Hold the last (or first) known pose where an object is not known: what a memory does."""
    if not seen.any():
        return pos, quat
    idx = np.where(seen, np.arange(len(seen)), -1)
    idx = np.maximum.accumulate(idx)
    idx[idx < 0] = np.argmax(seen)
    return pos[idx], quat[idx]


def _appearance(bag, layout: BagLayout, ids) -> dict:
    """Mean colour of each object's pixels in the bag's first colour and instance images:
    {id: (APPEARANCE_DIM,)}. Stops reading at the first pair of images."""
    from ros_io.images import colour_to_rgb, image_to_numpy

    first = {}
    for topic, _, _, msg in read_messages(bag, {layout.color, layout.instances}):
        first.setdefault(topic, msg)
        if len(first) == 2:
            break
    if len(first) < 2:
        return {}
    rgb = colour_to_rgb(first[layout.color]).astype(np.float32) / 255.0
    labels = image_to_numpy(first[layout.instances])
    out = {}
    for oid in ids:
        mask = labels == oid
        if mask.sum() >= 10 and mask.shape == rgb.shape[:2]:
            out[oid] = np.concatenate([rgb[mask].mean(0), [1.0]])
    return out


def read_episode(bag, layout: BagLayout | None = None, step: float = 0.1,
                 poses: str = "ground_truth", perception=None) -> Episode:
    """Read one bag into an Episode.

    Args:
        poses: "ground_truth" (the bag's ground-truth object topic) or "perceived" (object
            poses the scene memory tracks over the bag's camera frames; needs `perception`,
            a callable (bag, layout, times) -> the same tracks as ground truth, optionally
            with "known" where a pose is given but "seen" is false: an input, not a target).
    Raises:
        ValueError: the bag cannot be read at all, or lacks joint states or object poses.
            A bag that breaks off part-way (truncated) gives the episode up to the break,
            with a note.
    """
    layout = layout or BagLayout()
    bag = Path(bag)
    if poses not in ("ground_truth", "perceived"):
        raise ValueError(f"poses must be 'ground_truth' or 'perceived', not '{poses}'")
    wanted = {layout.joint_states, layout.trajectory, layout.gripper_command,
              layout.ground_truth_objects} - {""}
    by_topic = {t: [] for t in wanted}
    notes = []
    try:
        for topic, _, stamp, msg in read_messages(bag, wanted):
            # Messages with a header are placed by their stamp; others by arrival.
            header = getattr(msg, "header", None)
            t = to_seconds(header.stamp) if header is not None and topic not in (
                layout.trajectory,) else stamp * 1e-9
            by_topic[topic].append((t, msg))
    except ValueError as err:
        if not by_topic.get(layout.joint_states):
            raise
        notes.append(f"truncated: {err}")
        log.error("%s", err)
    js_t, js_q, js_v = _joint_samples(sorted(by_topic[layout.joint_states], key=lambda m: m[0]),
                                      list(layout.arm_joints) + list(layout.gripper_joints))
    if len(js_t) < 2:
        raise ValueError(f"bag {bag}: no joint states with joints {layout.arm_joints}")
    j = len(layout.arm_joints)
    if poses == "ground_truth":
        truth = sorted(by_topic.get(layout.ground_truth_objects, []), key=lambda m: m[0])
        if not truth:
            raise ValueError(f"bag {bag}: no ground-truth objects on "
                             f"'{layout.ground_truth_objects}'")
    # The grid starts with the joint states whatever the pose source, so the ground-truth
    # and the perceived reading of a bag line up step for step.
    t0 = js_t[0]
    t_end = js_t[-1] - step
    if t_end - t0 < 2 * step:
        raise ValueError(f"bag {bag}: only {js_t[-1] - js_t[0]:.2f} s of joint states")
    times = t0 + step * np.arange(int(math.floor((t_end - t0) / step)) + 1)
    q_all = _interp(times, js_t, js_q)
    ends = times + step
    q_next = _interp(ends, js_t, js_q)
    if np.isnan(js_v).any():
        dq = np.gradient(js_q, js_t, axis=0)
        js_v = np.where(np.isnan(js_v), dq, js_v)
    qd = _interp(times, js_t, js_v)[:, :j]
    gripper = q_all[:, j:].sum(1)
    traj = by_topic.get(layout.trajectory, [])
    if traj:
        targets = _replay_trajectories(traj, list(layout.arm_joints), q_all[0, :j], ends)
    else:
        notes.append("no trajectory commands: targets are the next measured positions")
        targets = q_next[:, :j]
    commands = sorted((t, m) for t, m in by_topic.get(layout.gripper_command, [])
                      if len(m.data) >= 1 and math.isfinite(m.data[0]))
    if commands:
        c_t = np.array([t for t, _ in commands])
        c_w = np.array([m.data[0] for _, m in commands])
        target_gripper = np.where(ends >= c_t[0], c_w[_previous(ends, c_t)], gripper[0])
    else:
        target_gripper = q_next[:, j:].sum(1)
    if poses == "ground_truth":
        tracks = _ground_truth_objects(truth, times)
    else:
        tracks = perception(bag, layout, times)
    ids = sorted(tracks)
    appearance = {}
    if poses == "ground_truth" and layout.color and layout.instances:
        try:
            appearance = _appearance(bag, layout, ids)
        except ValueError as err:
            notes.append(f"no appearance: {err}")
    elif poses == "perceived":
        appearance = {i: tracks[i]["appearance"] for i in ids if "appearance" in tracks[i]}
    k = len(ids)
    pos = np.zeros((len(times), k, 3))
    quat = np.zeros((len(times), k, 4))
    seen = np.zeros((len(times), k), bool)
    visible = np.zeros((len(times), k))
    for n, oid in enumerate(ids):
        tr = tracks[oid]
        pos[:, n], quat[:, n] = _fill_unseen(tr["pos"], tr["quat"], tr.get("known", tr["seen"]))
        seen[:, n] = tr["seen"]
        visible[:, n] = tr.get("visible", tr["seen"])
    return Episode(
        name=bag.name, step=step, times=times, joint_positions=q_all[:, :j],
        joint_velocities=qd, gripper=gripper, target_positions=targets,
        target_gripper=target_gripper, object_ids=np.array(ids, np.int64),
        object_positions=pos, object_quats=quat,
        object_extents=np.array([tracks[i]["extent"] for i in ids]).reshape(k, 3),
        object_appearance=np.array([appearance.get(i, np.zeros(APPEARANCE_DIM))
                                    for i in ids]).reshape(k, APPEARANCE_DIM),
        object_seen=seen, object_visible=visible, poses=poses, notes=notes)


def with_ids_of(reference: Episode, episode: Episode, within: float = 0.05) -> Episode:
    """`reference` (the ground truth of `episode`'s bag, on the same time grid) with its
    objects named as `episode` names them: an object of `episode` whose id the reference
    lacks (the scene memory's own, from a tabletop segmentation) takes the id of the
    reference object nearest it, on average over the steps it is seen, within `within` [m]."""
    ids = reference.object_ids.copy()
    taken = set(ids.tolist()) & set(episode.object_ids.tolist())
    for n, oid in enumerate(episode.object_ids.tolist()):
        seen = episode.object_seen[:, n]
        if oid in taken or not seen.any():
            continue
        distance = np.linalg.norm(reference.object_positions[seen]
                                  - episode.object_positions[seen, n][:, None], axis=-1).mean(0)
        for m in np.argsort(distance):
            if distance[m] < within and int(reference.object_ids[m]) not in taken:
                taken.add(int(reference.object_ids[m]))
                ids[m] = oid
                break
    return replace(reference, object_ids=ids)
