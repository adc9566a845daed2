"""world_model_node over a real DDS graph: the simulated robot, the scene memory and the world
model in separate processes. Predictions, markers, predicted images, bad requests refused
while the node keeps serving, and a corrupt checkpoint reported without a crash."""
import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from lifecycle_msgs.msg import State, Transition
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from visualization_msgs.msg import MarkerArray

from ros_io.stamps import to_duration_msg
from support.graph import Lifecycle, ask, output_of, ros_context, ros_process, spin_until
from world_model_planning.msg import ObjectArray, ObjectState
from world_model_planning.srv import Predict

ARM = [f"panda_joint{i}" for i in range(1, 8)]
HOME = [0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785]
SCENE_ARGS = ["-m", "gsplat_scene.scene_node", "--ros-args", "-p", "downscale:=2",
              "-p", "iterations:=1", "-p", "publish_rate:=4.0", "-p", "render_rate:=0.0",
              "-p", "use_sim_time:=true"]
MODEL_ARGS = ["-m", "world_model_node.predictor_node", "--ros-args",
              "-p", "render_service:=/gsplat_scene/render", "-p", "use_sim_time:=true",
              "-p", "image.width:=64", "-p", "image.height:=48",
              "-p", "diagnostics_period:=0.5", "-r", "objects:=/gsplat_scene/objects"]


@pytest.fixture(scope="module")
def graph():
    with ros_context(), \
            ros_process(["-m", "sim_robot.sim_node"], ready_line="simulated robot up",
                        timeout=120) as sim, \
            ros_process(SCENE_ARGS, ready_line=": configured on", timeout=120) as scene, \
            ros_process(MODEL_ARGS, ready_line="serving", timeout=120) as model:
        node = rclpy.create_node("world_model_probe",
                                 parameter_overrides=[Parameter("use_sim_time", value=True)])
        node.latest = {}
        for topic, cls in (("/world_model_node/futures", MarkerArray),
                           ("/world_model_node/predicted_image", Image),
                           ("/gsplat_scene/objects", ObjectArray)):
            node.create_subscription(cls, topic,
                                     lambda m, t=topic: node.latest.__setitem__(t, m), 10)
        node.health = []
        node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: node.health.extend(
            s for s in m.status if s.name == "world_model_node: predictor"), 10)
        node.client = node.create_client(Predict, "/world_model_node/predict")
        node.procs = (sim, scene, model)
        assert node.client.wait_for_service(timeout_sec=30.0)
        yield node
        node.destroy_node()


def request(n=4, h=5, objects=True, seed=0):
    rng = np.random.default_rng(seed)
    req = Predict.Request()
    req.robot_state = JointState(name=ARM + ["panda_finger_joint1", "panda_finger_joint2"],
                                 position=HOME + [0.02, 0.02], velocity=[0.0] * 9)
    if objects:
        for oid, (x, y) in ((10, (0.45, -0.2)), (11, (0.5, 0.1))):
            o = ObjectState(id=oid)
            o.pose.position.x, o.pose.position.y, o.pose.position.z = x, y, 0.03
            o.pose.orientation.w = 1.0
            o.half_extent.x = o.half_extent.y = o.half_extent.z = 0.03
            req.objects.objects.append(o)
    a = req.actions
    a.joint_names = list(reversed(ARM))  # any order
    a.num_sequences, a.horizon = n, h
    a.step_duration = to_duration_msg(0.1)
    targets = np.asarray(HOME)[::-1] + rng.normal(0, 0.02, (n, h, 7)).cumsum(1)
    a.joint_targets = targets.astype(np.float32).ravel().tolist()
    a.gripper_widths = [0.04] * (n * h)
    return req


def call(node, req, timeout=30.0):
    response = ask(node, node.client, req, timeout)
    assert response is not None, output_of(node.procs[2])
    return response


def test_predicts_futures_with_uncertainty(graph):
    res = call(graph, request(n=4, h=5))
    assert res.success, res.message
    f = res.futures
    assert list(f.object_ids) == [10, 11]
    assert len(f.ee_positions) == 4 * 5 * 3 and len(f.ee_orientations) == 4 * 5 * 4
    assert len(f.joint_positions) == 4 * 5 * 7
    assert len(f.object_positions) == 4 * 5 * 2 * 3
    assert len(f.object_position_std) == 4 * 5 * 2
    assert all(s > 0 for s in f.object_position_std)
    assert f.model.startswith("learned:") and f.header.frame_id == "world"
    q = np.asarray(f.ee_orientations).reshape(-1, 4)
    assert np.allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-4)
    assert spin_until(graph, lambda: "/world_model_node/futures" in graph.latest, 10.0)
    markers = graph.latest["/world_model_node/futures"].markers
    assert {m.ns for m in markers} >= {"ee_paths", "object_10", "object_11"}


