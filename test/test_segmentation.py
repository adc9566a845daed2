"""Instance masks from depth alone (gsplat_scene.segmentation) on the simulated table: the
robot told apart by its joint states, objects found, named once and followed in memory."""
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from gsplat_scene.mapping import (BACKGROUND, ROBOT, UNKNOWN, Frame, MappingConfig, SceneMemory,
                                  point_map)
from gsplat_scene.segmentation import TabletopConfig, TabletopSegmenter, object_boxes
from robot_model.spheres import RobotBody
from ros_io.paths import share_path
from sim_robot import panda
from sim_robot.scenario import load_scenario
from sim_robot.scene import OBJECT_IDS
from sim_robot.sim import PandaSim
from sim_robot.views import camera_view, sweep

W, H = 160, 120
NAMES = ("cube", "can", "mug")


def robot_spheres(sim, body):
    joints = dict(zip(panda.ARM_JOINT_NAMES, sim.arm_positions()))
    joints.update(zip(panda.FINGER_JOINT_NAMES, sim.finger_positions()))
    return body.place(joints)


def segment(segmenter, sim, body, view, memory=None):
    return segmenter.segment(torch.from_numpy(view["depth"]), torch.tensor(view["K"]),
                             torch.tensor(view["cam_to_world"]), robot_spheres(sim, body),
                             object_boxes(memory) if memory is not None else {})


def to_frame(view, labels) -> Frame:
    return Frame(torch.from_numpy(view["rgb"]), torch.from_numpy(view["depth"]),
                 torch.tensor(view["K"], dtype=torch.float32),
                 torch.tensor(view["cam_to_world"], dtype=torch.float32), labels,
                 camera=view.get("camera", ""))


def iou(a, b) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture
def sim():   # each test its own: one moves the cube
    sim = PandaSim(load_scenario(share_path("config", "scenarios", "default.yaml")), W, H)
    yield sim
    sim.close()


@pytest.fixture(scope="module")
def body():
    return RobotBody.from_urdf(panda.urdf())


def test_robot_body_follows_the_joints(sim, body):
    centres, radii = robot_spheres(sim, body)
    assert body.root == "world" and centres.shape == (radii.shape[0], 3)
    # The finger spheres stand either side of the tool centre point, as far as they are open.
    tcp = torch.tensor(sim.tcp_pose()[0], dtype=torch.float32)
    assert (centres - tcp).norm(dim=1).min() < sim.gripper_width() / 2 + 0.015
    joints = dict(zip(panda.ARM_JOINT_NAMES, sim.arm_positions()), panda_finger_joint1=0.0)
    opened = dict(joints, panda_finger_joint1=0.04)
    shift = body.place(opened)[0] - body.place(joints)[0]
    moved = shift.norm(dim=1) > 1e-6
    # Both fingers open by 4 cm, the right one (a mimic joint) the other way.
    assert moved.sum() >= 2 and torch.allclose(shift[moved].norm(dim=1), torch.tensor(0.04))
    assert shift[moved].sum(dim=0).norm() < 1e-5
    with pytest.raises(KeyError):
        body.place({"panda_joint1": 0.0})
    # The nearest joint state in time, within the slop; none near, or one lacking a joint,
    # is a ValueError naming it.
    states = [(1.0, dict(joints, panda_finger_joint1=0.0)), (2.0, opened)]
    assert torch.equal(body.place_at(states, 1.8, 0.3)[0], body.place(opened)[0])
    with pytest.raises(ValueError, match="no joint state within 0.1 s"):
        body.place_at(states, 2.5, 0.1)
    with pytest.raises(ValueError, match="lacks joint"):
        body.place_at([(1.0, {"panda_joint1": 0.0})], 1.0, 0.1)
    # A malformed robot description is a ValueError, as is one with two roots.
    for bad in ("<robot><link", "<robot><link name='a'/><link name='b'/></robot>",
                "<robot><link name='a'/><joint name='j' type='fixed'><parent link='a'/>"
                "</joint></robot>"):
        with pytest.raises(ValueError):
            RobotBody.from_urdf(bad)


