"""Episodes -> batched prediction windows, and the error measures of the benchmark.

A window starts at one grid step of an episode and holds the next H actions and the H states
that followed. Objects are padded to the largest count K (mask). A window may carry a
reference (ground-truth) copy of the object poses: errors are then measured on the motion,
(predicted pose at h relative to the input pose) against (true pose at h relative to the true
pose at 0), so a model trained and run on perceived poses is judged against the truth.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from world_model_node.episodes import Episode
from world_model_node.model import so3_log
from world_model_node.predictor import WorldState


@dataclass
class Windows:
    """W windows of H steps; K objects (padded), J joints."""
    q0: torch.Tensor          # (W, J)
    qd0: torch.Tensor         # (W, J)
    w0: torch.Tensor          # (W,)
    pos0: torch.Tensor        # (W, K, 3)
    rot0: torch.Tensor        # (W, K, 3, 3)
    extent: torch.Tensor      # (W, K, 3)
    appearance: torch.Tensor  # (W, K, A)
    mask: torch.Tensor        # (W, K) object exists
    target_q: torch.Tensor    # (W, H, J) actions
    target_w: torch.Tensor    # (W, H)
    q: torch.Tensor           # (W, H, J) states after each step
    w: torch.Tensor           # (W, H)
    pos: torch.Tensor         # (W, H, K, 3)
    rot: torch.Tensor         # (W, H, K, 3, 3)
    seen: torch.Tensor        # (W, H, K) pose known (and object seen at the start)
    ref_pos: torch.Tensor     # (W, H + 1, K, 3) reference poses, step 0 = start
    ref_rot: torch.Tensor     # (W, H + 1, K, 3, 3)
    ref_seen: torch.Tensor    # (W, H + 1, K)
    episode: torch.Tensor     # (W,) index of the episode

    def __len__(self) -> int:
        return self.q0.shape[0]

    def __getitem__(self, idx) -> "Windows":
        return Windows(*(getattr(self, f.name)[idx] for f in fields(self)))

    def to(self, device) -> "Windows":
        return Windows(*(getattr(self, f.name).to(device) for f in fields(self)))

    def state(self) -> WorldState:
        """The windows' start states as one batched WorldState (padding objects included)."""
        k = self.pos0.shape[1]
        return WorldState(self.q0, self.qd0, self.w0, list(range(k)), self.pos0, self.rot0,
                          self.extent, self.appearance)


def _rotations(quats: np.ndarray) -> np.ndarray:
    """(..., 4) xyzw, zeros allowed (unknown: identity) -> (..., 3, 3)."""
    flat = quats.reshape(-1, 4).copy()
    flat[np.linalg.norm(flat, axis=1) < 1e-6] = [0, 0, 0, 1]
    return Rotation.from_quat(flat).as_matrix().reshape(*quats.shape[:-1], 3, 3)


