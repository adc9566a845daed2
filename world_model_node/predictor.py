"""Predictors behind one interface: `predict(state, joint_targets, gripper_targets) -> Futures`.

`LearnedPredictor` (a trained WorldModel checkpoint) and the `static` baseline (the arm reaches
its targets, objects never move) answer the same call, so the planner, the node and the
benchmark swap them by name. Shapes: N sequences, H steps, J arm joints, K objects.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from robot_model.kinematics import KinematicChain
from world_model_node.checkpoint import load_checkpoint
from world_model_node.model import StepState


@dataclass
class WorldState:
    """The state a prediction starts from; tensors unbatched, or batched with a leading N."""
    joint_positions: torch.Tensor     # (J,) rad
    joint_velocities: torch.Tensor    # (J,) rad/s
    gripper: torch.Tensor             # () m
    object_ids: list                  # K instance ids
    object_positions: torch.Tensor    # (K, 3) m, world
    object_rotations: torch.Tensor    # (K, 3, 3)
    object_extents: torch.Tensor      # (K, 3) half sizes, m
    object_appearance: torch.Tensor   # (K, A): mean colour and a 1 (zeros when unknown)

    def to(self, device) -> "WorldState":
        return WorldState(*(v.to(device) if torch.is_tensor(v) else v
                            for v in (self.joint_positions, self.joint_velocities, self.gripper,
                                      self.object_ids, self.object_positions,
                                      self.object_rotations, self.object_extents,
                                      self.object_appearance)))


@dataclass
class Futures:
    """Predicted futures of N action sequences over H steps."""
    joint_positions: torch.Tensor          # (N, H, J)
    gripper: torch.Tensor                  # (N, H)
    ee_poses: torch.Tensor                 # (N, H, 4, 4) TCP in the world
    object_ids: list                       # K
    object_positions: torch.Tensor         # (N, H, K, 3)
    object_rotations: torch.Tensor         # (N, H, K, 3, 3)
    object_position_std: torch.Tensor | None  # (N, H, K) m, calibrated; None: no estimate


class Predictor:
    """Shared input checks; subclasses implement `_predict` on validated tensors."""

    name = "predictor"
    max_batch = 8192

    def __init__(self, chain: KinematicChain, step: float, device="cpu"):
        self.chain = chain
        self.step = step
        self.device = torch.device(device)
        self.joints = chain.dof

    def check(self, state: WorldState, joint_targets, gripper_targets) -> None:
        """Raise ValueError naming what is wrong with a request."""
        if joint_targets.ndim != 3 or joint_targets.shape[-1] != self.joints:
            raise ValueError(f"joint targets must be (N, H, {self.joints}), "
                             f"got {tuple(joint_targets.shape)}")
        n, h, _ = joint_targets.shape
        if n == 0 or h == 0:
            raise ValueError("empty batch: no action sequences or no steps")
        if n > self.max_batch:
            raise ValueError(f"batch of {n} sequences exceeds the limit of {self.max_batch}")
        if tuple(gripper_targets.shape) != (n, h):
            raise ValueError(f"gripper targets must be ({n}, {h}), "
                             f"got {tuple(gripper_targets.shape)}")
        k = len(state.object_ids)
        checks = {"joint positions": (state.joint_positions, (self.joints,)),
                  "joint velocities": (state.joint_velocities, (self.joints,)),
                  "gripper": (state.gripper, ()),
                  "object positions": (state.object_positions, (k, 3)),
                  "object rotations": (state.object_rotations, (k, 3, 3)),
                  "object extents": (state.object_extents, (k, 3))}
        for what, (value, shape) in checks.items():
            if tuple(value.shape) not in (shape, (n, *shape)):
                raise ValueError(f"{what}: shape {tuple(value.shape)}, expected {shape}")
            if not torch.isfinite(value).all():
                raise ValueError(f"{what} contain NaN or infinity")
        for what, value in (("joint targets", joint_targets), ("gripper targets", gripper_targets)):
            if not torch.isfinite(value).all():
                raise ValueError(f"{what} contain NaN or infinity")

    @torch.inference_mode()
    def predict(self, state: WorldState, joint_targets: torch.Tensor,
                gripper_targets: torch.Tensor) -> Futures:
        """Futures of N action sequences; raises ValueError for a malformed request."""
        joint_targets = torch.as_tensor(joint_targets, dtype=torch.float32, device=self.device)
        gripper_targets = torch.as_tensor(gripper_targets, dtype=torch.float32,
                                          device=self.device)
        self.check(state, joint_targets, gripper_targets)
        return self._predict(state.to(self.device), joint_targets, gripper_targets)

    def _predict(self, state, joint_targets, gripper_targets) -> Futures:
        raise NotImplementedError


def _batched(x: torch.Tensor, n: int, unbatched_dims: int) -> torch.Tensor:
    """Expand an unbatched tensor to a leading batch of n (batched ones pass through)."""
    x = x.float()
    return x.expand(n, *x.shape) if x.ndim == unbatched_dims else x


class StaticPredictor(Predictor):
    """Baseline: the arm is exactly at each target, the objects stay where they are."""

    name = "static"

    def _predict(self, state, joint_targets, gripper_targets) -> Futures:
        n, h, _ = joint_targets.shape
        pos = _batched(state.object_positions, n, 2)
        rot = _batched(state.object_rotations, n, 3)
        k = pos.shape[1]
        return Futures(joint_targets, gripper_targets, self.chain.forward(joint_targets),
                       list(state.object_ids), pos[:, None].expand(n, h, k, 3),
                       rot[:, None].expand(n, h, k, 3, 3), None)


class LearnedPredictor(Predictor):
    """A trained ensemble WorldModel; futures are the ensemble mean, the uncertainty its
    calibrated spread: std = sqrt((scale * spread)^2 + floor^2)."""

    def __init__(self, model, chain: KinematicChain, config: dict, name: str, device="cpu"):
        super().__init__(chain.to(device), model.config.step, device)
        self.model = model.to(device)
        self.config = config
        self.name = name
        cal = config.get("calibration", {})
        self.std_scale = float(cal.get("scale", 1.0))
        self.std_floor = float(cal.get("floor", 0.0))

    @classmethod
    def from_checkpoint(cls, checkpoint, device="cpu") -> "LearnedPredictor":
        model, chain, config = load_checkpoint(checkpoint, device)
        return cls(model, chain, config, f"learned:{checkpoint}", device)

    def rollout(self, state: WorldState, joint_targets, gripper_targets, mask=None) -> list:
        """Per-step StepStates of every member, (E, N, ...); differentiable outside
        `predict` (training). mask (N, K): False for padding objects (None: no padding)."""
        n = joint_targets.shape[0]
        e = self.model.config.ensemble
        k = len(state.object_ids)
        s = StepState(
            q=_batched(state.joint_positions, n, 1)[None].expand(e, n, -1),
            qd=_batched(state.joint_velocities, n, 1)[None].expand(e, n, -1),
            gripper=_batched(state.gripper, n, 0)[None].expand(e, n),
            obj_pos=_batched(state.object_positions, n, 2)[None].expand(e, n, k, 3),
            obj_rot=_batched(state.object_rotations, n, 3)[None].expand(e, n, k, 3, 3))
        extent = _batched(state.object_extents, n, 2)
        appearance = _batched(state.object_appearance, n, 2)
        return self.model.rollout(s, extent, appearance, mask, joint_targets, gripper_targets,
                                  self.chain.forward)

    def calibrated_std(self, spread: torch.Tensor) -> torch.Tensor:
        """Position std from the members' spread (both m)."""
        return torch.sqrt((self.std_scale * spread) ** 2 + self.std_floor ** 2)

    def _predict(self, state, joint_targets, gripper_targets) -> Futures:
        states = self.rollout(state, joint_targets, gripper_targets)
        q = torch.stack([s.q for s in states], 2)                 # (E, N, H, J)
        pos = torch.stack([s.obj_pos for s in states], 2)         # (E, N, H, K, 3)
        rot = torch.stack([s.obj_rot for s in states], 2)
        grip = torch.stack([s.gripper for s in states], 2)
        q_mean = q.mean(0)
        pos_mean = pos.mean(0)
        spread = ((pos - pos_mean) ** 2).mean(0).sum(-1).sqrt()   # 0 for a single member
        std = self.calibrated_std(spread)
        return Futures(q_mean, grip.mean(0), self.chain.forward(q_mean), list(state.object_ids),
                       pos_mean, _mean_rotation(rot), std)


def _mean_rotation(rot: torch.Tensor) -> torch.Tensor:
    """Chordal mean of (E, ...) rotation matrices: the mean projected back onto SO(3)."""
    if rot.shape[0] == 1:
        return rot[0]
    u, _, vt = torch.linalg.svd(rot.mean(0))
    d = torch.det(u @ vt)
    fix = torch.ones_like(u[..., 0])
    fix[..., -1] = d
    return u @ torch.diag_embed(fix) @ vt


def make_predictor(kind: str, checkpoint=None, chain: KinematicChain | None = None,
                   step: float = 0.1, device="cpu") -> Predictor:
    """'learned' (needs checkpoint) or 'static' (needs chain, or takes the checkpoint's)."""
    if kind == "learned":
        return LearnedPredictor.from_checkpoint(checkpoint, device)
    if kind == "static":
        if chain is None:
            _, chain, config = load_checkpoint(checkpoint, device)
            step = config["model"]["step"]
        return StaticPredictor(chain.to(device), step, device)
    raise ValueError(f"unknown predictor '{kind}': expected 'learned' or 'static'")
