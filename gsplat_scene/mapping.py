"""Online Gaussian-splat mapping from posed RGB-D frames, with objects that move.

`SceneMemory.integrate(frame)` does, per frame:
1. track each known object seen in the instance mask (trimmed ICP of its observed points to
   its Gaussians, then its Gaussians rendered against the silhouette and depth; objects the
   robot touches are refined by the rendering every frame) and move its Gaussians rigidly,
   so a moved object is neither duplicated nor smeared; objects out of view stay where they
   were last seen;
2. seed Gaussians where the map does not explain the frame (rendered alpha low, or the
   observed surface in front of the rendered one), back-projected from depth with a scale
   from the pixel spacing;
3. optimise means (the background's: objects are rigid), scales, rotations, opacities and
   colours against colour and depth over a window of keyframes plus the current frame, then
   split or clone the Gaussians the loss keeps pulling at;
4. prune transparent or oversized Gaussians and enforce the caps on count and memory.

Cameras use the ROS/OpenCV pinhole convention (pixel centres at integer coordinates, optical
frame x right, y down, z forward); poses are camera-to-world (4, 4) in metres.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from gsplat_scene.gaussians import (PARAMETERS, SH_C0, Gaussians, quat_from_matrix,
                                    quat_multiply)
from gsplat_scene.render import quat_to_rotmat, render_gaussians
from gsplat_scene.tracking import align_to_model, refine_pose

BACKGROUND = 0
ROBOT = 1
UNKNOWN = 2   # seen, not (yet) an object (gsplat_scene.segmentation): not mapped or tracked


@dataclass
class MappingConfig:
    max_gaussians: int = 300_000
    max_memory_mb: float = 1024.0     # parameters plus optimiser state
    keyframes: int = 8                # optimisation window (besides the current frame)
    keyframe_translation: float = 0.05  # m a camera moves before its frame is a new keyframe
    keyframe_rotation: float = 0.17   # rad, likewise
    iterations: int = 6               # optimisation steps per integrated frame
    views_per_step: int = 1           # views rendered together per step (current + keyframes)
    seed_stride: int = 2              # one new Gaussian per stride x stride pixels at most
    seed_alpha: float = 0.6           # pixels rendered less opaque than this get Gaussians
    seed_depth_margin: float = 0.03   # m an observed surface may lie in front of the map
    seed_opacity: float = 0.9
    min_depth: float = 0.05           # m; depths outside [min, max] are invalid
    max_depth: float = 4.0
    # World-frame box mapped ((xmin, ymin, zmin), (xmax, ymax, zmax)) [m], or None for all of
    # [min_depth, max_depth]. Surfaces outside are not mapped, and the map is kept empty along
    # the rays that pass through the box to them.
    bounds: tuple | None = None
    depth_weight: float = 2.0         # loss weights (colour in [0, 1] per channel, depth in m)
    alpha_weight: float = 0.2
    free_space_weight: float = 0.2    # opacity rendered in front of a surface outside the bounds
    lr_means: float = 5e-4            # m per step
    lr_log_scales: float = 5e-3
    lr_quats: float = 1e-3
    lr_opacity: float = 5e-2
    lr_sh0: float = 1e-2
    # Densification: Gaussians whose position gradient, averaged over a frame's steps, is
    # above densify_grad times the median of the Gaussians in view (the scale of the gradient
    # changes with the image size) are split (larger than densify_split_scale [m]) or cloned.
    densify_grad: float = 5.0
    densify_split_scale: float = 0.01
    densify_fraction: float = 0.01    # of the map, per frame at most
    # Objects are seeded at every pixel already; their Gaussians are pulled hardest when the
    # object has moved by less than tracking resolves, and clones made then smear the object
    # and walk its pose (its box is re-centred on its Gaussians).
    densify_objects: bool = False
    # Objects are rigid: their Gaussians move only with their tracked pose. Optimising their
    # positions (each Adam step moves a Gaussian by about lr_means) drags an object towards
    # where it is seen by millimetres a frame, non-rigidly, below what tracking detects.
    optimise_object_means: bool = False
    prune_opacity: float = 0.02
    max_scale: float = 0.05           # m; larger Gaussians are pruned (floaters, smears)
    ignore_labels: tuple = (ROBOT, UNKNOWN)   # not mapped: the robot itself, the unsure
    min_object_pixels: int = 40       # fewer observed pixels: object pose not updated
    max_track_rmse: float = 0.005     # m (or 1.5 pixel footprints); worse fits are not applied
    min_track_inliers: float = 0.7    # fraction of observed points the moved model explains
    # m between integrated frames; more is a mismatch. A push the hand hides can carry an
    # object well beyond what the camera would see it move between two frames.
    max_track_motion: float = 0.25
    track_min_motion: float = 0.002   # m (or a pixel footprint); smaller motions are noise
    # An object is in place (not re-aligned) while this fraction of its observed interior
    # pixels has a rendered depth within track_depth_tolerance of the measured one.
    track_agreement: float = 0.9
    track_depth_tolerance: float = 0.01  # m
    # An object's frame is re-centred on its Gaussians' box only when the box centre has
    # moved this far from it: Gaussians added and pruned at rest shift the box by a
    # millimetre at a time, which would read as motion.
    recentre_distance: float = 0.005  # m
    # Until an object first moves, its frame is turned about world z to the smallest box
    # around its Gaussians' footprint (searched in steps of align_yaw_step) when that box is
    # align_yaw_gain smaller than the current one: a cube turned on the table reads as
    # turned, at its true size. Only boxy footprints, whose largest box over all turns is
    # align_yaw_boxiness times their smallest (a square's: 2, less when seen partly; a
    # disc's: 1, a little more when seen from one side), so round objects keep their frame.
    align_yaw_step: float = 0.035     # rad
    align_yaw_gain: float = 0.1
    align_yaw_boxiness: float = 1.33
    # Objects the robot touches in the image (its mask within touch_pixels of theirs, at a
    # depth within touch_depth [m] of theirs: an arm passing in front of an object does not
    # touch it) and
    # those that moved within the last settle_frames frames are refined every frame by the
    # render alignment alone, which resolves motions below the depth test's tolerance; such
    # a refinement is applied when it lowers the alignment loss by refine_gain. Only while
    # the camera stays within refine_camera_motion [m, and rad] of where it last saw the
    # object: from a new viewpoint an object shows sides its model lacks, and aligning an
    # incomplete model to them would move it.
    touch_pixels: int = 3
    touch_depth: float = 0.05
    refine_camera_motion: float = 0.01
    settle_frames: int = 5
    refine_gain: float = 0.15
    refine_min_motion: float = 0.001  # m (or 0.005 rad)
    # From a new viewpoint, an object is re-aligned only if the camera sees through where the
    # memory has it (it has left) over this share of the model's footprint in the image; from
    # a camera's first view of it, over the larger share: the model's rim, seeded from other
    # viewpoints, spills a few pixels past the object's outline there, and re-aligning to a
    # side the model lacks turned and shifted a standing can.
    vacated_share: float = 0.05
    vacated_share_first_view: float = 0.25


@dataclass
class Frame:
    """One posed RGB-D frame.

    rgb (H, W, 3) uint8 or float in [0, 1]; depth (H, W) float metres (NaN/0 = invalid);
    K (3, 3) pinhole (OpenCV convention); cam_to_world (4, 4); instances (H, W) int ids or None.
    camera names the camera it came from (e.g. its topic namespace): with several cameras,
    each camera's view of an object is compared with that same camera's earlier views.
    """
    rgb: torch.Tensor
    depth: torch.Tensor
    K: torch.Tensor
    cam_to_world: torch.Tensor
    instances: torch.Tensor | None = None
    stamp: float = 0.0
    camera: str = ""


@dataclass
class ObjectRecord:
    id: int
    pose: torch.Tensor          # (4, 4) object frame in world: centre of its box, axes
    half_extent: torch.Tensor   # (3,) m, along the object's axes
    last_seen: float
    num_gaussians: int = 0
    # Observed surface points (world, moved with the object): a dense model to track against.
    surface: torch.Tensor | None = None
    # Fraction of its observed pixels the map rendered at the measured depth when the object
    # was last found in place: objects the map shows poorly (hollow, thin) are re-aligned
    # only when the agreement drops below this, not on every frame.
    agreement: float = 1.0
    settling: int = 0           # frames left of refinement after the last motion
    # Camera name -> (4, 4) pose of that camera when it last saw the object.
    seen_from: dict = field(default_factory=dict)
    moved: bool = False         # tracked at least once: its axes follow the motion since
    # World points where frames saw it in place before it first moved: a view that the map
    # already explains (adds no Gaussian to) may show more of its footprint than the
    # Gaussians seeded from another side, and it is this footprint its frame is turned to.
    footprint: torch.Tensor | None = None
    # Camera name -> share of its Gaussians that camera's latest frame shows as the object.
    visible_in: dict = field(default_factory=dict)

    @property
    def visible(self) -> float:
        """Share of the object the latest frames show (the best camera's): below 1 where
        something (the robot's hand) hides it or it is out of view, and its pose may be
        stale."""
        return max(self.visible_in.values(), default=0.0)


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


def point_map(depth: torch.Tensor, K: torch.Tensor, cam_to_world: torch.Tensor) -> torch.Tensor:
    """World points (H, W, 3) of every pixel at its depth."""
    h, w = depth.shape
    rows = torch.arange(h, device=depth.device, dtype=depth.dtype)[:, None].expand(h, w)
    cols = torch.arange(w, device=depth.device, dtype=depth.dtype)[None, :].expand(h, w)
    cam = torch.stack([(cols - K[0, 2]) / K[0, 0] * depth, (rows - K[1, 2]) / K[1, 1] * depth,
                       depth], dim=-1)
    return cam @ cam_to_world[:3, :3].T + cam_to_world[:3, 3]


def surface_normals(points: torch.Tensor, valid: torch.Tensor, footprint: torch.Tensor,
                    max_slant: float = 4.0):
    """Unit normals (H, W, 3) from central differences of a point map, z >= 0 (a flat
    Gaussian's axis has no sign); NaN where a neighbour is invalid or across a depth edge
    (neighbours farther apart than max_slant times the pixel footprint (H, W) [m])."""
    dx = points[1:-1, 2:] - points[1:-1, :-2]
    dy = points[2:, 1:-1] - points[:-2, 1:-1]
    ok = valid[1:-1, 2:] & valid[1:-1, :-2] & valid[2:, 1:-1] & valid[:-2, 1:-1]
    jump = 2 * max_slant * footprint[1:-1, 1:-1]
    ok &= (dx.norm(dim=-1) < jump) & (dy.norm(dim=-1) < jump)
    n = F.normalize(torch.cross(dx, dy, dim=-1), dim=-1)
    n = torch.where(n[..., 2:] < 0, -n, n)
    out = torch.full_like(points, math.nan)
    out[1:-1, 1:-1] = torch.where(ok[..., None], n, math.nan)
    return out


def quats_aligning_z(normals: torch.Tensor) -> torch.Tensor:
    """(N, 4) wxyz rotations taking the z axis to unit normals (N, 3) with z >= 0."""
    q = torch.stack([1 + normals[:, 2], -normals[:, 1], normals[:, 0],
                     torch.zeros_like(normals[:, 0])], dim=-1)
    return F.normalize(q, dim=-1)


def transform_gaussians(g: Gaussians, index: torch.Tensor, motion: torch.Tensor) -> Gaussians:
    """Copy of g with the Gaussians at index moved rigidly by motion (4, 4)."""
    means, quats = g.means.clone(), g.quats.clone()
    means[index] = g.means[index] @ motion[:3, :3].T + motion[:3, 3]
    quats[index] = quat_multiply(quat_from_matrix(motion[:3, :3]).expand_as(quats[index]),
                                  g.quats[index])
    return Gaussians(means, quats, g.log_scales, g.opacity_logits, g.sh0, g.labels)


def evenly(n: int, k: int, device) -> torch.Tensor:
    """k indices spread evenly over range(n): a deterministic subsample (results must not
    depend on the random state a caller left behind)."""
    return torch.linspace(0, n - 1, k, device=device).long()


def robot_touches(masks: torch.Tensor, robot: torch.Tensor, depth: torch.Tensor,
                  valid: torch.Tensor, pixels: int, depth_tolerance: float) -> torch.Tensor:
    """(N,) bool: the robot touches each object in the image, i.e. some of its pixels lie
    within `pixels` of the object's mask at a depth within `depth_tolerance` [m] of the
    object's depth range. masks (N, H, W) bool; robot, valid (H, W) bool; depth (H, W) m.
    An arm passing between the camera and an object borders its mask but does not touch it.
    """
    seen = masks & valid
    near = F.max_pool2d(masks.float()[None], 2 * pixels + 1, 1, pixels)[0] > 0
    near &= (robot & valid)[None]
    inf = torch.tensor(float("inf"), device=depth.device)
    nearest = torch.where(seen, depth, inf).amin(dim=(1, 2))[:, None, None]
    farthest = torch.where(seen, depth, -inf).amax(dim=(1, 2))[:, None, None]
    at_depth = (depth >= nearest - depth_tolerance) & (depth <= farthest + depth_tolerance)
    return (near & at_depth).any(dim=(1, 2))


def _rotation_angle(rotation: torch.Tensor) -> float:
    """Angle [rad] of a rotation matrix (3, 3)."""
    return float(torch.arccos(((rotation.trace() - 1) / 2).clamp(-1, 1)))


def _motion_size(motion: torch.Tensor, centre: torch.Tensor) -> tuple[float, float]:
    """(how far centre (3,) moves [m], rotation angle [rad]) under motion (4, 4)."""
    shift = float((motion[:3, :3] @ centre + motion[:3, 3] - centre).norm())
    return shift, _rotation_angle(motion[:3, :3])


def _camera_still(before: torch.Tensor | None, now: torch.Tensor, limit: float) -> bool:
    """The camera (4, 4) moved less than limit [m] and turned less than limit [rad]."""
    if before is None:
        return False
    shift, angle = _motion_size(now @ torch.linalg.inv(before), before[:3, 3])
    return shift < limit and angle < limit


def _interior(labels: torch.Tensor) -> torch.Tensor:
    """bool (H, W): pixels whose four neighbours carry the same label (mask edges, where
    rendered depth blends object and background, are left out)."""
    same = torch.ones_like(labels, dtype=torch.bool)
    vertical, horizontal = labels[1:] == labels[:-1], labels[:, 1:] == labels[:, :-1]
    same[1:] &= vertical
    same[:-1] &= vertical
    same[:, 1:] &= horizontal
    same[:, :-1] &= horizontal
    return same


def _merge_surface(surface, points, voxel: float = 0.003, cap: int = 4000) -> torch.Tensor:
    """Union of two point sets thinned to one point per voxel (and at most cap points)."""
    merged = points if surface is None else torch.cat([surface, points])
    keys = torch.floor(merged / voxel).long()
    _, first = torch.unique(keys, dim=0, return_inverse=True)
    keep = torch.zeros(int(first.max()) + 1, dtype=torch.long, device=merged.device)
    keep.scatter_(0, first, torch.arange(len(first), device=merged.device))
    merged = merged[keep]
    if len(merged) > cap:
        merged = merged[evenly(len(merged), cap, merged.device)]
    return merged


class Adam:
    """Adam with one learning rate per tensor, in a handful of multi-tensor kernels: the
    mapper takes a few steps per frame, where torch.optim's per-group overhead dominates."""

    def __init__(self, params: list, lrs: list, betas=(0.9, 0.999), eps: float = 1e-8):
        self.params, self.lrs, self.betas, self.eps = params, lrs, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.steps = 0

    @torch.no_grad()
    def step(self, grads) -> None:
        b1, b2 = self.betas
        self.steps += 1
        torch._foreach_lerp_(self.m, list(grads), 1 - b1)
        torch._foreach_mul_(self.v, b2)
        torch._foreach_addcmul_(self.v, grads, grads, 1 - b2)
        denom = torch._foreach_sqrt(self.v)
        torch._foreach_div_(denom, math.sqrt(1 - b2 ** self.steps))
        torch._foreach_add_(denom, self.eps)
        scale = 1 - b1 ** self.steps
        torch._foreach_addcdiv_(self.params, self.m, denom, [-lr / scale for lr in self.lrs])


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
            if label != BACKGROUND and label not in self.config.ignore_labels:
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

    def object_colours(self) -> dict[int, torch.Tensor]:
        """Mean colour (3,) in [0, 1] of each object's Gaussians (objects with none left out):
        an appearance feature for the world model."""
        g = self.gaussians
        out = {}
        for oid in self.objects:
            members = g.labels == oid
            if bool(members.any()):
                out[oid] = g.colors[members].mean(0).detach()
        return out

    # ---- integration -------------------------------------------------------------------------
    def integrate(self, frame: Frame) -> IntegrationStats:
        """Take in one frame: `track`, then `refine`."""
        return self.refine(self.track(frame))

    def track(self, frame: Frame) -> dict:
        """Bring the objects up to date with a frame: re-align those that moved, and seed
        Gaussians where the map does not explain it. What every frame needs; the map's
        optimisation (`refine`) may follow or be skipped, as a mapper behind its camera does.
        Returns the frame's view for `refine`.
        """
        start = time.perf_counter()
        rgb, depth, valid, labels = self._prepare(frame)
        K = frame.K.to(self.device, torch.float32)
        c2w = frame.cam_to_world.to(self.device, torch.float32)
        points = point_map(depth, K, c2w)
        inside = self._in_bounds(points)
        seen = valid & ~self._ignored(labels)
        valid &= inside
        h, w = depth.shape
        rendered = self._render_depth(K, c2w, w, h)
        tracked, unsettled = self._track_objects(points, depth, valid, labels, rendered, K,
                                                 c2w, frame.stamp, frame.camera)
        if tracked:
            rendered = self._render_depth(K, c2w, w, h)  # the map has changed
        if rendered is not None:
            self._add_footprints(points, valid & self._explained(depth, K[0, 0], rendered),
                                 labels)
        # Seeds need the object's pose right to a seed's spacing. A glimpse (too little to
        # track) may show the object where it has moved to, and a handled one is tracked a
        # step behind or ahead: Gaussians seeded there would smear it along its path, and
        # aligning the smeared model walks its pose (a lifted cube climbed out of the hand).
        valid &= ~torch.isin(labels, torch.tensor(sorted(unsettled), dtype=labels.dtype,
                                                  device=self.device))
        added = self._seed(rgb, depth, points, valid, labels, K, c2w, frame.stamp, rendered)
        self._update_visibility(labels, K, c2w, frame.camera)
        self._refresh_objects()
        self.frames_integrated += 1
        view = self._training_view(rgb, depth, seen & inside, seen & ~inside, labels, K, c2w)
        view["stats"] = IntegrationStats(added, 0, len(self), 0.0, time.perf_counter() - start,
                                         tracked)
        return view

    def refine(self, view: dict, stop=None) -> IntegrationStats:
        """Optimise the map against a tracked frame's view and the keyframe window, densify
        and prune, and keep the view as a keyframe where it shows something new. stop: a
        callable; when it returns True the optimisation ends early (after one step), e.g.
        because a newer frame waits to be tracked."""
        start = time.perf_counter()
        loss, mean_grad = self._optimise(view, stop)
        added = self._densify(mean_grad)
        pruned = self._prune()
        self._update_keyframes(view)
        self._refresh_objects()
        tracked = view["stats"]
        return IntegrationStats(tracked.added + added, pruned, len(self), loss,
                                tracked.seconds + time.perf_counter() - start, tracked.tracked)

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

    def _in_bounds(self, points: torch.Tensor) -> torch.Tensor:
        """bool (...,): points (..., 3) lie inside the mapped bounds."""
        if self.config.bounds is None:
            return torch.ones(points.shape[:-1], dtype=torch.bool, device=points.device)
        lo, hi = (torch.tensor(b, dtype=torch.float32, device=self.device)
                  for b in self.config.bounds)
        return ((points >= lo) & (points <= hi)).all(dim=-1)

    def _training_view(self, rgb, depth, mapped, outside, labels, K, c2w) -> dict:
        """What the optimiser needs of a frame, prepared once (masks as weights, so the loss
        needs no data-dependent indexing, and the pose also on the CPU for keyframe tests)."""
        return {"rgb": rgb, "depth": depth, "mapped": mapped.float(),
                "n_mapped": int(mapped.sum()), "outside": outside.float(),
                "objects": set(labels.unique().tolist()),
                "viewmat": torch.linalg.inv(c2w), "K": render_K(K), "pose": c2w.cpu()}

    def _ignored(self, labels: torch.Tensor) -> torch.Tensor:
        ignore = torch.tensor(self.config.ignore_labels, device=self.device, dtype=torch.int64)
        return torch.isin(labels, ignore)

    @torch.no_grad()
    def _render_depth(self, K, c2w, width, height, gaussians: Gaussians | None = None):
        """(alpha (H, W), depth (H, W)) of the map (or of gaussians) seen by the frame's
        camera, or None while the map is empty."""
        g = self.gaussians if gaussians is None else gaussians
        if len(g) == 0:
            return None
        out = self.render(torch.linalg.inv(c2w)[None], K[None], width, height, gaussians=g)
        return out.alpha[0], out.depth[0]

    def _explained(self, depth, fx, rendered) -> torch.Tensor:
        """(H, W) pixels the map renders (alpha, depth) at the measured depth."""
        alpha, drawn = rendered
        # Plus two pixel footprints: curved and slanted surfaces change depth across a pixel.
        tolerance = self.config.track_depth_tolerance + 2 * depth / fx
        return (alpha > 0.5) & ((drawn - depth).abs() < tolerance)

    def _agreement(self, masks, interior, depth, fx, rendered) -> torch.Tensor:
        """(L, 2) per object mask (L, H, W): observed interior pixels, and how many of them
        the map renders at the measured depth (one pass over the image for all objects)."""
        agree = self._explained(depth, fx, rendered)
        inner = masks & interior
        return torch.stack([inner.sum((1, 2)), (inner & agree).sum((1, 2))], dim=1)

    def _track_objects(self, points, depth, valid, labels, rendered, K, c2w,
                       stamp, camera) -> tuple[dict, set]:
        """Re-align each seen object that the map no longer renders where it is observed.
        Returns ({id: motion [m]} of the objects moved, the ids of objects whose pose is
        unsettled: glimpsed (seen at fewer than min_object_pixels pixels, too few to track),
        touched by the robot, or moved in this frame or the settle_frames before).

        The cheap test (rendered vs measured depth inside the object's mask, against
        track_agreement or the object's own last in-place agreement) keeps static objects
        exactly still. A moved object is aligned by ICP of its observed points to its model,
        then refined by rendering it against the observed silhouette and depth (a flat face
        leaves ICP free to turn); the motion is applied only if the moved map agrees clearly
        better with the frame. An object the test finds in place while the robot touches it
        or just after it moved gets the render refinement alone (see touch_pixels).
        """
        cfg = self.config
        if rendered is None or not self.objects:
            return {}, set()
        ids = torch.tensor(list(self.objects), device=self.device)
        interior = _interior(labels) & valid
        masks = labels[None] == ids[:, None, None]
        touched = robot_touches(masks, labels == ROBOT, depth, valid, cfg.touch_pixels,
                                cfg.touch_depth)
        seen = (masks & valid).sum((1, 2))
        counts = torch.cat([seen[:, None], self._agreement(masks, interior, depth, K[0, 0],
                                                           rendered)], dim=1).tolist()
        moved, unsettled = {}, set()
        for mask, oid, (n_seen, n_inner, n_agree), touch in zip(masks, self.objects, counts,
                                                                touched.tolist()):
            record = self.objects[oid]
            if touch or record.settling > 0 or 0 < n_seen < cfg.min_object_pixels:
                unsettled.add(oid)
            if n_seen < cfg.min_object_pixels:
                continue
            record.last_seen = stamp
            agreement = n_agree / max(n_inner, 1)
            in_place = min(cfg.track_agreement, record.agreement - 0.1)
            first_view = camera not in record.seen_from
            still = _camera_still(record.seen_from.get(camera), c2w, cfg.refine_camera_motion)
            settling = (touch or record.settling > 0) and still
            record.settling = max(0, record.settling - 1)
            record.seen_from[camera] = c2w
            if n_inner == 0 or (agreement >= in_place and not settling):
                continue  # the map shows the object where it is
            in_memory = self.gaussians.labels == oid
            if int(in_memory.sum()) < 10:
                continue
            observed = points[mask & valid]
            if observed.shape[0] > 1000:  # ICP cost; 1000 points pin a pose to a millimetre
                observed = observed[evenly(observed.shape[0], 1000, self.device)]
            args = dict(depth=depth, mask=mask & valid, visible=mask | (labels == BACKGROUND),
                        K=render_K(K), viewmat=torch.linalg.inv(c2w))
            if agreement >= in_place:
                found = self._refinement(in_memory, args)
            elif still or self._vacated(in_memory, mask, depth, valid, K, c2w,
                                        cfg.vacated_share_first_view if first_view
                                        else cfg.vacated_share):
                found = self._realignment(record, in_memory, observed, n_agree, in_place,
                                          interior, K, c2w, args)
            else:
                found = None  # a new side of the object, not a motion
            if found is None:
                if agreement < in_place:
                    record.agreement = agreement  # in place, as well as the map can show it
                continue
            moved[oid] = self._move_object(record, in_memory, *found, observed)
            unsettled.add(oid)
        return moved, unsettled

    def _update_visibility(self, labels, K, c2w, camera: str) -> None:
        """Each object's `visible_in[camera]`: the share of its Gaussians' centres that
        project into the frame onto its own mask (within a pixel: centres on the rim fall
        just outside)."""
        if not self.objects:
            return
        h, w = labels.shape
        members, slot, _ = self._object_members()
        ids = torch.tensor(sorted(self.objects), device=self.device)
        masks = F.max_pool2d((labels[None] == ids[:, None, None]).float()[None], 3, 1, 1)[0] > 0
        cam = (self.gaussians.means[members] - c2w[:3, 3]) @ c2w[:3, :3]
        z = cam[:, 2].clamp_min(1e-6)
        col = (cam[:, 0] / z * K[0, 0] + K[0, 2]).round().long()
        row = (cam[:, 1] / z * K[1, 1] + K[1, 2]).round().long()
        inside = (cam[:, 2] > 0) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
        shown = inside & masks[slot, row.clamp(0, h - 1), col.clamp(0, w - 1)]
        counts = torch.bincount(slot, minlength=len(ids))
        hits = torch.bincount(slot, weights=shown.float(), minlength=len(ids))
        for oid, n, hit in zip(ids.tolist(), counts.tolist(), hits.tolist()):
            self.objects[oid].visible_in[camera] = hit / n if n else 0.0

    def _vacated(self, in_memory, mask, depth, valid, K, c2w, share: float) -> bool:
        """The camera sees through where the memory has the object (beyond a pixel from
        where it is observed, over `share` of the model's footprint): it has left. A new
        viewpoint alone also lowers the depth agreement, with sides the model lacks, but
        leaves the model's own pixels occupied."""
        h, w = depth.shape
        alpha, drawn = self._render_depth(K, c2w, w, h, self.gaussians.select(in_memory))
        footprint = alpha > 0.5
        near = F.max_pool2d(mask.float()[None, None], 3, 1, 1)[0, 0] > 0
        tolerance = self.config.track_depth_tolerance + 2 * depth / K[0, 0]
        behind = footprint & ~near & valid & (depth > drawn + tolerance)
        return int(behind.sum()) >= max(3, share * int(footprint.sum()))

    def _refinement(self, in_memory, refine_args) -> tuple | None:
        """(motion, the map moved by it) of the render alignment from where the object is;
        None unless it lowers the loss by refine_gain and moves the object by more than
        refine_min_motion."""
        cfg = self.config
        eye = torch.eye(4, device=self.device)
        motion, before, after = refine_pose(self.gaussians.select(in_memory), eye, **refine_args)
        shift, angle = _motion_size(motion, self.gaussians.means[in_memory].mean(0))
        if after > (1 - cfg.refine_gain) * before or \
                (shift < cfg.refine_min_motion and angle < 5 * cfg.refine_min_motion):
            return None
        return motion, transform_gaussians(self.gaussians, in_memory, motion)

    def _realignment(self, record, in_memory, observed, n_agree, in_place, interior, K, c2w,
                     refine_args) -> tuple | None:
        """(motion, the map moved by it) of ICP then render alignment; None unless the moved
        map agrees clearly better."""
        cfg = self.config
        model = self.gaussians.means[in_memory]
        if record.surface is not None:
            model = torch.cat([record.surface, model])
        if model.shape[0] > 4000:
            model = model[evenly(model.shape[0], 4000, self.device)]
        # Points are a pixel apart at best: "explained" is relative to the footprint.
        footprint = float((observed - c2w[:3, 3]).norm(dim=1).median() / K[0, 0])
        tolerance = max(cfg.max_track_rmse, 1.5 * footprint)
        motion, rmse, inliers = align_to_model(observed, model, inlier_distance=tolerance)
        if rmse > tolerance or inliers < cfg.min_track_inliers:
            motion = torch.eye(4, device=self.device)  # the silhouette alone decides
        motion, _, _ = refine_pose(self.gaussians.select(in_memory), motion, **refine_args)
        shift, angle = _motion_size(motion, model.mean(0))
        if shift > cfg.max_track_motion or \
                (shift < max(cfg.track_min_motion, footprint) and angle < 0.01):
            return None
        depth, mask = refine_args["depth"], refine_args["mask"]
        h, w = depth.shape
        candidate = transform_gaussians(self.gaussians, in_memory, motion)
        if not self._agrees_better(mask, interior, depth, K[0, 0], n_agree, in_place,
                                   self._render_depth(K, c2w, w, h, candidate)):
            return None
        return motion, candidate

    def _move_object(self, record, in_memory, motion, moved_map, observed) -> float:
        """Apply a tracked motion (moved_map: the map with the object's Gaussians moved by
        it) to the object's Gaussians, surface and pose."""
        shift, _ = _motion_size(motion, self.gaussians.means[in_memory].mean(0))
        self.gaussians = moved_map
        if record.surface is not None:
            record.surface = record.surface @ motion[:3, :3].T + motion[:3, 3]
        record.surface = _merge_surface(record.surface, observed)
        record.pose = motion @ record.pose
        record.moved = True
        record.footprint = None   # its frame is no longer turned (see _align_yaw)
        record.agreement = 1.0
        record.settling = self.config.settle_frames
        # Keyframes showing the object where it was would pull it back.
        self.keyframes = [kf for kf in self.keyframes if record.id not in kf["objects"]]
        return shift

    def _agrees_better(self, mask, interior, depth, fx, before: int, in_place: float,
                       rendered) -> bool:
        """The moved map agrees clearly better than before (by more than a few pixels' worth:
        small objects have few interior pixels), and puts the object in place or gains a
        quarter of its pixels (a map seen from a new side may never agree fully)."""
        n_inner, n_agree = self._agreement(mask[None], interior, depth, fx,
                                           rendered)[0].tolist()
        gain = n_agree - before
        return gain >= max(3, 0.05 * n_inner) and \
            (n_agree >= in_place * n_inner or gain >= 0.25 * n_inner)

    def _seed(self, rgb, depth, points, valid, labels, K, c2w, stamp, rendered) -> int:
        cfg = self.config
        h, w = depth.shape
        candidates = valid & ~self._ignored(labels)
        # Objects are seeded at every pixel (they are small and must be tracked), the
        # background on a grid.
        grid = torch.zeros_like(candidates)
        grid[cfg.seed_stride // 2::cfg.seed_stride, cfg.seed_stride // 2::cfg.seed_stride] = True
        candidates &= grid | (labels != BACKGROUND)
        if rendered is not None:
            alpha, drawn = rendered
            candidates &= (alpha < cfg.seed_alpha) | (depth < drawn - cfg.seed_depth_margin)
        pixels = torch.nonzero(candidates)
        if pixels.shape[0] == 0:
            return 0
        r, c = pixels[:, 0], pixels[:, 1]
        z = depth[r, c]
        stride = torch.where(labels[r, c] == BACKGROUND, float(cfg.seed_stride), 1.0)
        spacing = stride * z / K[0, 0]
        # Flat Gaussians in the surface's plane tile the background without gaps or bumps
        # (the spacing on a surface seen at a slant grows as 1 / cos(incidence)); objects,
        # small and curved, are seeded densely with round ones.
        normals = surface_normals(points, valid, depth / K[0, 0])[r, c]
        flat = torch.isfinite(normals).all(dim=-1) & (labels[r, c] == BACKGROUND)
        normals = torch.where(flat[:, None], normals,
                              torch.tensor([0.0, 0.0, 1.0], device=self.device))
        rays = F.normalize(points[r, c] - c2w[:3, 3], dim=-1)
        slant = (rays * normals).sum(-1).abs().clamp_min(0.3)
        tangent = torch.where(flat, 0.6 * spacing / slant, 0.6 * spacing)
        thin = torch.where(flat, 0.1 * tangent, tangent)
        n = pixels.shape[0]
        new = Gaussians(
            means=points[r, c],
            quats=quats_aligning_z(normals),
            log_scales=torch.log(torch.stack([tangent, tangent, thin], dim=-1)),
            opacity_logits=torch.full((n,), math.log(cfg.seed_opacity / (1 - cfg.seed_opacity)),
                                      device=self.device),
            sh0=(rgb[r, c] - 0.5) / SH_C0,
            labels=labels[r, c])
        self.gaussians = self.gaussians.cat(new)
        for oid in new.labels.unique().tolist():
            if oid != BACKGROUND and oid not in self.objects:
                self._new_object(int(oid), stamp)
        return n

    def _optimise(self, current: dict, stop=None) -> tuple:
        cfg = self.config
        views = [v for v in [current] + self.keyframes if v["n_mapped"] > 0]
        if len(self) == 0 or cfg.iterations == 0 or not views:
            return 0.0, None
        params = [getattr(self.gaussians, p).detach().clone().requires_grad_(True)
                  for p in PARAMETERS]
        adam = Adam(params, [cfg.lr_means, cfg.lr_quats, cfg.lr_log_scales, cfg.lr_opacity,
                             cfg.lr_sh0])
        grad_sum = torch.zeros(len(self), device=self.device)
        rigid = None if cfg.optimise_object_means else \
            (self.gaussians.labels == BACKGROUND).float()[:, None]
        for it in range(cfg.iterations):
            batch = self._step_views(views, it)
            g = Gaussians(*params, labels=self.gaussians.labels)
            h, w = batch[0]["depth"].shape
            out = render_gaussians(g, torch.stack([v["viewmat"] for v in batch]),
                                   torch.stack([v["K"] for v in batch]), w, h)
            loss = self._batch_loss(out, batch)
            grads = list(torch.autograd.grad(loss, params))
            grad_sum += grads[0].norm(dim=1)
            if rigid is not None:
                grads[0] = grads[0] * rigid
            adam.step(grads)
            if stop is not None and stop():
                break
        self.gaussians = Gaussians(*(t.detach() for t in params), labels=self.gaussians.labels)
        return float(loss.detach()), grad_sum / (it + 1)

    def _densify(self, mean_grad: torch.Tensor | None) -> int:
        """Split or clone the Gaussians the loss keeps pulling at (gsplat's default strategy,
        on the 3D position gradient relative to the median): large ones are split in two along
        their own axes, small ones cloned; at most densify_fraction of the map per frame,
        within the caps. Only the background's, unless densify_objects."""
        cfg = self.config
        if mean_grad is None or cfg.densify_grad <= 0:
            return 0
        if not cfg.densify_objects:
            mean_grad = torch.where(self.gaussians.labels == BACKGROUND, mean_grad,
                                    torch.zeros_like(mean_grad))
        room = min(cfg.max_gaussians - len(self), int(cfg.densify_fraction * len(self)))
        pulled = mean_grad[mean_grad > 0]
        if pulled.numel() == 0:
            return 0
        hot = torch.nonzero(mean_grad > cfg.densify_grad * pulled.median())[:, 0]
        if room <= 0 or hot.numel() == 0:
            return 0
        if hot.numel() > room:
            hot = hot[torch.topk(mean_grad[hot], room).indices]
        g = self.gaussians
        parents = g.select(hot)
        split = parents.scales.max(dim=1).values > cfg.densify_split_scale
        generator = torch.Generator(device=self.device).manual_seed(self.frames_integrated)
        noise = torch.randn(parents.means.shape, generator=generator, device=self.device)
        offset = (quat_to_rotmat(parents.quats) @ (parents.scales * noise)[..., None])[..., 0]
        offset = offset * split[:, None]
        shrink = math.log(1.6) * split[:, None]
        means, log_scales = g.means.clone(), g.log_scales.clone()
        means[hot] += offset
        log_scales[hot] -= shrink
        children = Gaussians(parents.means - offset, parents.quats, parents.log_scales - shrink,
                             parents.opacity_logits, parents.sh0, parents.labels)
        self.gaussians = Gaussians(means, g.quats, log_scales, g.opacity_logits, g.sh0,
                                   g.labels).cat(children)
        return hot.numel()

    def _step_views(self, views: list, it: int) -> list:
        """Views of optimisation step it: the current frame on every other step (or always,
        with views_per_step > 1) and keyframes in turn; one size per batch."""
        k = self.config.views_per_step
        if k == 1:
            return [views[0] if it % 2 == 0 or len(views) == 1 else
                    views[1 + (it // 2) % (len(views) - 1)]]
        rest = views[1:]
        batch = [views[0]] + [rest[(it * (k - 1) + j) % len(rest)]
                              for j in range(min(k - 1, len(rest)))]
        return [v for v in batch if v["depth"].shape == views[0]["depth"].shape]

    def _batch_loss(self, out, batch: list) -> torch.Tensor:
        """Mean over the views of colour L1, depth L1 and coverage on the mapped pixels, plus
        opacity in front of surfaces beyond the bounds; vectorised over the views."""
        cfg = self.config
        one = len(batch) == 1
        stack = (lambda key: batch[0][key][None]) if one else \
            (lambda key: torch.stack([v[key] for v in batch]))
        mapped, outside = stack("mapped"), stack("outside")
        counts = torch.tensor([float(v["n_mapped"]) for v in batch], device=self.device)
        per_pixel = (out.rgb - stack("rgb")).abs().sum(-1) / 3 + \
            cfg.depth_weight * (out.depth - stack("depth")).abs() + \
            cfg.alpha_weight * (1 - out.alpha)
        loss = ((per_pixel * mapped).sum((1, 2)) / counts).mean()
        free = outside * (out.depth.detach() < stack("depth"))
        empty = (out.alpha * free).sum((1, 2)) / free.sum((1, 2)).clamp_min(1.0)
        return loss + cfg.free_space_weight * empty.mean()

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

    def _object_members(self):
        """(members bool (N,), slot (M,) index into the object list, local (M, 3)): the
        object Gaussians, which object each belongs to, and its position in that object's
        frame; for all objects in a few kernels."""
        g = self.gaussians
        members = torch.isin(g.labels, torch.tensor(sorted(self.objects), device=self.device))
        return (members, *self._in_object_frames(g.means[members], g.labels[members]))

    def _in_object_frames(self, points: torch.Tensor, labels: torch.Tensor):
        """(slot (M,) index into the sorted object list, local (M, 3)) of world points (M, 3)
        labelled with known object ids: each in its object's frame."""
        ids = torch.tensor(sorted(self.objects), device=self.device)
        slot = torch.searchsorted(ids, labels)
        poses = torch.stack([self.objects[int(i)].pose for i in ids.tolist()])
        offset = points - poses[slot, :3, 3]
        return slot, (offset[:, None, :] @ poses[slot, :3, :3])[:, 0]

    def _add_footprints(self, points, in_place, labels) -> None:
        """Keep the points (H, W, 3) where a frame sees objects that have not moved in place
        (in_place (H, W)) in their footprints."""
        for oid, record in self.objects.items():
            if not record.moved:
                seen = points[in_place & (labels == oid)]
                if len(seen):
                    record.footprint = _merge_surface(record.footprint, seen)

    def _align_yaw(self, slot: torch.Tensor, local: torch.Tensor) -> bool:
        """Turn the frames of objects that have not moved to their smallest footprint box
        (robust: 2nd-98th percentile) around their Gaussians and footprint points, see
        align_yaw_step; slot and local as `_object_members` gives them. Returns whether a
        frame turned."""
        cfg = self.config
        kept = [(oid, r.footprint) for oid, r in self.objects.items()
                if r.footprint is not None]
        if kept:
            points = torch.cat([f for _, f in kept])
            ids = torch.cat([torch.full((len(f),), oid, device=self.device) for oid, f in kept])
            seen_slot, seen_local = self._in_object_frames(points, ids)
            slot, local = torch.cat([slot, seen_slot]), torch.cat([local, seen_local])
        turned_any = False
        angles = torch.arange(-math.pi / 4, math.pi / 4, cfg.align_yaw_step, device=self.device)
        cos, sin = angles.cos()[:, None], angles.sin()[:, None]
        levels = torch.tensor([0.02, 0.98], device=self.device)
        current = int(angles.abs().argmin())
        for k, oid in enumerate(sorted(self.objects)):
            record = self.objects[oid]
            xy = local[slot == k, :2]
            if record.moved or len(xy) < 20:
                continue
            turned = torch.stack([xy[:, 0] * cos + xy[:, 1] * sin,
                                  xy[:, 1] * cos - xy[:, 0] * sin])          # (2, A, N)
            lo, hi = torch.quantile(turned, levels, dim=-1)                  # (2, A) each
            area = (hi - lo).prod(0)
            best = int(area.argmin())
            boxy = area.max() >= cfg.align_yaw_boxiness * area[best]
            if boxy and area[best] < (1 - cfg.align_yaw_gain) * area[current]:
                c, s = float(cos[best]), float(sin[best])
                turn = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]],
                                    device=self.device)
                record.pose[:3, :3] = record.pose[:3, :3] @ turn
                turned_any = True
        return turned_any

    def _stray_object_gaussians(self, margin: float = 0.02) -> torch.Tensor:
        """Object Gaussians outside their object's robust box (plus margin): optimisation
        strays that would smear the object."""
        stray = torch.zeros(len(self.gaussians), dtype=torch.bool, device=self.device)
        if not self.objects:
            return stray
        members, slot, local = self._object_members()
        records = [self.objects[i] for i in sorted(self.objects)]
        half = torch.stack([r.half_extent for r in records])
        boxed = torch.tensor([r.num_gaussians >= 4 for r in records], device=self.device)
        stray[members] = (local.abs() > half[slot] + margin).any(dim=1) & boxed[slot]
        return stray

    def _update_keyframes(self, view: dict) -> None:
        cfg = self.config
        for kf in self.keyframes:
            rel = torch.linalg.inv(kf["pose"]) @ view["pose"]
            angle = _rotation_angle(rel[:3, :3])
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
        All objects at once: coordinates sorted within each object by a value sort followed
        by a stable sort on the object.
        """
        if not self.objects:
            return
        members, slot, local = self._object_members()
        if self._align_yaw(slot, local):
            members, slot, local = self._object_members()
        counts = torch.bincount(slot, minlength=len(self.objects))
        if len(local) == 0:
            for record in self.objects.values():
                record.num_gaussians = 0
            return
        order = torch.sort(local, dim=0, stable=True).indices
        regroup = torch.sort(slot[order], dim=0, stable=True).indices
        ordered = local.gather(0, order.gather(0, regroup))
        first = torch.cumsum(counts, 0) - counts
        last = (counts - 1).clamp_min(0)
        lo = ordered[(first + torch.round(0.02 * last).long()).clamp_max(len(local) - 1)]
        hi = ordered[(first + torch.round(0.98 * last).long()).clamp_max(len(local) - 1)]
        for k, (oid, count) in enumerate(zip(sorted(self.objects), counts.tolist())):
            record = self.objects[oid]
            record.num_gaussians = count
            if count < 4:
                continue
            offset = (lo[k] + hi[k]) / 2
            if float(offset.norm()) > self.config.recentre_distance:
                record.pose[:3, 3] = record.pose[:3, 3] + record.pose[:3, :3] @ offset
            record.half_extent = (hi[k] - lo[k]) / 2