def test_objects_from_the_scene_memory_and_predicted_images(graph):
    def mapped():
        objs = graph.latest.get("/gsplat_scene/objects")
        return objs is not None and {10, 11, 12} <= {o.id for o in objs.objects}
    assert spin_until(graph, mapped, 120.0), output_of(graph.procs[1])
    assert all(o.color.a == 1.0 for o in graph.latest["/gsplat_scene/objects"].objects)
    # The model node takes the scene's objects from its own subscription: allow a message or
    # two for them to arrive there too.
    deadline = time.monotonic() + 20.0
    while True:
        res = call(graph, request(n=2, h=3, objects=False))
        assert res.success, res.message
        if {10, 11, 12} <= set(res.futures.object_ids) or time.monotonic() > deadline:
            break
        spin_until(graph, lambda: False, 0.5)
    assert {10, 11, 12} <= set(res.futures.object_ids)
    assert spin_until(graph, lambda: "/world_model_node/predicted_image" in graph.latest, 30.0)
    image = graph.latest["/world_model_node/predicted_image"]
    assert (image.width, image.height, image.encoding) == (64, 48, "rgb8")


def _bad_requests():
    def edit(fn):
        req = request()
        fn(req)
        return req
    yield "joint_targets has", edit(lambda r: setattr(r.actions, "joint_targets",
                                                     r.actions.joint_targets[:-1]))
    yield "NaN", edit(lambda r: r.actions.joint_targets.__setitem__(3, float("nan")))
    yield "empty batch", edit(lambda r: setattr(r.actions, "num_sequences", 0))
    yield "exceed max_batch", edit(lambda r: setattr(r.actions, "num_sequences", 100000))
    yield "must be the arm joints", edit(lambda r: r.actions.joint_names.__setitem__(0, "elbow"))
    yield "not objects", edit(lambda r: setattr(r.objects.objects[0], "id", 1))
    yield "duplicate object ids", edit(lambda r: setattr(r.objects.objects[1], "id", 10))
    yield "not finite", edit(lambda r: setattr(r.objects.objects[0].pose.position, "x",
                                               float("inf")))
    yield "step_duration", edit(lambda r: setattr(r.actions, "step_duration",
                                                  to_duration_msg(0.05)))
    yield "lacks joints", edit(lambda r: setattr(r.robot_state, "name", ["a"] * 9))


@pytest.mark.parametrize("reason, req", list(_bad_requests()),
                         ids=[r for r, _ in _bad_requests()])
def test_bad_requests_are_refused_and_the_node_keeps_serving(graph, reason, req):
    res = call(graph, req)
    assert not res.success and reason in res.message, res.message
    assert call(graph, request(n=1, h=2)).success
    assert graph.procs[2].poll() is None


def test_health_on_diagnostics(graph):
    # A refused request turns the report to a warning that names it; served ones count.
    assert call(graph, request(n=1, h=2)).success
    del graph.health[:]
    assert not call(graph, request(n=0, h=2)).success
    assert spin_until(graph, lambda: any(s.level == DiagnosticStatus.WARN
                                         and "empty batch" in s.message
                                         for s in graph.health), 10.0), graph.health
    assert spin_until(graph, lambda: graph.health[-1].level == DiagnosticStatus.OK, 5.0)
    status = graph.health[-1]
    values = {v.key: v.value for v in status.values}
    assert status.message == "serving" and status.hardware_id == "cpu"
    assert int(values["requests served"]) >= 1 and int(values["requests refused"]) >= 1
    assert float(values["last prediction ms"]) > 0 and values["model"].startswith("learned")


def set_parameter(node, target: str, name: str, value):
    """Set one parameter of the node `target` over its service: (successful, reason)."""
    from rcl_interfaces.srv import SetParameters

    client = node.create_client(SetParameters, f"{target}/set_parameters")
    try:
        response = ask(node, client, SetParameters.Request(
            parameters=[Parameter(name, value=value).to_parameter_msg()]), 10.0)
        assert response is not None, f"{target}/set_parameters: no answer"
        return response.results[0].successful, response.results[0].reason
    finally:
        node.destroy_client(client)


