"""The simulated robot in its own process, over a real DDS graph: clock, sensors, trajectory
execution with controller semantics, rejection of malformed commands, recording."""
import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from geometry_msgs.msg import PoseStamped
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ros_io.bag import read_messages, topic_summary
from ros_io.images import image_to_numpy
from ros_io.paths import share_path
from ros_io.recorder import Recorder
from ros_io.stamps import to_duration_msg, to_seconds, to_time_msg
from sim_robot import panda
from sim_robot.scene import OBJECT_IDS
from support.graph import (ask, output_of, ros_context, ros_process, spare_domain, spin_until,
                           wait_for_output)
from world_model_planning.msg import ObjectArray
from world_model_planning.srv import ResetSim

ARM = list(panda.ARM_JOINT_NAMES)


class Probe:
    """A test node that keeps the latest message of every sim topic."""

    def __init__(self):
        self.node = rclpy.create_node(
            "sim_probe", parameter_overrides=[Parameter("use_sim_time", value=True)])
        self.latest, self.counts, self.stamps = {}, {}, {}
        sensor = qos_profile_sensor_data
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        for topic, cls, qos in [
                ("/clock", Clock, 10), ("/joint_states", JointState, 10),
                ("/robot_description", String, latched),
                ("/camera/color/image_raw", Image, sensor),
                ("/camera/color/camera_info", CameraInfo, sensor),
                ("/camera/depth/image_raw", Image, sensor),
                ("/camera/instances/image_raw", Image, sensor),
                ("/camera/pose", PoseStamped, 10),
                ("/side_camera/color/image_raw", Image, sensor),
                ("/side_camera/color/camera_info", CameraInfo, sensor),
                ("/side_camera/depth/image_raw", Image, sensor),
                ("/side_camera/instances/image_raw", Image, sensor),
                ("/side_camera/pose", PoseStamped, 10), ("/ground_truth/objects", ObjectArray, 10),
                ("/ground_truth/tcp_pose", PoseStamped, 10)]:
            self.node.create_subscription(cls, topic, lambda m, t=topic: self._keep(t, m), qos)
        self.pub_traj = self.node.create_publisher(
            JointTrajectory, "/joint_trajectory_controller/joint_trajectory", 10)
        self.pub_gripper = self.node.create_publisher(
            Float64MultiArray, "/gripper_controller/commands", 10)
        self.reset_client = self.node.create_client(ResetSim, "/sim_robot/reset")

    def _keep(self, topic, msg):
        self.latest[topic] = msg
        self.counts[topic] = self.counts.get(topic, 0) + 1
        if hasattr(msg, "header"):
            self.stamps.setdefault(topic, []).append(to_seconds(msg.header.stamp))

    def spin_for(self, sim_seconds, timeout=30.0):
        end = self.now() + sim_seconds
        assert spin_until(self.node, lambda: self.now() >= end, timeout), "sim time stalled"

    def now(self):
        return self.node.get_clock().now().nanoseconds * 1e-9

    def arm(self):
        js = self.latest["/joint_states"]
        return np.array([js.position[js.name.index(n)] for n in ARM])

    def send(self, q_points, times, start_delay=0.2, names=ARM, velocities=None):
        msg = JointTrajectory(joint_names=list(names))
        msg.header.stamp = to_time_msg(self.now() + start_delay) if start_delay is not None \
            else to_time_msg(0.0)
        for i, (t, q) in enumerate(zip(times, q_points)):
            pt = JointTrajectoryPoint(positions=[float(v) for v in q],
                                      time_from_start=to_duration_msg(t))
            if velocities is not None:
                pt.velocities = [float(v) for v in velocities[i]]
            msg.points.append(pt)
        self.pub_traj.publish(msg)
        return msg


