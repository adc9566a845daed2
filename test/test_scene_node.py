"""The gsplat_scene node over a real DDS graph: mapping the simulated robot's camera, its
services, and bad frames dropped without a crash."""
import math
import time
from contextlib import ExitStack

import numpy as np
import pytest
import rclpy
from lifecycle_msgs.msg import State, Transition
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from visualization_msgs.msg import Marker

from gsplat_scene.ply import load_ply
from gsplat_scene.scene_node import bounds_param, object_markers
from ros_io.images import image_to_numpy
from ros_io.stamps import to_seconds
from sim_robot.scene import OBJECT_IDS
from support.graph import (Lifecycle, ask, output_of, ros_context, ros_process, spin_until,
                           wait_for_output)
from world_model_planning.msg import ObjectArray, ObjectState, SceneInfo
from world_model_planning.srv import LoadScene, RenderScene, ResetScene, SaveScene

SCENE_ARGS = ["-m", "gsplat_scene.scene_node", "--ros-args", "-p", "downscale:=2",
              "-p", "cameras:=[camera, side_camera]",
              "-p", "iterations:=2", "-p", "publish_rate:=4.0", "-p", "render_rate:=1.0",
              "-p", "use_sim_time:=true"]


def cloud_points(cloud) -> np.ndarray:
    """(N, 3) x y z of the node's PointCloud2 (x y z rgb, 16 bytes a point)."""
    return np.frombuffer(bytes(cloud.data), dtype="<f4").reshape(-1, 4)[:, :3]


def render_request() -> RenderScene.Request:
    """160x120 from the virtual camera's default place, looking at the table."""
    req = RenderScene.Request()
    req.camera_info.width, req.camera_info.height = 160, 120
    req.camera_info.k = [150.0, 0, 79.5, 0, 150.0, 59.5, 0, 0, 1]
    eye, target = np.array([1.4, -0.7, 0.95]), np.array([0.4, 0.0, 0.22])
    z = (target - eye) / np.linalg.norm(target - eye)
    x = np.cross(z, [0, 0, 1.0])
    x /= np.linalg.norm(x)
    q = Rotation.from_matrix(np.column_stack([x, np.cross(z, x), z])).as_quat()
    p = req.camera_pose.pose
    p.position.x, p.position.y, p.position.z = eye
    p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w = q
    return req


def call(node, client, request, timeout=60.0):
    response = ask(node, client, request, timeout)
    assert response is not None, f"{client.srv_name}: no answer"
    return response


@pytest.fixture(scope="module")
def graph():
    with ros_context(), \
            ros_process(["-m", "sim_robot.sim_node"], ready_line="simulated robot up",
                        timeout=120) as sim, \
            ros_process(SCENE_ARGS, ready_line=": configured on", timeout=120) as scene:
        node = rclpy.create_node("scene_probe",
                                 parameter_overrides=[Parameter("use_sim_time", value=True)])
        node.latest, node.camera_stamps = {}, set()
        # The frames' stamps, from their (small) camera_info.
        node.create_subscription(CameraInfo, "/camera/color/camera_info",
                                 lambda m: node.camera_stamps.add(to_seconds(m.header.stamp)),
                                 qos_profile_sensor_data)
        for topic, cls in [("/gsplat_scene/info", SceneInfo), ("/gsplat_scene/gaussians",
                                                                PointCloud2),
                           ("/gsplat_scene/objects", ObjectArray),
                           ("/gsplat_scene/render/image", Image)]:
            node.create_subscription(cls, topic,
                                     lambda m, t=topic: node.latest.__setitem__(t, m), 10)
        node.procs = (sim, scene)
        yield node
        node.destroy_node()


