"""Online Gaussian-splat mapping from posed RGB-D frames, with objects that move.

`SceneMemory.integrate(frame)` does, per frame:
1. track each known object seen in the instance mask (trimmed ICP of its observed points to
   its Gaussians) and move its Gaussians rigidly, so a moved object is neither duplicated nor
   smeared; objects out of view stay where they were last seen;
2. seed Gaussians where the map does not explain the frame (rendered alpha low, or the
   observed surface in front of the rendered one), back-projected from depth with a scale
   from the pixel spacing;
3. optimise means, scales, rotations, opacities and colours against colour and depth over a
   window of keyframes plus the current frame;
4. prune transparent or oversized Gaussians and enforce the caps on count and memory.

Cameras use the ROS/OpenCV pinhole convention (pixel centres at integer coordinates, optical
frame x right, y down, z forward); poses are camera-to-world (4, 4) in metres.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from gsplat_scene.gaussians import PARAMETERS, SH_C0, Gaussians
from gsplat_scene.render import render_gaussians
from gsplat_scene.tracking import align_to_model

BACKGROUND = 0
ROBOT = 1


@dataclass
class MappingConfig:
    max_gaussians: int = 300_000
    max_memory_mb: float = 1024.0     # parameters plus optimiser state
    keyframes: int = 8                # optimisation window (besides the current frame)
    keyframe_translation: float = 0.05  # m a camera moves before its frame is a new keyframe
    keyframe_rotation: float = 0.17   # rad, likewise
    iterations: int = 6               # optimisation steps per integrated frame
    seed_stride: int = 2              # one new Gaussian per stride x stride pixels at most
    seed_alpha: float = 0.6           # pixels rendered less opaque than this get Gaussians
    seed_depth_margin: float = 0.03   # m an observed surface may lie in front of the map
    seed_opacity: float = 0.9
    min_depth: float = 0.05           # m; depths outside [min, max] are invalid
    max_depth: float = 4.0
    depth_weight: float = 2.0         # loss weights (colour in [0, 1] per channel, depth in m)
    alpha_weight: float = 0.2
    lr_means: float = 5e-4            # m per step
    lr_log_scales: float = 5e-3
    lr_quats: float = 1e-3
    lr_opacity: float = 5e-2
    lr_sh0: float = 1e-2
    prune_opacity: float = 0.02
    max_scale: float = 0.05           # m; larger Gaussians are pruned (floaters, smears)
    ignore_labels: tuple = (ROBOT,)   # moving parts not mapped (the robot itself)
    min_object_pixels: int = 40       # fewer observed pixels: object pose not updated
    max_track_rmse: float = 0.005     # m; worse alignments are not applied
    min_track_inliers: float = 0.7    # fraction of observed points the moved model explains
    max_track_motion: float = 0.1     # m between integrated frames; more is a mismatch
    track_min_motion: float = 0.002   # m; smaller motions are treated as noise


@dataclass
class Frame:
    """One posed RGB-D frame.

    rgb (H, W, 3) uint8 or float in [0, 1]; depth (H, W) float metres (NaN/0 = invalid);
    K (3, 3) pinhole (OpenCV convention); cam_to_world (4, 4); instances (H, W) int ids or None.
    """
    rgb: torch.Tensor
    depth: torch.Tensor
    K: torch.Tensor
    cam_to_world: torch.Tensor
    instances: torch.Tensor | None = None
    stamp: float = 0.0


@dataclass
class ObjectRecord:
    id: int
    pose: torch.Tensor          # (4, 4) object frame in world: centre of its box, axes
    half_extent: torch.Tensor   # (3,) m, along the object's axes
    last_seen: float
    num_gaussians: int = 0
    # Observed surface points (world, moved with the object): a dense model to track against.
    surface: torch.Tensor | None = None


@dataclass
class IntegrationStats:
    added: int
    pruned: int
    num_gaussians: int
    loss: float
    seconds: float
    tracked: dict = field(default_factory=dict)  # object id -> applied motion [m]


def render_K(K: torch.Tensor) -> torch.Tensor:
    """OpenCV intrinsics -> the renderer's (pixel centres at +0.5, as gsplat uses)."""
    out = K.clone()
    out[..., 0, 2] += 0.5
    out[..., 1, 2] += 0.5
    return out