@pytest.fixture(scope="module")
def sim():
    with ros_context(), \
            ros_process(["-m", "sim_robot.sim_node", "--ros-args", "-p", "real_time_factor:=1.0",
                         "--log-level", "sim_robot:=info"],
                        ready_line="simulated robot up", timeout=120) as proc:
        probe = Probe()
        assert spin_until(probe.node, lambda: "/joint_states" in probe.latest
                          and "/camera/color/image_raw" in probe.latest, 60.0), output_of(proc)
        probe.proc = proc
        yield probe
        probe.node.destroy_node()


def _log_lines(probe, text, timeout=5.0):
    return wait_for_output(probe.proc, text, timeout, node=probe.node)


def test_sim_time_advances_and_stamps_are_consistent(sim):
    t0 = sim.now()
    sim.spin_for(1.0)
    assert sim.now() >= t0 + 1.0
    stamps = np.array(sim.stamps["/joint_states"][-50:])
    assert np.all(np.diff(stamps) > 0), "joint state stamps must increase"
    np.testing.assert_allclose(np.diff(stamps), 0.01, atol=2.5e-3)  # 100 Hz of sim time
    assert abs(stamps[-1] - sim.now()) < 0.1
    rgb = sim.stamps["/camera/color/image_raw"]
    assert abs(rgb[-1] - sim.now()) < 0.3
    # Colour, depth, mask and camera info of a frame share one stamp.
    for topic in ["/camera/depth/image_raw", "/camera/instances/image_raw",
                  "/camera/color/camera_info"]:
        assert set(rgb[-10:-1]) <= set(sim.stamps[topic]), topic


def test_sensor_messages(sim):
    rgb = image_to_numpy(sim.latest["/camera/color/image_raw"])
    depth = image_to_numpy(sim.latest["/camera/depth/image_raw"])
    inst = image_to_numpy(sim.latest["/camera/instances/image_raw"])
    assert rgb.shape == (240, 320, 3) and rgb.std() > 10
    assert depth.dtype == np.float32 and 0.3 < np.nanmedian(depth) < 3.0
    assert {OBJECT_IDS["cube"], OBJECT_IDS["can"], OBJECT_IDS["mug"], 1} <= set(np.unique(inst))
    info = sim.latest["/camera/color/camera_info"]
    assert info.width == 320 and info.k[0] > 0 and info.header.frame_id == \
        "camera_color_optical_frame"
    # The side camera sees the objects from across the table, in its own optical frame.
    side = image_to_numpy(sim.latest["/side_camera/instances/image_raw"])
    assert {OBJECT_IDS["cube"], OBJECT_IDS["can"], OBJECT_IDS["mug"], 1} <= set(np.unique(side))
    assert sim.latest["/side_camera/color/image_raw"].header.frame_id == \
        sim.latest["/side_camera/color/camera_info"].header.frame_id == \
        "side_camera_color_optical_frame"
    main, other = (sim.latest[f"/{ns}/pose"].pose.position for ns in ("camera", "side_camera"))
    assert main.y < -0.5 and other.y > 0.5  # on either side of the table
    assert not np.array_equal(image_to_numpy(sim.latest["/side_camera/depth/image_raw"]), depth)
    assert "<robot" in sim.latest["/robot_description"].data
    names = {o.name for o in sim.latest["/ground_truth/objects"].objects}
    assert {"cube", "can", "mug"} <= names
    js = sim.latest["/joint_states"]
    assert list(js.name) == ARM + list(panda.FINGER_JOINT_NAMES)
    assert len(js.position) == len(js.velocity) == len(js.effort) == 9


def test_executes_joint_trajectory_to_target(sim):
    q0 = sim.arm()
    target = q0 + np.array([0.3, -0.2, 0.2, 0.3, -0.2, 0.25, 0.3])
    mid = (q0 + target) / 2
    sim.send([mid, target], [1.0, 2.0])
    sim.spin_for(0.2 + 1.0)
    np.testing.assert_allclose(sim.arm(), mid, atol=0.03)  # on its way, on time
    sim.spin_for(1.5)
    np.testing.assert_allclose(sim.arm(), target, atol=5e-3)
    # TCP ground truth agrees with forward kinematics of the URDF it publishes.
    assert sim.latest["/ground_truth/tcp_pose"].header.frame_id == "world"


