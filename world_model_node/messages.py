"""Conversions between our messages and the world model's tensors, shared by the nodes that
hold a predictor (world_model_node, planner_node)."""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from world_model_node.predictor import Futures
from world_model_planning.msg import ObjectArray, PredictedFutures

RESERVED_IDS = (0, 1)  # background, robot


def objects_to_tensors(msg: ObjectArray) -> tuple:
    """(ids, positions (K, 3), rotations (K, 3, 3), extents (K, 3), appearance (K, 4));
    ValueError naming the object if one is malformed."""
    ids = [int(o.id) for o in msg.objects]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate object ids {ids}")
    reserved = [i for i in ids if i in RESERVED_IDS]
    if reserved:
        raise ValueError(f"object ids {reserved} are not objects (0 background, 1 robot)")
    pos, quat, ext, look = [], [], [], []
    for o in msg.objects:
        p, q, e = o.pose.position, o.pose.orientation, o.half_extent
        values = [p.x, p.y, p.z, q.x, q.y, q.z, q.w, e.x, e.y, e.z]
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"object {o.id}: pose or extent not finite")
        if abs(math.sqrt(q.x ** 2 + q.y ** 2 + q.z ** 2 + q.w ** 2) - 1.0) > 1e-3:
            raise ValueError(f"object {o.id}: orientation is not a unit quaternion")
        if min(e.x, e.y, e.z) <= 0.0:
            raise ValueError(f"object {o.id}: half extent must be positive")
        pos.append([p.x, p.y, p.z])
        quat.append([q.x, q.y, q.z, q.w])
        ext.append([e.x, e.y, e.z])
        c = o.color
        look.append([c.r, c.g, c.b, 1.0] if c.a > 0 else [0.0] * 4)
    rot = Rotation.from_quat(quat).as_matrix() if quat else np.zeros((0, 3, 3))
    return (ids, torch.tensor(pos, dtype=torch.float32).reshape(-1, 3),
            torch.tensor(rot, dtype=torch.float32).reshape(-1, 3, 3),
            torch.tensor(ext, dtype=torch.float32).reshape(-1, 3),
            torch.tensor(look, dtype=torch.float32).reshape(-1, 4))


def futures_to_msg(f: Futures, actions, header, model: str) -> PredictedFutures:
    """Flatten Futures into a PredictedFutures message (quaternions x y z w)."""
    def flat(x):
        return x.detach().float().cpu().numpy().ravel().tolist()

    def quats(R):
        r = R.detach().double().cpu().numpy()
        return Rotation.from_matrix(r.reshape(-1, 3, 3)).as_quat().astype(np.float32) \
            .ravel().tolist() if r.size else []

    return PredictedFutures(
        header=header, model=model, actions=actions, object_ids=list(f.object_ids),
        ee_positions=flat(f.ee_poses[..., :3, 3]), ee_orientations=quats(f.ee_poses[..., :3, :3]),
        joint_positions=flat(f.joint_positions), object_positions=flat(f.object_positions),
        object_orientations=quats(f.object_rotations),
        object_position_std=[] if f.object_position_std is None else flat(f.object_position_std))


def joint_state_to_tensors(js, arm_joints, gripper_joints) -> tuple:
    """(q (J,), qd (J,), gripper width ()) of sensor_msgs/JointState `js` in `arm_joints`
    order; velocities are zero when the message has none. ValueError if joints are missing."""
    index = {name: i for i, name in enumerate(js.name)}
    missing = [name for name in arm_joints if name not in index]
    if missing:
        raise ValueError(f"joint state lacks joints {missing}")
    if len(js.position) != len(js.name):
        raise ValueError("joint state: position and name lengths differ")
    q = torch.tensor([js.position[index[name]] for name in arm_joints], dtype=torch.float32)
    qd = torch.tensor([js.velocity[index[name]] for name in arm_joints], dtype=torch.float32) \
        if len(js.velocity) == len(js.name) else torch.zeros(len(arm_joints))
    if not (torch.isfinite(q).all() and torch.isfinite(qd).all()):
        raise ValueError("joint state contains NaN or infinity")
    grippers = [name for name in gripper_joints if name in index]
    width = torch.tensor(float(sum(js.position[index[name]] for name in grippers))
                         if grippers else 0.0)
    return q, qd, width