def test_builds_a_map_with_objects(graph):
    def mapped():
        info = graph.latest.get("/gsplat_scene/info")
        return info is not None and info.num_gaussians > 2000 and info.frames_integrated >= 3
    assert spin_until(graph, mapped, 120.0), output_of(graph.procs[1])
    info = graph.latest["/gsplat_scene/info"]
    ids = {o.id for o in info.objects}
    assert {OBJECT_IDS["cube"], OBJECT_IDS["can"], OBJECT_IDS["mug"]} <= ids
    assert 1 not in ids  # the robot is not mapped
    truth = {"cube": (0.45, -0.2, 0.025), "can": (0.5, 0.05, 0.06), "mug": (0.55, 0.27, 0.045)}
    for obj in info.objects:
        name = next((n for n, i in OBJECT_IDS.items() if i == obj.id), None)
        if name in truth:
            # Seen from one side only: the centre is within a few centimetres.
            p = obj.pose.position
            assert np.linalg.norm(np.subtract([p.x, p.y, p.z], truth[name])) < 0.05, name
    assert info.memory_bytes > 0 and info.device == "cpu"
    # The poses are stamped with the time of the frame they were tracked in (checked once the
    # probe has seen the camera's frames from before to after that time).
    def stamped():
        return [to_seconds(graph.latest[t].header.stamp)
                for t in ("/gsplat_scene/info", "/gsplat_scene/objects")]
    assert spin_until(graph, lambda: graph.camera_stamps and min(graph.camera_stamps)
                      <= min(stamped()) <= max(stamped()) <= max(graph.camera_stamps),
                      30.0), graph.camera_stamps
    for stamp in stamped():
        assert stamp in graph.camera_stamps, (stamp, sorted(graph.camera_stamps)[-5:])
    assert spin_until(graph, lambda: "/gsplat_scene/gaussians" in graph.latest
                      and "/gsplat_scene/render/image" in graph.latest, 30.0)
    cloud = graph.latest["/gsplat_scene/gaussians"]
    assert [f.name for f in cloud.fields] == ["x", "y", "z", "rgb"]
    assert cloud.point_step == 16 and cloud.width > 2000 and cloud.header.frame_id == "world"
    points = cloud_points(cloud)
    # Centres lie on the true surfaces: table top, floor, or an object's box.
    on_surface = (np.abs(points[:, 2]) < 0.01) | (np.abs(points[:, 2] + 0.75) < 0.01)
    for name, centre in truth.items():
        half = {"cube": 0.025, "can": 0.06, "mug": 0.05}[name] + 0.01
        on_surface |= np.all(np.abs(points - np.array(centre)) < half, axis=1)
    assert on_surface.mean() > 0.8, on_surface.mean()
    # The side camera maps the far sides of the mug and the can, which the main camera,
    # from the other side of the table, cannot see (its frames come every
    # extra_camera_period while nothing is hidden).
    def far_sides():
        points = cloud_points(graph.latest["/gsplat_scene/gaussians"])
        counts = {}
        for name in ("mug", "can"):
            centre = np.array(truth[name])
            near = np.all(np.abs(points[:, [0, 2]] - centre[[0, 2]]) < 0.04, axis=1)
            counts[name] = int((near & (points[:, 1] > centre[1] + 0.02)).sum())
        return counts
    assert spin_until(graph, lambda: min(far_sides().values()) > 20, 60.0), far_sides()
    image = image_to_numpy(graph.latest["/gsplat_scene/render/image"])
    assert image.shape == (240, 320, 3) and image.std() > 5


def test_services(graph, tmp_path):
    save = graph.create_client(SaveScene, "/gsplat_scene/save")
    load = graph.create_client(LoadScene, "/gsplat_scene/load")
    reset = graph.create_client(ResetScene, "/gsplat_scene/reset")
    render = graph.create_client(RenderScene, "/gsplat_scene/render")
    path = str(tmp_path / "map.ply")
    saved = call(graph, save, SaveScene.Request(path=path))
    assert saved.success and saved.num_gaussians > 0 and len(load_ply(path)) == saved.num_gaussians

    req = render_request()
    out = call(graph, render, req)
    assert out.success, out.message
    rgb, depth = image_to_numpy(out.rgb), image_to_numpy(out.depth)
    assert rgb.shape == (120, 160, 3) and depth.shape == (120, 160)
    assert 0.5 < np.nanmedian(depth) < 3.0

    # Moving the cube in the request moves it in the image.
    cube = next(o for o in graph.latest["/gsplat_scene/info"].objects
                if o.id == OBJECT_IDS["cube"])
    moved = ObjectState(id=cube.id, pose=cube.pose)
    moved.pose.position.y += 0.3
    req.object_overrides.objects = [moved]
    out_moved = call(graph, render, req)
    assert out_moved.success
    assert np.abs(image_to_numpy(out_moved.rgb).astype(int) - rgb.astype(int)).sum() > 1000

    bad = RenderScene.Request()
    assert not call(graph, render, bad).success  # zero size
    req.object_overrides.objects = [ObjectState(id=999)]
    assert "unknown object id" in call(graph, render, req).message
    req.object_overrides.objects = []
    req.camera_pose.pose.position.x = math.nan
    assert not call(graph, render, req).success

    assert not call(graph, load, LoadScene.Request(path="/no/such.ply")).success
    assert not call(graph, reset, ResetScene.Request(object_ids=[999])).success
    res = call(graph, reset, ResetScene.Request())
    assert res.success and res.num_gaussians == 0
    loaded = call(graph, load, LoadScene.Request(path=path))
    assert loaded.success and loaded.num_gaussians == saved.num_gaussians
    assert graph.procs[1].poll() is None