def test_new_trajectory_replaces_queued_remainder(sim):
    q0 = sim.arm()
    far = q0 + 0.4
    sim.send([far], [3.0])
    sim.spin_for(0.5)
    back = q0 + np.array([0.0, 0.1, 0.0, 0.1, 0.0, 0.1, 0.0])
    sim.send([back], [1.0], start_delay=None)  # zero stamp: replace now
    sim.spin_for(1.6)
    np.testing.assert_allclose(sim.arm(), back, atol=5e-3)


def test_gripper_command(sim):
    sim.pub_gripper.publish(Float64MultiArray(data=[0.02]))
    sim.spin_for(1.5)
    js = sim.latest["/joint_states"]
    width = sum(js.position[js.name.index(n)] for n in panda.FINGER_JOINT_NAMES)
    assert width == pytest.approx(0.02, abs=3e-3)
    sim.pub_gripper.publish(Float64MultiArray(data=[0.08]))
    sim.spin_for(1.0)


BAD_TRAJECTORIES = {
    "unknown joint": dict(names=ARM[:6] + ["elbow_of_doom"]),
    "missing joints": dict(names=ARM[:6], points=lambda q: [q[:6] + 0.1]),
    "NaN": dict(points=lambda q: [np.where(np.arange(7) == 2, np.nan, q)]),
    "outside": dict(points=lambda q: [np.where(np.arange(7) == 3, 0.5, q)]),
    "empty trajectory": dict(points=lambda q: [], times=[]),
    "strictly increasing": dict(points=lambda q: [q + 0.05, q + 0.1], times=[1.0, 1.0]),
}


@pytest.mark.parametrize("reason", list(BAD_TRAJECTORIES))
def test_malformed_trajectory_rejected_and_sim_keeps_running(sim, reason):
    case = BAD_TRAJECTORIES[reason]
    sim.spin_for(0.3)
    q0 = sim.arm()
    points = case.get("points", lambda q: [q + 0.2])(q0)
    sim.send(points, case.get("times", [1.0] * len(points)), names=case.get("names", ARM))
    assert _log_lines(sim, "rejected joint trajectory"), output_of(sim.proc)
    assert any(reason in ln for ln in _log_lines(sim, "rejected joint trajectory"))
    sim.proc.output_lines.clear()
    before = sim.counts["/joint_states"]
    sim.spin_for(1.0)
    assert sim.counts["/joint_states"] > before + 50  # still publishing
    assert sim.proc.poll() is None
    np.testing.assert_allclose(sim.arm(), q0, atol=2e-3)  # and did not move


@pytest.mark.parametrize("data", [[0.5], [float("nan")], [0.01, 0.02], []])
def test_malformed_gripper_command_rejected(sim, data):
    sim.pub_gripper.publish(Float64MultiArray(data=data))
    assert _log_lines(sim, "rejected gripper command")
    sim.proc.output_lines.clear()
    sim.spin_for(0.3)
    assert sim.proc.poll() is None


def test_reset_service(sim):
    response = ask(sim.node, sim.reset_client, ResetSim.Request(scenario_path="/no/such.yaml"),
                   10.0)
    assert not response.success and "cannot load scenario" in response.message
    t_before = sim.now()
    response = ask(sim.node, sim.reset_client, ResetSim.Request(perturb=True, seed=7), 10.0)
    assert response.success, response.message
    sim.spin_for(0.5)
    assert sim.now() > t_before  # the clock never jumps back
    np.testing.assert_allclose(sim.arm(), panda.HOME_POSITION, atol=5e-3)