def test_segments_match_the_true_masks(sim, body):
    segmenter = TabletopSegmenter(TabletopConfig(confirm_frames=2))
    first, *views = sweep(sim, 5) + [camera_view(sim, width=W, height=H)]
    labels = segment(segmenter, sim, body, first).numpy()
    assert not (labels >= segmenter.config.first_id).any()   # not confirmed yet
    assert (labels == UNKNOWN).sum() > 100
    for view in views:
        labels = segment(segmenter, sim, body, view).numpy()
        truth = view["instances"].astype(int)
        robot = truth == OBJECT_IDS["robot"]
        assert ((labels == ROBOT) & robot).sum() / robot.sum() > 0.99
        assert ((labels == ROBOT) & ~robot).sum() < 0.01 * labels.size   # the table by the base
        found, small = {}, set()
        for label in np.unique(labels[labels >= segmenter.config.first_id]):
            true_id = np.bincount(truth[labels == label]).argmax()
            found[true_id] = iou(labels == label, truth == true_id)
            if (truth == true_id).sum() < 100:
                small.add(true_id)   # far away (the fixed camera): its edge is a big share
        # Unconfirmed clusters are all the same three objects (they stand still).
        assert set(found) <= {OBJECT_IDS[n] for n in NAMES}, found
        assert all(v > (0.8 if k in small else 0.9) for k, v in found.items()), found
        assert ((labels == BACKGROUND) & (truth > 1)).sum() < 0.1 * (truth > 1).sum()


def test_objects_keep_their_ids_in_memory_and_move(sim, body):
    segmenter = TabletopSegmenter()
    memory = SceneMemory(MappingConfig(iterations=4, max_gaussians=30_000))

    def integrate(view):
        memory.integrate(to_frame(view, segment(segmenter, sim, body, view, memory)))

    for view in sweep(sim, 8):
        integrate(view)
    assert len(memory.objects) == 3 and min(memory.objects) >= segmenter.config.first_id
    truth = sim.object_poses()
    named = {}
    for name in NAMES:
        oid, record = min(memory.objects.items(), key=lambda kv: np.linalg.norm(
            kv[1].pose[:3, 3].numpy() - truth[name][0]))
        assert np.linalg.norm(record.pose[:3, 3].numpy() - truth[name][0]) < 0.025, name
        named[name] = oid
    assert len(set(named.values())) == 3
    assert not torch.isin(memory.gaussians.labels, torch.tensor([ROBOT, UNKNOWN])).any()

    # Moved a little (matched by distance) and then far while no frame saw it (its old
    # place seen empty): the same object, in its new place, and no other.
    cube = named["cube"]
    for shift in ([0.03, 0.02, 0.0], [0.18, 0.05, 0.0]):
        before = memory.objects[cube].pose[:3, 3].clone()
        old = sim.object_poses()["cube"][0].copy()
        sim.set_object_pose("cube", old + np.array(shift))
        for view in sweep(sim, 3, offset=0.3):
            integrate(view)
        moved = (memory.objects[cube].pose[:3, 3] - before).numpy()
        np.testing.assert_allclose(moved, shift, atol=0.01)
        assert set(memory.objects) == set(named.values())


def test_what_the_robot_spheres_miss_never_becomes_an_object(sim, body):
    # Spheres shrunk to 70 % and no margin: the arm's surface shows, always by the robot.
    segmenter = TabletopSegmenter(TabletopConfig(confirm_frames=2, robot_margin=0.0))
    view = sweep(sim, 3)[1]
    centres, radii = robot_spheres(sim, body)
    truth = view["instances"].astype(int)
    for _ in range(4):
        labels = segmenter.segment(torch.from_numpy(view["depth"]), torch.tensor(view["K"]),
                                   torch.tensor(view["cam_to_world"]), (centres, 0.7 * radii),
                                   {}).numpy()
    robot = truth == OBJECT_IDS["robot"]
    assert ((labels == UNKNOWN) & robot).sum() > 100
    named = labels >= segmenter.config.first_id
    assert named.any() and not (named & robot).any()