def test_object_markers_show_each_box_and_its_id():
    objects = ObjectArray()
    objects.header.frame_id = "world"
    for oid, x in ((100, 0.4), (12, 0.6)):
        obj = ObjectState(id=oid)
        obj.pose.position.x, obj.pose.orientation.w = x, 1.0
        obj.half_extent.x = obj.half_extent.y = obj.half_extent.z = 0.025
        objects.objects.append(obj)
    markers = object_markers(objects).markers
    assert markers[0].action == Marker.DELETEALL
    boxes = {m.id: m for m in markers if m.type == Marker.CUBE}
    texts = {m.id: m for m in markers if m.type == Marker.TEXT_VIEW_FACING}
    assert set(boxes) == set(texts) == {100, 12}
    assert texts[100].text == "100" and texts[100].pose.position.z > 0.025
    assert boxes[12].pose.position.x == pytest.approx(0.6) and boxes[12].scale.x == 0.05
    assert all(m.header.frame_id == "world" for m in markers)


def test_bounds_parameter():
    assert bounds_param([0.0]) is None
    assert bounds_param([-1, -1, 0, 1, 1, 2]) == ((-1, -1, 0), (1, 1, 2))
    for bad in ([0.0, 1.0], [1, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, math.nan]):
        with pytest.raises(ValueError, match="bounds"):
            bounds_param(bad)


BAD_CONFIGURATIONS = {
    "bounds": (["bounds:=[1.0, 0.0, 0.0, 0.0, 1.0, 1.0]"], "bounds: min"),
    "cameras": (["cameras:=[camera, camera]"], "cameras must be distinct"),
    "static-pose": (["cameras:=[camera, side_camera]", "camera_pose_source:=static"],
                    "need tf or pose"),
    "segmentation": (["segmentation:=sam"], "unknown segmentation 'sam'"),
    "tabletop-unbounded": (["segmentation:=tabletop"], "'tabletop' needs bounds"),
}


def test_bad_configurations_fail_and_the_node_stays_up():
    # One node per bad configuration, all started together (a node's start-up is seconds
    # of imports).
    with ExitStack() as stack:
        scenes = {name: stack.enter_context(ros_process(
            ["-m", "gsplat_scene.scene_node", "--ros-args"]
            + [a for p in params for a in ("-p", p)]))
            for name, (params, _) in BAD_CONFIGURATIONS.items()}
        for name, (_, error) in BAD_CONFIGURATIONS.items():
            assert wait_for_output(scenes[name], error, 60.0), (name, output_of(scenes[name]))
        time.sleep(1.5)  # a crash after the error would show by now
        for name, scene in scenes.items():
            assert scene.poll() is None, (name, output_of(scene))
            assert ": configured on" not in output_of(scene), name


def test_lifecycle_transitions_while_a_render_is_served(graph):
    # The memory's services run on their own executor thread: a cleanup arriving while one
    # renders must neither crash the node nor leave a request unanswered or the node unable
    # to come back.
    lifecycle = Lifecycle(graph, "/gsplat_scene")
    render = graph.create_client(RenderScene, "/gsplat_scene/render")
    assert call(graph, render, render_request()).success  # the reply path is matched

    rendering = [render.call_async(render_request()) for _ in range(3)]
    assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
    assert lifecycle.transition(Transition.TRANSITION_CLEANUP)
    assert spin_until(graph, lambda: all(f.done() for f in rendering), 60.0)
    assert lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED
    refused = call(graph, render, render_request())
    assert not refused.success and "not configured" in refused.message
    assert graph.procs[1].poll() is None, output_of(graph.procs[1])

    assert lifecycle.transition(Transition.TRANSITION_CONFIGURE)
    assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
    graph.latest.pop("/gsplat_scene/info", None)
    assert spin_until(graph, lambda: "/gsplat_scene/info" in graph.latest and
                      graph.latest["/gsplat_scene/info"].frames_integrated >= 2 and
                      graph.latest["/gsplat_scene/info"].num_gaussians > 1000, 60.0), \
        output_of(graph.procs[1])
    assert call(graph, render, render_request()).success