def backproject(depth: torch.Tensor, K: torch.Tensor, cam_to_world: torch.Tensor,
                pixels: torch.Tensor) -> torch.Tensor:
    """World points (P, 3) of pixels (P, 2) as (row, col) with their depths."""
    z = depth[pixels[:, 0], pixels[:, 1]]
    x = (pixels[:, 1].to(z.dtype) - K[0, 2]) / K[0, 0] * z
    y = (pixels[:, 0].to(z.dtype) - K[1, 2]) / K[1, 1] * z
    cam = torch.stack([x, y, z], dim=-1)
    return cam @ cam_to_world[:3, :3].T + cam_to_world[:3, 3]


def _quat_from_matrix(R: torch.Tensor) -> torch.Tensor:
    """(w, x, y, z) of a rotation matrix (3, 3)."""
    m = R
    t = m.trace()
    if t > 0:
        s = torch.sqrt(t + 1.0) * 2
        q = torch.stack([0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s,
                         (m[1, 0] - m[0, 1]) / s])
    else:
        i = int(torch.argmax(torch.diagonal(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = torch.sqrt(1.0 + m[i, i] - m[j, j] - m[k, k]) * 2
        q = torch.empty(4, dtype=m.dtype, device=m.device)
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    return q / q.norm()


def _quat_multiply(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Hamilton product of (..., 4) wxyz quaternions."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack([aw * bw - ax * bx - ay * by - az * bz,
                        aw * bx + ax * bw + ay * bz - az * by,
                        aw * by - ax * bz + ay * bw + az * bx,
                        aw * bz + ax * by - ay * bx + az * bw], dim=-1)


def transform_gaussians(g: Gaussians, index: torch.Tensor, motion: torch.Tensor) -> Gaussians:
    """Copy of g with the Gaussians at index moved rigidly by motion (4, 4)."""
    means, quats = g.means.clone(), g.quats.clone()
    means[index] = g.means[index] @ motion[:3, :3].T + motion[:3, 3]
    quats[index] = _quat_multiply(_quat_from_matrix(motion[:3, :3]).expand_as(quats[index]),
                                  g.quats[index])
    return Gaussians(means, quats, g.log_scales, g.opacity_logits, g.sh0, g.labels)


def _merge_surface(surface, points, voxel: float = 0.003, cap: int = 4000) -> torch.Tensor:
    """Union of two point sets thinned to one point per voxel (and at most cap points)."""
    merged = points if surface is None else torch.cat([surface, points])
    keys = torch.floor(merged / voxel).long()
    _, first = torch.unique(keys, dim=0, return_inverse=True)
    keep = torch.zeros(int(first.max()) + 1, dtype=torch.long, device=merged.device)
    keep.scatter_(0, first, torch.arange(len(first), device=merged.device))
    merged = merged[keep]
    if len(merged) > cap:
        merged = merged[torch.randperm(len(merged), device=merged.device)[:cap]]
    return merged


class SceneMemory:
    """A persistent Gaussian map of the scene with labelled objects."""

    def __init__(self, config: MappingConfig | None = None, device="cpu"):
        self.config = config or MappingConfig()
        self.device = torch.device(device)
        self.gaussians = Gaussians.empty(self.device)
        self.objects: dict[int, ObjectRecord] = {}
        self.keyframes: list[dict] = []
        self.frames_integrated = 0

    # ---- state ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.gaussians)

    def memory_bytes(self) -> int:
        """Parameters plus the optimiser's two moment buffers per parameter."""
        params = sum(getattr(self.gaussians, p).numel() for p in PARAMETERS)
        return self.gaussians.nbytes() + 2 * 4 * params

    def reset(self, object_ids=None) -> None:
        """Forget everything, or only the given objects (their Gaussians and records)."""
        if not object_ids:
            self.gaussians = Gaussians.empty(self.device)
            self.objects.clear()
            self.keyframes.clear()
            return
        ids = torch.tensor(sorted(object_ids), device=self.device)
        self.gaussians = self.gaussians.select(~torch.isin(self.gaussians.labels, ids))
        for i in object_ids:
            self.objects.pop(int(i), None)

    def set_gaussians(self, gaussians: Gaussians) -> None:
        """Replace the map (e.g. loaded from a file); objects are rebuilt from the labels."""
        self.gaussians = gaussians.to(self.device)
        self.objects.clear()
        self.keyframes.clear()
        for label in self.gaussians.labels.unique().tolist():
            if label not in (BACKGROUND, ROBOT):
                self._new_object(int(label), stamp=0.0)

    # ---- rendering ---------------------------------------------------------------------------
    def render(self, viewmats: torch.Tensor, Ks: torch.Tensor, width: int, height: int,
               object_poses: dict | None = None, gaussians: Gaussians | None = None):
        """Render C cameras: viewmats (C, 4, 4) world-to-camera, Ks (C, 3, 3) OpenCV.

        object_poses: {object id: (4, 4) world pose} renders those objects moved there.
        Returns the renderer's output (rgb (C, H, W, 3), depth (C, H, W), alpha (C, H, W)).
        """
        g = self.gaussians if gaussians is None else gaussians
        for oid, pose in (object_poses or {}).items():
            if int(oid) not in self.objects:
                raise KeyError(f"unknown object id {oid}")
            record = self.objects[int(oid)]
            motion = pose.to(self.device, torch.float32) @ torch.linalg.inv(record.pose)
            g = transform_gaussians(g, g.labels == int(oid), motion)
        return render_gaussians(g, viewmats.to(self.device), render_K(Ks.to(self.device)),
                                width, height)

    # ---- integration -------------------------------------------------------------------------
    def integrate(self, frame: Frame) -> IntegrationStats:
        start = time.perf_counter()
        cfg = self.config
        rgb, depth, valid, labels = self._prepare(frame)
        K = frame.K.to(self.device, torch.float32)
        c2w = frame.cam_to_world.to(self.device, torch.float32)
        tracked = self._track_objects(depth, valid, labels, K, c2w, frame.stamp)
        added = self._seed(rgb, depth, valid, labels, K, c2w, frame.stamp)
        view = {"rgb": rgb, "depth": depth, "valid": valid, "labels": labels,
                "mapped": ~self._ignored(labels), "K": K, "c2w": c2w}
        loss = self._optimise(view)
        pruned = self._prune()
        self._update_keyframes(view)
        self._refresh_objects()
        self.frames_integrated += 1
        return IntegrationStats(added, pruned, len(self), loss, time.perf_counter() - start,
                                tracked)

    def _prepare(self, frame: Frame):
        cfg = self.config
        rgb = frame.rgb.to(self.device)
        rgb = rgb.float() / 255.0 if rgb.dtype == torch.uint8 else rgb.float()
        depth = frame.depth.to(self.device, torch.float32)
        h, w = depth.shape
        if rgb.shape != (h, w, 3):
            raise ValueError(f"colour image {tuple(rgb.shape)} does not match depth {(h, w)}")
        if frame.instances is not None and tuple(frame.instances.shape) != (h, w):
            raise ValueError(f"instance mask {tuple(frame.instances.shape)} does not match "
                             f"depth {(h, w)}")
        for name, m, shape in [("K", frame.K, (3, 3)), ("pose", frame.cam_to_world, (4, 4))]:
            if tuple(m.shape) != shape or not torch.isfinite(m).all():
                raise ValueError(f"{name} must be a finite {shape} matrix")
        valid = torch.isfinite(depth) & (depth > cfg.min_depth) & (depth < cfg.max_depth)
        depth = torch.where(valid, depth, torch.zeros_like(depth))
        labels = torch.zeros((h, w), dtype=torch.int64, device=self.device) \
            if frame.instances is None else frame.instances.to(self.device).long()
        return rgb, depth, valid, labels

    def _ignored(self, labels: torch.Tensor) -> torch.Tensor:
        ignore = torch.tensor(self.config.ignore_labels, device=self.device, dtype=torch.int64)
        return torch.isin(labels, ignore)

    def _track_objects(self, depth, valid, labels, K, c2w, stamp) -> dict:
        cfg = self.config
        moved = {}
        for oid, record in self.objects.items():
            pixels = torch.nonzero((labels == oid) & valid)
            in_memory = self.gaussians.labels == oid
            if pixels.shape[0] < cfg.min_object_pixels or in_memory.sum() < 10:
                continue
            observed = backproject(depth, K, c2w, pixels)
            if observed.shape[0] > 2000:  # ICP cost; 2000 points pin a pose to a millimetre
                observed = observed[torch.randperm(observed.shape[0],
                                                   device=self.device)[:2000]]
            model = self.gaussians.means[in_memory]
            if record.surface is not None:
                model = torch.cat([record.surface, model])
            motion, rmse, inliers = align_to_model(observed, model)
            record.last_seen = stamp
            centre = model.mean(0)
            shift = float((motion[:3, :3] @ centre + motion[:3, 3] - centre).norm())
            angle = float(torch.arccos(((motion[:3, :3].trace() - 1) / 2).clamp(-1, 1)))
            if rmse > cfg.max_track_rmse or inliers < cfg.min_track_inliers \
                    or shift > cfg.max_track_motion or \
                    (shift < cfg.track_min_motion and angle < 0.01):
                record.surface = _merge_surface(record.surface, observed)
                continue
            self.gaussians = transform_gaussians(self.gaussians, in_memory, motion)
            record.surface = _merge_surface(
                record.surface @ motion[:3, :3].T + motion[:3, 3], observed)
            record.pose = motion @ record.pose
            moved[oid] = shift
            # Keyframes showing the object where it was would pull it back.
            self.keyframes = [kf for kf in self.keyframes if not (kf["labels"] == oid).any()]
        return moved

    def _seed(self, rgb, depth, valid, labels, K, c2w, stamp) -> int:
        cfg = self.config
        h, w = depth.shape
        candidates = valid & ~self._ignored(labels)
        # Objects are seeded at every pixel (they are small and must be tracked), the
        # background on a grid.
        grid = torch.zeros_like(candidates)
        grid[cfg.seed_stride // 2::cfg.seed_stride, cfg.seed_stride // 2::cfg.seed_stride] = True
        candidates &= grid | (labels != BACKGROUND)
        if len(self) > 0:
            with torch.no_grad():
                out = self.render(torch.linalg.inv(c2w)[None], K[None], w, h)
            alpha, rendered = out.alpha[0], out.depth[0]
            unexplained = (alpha < cfg.seed_alpha) | \
                (depth < rendered - cfg.seed_depth_margin)
            candidates &= unexplained
        pixels = torch.nonzero(candidates)
        if pixels.shape[0] == 0:
            return 0
        points = backproject(depth, K, c2w, pixels)
        z = depth[pixels[:, 0], pixels[:, 1]]
        stride = torch.where(labels[pixels[:, 0], pixels[:, 1]] == BACKGROUND,
                             float(cfg.seed_stride), 1.0)
        spacing = stride * z / K[0, 0]
        n = pixels.shape[0]
        colors = rgb[pixels[:, 0], pixels[:, 1]]
        new = Gaussians(
            means=points,
            quats=torch.tensor([1.0, 0.0, 0.0, 0.0], device=self.device).repeat(n, 1),
            log_scales=torch.log(0.6 * spacing)[:, None].repeat(1, 3),
            opacity_logits=torch.full((n,), math.log(cfg.seed_opacity / (1 - cfg.seed_opacity)),
                                      device=self.device),
            sh0=(colors - 0.5) / SH_C0,
            labels=labels[pixels[:, 0], pixels[:, 1]])
        self.gaussians = self.gaussians.cat(new)
        for oid in new.labels.unique().tolist():
            if oid != BACKGROUND and oid not in self.objects:
                self._new_object(int(oid), stamp)
        return n

    def _optimise(self, current: dict) -> float:
        cfg = self.config
        if len(self) == 0 or cfg.iterations == 0:
            return 0.0
        params = {p: getattr(self.gaussians, p).detach().clone().requires_grad_(True)
                  for p in PARAMETERS}
        optim = torch.optim.Adam([
            {"params": [params["means"]], "lr": cfg.lr_means},
            {"params": [params["log_scales"]], "lr": cfg.lr_log_scales},
            {"params": [params["quats"]], "lr": cfg.lr_quats},
            {"params": [params["opacity_logits"]], "lr": cfg.lr_opacity},
            {"params": [params["sh0"]], "lr": cfg.lr_sh0}])
        views = [current] + self.keyframes
        loss_value = 0.0
        for it in range(cfg.iterations):
            # Half the steps on the current frame, the rest spread over the keyframes.
            view = views[0] if it % 2 == 0 or len(views) == 1 else \
                views[1 + (it // 2) % (len(views) - 1)]
            g = Gaussians(**params, labels=self.gaussians.labels)
            h, w = view["depth"].shape
            out = render_gaussians(g, torch.linalg.inv(view["c2w"])[None],
                                   render_K(view["K"])[None], w, h)
            mapped, valid = view["mapped"], view["valid"] & view["mapped"]
            color_loss = (out.rgb[0] - view["rgb"]).abs()[mapped].mean()
            depth_loss = (out.depth[0] - view["depth"]).abs()[valid].mean() if valid.any() \
                else out.depth.sum() * 0
            alpha_loss = (1 - out.alpha[0])[valid].mean() if valid.any() else out.alpha.sum() * 0
            loss = color_loss + cfg.depth_weight * depth_loss + cfg.alpha_weight * alpha_loss
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            loss_value = float(loss.detach())
        self.gaussians = Gaussians(**{p: t.detach() for p, t in params.items()},
                                   labels=self.gaussians.labels)
        return loss_value

    def _prune(self) -> int:
        cfg = self.config
        g = self.gaussians
        keep = (g.opacities > cfg.prune_opacity) & (g.scales.max(dim=1).values < cfg.max_scale)
        keep &= torch.isfinite(g.means).all(dim=1)
        keep &= ~self._stray_object_gaussians()
        # Caps: the most opaque Gaussians stay.
        per_gaussian = max(1, self.memory_bytes() // max(1, len(g)))
        cap = min(cfg.max_gaussians, int(cfg.max_memory_mb * 1e6) // per_gaussian)
        if int(keep.sum()) > cap:
            score = torch.where(keep, g.opacities, torch.full_like(g.opacities, -1.0))
            keep = torch.zeros_like(keep)
            keep[torch.topk(score, cap).indices] = True
        pruned = int((~keep).sum())
        if pruned:
            self.gaussians = g.select(keep)
        return pruned

    def _stray_object_gaussians(self, margin: float = 0.02) -> torch.Tensor:
        """Object Gaussians outside their object's robust box (plus margin): optimisation
        strays that would smear the object."""
        g = self.gaussians
        stray = torch.zeros(len(g), dtype=torch.bool, device=self.device)
        for oid, record in self.objects.items():
            members = g.labels == oid
            if record.num_gaussians < 4 or not members.any():
                continue
            local = (g.means[members] - record.pose[:3, 3]) @ record.pose[:3, :3]
            outside = (local.abs() > record.half_extent + margin).any(dim=1)
            stray[members] = outside
        return stray

    def _update_keyframes(self, view: dict) -> None:
        cfg = self.config
        c2w = view["c2w"]
        for kf in self.keyframes:
            rel = torch.linalg.inv(kf["c2w"]) @ c2w
            angle = torch.arccos(((rel[:3, :3].trace() - 1) / 2).clamp(-1, 1))
            if rel[:3, 3].norm() < cfg.keyframe_translation and angle < cfg.keyframe_rotation:
                return  # an existing keyframe already sees this
        self.keyframes.append(view)
        if len(self.keyframes) > cfg.keyframes:
            self.keyframes.pop(0)

    def _new_object(self, oid: int, stamp: float) -> None:
        pose = torch.eye(4, device=self.device)
        self.objects[oid] = ObjectRecord(oid, pose, torch.zeros(3, device=self.device), stamp)
        self._refresh_objects()

    def _refresh_objects(self) -> None:
        """Re-centre each object's frame on its Gaussians and update its extent.

        Robust bounds (2nd-98th percentile) keep a few stray Gaussians from inflating the box;
        moving the frame's origin (not its axes) is always consistent with the tracked motion.
        """
        g = self.gaussians
        for oid, record in self.objects.items():
            members = g.labels == oid
            record.num_gaussians = int(members.sum())
            if record.num_gaussians < 4:
                continue
            local = (g.means[members] - record.pose[:3, 3]) @ record.pose[:3, :3]
            lo = torch.quantile(local, 0.02, dim=0)
            hi = torch.quantile(local, 0.98, dim=0)
            record.pose[:3, 3] = record.pose[:3, 3] + record.pose[:3, :3] @ ((lo + hi) / 2)
            record.half_extent = (hi - lo) / 2
