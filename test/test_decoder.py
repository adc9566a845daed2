"""Dec: a predicted future renders the scene memory with its objects moved."""
import numpy as np
import torch

from gsplat_scene.mapping import Frame, MappingConfig, SceneMemory
from gsplat_scene.render import look_at_viewmat
from ros_io.paths import share_path
from sim_robot.scenario import load_scenario
from sim_robot.scene import OBJECT_IDS
from sim_robot.sim import PandaSim
from sim_robot.views import sweep
from world_model_node.decoder import render_future
from world_model_node.predictor import Futures

W, H = 96, 72


def test_future_renders_moved_objects():
    sim = PandaSim(load_scenario(share_path("config", "scenarios", "default.yaml")), W, H)
    memory = SceneMemory(MappingConfig(iterations=4, max_gaussians=20_000))
    for v in sweep(sim, 6):
        memory.integrate(Frame(torch.from_numpy(v["rgb"]), torch.from_numpy(v["depth"]),
                               torch.tensor(v["K"], dtype=torch.float32),
                               torch.tensor(v["cam_to_world"], dtype=torch.float32),
                               torch.from_numpy(v["instances"].astype(np.int64))))
    cube = OBJECT_IDS["cube"]
    ids = sorted(memory.objects)
    k = ids.index(cube)
    pos = torch.stack([memory.objects[i].pose[:3, 3] for i in ids])
    rot = torch.stack([memory.objects[i].pose[:3, :3] for i in ids])
    # Two steps: everything where the memory has it, then the cube 12 cm further along +y.
    positions = pos.expand(1, 2, -1, -1).clone()
    positions[0, 1, k, 1] += 0.12
    futures = Futures(torch.zeros(1, 2, 7), torch.zeros(1, 2), torch.eye(4).expand(1, 2, 4, 4),
                      ids, positions, rot.expand(1, 2, -1, -1, -1), None)
    viewmat = look_at_viewmat([1.3, 0.0, 0.9], [0.45, 0.0, 0.05])
    fx = 0.5 * H / np.tan(np.radians(29.0))
    K = torch.tensor([[fx, 0, (W - 1) / 2], [0, fx, (H - 1) / 2], [0, 0, 1.0]])
    rgb, depth, alpha = render_future(memory, futures, 0, viewmat, K, W, H)
    assert rgb.shape == (2, H, W, 3) and depth.shape == (2, H, W)
    plain = memory.render(viewmat[None], K[None], W, H)
    torch.testing.assert_close(rgb[0], plain.rgb[0], atol=1e-5, rtol=0)

    def pixel(p):
        c = viewmat[:3, :3] @ p + viewmat[:3, 3]
        return int(round(float(K[1, 1] * c[1] / c[2] + K[1, 2]))), \
            int(round(float(K[0, 0] * c[0] / c[2] + K[0, 2])))
    cube_colour = rgb[0][pixel(pos[k])]
    moved_to = pixel(positions[0, 1, k])
    # The cube now shows where it was predicted to go, and no longer where it was.
    assert torch.norm(rgb[1][moved_to] - cube_colour) < 0.15
    assert torch.norm(rgb[0][moved_to] - cube_colour) > 0.2
    assert torch.norm(rgb[1][pixel(pos[k])] - cube_colour) > 0.2
    assert memory.objects[cube].pose[1, 3] == pos[k, 1]  # the memory itself is unchanged