def test_lifecycle_transitions_while_predictions_are_served(graph):
    # Requests that meet a deactivation and cleanup are answered (served, or refused while
    # inactive), none is left without a reply, and the node serves again once reconfigured.
    # What configure reads can be set only while unconfigured: a cleanup, a new model and
    # a configure swap the model without a restart.
    lifecycle = Lifecycle(graph, "/world_model_node")
    learned = output_of(graph.procs[2]).count("serving learned")
    ok, reason = set_parameter(graph, "/world_model_node", "model", "static")
    assert not ok and "applied on configure and the node is active" in reason, reason
    assert set_parameter(graph, "/world_model_node", "max_batch", 4000) == (True, "")
    assert call(graph, request(n=1, h=2)).success  # the reply path is matched
    pending = [graph.client.call_async(request(n=256, h=16, seed=s)) for s in range(4)]
    assert lifecycle.transition(Transition.TRANSITION_DEACTIVATE)
    assert lifecycle.transition(Transition.TRANSITION_CLEANUP)
    assert spin_until(graph, lambda: all(f.done() for f in pending), 60.0), \
        output_of(graph.procs[2])
    for future in pending:
        res = future.result()
        assert res.success or res.message == "node is not active", res.message
    assert lifecycle.state() == State.PRIMARY_STATE_UNCONFIGURED
    refused = call(graph, request(n=1, h=2))
    assert not refused.success and refused.message == "node is not active"
    assert graph.procs[2].poll() is None, output_of(graph.procs[2])

    assert set_parameter(graph, "/world_model_node", "model", "static") == (True, "")
    assert lifecycle.transition(Transition.TRANSITION_CONFIGURE)
    assert lifecycle.transition(Transition.TRANSITION_ACTIVATE)
    res = call(graph, request(n=2, h=3))
    assert res.success and list(res.futures.object_ids) == [10, 11], res.message
    assert "serving static" in output_of(graph.procs[2])
    # Back to the learned model for the tests after this one.
    for transition in (Transition.TRANSITION_DEACTIVATE, Transition.TRANSITION_CLEANUP):
        assert lifecycle.transition(transition)
    assert set_parameter(graph, "/world_model_node", "model", "learned") == (True, "")
    for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
        assert lifecycle.transition(transition)
    assert output_of(graph.procs[2]).count("serving learned") == learned + 1


def test_corrupt_checkpoint_is_reported_and_the_node_stays_up(graph, tmp_path):
    broken = tmp_path / "ckpt"
    broken.mkdir()
    (broken / "config.yaml").write_text("format: 1\nmodel: {width: [\n")
    health = []
    graph.create_subscription(DiagnosticArray, "/diagnostics", lambda m: health.extend(
        s for s in m.status if s.name == "broken_model: predictor"), 10)
    with ros_process(["-m", "world_model_node.predictor_node", "--ros-args",
                      "-r", "__node:=broken_model", "-p", f"checkpoint:={broken}",
                      "-p", "not_a_parameter:=3", "-p", "diagnostics_period:=0.5"],
                     ready_line="cannot load the world model", timeout=60) as proc:
        # Unconfigured, it says so on /diagnostics (and keeps running).
        assert spin_until(graph, lambda: bool(health), 10.0), output_of(proc)
        assert health[-1].level == DiagnosticStatus.WARN
        assert health[-1].message == "not configured"
        assert proc.poll() is None
        out = output_of(proc)
        assert "config.yaml" in out and "unknown parameter 'not_a_parameter'" in out


def test_predicted_images_are_rendered_one_at_a_time(graph):
    # Predictions that come while the scene renders draw no image of their own (they would
    # queue on the scene's render service), and a render unanswered after render_timeout,
    # whose reply may have been lost, is given up: the next prediction asks again, and the
    # late answer is not published.
    import threading

    from rclpy.callback_groups import ReentrantCallbackGroup

    from ros_io.lifecycle import HandOffExecutor
    from world_model_planning.srv import RenderScene

    asked = []

    def render(req, response):
        asked.append(time.monotonic())
        if len(asked) == 1:
            time.sleep(5.0)       # past the node's render_timeout
        response.success = True
        response.rgb = Image(width=1 if len(asked) == 1 else req.camera_info.width,
                             height=req.camera_info.height, encoding="rgb8")
        return response

    server = rclpy.create_node("render_probe")
    # Requests are taken as they come (the first one's sleep blocks none of them).
    server.create_service(RenderScene, "/render_probe/render", render,
                          callback_group=ReentrantCallbackGroup())
    executor = HandOffExecutor(num_threads=3)
    executor.add_node(server)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    images = []
    graph.create_subscription(Image, "/image_probe/predicted_image", images.append, 10)
    client = graph.create_client(Predict, "/image_probe/predict")
    try:
        with ros_process(["-m", "world_model_node.predictor_node", "--ros-args",
                          "-r", "__node:=image_probe",
                          "-p", "render_service:=/render_probe/render",
                          "-p", "render_timeout:=3.0", "-p", "image.width:=64",
                          "-p", "image.height:=48"], ready_line="serving", timeout=120) as model:
            def predict():
                response = ask(graph, client, request(n=1, h=2), 30.0)
                assert response is not None and response.success, output_of(model)

            deadline = time.monotonic() + 30.0
            while not asked and time.monotonic() < deadline:  # until its client sees ours
                predict()
                spin_until(graph, lambda: bool(asked), 0.5)
            assert len(asked) == 1, output_of(model)
            predict()
            predict()
            assert time.monotonic() - asked[0] < 3.0 and len(asked) == 1
            spin_until(graph, lambda: False, 3.5 - (time.monotonic() - asked[0]))
            predict()
            assert spin_until(graph, lambda: bool(images), 15.0), output_of(model)
            assert len(asked) == 2 and [i.width for i in images] == [64]
            assert "asking again" in output_of(model)
    finally:
        executor.shutdown(timeout_sec=10.0)     # until the late render has answered
        spinner.join(timeout=5.0)
        server.destroy_node()
