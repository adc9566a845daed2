"""gsplat_scene drops bad frames (with a warning naming the problem, also on /diagnostics)
and keeps mapping."""
import time

import numpy as np
import pytest
import rclpy
from rclpy.qos import qos_profile_sensor_data
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from sensor_msgs.msg import CameraInfo, Image

from ros_io.images import numpy_to_image
from ros_io.stamps import to_time_msg
from support.graph import output_of, ros_context, ros_process, spare_domain, spin_until
from world_model_planning.msg import SceneInfo

SCENE_ARGS = ["-m", "gsplat_scene.scene_node", "--ros-args", "-p", "iterations:=1",
              "-p", "publish_rate:=5.0", "-p", "diagnostics_period:=0.5"]


def _frame_messages(stamp, width=64, height=48):
    rgb = np.full((height, width, 3), 120, np.uint8)
    depth = np.full((height, width), 1.0, np.float32)
    info = CameraInfo(width=width, height=height, k=[60.0, 0, 31.5, 0, 60.0, 23.5, 0, 0, 1])
    msgs = {"rgb": numpy_to_image(rgb, "rgb8", stamp, "cam"),
            "depth": numpy_to_image(depth, "32FC1", stamp, "cam"), "info": info}
    info.header.stamp, info.header.frame_id = stamp, "cam"
    pose = PoseStamped()
    pose.header.stamp, pose.header.frame_id = stamp, "world"
    pose.pose.orientation.w = 1.0
    msgs["pose"] = pose
    return msgs


BAD_FRAMES = {
    "size mismatch": lambda m: m.__setitem__("depth", numpy_to_image(
        np.ones((10, 10), np.float32), "32FC1", m["depth"].header.stamp, "cam")),
    "no valid pixels": lambda m: m.__setitem__("depth", numpy_to_image(
        np.full((48, 64), np.nan, np.float32), "32FC1", m["depth"].header.stamp, "cam")),
    "colour encoding": lambda m: setattr(m["rgb"], "encoding", "yuv422"),
    "stale frame": None,  # stamped an hour ago
    "no camera pose": lambda m: m.pop("pose"),
}


def _stream_until(node, send, make_frame, done, timeout):
    """Send a frame every 0.2 s, as a camera does, until done() (best-effort QoS may drop
    the first frames while discovery completes); returns done()."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not done():
        send(make_frame())
        spin_until(node, done, 0.2)
    return done()


@pytest.mark.parametrize("problem", list(BAD_FRAMES))
def test_bad_frames_are_dropped_and_node_keeps_mapping(problem):
    """Frames from a test publisher (own DDS domain): each bad one is dropped with a warning,
    then a good frame is still integrated; /diagnostics warns, names the problem, and is
    back to OK once frames are integrated again."""
    domain = spare_domain(2)
    with ros_context(domain), ros_process(SCENE_ARGS, ready_line=": configured on",
                                          env={"ROS_DOMAIN_ID": domain}) as scene:
        node = rclpy.create_node("bad_frames")
        sensor = qos_profile_sensor_data
        pubs = {"rgb": node.create_publisher(Image, "/camera/color/image_raw", sensor),
                "depth": node.create_publisher(Image, "/camera/depth/image_raw", sensor),
                "info": node.create_publisher(CameraInfo, "/camera/color/camera_info", sensor),
                "pose": node.create_publisher(PoseStamped, "/camera/pose", 10)}
        infos, health = [], []
        node.create_subscription(SceneInfo, "/gsplat_scene/info", infos.append, 10)
        node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: health.extend(
            s for s in m.status if s.name == "gsplat_scene: mapping"), 10)

        def reported(level, text):
            return lambda: any(s.level == level and text in s.message for s in health)
        assert spin_until(node, lambda: all(p.get_subscription_count() for p in
                                            pubs.values()), 20.0)
        assert spin_until(node, reported(DiagnosticStatus.WARN, "no frame integrated yet"),
                          10.0), health

        def send(msgs):
            for key in ("pose", "rgb", "depth", "info"):
                if key in msgs:
                    pubs[key].publish(msgs[key])

        def now():
            return node.get_clock().now().nanoseconds * 1e-9

        def bad_frame():
            msgs = _frame_messages(to_time_msg(now() - 3600 if problem == "stale frame"
                                               else now()))
            if BAD_FRAMES[problem]:
                BAD_FRAMES[problem](msgs)
            return msgs

        assert _stream_until(node, send, bad_frame,
                             lambda: "dropped camera frame" in output_of(scene), 30.0), \
            output_of(scene)
        assert problem.split()[0] in output_of(scene).split("dropped camera frame")[1]
        assert spin_until(node, reported(DiagnosticStatus.WARN, "dropped camera frame"),
                          5.0), health
        warned = next(s for s in health if "dropped camera frame" in s.message)
        assert problem.split()[0] in warned.message, warned.message
        del health[:]
        assert _stream_until(node, send, lambda: _frame_messages(to_time_msg(now())),
                             lambda: infos and infos[-1].frames_integrated >= 1, 60.0), \
            output_of(scene)
        assert infos[-1].num_gaussians > 100
        assert spin_until(node, reported(DiagnosticStatus.OK, "mapping"), 10.0), health
        values = {v.key: v.value for v in health[-1].values}
        assert int(values["frames integrated"]) >= 1, values
        assert int(values["frames rejected"]) + int(values["problems"]) >= 1, values
        assert scene.poll() is None
        node.destroy_node()