def make_windows(episodes: list[Episode], horizon: int, stride: int = 1,
                 references: list[Episode] | None = None) -> Windows:
    """All windows of `horizon` steps, one every `stride` steps, from each episode.

    references: per episode, the same episode with ground-truth poses (same grid, matched by
    object id) to measure errors against; default: the episode itself.
    """
    k_max = max(1, max(len(e.object_ids) for e in episodes))
    parts = []
    for index, ep in enumerate(episodes):
        ref = references[index] if references else ep
        if len(ref) != len(ep) or not np.allclose(ref.times, ep.times):
            raise ValueError(f"reference of {ep.name} is on a different time grid")
        t, k = len(ep), len(ep.object_ids)
        starts = np.arange(0, t - horizon, stride)
        if len(starts) == 0:
            continue
        steps = starts[:, None] + np.arange(1, horizon + 1)        # (W, H)
        span = starts[:, None] + np.arange(0, horizon + 1)         # (W, H + 1)
        pad = k_max - k

        def objects(x, axis=1, fill=0.0):
            widths = [(0, 0)] * x.ndim
            widths[axis] = (0, pad)
            return np.pad(x, widths, constant_values=fill)

        rot = objects(_rotations(ep.object_quats))
        pos = objects(ep.object_positions)
        seen = objects(ep.object_seen, fill=False)
        ref_index = {int(i): n for n, i in enumerate(ref.object_ids)}
        ref_pos = np.zeros((t, k_max, 3))
        ref_rot = np.tile(np.eye(3), (t, k_max, 1, 1))
        ref_seen = np.zeros((t, k_max), bool)
        ref_rotations = _rotations(ref.object_quats)
        for n, oid in enumerate(ep.object_ids):
            if int(oid) in ref_index:
                m = ref_index[int(oid)]
                ref_pos[:, n], ref_rot[:, n] = ref.object_positions[:, m], ref_rotations[:, m]
                ref_seen[:, n] = ref.object_seen[:, m]
        mask = np.arange(k_max) < k
        parts.append(dict(
            q0=ep.joint_positions[starts], qd0=ep.joint_velocities[starts],
            w0=ep.gripper[starts], pos0=pos[starts], rot0=rot[starts],
            extent=np.broadcast_to(objects(ep.object_extents, 0), (len(starts), k_max, 3)),
            appearance=np.broadcast_to(objects(ep.object_appearance, 0),
                                       (len(starts), k_max, ep.object_appearance.shape[1])),
            mask=np.broadcast_to(mask, (len(starts), k_max)),
            target_q=ep.target_positions[starts[:, None] + np.arange(horizon)],
            target_w=ep.target_gripper[starts[:, None] + np.arange(horizon)],
            q=ep.joint_positions[steps], w=ep.gripper[steps], pos=pos[steps], rot=rot[steps],
            seen=seen[steps] & seen[starts][:, None],
            ref_pos=ref_pos[span], ref_rot=ref_rot[span],
            ref_seen=ref_seen[span] & ref_seen[starts][:, None],
            episode=np.full(len(starts), index)))
    if not parts:
        raise ValueError(f"no episode is longer than {horizon} steps")
    out = {}
    for f in fields(Windows):
        values = np.concatenate([p[f.name] for p in parts])
        dtype = torch.bool if values.dtype == bool else (
            torch.int64 if f.name == "episode" else torch.float32)
        out[f.name] = torch.as_tensor(np.ascontiguousarray(values), dtype=dtype)
    return Windows(**out)


CALIBRATION_QUANTILE_90 = 6.25  # chi-square, 3 degrees of freedom


@torch.no_grad()
def predict_windows(predictor, windows: Windows, batch: int = 512) -> tuple:
    """Predict every window in batches: (positions (W, H, K, 3), rotations (W, H, K, 3, 3),
    position std (W, H, K) or None)."""
    pos, rot, std = [], [], []
    for i in range(0, len(windows), batch):
        part = windows[i:i + batch]
        f = predictor.predict(part.state(), part.target_q, part.target_w)
        pos.append(f.object_positions)
        rot.append(f.object_rotations)
        std.append(f.object_position_std)
    return torch.cat(pos), torch.cat(rot), None if std[0] is None else torch.cat(std)


def coverage_90(windows: Windows, positions: torch.Tensor, std: torch.Tensor) -> float:
    """Share of known object positions inside the predicted 90 % region (a calibrated model
    gives 0.9)."""
    valid = windows.seen & windows.mask[:, None]
    err2 = ((positions - windows.pos) ** 2).sum(-1)[valid]
    return float((3 * err2 / std[valid] ** 2 <= CALIBRATION_QUANTILE_90).float().mean())


def motion_errors(windows: Windows, positions: torch.Tensor, rotations: torch.Tensor,
                  step: int, keep: torch.Tensor | None = None) -> dict:
    """Errors of predicted object motion after `step` steps (1-based) against the reference.

    positions (W, H, K, 3), rotations (W, H, K, 3, 3): predicted poses; the motion is taken
    relative to the windows' input poses. keep (W, K): only these pairs (default all).
    Returns {"position_m", "rotation_deg", "static_position_m", "static_rotation_deg",
    "pairs"}: means over the (window, object) pairs known at both ends, for the prediction
    and for "nothing moves".
    """
    h = step
    valid = windows.ref_seen[:, h] & windows.mask
    if keep is not None:
        valid = valid & keep
    true_move = windows.ref_pos[:, h] - windows.ref_pos[:, 0]
    pred_move = positions[:, h - 1] - windows.pos0
    true_turn = windows.ref_rot[:, h] @ windows.ref_rot[:, 0].transpose(-1, -2)
    pred_turn = rotations[:, h - 1] @ windows.rot0.transpose(-1, -2)

    def angle(R):
        return torch.rad2deg(so3_log(R).norm(dim=-1))

    def mean(x):
        return float(x[valid].mean()) if valid.any() else float("nan")

    return {"position_m": mean((pred_move - true_move).norm(dim=-1)),
            "rotation_deg": mean(angle(pred_turn @ true_turn.transpose(-1, -2))),
            "static_position_m": mean(true_move.norm(dim=-1)),
            "static_rotation_deg": mean(angle(true_turn)),
            "pairs": int(valid.sum())}
