"""The learned predictor: an ensemble of small transformers over one robot token and one
token per object, rolled out step by step under an action chunk.

Per step, every member reads the robot (joints, gripper, end-effector pose from forward
kinematics) and each object (pose, extent, appearance, where the fingers are and will be
relative to it), lets the tokens attend to each other (objects push objects), and predicts
each object's SE(3) increment and the robot's deviation from its joint targets. Members roll
out their own futures; their spread is the uncertainty. All members run as one batch:
weights carry a leading ensemble dimension E.

Shapes: E members, B sequences, K objects, J arm joints, H steps.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

ROBOT_FEATURES_FIXED = 24   # + 4 J: see robot_features
OBJECT_FEATURES_FIXED = 38  # + appearance: see object_features


@dataclass
class ModelConfig:
    joints: int = 7
    appearance: int = 4
    width: int = 64
    layers: int = 2
    heads: int = 4
    ensemble: int = 5
    step: float = 0.1           # s per action
    finger_offset: float = 0.0  # m below the TCP where the finger pads touch

    def to_dict(self) -> dict:
        return asdict(self)


class EnsembleLinear(nn.Module):
    """E independent linear layers applied to (E, ..., in) inputs."""

    def __init__(self, ensemble: int, fan_in: int, fan_out: int):
        super().__init__()
        bound = 1.0 / math.sqrt(fan_in)
        self.weight = nn.Parameter(torch.empty(ensemble, fan_in, fan_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(ensemble, 1, fan_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        out = torch.baddbmm(self.bias, x.reshape(shape[0], -1, shape[-1]), self.weight)
        return out.reshape(*shape[:-1], out.shape[-1])


class Block(nn.Module):
    """Pre-norm transformer block over the tokens of each sequence."""

    def __init__(self, e: int, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = EnsembleLinear(e, d, 3 * d)
        self.proj = EnsembleLinear(e, d, d)
        self.mlp_in = EnsembleLinear(e, d, 2 * d)
        self.mlp_out = EnsembleLinear(e, 2 * d, d)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """x (E, B, T, d); key_mask (B, T) True where a token exists (None: all do)."""
        e, b, t, d = x.shape
        h = self.heads
        q, k, v = self.qkv(nn.functional.layer_norm(x, (d,))).chunk(3, dim=-1)
        q, k, v = (z.reshape(e * b, t, h, d // h).transpose(1, 2) for z in (q, k, v))
        mask = None if key_mask is None else key_mask.repeat(e, 1)[:, None, None, :]
        att = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.proj(att.transpose(1, 2).reshape(e, b, t, d))
        y = nn.functional.gelu(self.mlp_in(nn.functional.layer_norm(x, (d,))))
        return x + self.mlp_out(y)


def rot6d(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6): the first two columns, a continuous rotation encoding."""
    return R[..., :, :2].transpose(-1, -2).reshape(*R.shape[:-2], 6)


def small_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b for many tiny matrices: as a broadcast product, which beats batched GEMM on
    the CPU at these sizes."""
    return (a[..., :, :, None] * b[..., None, :, :]).sum(-2)


def so3_exp(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) rotation vectors -> (..., 3, 3) rotation matrices (Rodrigues)."""
    theta2 = (v * v).sum(-1)[..., None, None]
    x, y, z = v.unbind(-1)
    zero = torch.zeros_like(x)
    skew = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*v.shape[:-1], 3, 3)
    small = theta2 < 1e-8
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    a = torch.where(small, 1.0 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta ** 2)
    eye = torch.eye(3, dtype=v.dtype, device=v.device)
    skew2 = v[..., :, None] * v[..., None, :] - theta2 * eye   # skew @ skew
    return eye + a * skew + b * skew2


