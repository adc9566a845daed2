"""Dec: predicted futures rendered through the scene memory.

Each object's Gaussians are moved from the pose the memory holds to the predicted pose and
the scene is rendered, so a future becomes RGB-D frames (for RViz and image-space
evaluation). The memory is not changed.
"""
from __future__ import annotations

import torch

from gsplat_scene.mapping import SceneMemory
from world_model_node.predictor import Futures


def render_future(memory: SceneMemory, futures: Futures, sequence: int, viewmat: torch.Tensor,
                  K: torch.Tensor, width: int, height: int, steps=None):
    """RGB-D frames of one predicted future.

    Args:
        sequence: which of the N futures.
        viewmat (4, 4) world-to-camera; K (3, 3) pinhole.
        steps: step indices to render (default all H).
    Returns:
        rgb (S, H, W, 3), depth (S, H, W) m, alpha (S, H, W). Objects the memory does not hold
        are left out (they have no Gaussians to move).
    """
    horizon = futures.object_positions.shape[1]
    steps = list(range(horizon)) if steps is None else list(steps)
    known = [k for k, oid in enumerate(futures.object_ids) if int(oid) in memory.objects]
    rgb, depth, alpha = [], [], []
    for h in steps:
        poses = {}
        for k in known:
            pose = torch.eye(4)
            pose[:3, :3] = futures.object_rotations[sequence, h, k].cpu()
            pose[:3, 3] = futures.object_positions[sequence, h, k].cpu()
            poses[int(futures.object_ids[k])] = pose
        out = memory.render(viewmat[None], K[None], width, height, object_poses=poses)
        rgb.append(out.rgb[0])
        depth.append(out.depth[0])
        alpha.append(out.alpha[0])
    return torch.stack(rgb), torch.stack(depth), torch.stack(alpha)