def test_recorded_bag_holds_every_topic(sim, tmp_path):
    import yaml

    topics = yaml.safe_load(share_path("config", "recorder.yaml").read_text())
    topics = topics["recorder"]["ros__parameters"]["topics"]
    bag = tmp_path / "bag"
    t_start = sim.now()
    recorder = Recorder(sim.node, bag, topics)
    sim.spin_for(0.5)  # subscriptions match
    q0 = sim.arm()
    sim.send([q0 + 0.1], [1.0])
    sim.pub_gripper.publish(Float64MultiArray(data=[0.05]))
    sim.spin_for(3.0)
    t_end = sim.now()
    counts = recorder.close()
    summary = topic_summary(bag)
    expected_types = {
        "/clock": "rosgraph_msgs/msg/Clock", "/joint_states": "sensor_msgs/msg/JointState",
        "/robot_description": "std_msgs/msg/String",
        "/camera/color/image_raw": "sensor_msgs/msg/Image",
        "/camera/color/camera_info": "sensor_msgs/msg/CameraInfo",
        "/camera/depth/image_raw": "sensor_msgs/msg/Image",
        "/camera/depth/camera_info": "sensor_msgs/msg/CameraInfo",
        "/camera/instances/image_raw": "sensor_msgs/msg/Image",
        "/camera/pose": "geometry_msgs/msg/PoseStamped",
        "/side_camera/color/image_raw": "sensor_msgs/msg/Image",
        "/side_camera/color/camera_info": "sensor_msgs/msg/CameraInfo",
        "/side_camera/depth/image_raw": "sensor_msgs/msg/Image",
        "/side_camera/depth/camera_info": "sensor_msgs/msg/CameraInfo",
        "/side_camera/instances/image_raw": "sensor_msgs/msg/Image",
        "/side_camera/pose": "geometry_msgs/msg/PoseStamped",
        "/joint_trajectory_controller/joint_trajectory": "trajectory_msgs/msg/JointTrajectory",
        "/gripper_controller/commands": "std_msgs/msg/Float64MultiArray",
        "/ground_truth/objects": "world_model_planning/msg/ObjectArray",
        "/ground_truth/tcp_pose": "geometry_msgs/msg/PoseStamped",
    }
    try:     # where tf2_msgs is installed the simulator also publishes the cameras on /tf
        import tf2_msgs.msg  # noqa: F401
        expected_types["/tf"] = "tf2_msgs/msg/TFMessage"
    except ImportError:
        pass
    assert {t: v[0] for t, v in summary.items()} == expected_types
    assert {t: v[1] for t, v in summary.items()} == counts
    span = t_end - t_start
    assert counts["/robot_description"] == 1
    assert counts["/joint_trajectory_controller/joint_trajectory"] == 1
    assert counts["/gripper_controller/commands"] == 1
    # Stream counts match their rates over the recorded span (sim time), nothing dropped.
    for topic, rate in [("/joint_states", 100), ("/camera/color/image_raw", 15),
                        ("/camera/depth/image_raw", 15), ("/side_camera/color/image_raw", 15),
                        ("/ground_truth/objects", 30)]:
        assert counts[topic] == pytest.approx(rate * span, rel=0.1, abs=3), (topic, counts, span)
    stamps = [to_seconds(m.header.stamp) for _, _, _, m in
              read_messages(bag, ["/camera/color/image_raw"])]
    assert np.all(np.diff(stamps) > 0)
    np.testing.assert_allclose(np.diff(stamps), 1 / 15, atol=0.01)


def test_bad_startup_parameters_are_reported_and_sim_runs():
    """A missing scenario file and a misspelt parameter give clear errors; the robot comes up
    with the built-in scene. (Own DDS domain: the module's simulator keeps running.)"""
    domain = spare_domain(1)
    args = ["-m", "sim_robot.sim_node", "--ros-args", "-p", "scenario:=/no/such/scene.yaml",
            "-p", "camera_ratte:=5.0"]
    with ros_process(args, ready_line="simulated robot up", timeout=120,
                     env={"ROS_DOMAIN_ID": domain}) as proc:
        log = output_of(proc)
        assert "cannot load scenario /no/such/scene.yaml" in log
        assert "unknown parameter 'camera_ratte'" in log
        assert proc.poll() is None