def so3_log(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 3) rotation vectors (angles below pi)."""
    cos = ((R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2] - 1) / 2).clamp(-1 + 1e-6, 1 - 1e-6)
    theta = torch.acos(cos)[..., None]
    w = torch.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0],
                     R[..., 1, 0] - R[..., 0, 1]], -1)
    return w * torch.where(theta < 1e-4, 0.5 + theta ** 2 / 12, theta / (2 * torch.sin(theta)))


@dataclass
class StepState:
    """What one step reads and writes. Leading dims (E, B); objects K."""
    q: torch.Tensor          # (E, B, J) rad
    qd: torch.Tensor         # (E, B, J) rad/s
    gripper: torch.Tensor    # (E, B) m
    obj_pos: torch.Tensor    # (E, B, K, 3) m
    obj_rot: torch.Tensor    # (E, B, K, 3, 3)


def fingers(tcp: torch.Tensor, width: torch.Tensor, offset: float) -> torch.Tensor:
    """(..., 4, 4) TCP poses and (...) widths -> (..., 2, 3) finger pad centres."""
    y = tcp[..., :3, 1]
    centre = tcp[..., :3, 3] + offset * tcp[..., :3, 2]
    half = (width / 2)[..., None]
    return torch.stack([centre + half * y, centre - half * y], -2)


def robot_features(s: StepState, tcp, target_q, target_w, target_tcp) -> torch.Tensor:
    """(E, B, 4 J + ROBOT_FEATURES_FIXED)."""
    return torch.cat([
        s.q, s.qd, target_q, target_q - s.q, s.gripper[..., None], target_w[..., None],
        (target_w - s.gripper)[..., None], tcp[..., :3, 3], rot6d(tcp[..., :3, :3]),
        target_tcp[..., :3, 3] - tcp[..., :3, 3], rot6d(target_tcp[..., :3, :3]),
        target_tcp[..., :3, 3]], -1)


def object_features(s: StepState, extent, appearance, tcp, target_tcp, gripper, target_w,
                    offset: float) -> torch.Tensor:
    """(E, B, K, OBJECT_FEATURES_FIXED + A): the object, and the fingers now and at the target, as seen
    from the object (in the world frame and in the object's own frame)."""
    now = fingers(tcp, gripper, offset)[..., None, :, :] - s.obj_pos[..., None, :]
    then = fingers(target_tcp, target_w, offset)[..., None, :, :] - s.obj_pos[..., None, :]
    rel = torch.cat([now, then], -2)                                    # (E, B, K, 4, 3)
    local = small_matmul(rel, s.obj_rot)                                # rows: R^T v
    k = s.obj_pos.shape[-2]
    lead = s.obj_pos.shape[:-2]
    w = torch.stack([gripper, target_w], -1)[..., None, :].expand(*lead, k, 2)
    return torch.cat([s.obj_pos, rot6d(s.obj_rot), extent.expand(*lead, k, 3),
                      appearance.expand(*lead, k, appearance.shape[-1]),
                      rel.flatten(-2), local.flatten(-2), w], -1)


class WorldModel(nn.Module):
    """Ensemble token transformer; `forward` is one step, `rollout` a whole action chunk.

    Normalisation statistics (buffers) are filled from the training data before training and
    saved with the weights.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = c = config
        e, d = c.ensemble, c.width
        self.robot_in = EnsembleLinear(e, 4 * c.joints + ROBOT_FEATURES_FIXED, d)
        self.object_in = EnsembleLinear(e, OBJECT_FEATURES_FIXED + c.appearance, d)
        self.kind = nn.Parameter(torch.zeros(e, 1, 2, d))  # robot / object token type
        self.blocks = nn.ModuleList(Block(e, d, c.heads) for _ in range(c.layers))
        self.robot_out = EnsembleLinear(e, d, c.joints + 1)
        self.object_out = EnsembleLinear(e, d, 6)
        for head in (self.robot_out, self.object_out):  # start from "follow targets, stay"
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)
        for name, size in (("robot", 4 * c.joints + ROBOT_FEATURES_FIXED),
                           ("object", OBJECT_FEATURES_FIXED + c.appearance),
                           ("robot_delta", c.joints + 1), ("object_delta", 6)):
            self.register_buffer(f"{name}_mean", torch.zeros(size))
            self.register_buffer(f"{name}_std", torch.ones(size))

    def forward(self, s: StepState, extent, appearance, mask, tcp, target_q, target_w,
                target_tcp) -> StepState:
        """One step. extent (B, K, 3); appearance (B, K, A); mask (B, K) True = object exists
        (None: all do);
        tcp, target_tcp (E, B, 4, 4) now and at the step's joint targets."""
        c = self.config
        rf = (robot_features(s, tcp, target_q, target_w, target_tcp) - self.robot_mean) \
            / self.robot_std
        of = (object_features(s, extent, appearance, tcp, target_tcp, s.gripper, target_w,
                              c.finger_offset) - self.object_mean) / self.object_std
        tokens = torch.cat([self.robot_in(rf)[..., None, :] + self.kind[..., :1, :],
                            self.object_in(of) + self.kind[..., 1:, :]], -2)
        key_mask = None if mask is None else torch.cat([torch.ones_like(mask[:, :1]), mask], 1)
        for block in self.blocks:
            tokens = block(tokens, key_mask)
        robot = self.robot_out(tokens[..., 0, :]) * self.robot_delta_std + self.robot_delta_mean
        obj = self.object_out(tokens[..., 1:, :]) * self.object_delta_std + self.object_delta_mean
        q = target_q + robot[..., :-1]
        return StepState(q=q, qd=(q - s.q) / c.step, gripper=s.gripper + robot[..., -1],
                         obj_pos=s.obj_pos + obj[..., :3],
                         obj_rot=small_matmul(so3_exp(obj[..., 3:]), s.obj_rot))

    def rollout(self, s: StepState, extent, appearance, mask, target_q, target_w, tcp_of):
        """Roll every member out over an action chunk.

        Args:
            s: start state, (E, B, ...).
            target_q (B, H, J), target_w (B, H): the action chunk.
            tcp_of: forward kinematics, (..., J) -> (..., 4, 4) TCP poses.
        Returns:
            list of H StepStates (after each step).

        Forward kinematics runs once for the start and all targets: within the chunk the
        fingers are taken where the previous step's targets put them (the joint features
        still carry any deviation from the targets).
        """
        e = s.q.shape[0]
        horizon = target_q.shape[1]
        # The targets are the same for every member: their kinematics once, shared.
        target_tcp = tcp_of(target_q)[None].expand(e, -1, -1, -1, -1)    # (E, B, H, 4, 4)
        tcp = tcp_of(s.q)
        states = []
        for h in range(horizon):
            s = self(s, extent, appearance, mask, tcp, target_q[None, :, h].expand(e, -1, -1),
                     target_w[None, :, h].expand(e, -1), target_tcp[:, :, h])
            tcp = target_tcp[:, :, h]
            states.append(s)
        return states