def test_a_touched_object_keeps_its_face(sim, body):
    # A "fingertip" sphere 1 cm from the cube's side: the face within the robot margin stays
    # the cube's where the memory knows the cube (within object_surface of its box); for a
    # cluster no object explains, the margin is the robot's.
    view = sweep(sim, 3)[1]
    position, quat = sim.object_poses()["cube"]
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_quat(quat).as_matrix()
    pose[:3, 3] = position
    half = sim.object_extents()["cube"]
    side = pose[:3, :3] @ np.array([1.0, 0.0, 0.0])    # the face towards the camera (+x)
    finger = (torch.tensor(position + side * (half[0] + 0.02), dtype=torch.float32)[None],
              torch.tensor([0.01]))
    truth = view["instances"].astype(int) == OBJECT_IDS["cube"]
    args = (torch.from_numpy(view["depth"]), torch.tensor(view["K"]),
            torch.tensor(view["cam_to_world"]), finger)
    known = TabletopSegmenter().segment(*args, {7: (pose, half)}).numpy()
    fresh = TabletopSegmenter().segment(*args, {}).numpy()
    assert ((fresh == ROBOT) & truth).sum() > 10        # the face in the margin
    assert ((known == ROBOT) & truth).sum() == 0
    assert iou(known == 7, truth) > 0.95


@pytest.mark.parametrize("offset", [-0.012, 0.012])
def test_a_table_off_its_nominal_height_is_found(sim, body, offset):
    # The table top 12 mm below (the whole table would stand above it) or above (the
    # objects' feet would be cut off) where it is said to be: found in the first frame.
    view = sweep(sim, 3)[1]
    truth = view["instances"].astype(int)

    def labels_after(config, frames=3):
        segmenter = TabletopSegmenter(config)
        for _ in range(frames):
            labels = segment(segmenter, sim, body, view).numpy()
        return segmenter, labels

    segmenter, labels = labels_after(TabletopConfig(table_height=offset))
    assert abs(segmenter.table_height) < 0.001, segmenter.table_height
    for name in NAMES:
        true = truth == OBJECT_IDS[name]
        label = np.bincount(labels[true]).argmax()
        assert label >= segmenter.config.first_id and iou(labels == label, true) > 0.9, name
    _, fixed = labels_after(TabletopConfig(table_height=offset, table_search=0.0))
    cube = truth == OBJECT_IDS["cube"]
    assert not iou(fixed == np.bincount(fixed[cube]).argmax(), cube) > 0.9


def test_noisy_depth_gives_the_objects_and_nothing_else(sim, body):
    # Depth noise of 4 mm at 1 m (growing with the square of the distance) and 5 % of the
    # pixels missing, fresh in each of ten frames: the table's noise is measured and the
    # objects start above it, so its speckle neither becomes an object nor joins one (at
    # 8 mm above the table alone the cube took in the speckle around it).
    view = sweep(sim, 3)[1]
    truth = view["instances"].astype(int)
    rng = np.random.default_rng(3)
    segmenter, objects = TabletopSegmenter(), {}
    cloud = point_map(torch.from_numpy(view["depth"]), torch.tensor(view["K"]).float(),
                      torch.tensor(view["cam_to_world"]).float()).numpy()
    for _ in range(10):
        depth = view["depth"] + rng.normal(0.0, 0.004, view["depth"].shape) * view["depth"] ** 2
        depth[rng.random(depth.shape) < 0.05] = np.nan
        labels = segmenter.segment(torch.from_numpy(depth.astype(np.float32)),
                                   torch.tensor(view["K"]), torch.tensor(view["cam_to_world"]),
                                   robot_spheres(sim, body), objects).numpy()
        for label in set(np.unique(labels[labels >= 100]).tolist()) - set(objects):
            points = cloud[(labels == label) & np.isfinite(cloud).all(-1)]   # as the memory
            pose = np.eye(4)                                 # holds it: the box around them
            pose[:3, 3] = (points.max(0) + points.min(0)) / 2
            objects[label] = (pose, (points.max(0) - points.min(0)) / 2)
    assert 0.002 < segmenter.table_noise < 0.008, segmenter.table_noise
    assert len(objects) == 3, sorted(objects)
    for label in objects:
        true_id = np.bincount(truth[labels == label]).argmax()
        assert true_id in {OBJECT_IDS[n] for n in NAMES}
        assert iou(labels == label, truth == true_id) > 0.75
