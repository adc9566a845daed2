"""ROS 2 lifecycle node `gsplat_scene`: the Gaussian-splat scene memory on a live graph.

Subscribes, for each camera namespace NS in `cameras`, NS/color/image_raw, NS/depth/image_raw
(32FC1 metres or 16UC1 millimetres), NS/color/camera_info and an optional
NS/instances/image_raw mask (sensor-data QoS, approximate stamp sync per camera); takes each
camera's pose from tf2 where it exists, else from NS/pose (PoseStamped), else (one camera
only) from the static `camera_pose` parameter. With `segmentation: tabletop` (a robot without
a segmenter) the objects come from depth alone: clusters above the table, the robot told apart
by /robot_description and joint_states (`gsplat_scene.segmentation`); the labels it gave each
frame are published on ~/segmentation/image.
Publishes the Gaussian centres as a PointCloud2 (x y z rgb, the layout MoveIt's point-cloud
octomap updater reads), SceneInfo, the objects, and a rendered image of a virtual camera.
Services: ~/save, ~/load, ~/reset, ~/render. Bad frames are dropped with a throttled warning.
Health on /diagnostics ("gsplat_scene: mapping"): frame counters, the map's size, and a
warning naming the latest problem or how long no frame has been integrated.

A worker thread takes the newest frame of each camera in turn (the oldest of those waiting
first), tracks the objects in it and publishes them at once (stamped with the frame's time),
then optimises the map against it only if no other frame is waiting: where mapping is slower
than the cameras (a CPU), the objects keep up and the map's refinement waits for quieter
moments. Further cameras see what the arm hides from the first: their frames are taken
while the first camera's latest frame hides an object, and otherwise once per
`extra_camera_period` to map what the first camera does not see.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import threading
import time

import numpy as np
import rclpy
import torch
from geometry_msgs.msg import PoseStamped
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.lifecycle import State, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, JointState, PointCloud2, PointField
from scipy.spatial.transform import Rotation
from std_msgs.msg import ColorRGBA, String
from visualization_msgs.msg import Marker, MarkerArray

from gsplat_scene.frame_sync import FrameSync
from gsplat_scene.frames import frame_from_messages, look_at_camera, pose_to_matrix
from gsplat_scene.mapping import Frame, MappingConfig, SceneMemory
from gsplat_scene.ply import load_ply, save_ply
from gsplat_scene.segmentation import TabletopConfig, TabletopSegmenter, object_boxes
from robot_model.spheres import RobotBody
from ros_io.diagnostics import OK, WARN, Diagnostics, Since
from ros_io.images import numpy_to_image
from ros_io.lifecycle import ManagedNode, run
from ros_io.markers import box, label
from ros_io.params import CONFIGURE, declare, ranged, report_unknown_overrides
from ros_io.stamps import to_seconds, to_time_msg
from world_model_planning.msg import ObjectArray, ObjectState, SceneInfo
from world_model_planning.srv import LoadScene, RenderScene, ResetScene, SaveScene

HIDDEN_BELOW = 0.8   # share of an object a frame shows (ObjectRecord.visible_in) when hidden
SEGMENTATIONS = ("masks", "tabletop")
QUIET_WARN_S = 5.0   # /diagnostics warns when no frame has been integrated for this long [s]

try:  # tf2 is on every robot; not installable here
    import tf2_ros
except ImportError:
    tf2_ros = None


def matrix_to_pose(pose_msg, m) -> None:
    q = Rotation.from_matrix(np.asarray(m)[:3, :3]).as_quat()
    pose_msg.position.x, pose_msg.position.y, pose_msg.position.z = (float(v) for v in m[:3, 3])
    (pose_msg.orientation.x, pose_msg.orientation.y,
     pose_msg.orientation.z, pose_msg.orientation.w) = (float(v) for v in q)


def object_markers(objects: ObjectArray) -> MarkerArray:
    """RViz markers of the objects: each one's box in its colour, and its id above it (the
    id a PlanToGoal goal names)."""
    out = MarkerArray(markers=[Marker(header=objects.header, action=Marker.DELETEALL)])
    white = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
    for obj in objects.objects:
        p, q = obj.pose.position, obj.pose.orientation
        centre = np.array([p.x, p.y, p.z])
        size = 2 * np.array([obj.half_extent.x, obj.half_extent.y, obj.half_extent.z])
        colour = ColorRGBA(r=obj.color.r, g=obj.color.g, b=obj.color.b, a=0.5) \
            if obj.color.a > 0 else ColorRGBA(r=0.6, g=0.6, b=0.6, a=0.5)
        rotation = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
        out.markers.append(box(objects.header, "objects", obj.id, centre, rotation, size,
                               colour))
        out.markers.append(label(objects.header, "object_ids", obj.id,
                                 centre + [0.0, 0.0, size.max() / 2 + 0.03], str(obj.id), white))
    return out


def centres_cloud(means: np.ndarray, colors: np.ndarray, stamp, frame_id: str) -> PointCloud2:
    """PointCloud2 with x y z (float32) and rgb (packed float32), as PCL and octomap read it."""
    n = means.shape[0]
    rgb = (np.clip(colors, 0, 1) * 255).astype(np.uint32)
    packed = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    data = np.empty(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
    data["x"], data["y"], data["z"] = means[:, 0], means[:, 1], means[:, 2]
    data["rgb"] = packed
    msg = PointCloud2(height=1, width=n, is_bigendian=False, point_step=16, row_step=16 * n,
                      is_dense=True)
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    msg.fields = [PointField(name=f, offset=4 * i, datatype=PointField.FLOAT32, count=1)
                  for i, f in enumerate("xyz")] + \
        [PointField(name="rgb", offset=12, datatype=PointField.FLOAT32, count=1)]
    msg.data = data.tobytes()
    return msg


def bounds_param(values) -> tuple | None:
    """(lo, hi) corners of the mapped box from 6 numbers; None (map everything) from the
    default [0.0]; ValueError otherwise."""
    if list(values) == [0.0]:
        return None
    if len(values) != 6 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"bounds must be 6 finite numbers (xmin ymin zmin xmax ymax zmax) "
                         f"or [0.0] for no bounds, got {list(values)}")
    lo, hi = tuple(values[:3]), tuple(values[3:])
    if any(a >= b for a, b in zip(lo, hi)):
        raise ValueError(f"bounds: min {lo} must be below max {hi}")
    return lo, hi


class SceneNode(ManagedNode):
    def __init__(self, **kwargs):
        super().__init__("gsplat_scene", **kwargs)
        p = functools.partial(declare, self)
        p("device", "cpu", ParameterDescriptor(
            description="Torch device of the memory (cpu, cuda, cuda:N)",
            additional_constraints=CONFIGURE))
        p("world_frame", "world", ParameterDescriptor(description="Map frame",
                                                      additional_constraints=CONFIGURE))
        p("cameras", ["camera"], ParameterDescriptor(
            description="Camera namespaces: NS/color/image_raw, NS/depth/image_raw, "
                        "NS/color/camera_info, NS/instances/image_raw, NS/pose",
            additional_constraints=CONFIGURE))
        p("camera_pose_source", "auto", ParameterDescriptor(
            description="auto (tf2 if present, else topic), tf, topic or static",
            additional_constraints=CONFIGURE))
        p("camera_pose", [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], ParameterDescriptor(
            description="Static camera optical-frame pose in the world: x y z qx qy qz qw",
            additional_constraints=CONFIGURE))
        p("extra_camera_period", 2.0, ranged(
            "Frames of the cameras after the first are integrated while the first one's "
            "latest frame hides an object (shows less than 80 % of it), else once per this "
            "period [s] to map what the first does not see (0 = every frame)", 0.0, 3600.0))
        p("max_gaussians", 300_000, ranged("Hard cap on Gaussians", 1000, 50_000_000, True,
                                           additional_constraints=CONFIGURE))
        p("max_memory_mb", 1024.0, ranged("Hard cap on map memory [MB]", 1.0, 1e6,
                                          additional_constraints=CONFIGURE))
        p("iterations", 3, ranged("Optimisation steps per frame", 0, 1000, True))
        p("keyframes", 8, ranged("Keyframe window", 0, 1000, True))
        p("views_per_step", 1, ranged("Views rendered together per optimisation step", 1, 64,
                                      True))
        p("densify_grad", 5.0, ranged("Split or clone Gaussians whose position gradient is "
                                      "this many times the median (0 = off)", 0.0, 1000.0,
                                      additional_constraints=CONFIGURE))
        p("track_agreement", 0.9, ranged("Fraction of an object's pixels the map must render at "
                                         "the measured depth for it to count as in place",
                                         0.0, 1.0, additional_constraints=CONFIGURE))
        p("bounds", [0.0], ParameterDescriptor(
            description="Mapped box in the world frame: xmin ymin zmin xmax ymax zmax [m]; "
                        "[0.0] maps everything in range", additional_constraints=CONFIGURE))
        p("segmentation", "masks", ParameterDescriptor(
            description="Where objects come from: masks (NS/instances/image_raw from any "
                        "segmenter) or tabletop (clusters standing on the table, from depth; "
                        "the robot told apart by /robot_description and joint_states)",
            additional_constraints=CONFIGURE))
        p("tabletop.table_height", 0.0, ranged("Height of the table top in the world [m]",
                                               -10.0, 10.0, additional_constraints=CONFIGURE))
        p("tabletop.table_search", 0.03, ranged(
            "Distance about table_height searched for the table top in every frame [m] "
            "(0 = table_height as given)", 0.0, 0.5, additional_constraints=CONFIGURE))
        p("tabletop.min_height", 0.008, ranged(
            "Height above the table where objects start [m] (above the depth noise)",
            0.001, 0.5, additional_constraints=CONFIGURE))
        p("tabletop.noise_sigmas", 4.0, ranged(
            "Objects start this many standard deviations of the table's measured depth noise "
            "above it, if that is above min_height", 0.0, 20.0,
            additional_constraints=CONFIGURE))
        p("tabletop.robot_margin", 0.02, ranged(
            "Margin around the robot's link spheres [m] (calibration, joint-state lag)",
            0.0, 0.5, additional_constraints=CONFIGURE))
        p("tabletop.confirm_frames", 3, ranged(
            "Frames in a row a new cluster must be seen in to become an object", 1, 1000, True,
            additional_constraints=CONFIGURE))
        p("tabletop.joint_state_slop", 0.1, ranged(
            "Largest stamp difference between a frame and the joint state placing the "
            "robot in it [s]", 0.0, 10.0))
        p("downscale", 1, ranged("Integrate frames downscaled by this factor", 1, 16, True))
        p("sync_slop", 0.02, ranged("Largest stamp difference within a frame [s]", 0.0, 1.0))
        p("max_frame_age", 1.0, ranged("Frames older than this are stale [s]", 0.0, 3600.0))
        p("publish_rate", 2.0, ranged("Cloud, info and objects rate [Hz] (objects also after "
                                      "every integrated frame)", 0.1, 100.0))
        p("render_rate", 1.0, ranged("Virtual camera rate [Hz] (0 = off)", 0.0, 100.0))
        p("virtual_camera.position", [1.4, -0.7, 0.95], ParameterDescriptor(
            description="Virtual camera position in the world [m]"))
        p("virtual_camera.look_at", [0.4, 0.0, 0.22], ParameterDescriptor(
            description="Point the virtual camera looks at [m]"))
        p("virtual_camera.width", 320, ranged("Virtual camera width [px]", 16, 4096, True))
        p("virtual_camera.height", 240, ranged("Virtual camera height [px]", 16, 4096, True))
        p("virtual_camera.fovy_deg", 58.0, ranged("Virtual camera vertical FOV [deg]", 1.0, 170.0))
        p("torch_threads", 0, ranged("CPU threads for torch (0 = torch's default)", 0, 256,
                                     True, additional_constraints=CONFIGURE))
        p("autostart", True, ParameterDescriptor(
            description="Configure and activate at start-up (no lifecycle manager needed)",
            read_only=True))
        self.diagnostics = Diagnostics(self, "mapping", self._device_name, self._report)
        report_unknown_overrides(self)
        self.memory: SceneMemory | None = None
        # What waits for the memory's lock has a group (and an executor thread) of its own:
        # the camera streams and the clock must not wait for a frame's integration. The
        # services live as long as the node: a request that meets a lifecycle transition is
        # answered (refused while unconfigured), never left without a reply.
        self._memory_group = MutuallyExclusiveCallbackGroup()
        for cls, name, callback in [(SaveScene, "~/save", self._on_save),
                                    (LoadScene, "~/load", self._on_load),
                                    (ResetScene, "~/reset", self._on_reset),
                                    (RenderScene, "~/render", self._on_render)]:
            self.create_service(cls, name, callback, callback_group=self._memory_group)
        self._active = False
        self._lock = threading.Lock()
        self._pending: dict = {}   # camera -> its newest frame not yet integrated
        self._integrated_at: dict = {}   # camera -> stamp of its last integrated frame
        self.frames_skipped = 0    # extra cameras' frames not needed (extra_camera_period)
        self._frame_ready = threading.Condition()
        self._warned: dict[str, float] = {}
        self.problems, self._last_problem = 0, ""   # what _warn reported, throttled or not
        self._problems_reported = Since()
        self.frames_rejected = 0     # bad or incomplete frames
        self.frames_superseded = 0   # replaced by a newer frame before they were integrated
        self.frames_integrated = 0
        self._integrated_wall: float | None = None   # time.monotonic() of the latest
        self._frame_stamp = None   # of the latest integrated frame (the objects' poses)
        self.segmenter: TabletopSegmenter | None = None
        self.robot_body: RobotBody | None = None
        self._joint_states: list = []   # (stamp, {name: position}), oldest first
        self._frame_ids: dict = {}      # camera -> optical frame id of its latest frame

    # ---- lifecycle -----------------------------------------------------------------------
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        prm = lambda n: self.get_parameter(n).value  # noqa: E731
        device = prm("device")
        if prm("torch_threads") > 0:
            torch.set_num_threads(prm("torch_threads"))
        if device.startswith("cuda") and not torch.cuda.is_available():
            self.get_logger().error(f"device '{device}' requested but CUDA is not available")
            return TransitionCallbackReturn.FAILURE
        try:
            torch.device(device)
        except RuntimeError as err:
            self.get_logger().error(f"bad device '{device}': {err}")
            return TransitionCallbackReturn.FAILURE
        try:
            bounds = bounds_param(prm("bounds"))
        except ValueError as err:
            self.get_logger().error(str(err))
            return TransitionCallbackReturn.FAILURE
        config = MappingConfig(max_gaussians=prm("max_gaussians"),
                               max_memory_mb=prm("max_memory_mb"),
                               iterations=prm("iterations"), keyframes=prm("keyframes"),
                               views_per_step=prm("views_per_step"), bounds=bounds,
                               densify_grad=prm("densify_grad"),
                               track_agreement=prm("track_agreement"))
        self.memory = SceneMemory(config, device=device)
        self.world = prm("world_frame")
        self.pose_source = prm("camera_pose_source")
        if self.pose_source == "auto":
            self.pose_source = "tf" if tf2_ros is not None else "topic"
        self.cameras = list(prm("cameras"))
        if not self.cameras or len(set(self.cameras)) != len(self.cameras) or \
                not all(c.strip("/") for c in self.cameras):
            self.get_logger().error(f"cameras must be distinct non-empty namespaces, got "
                                    f"{self.cameras}")
            return TransitionCallbackReturn.FAILURE
        if self.pose_source == "static" and len(self.cameras) > 1:
            self.get_logger().error("camera_pose_source 'static' holds one camera's pose; "
                                    f"{len(self.cameras)} cameras need tf or pose topics")
            return TransitionCallbackReturn.FAILURE
        segmentation = prm("segmentation")
        if segmentation not in SEGMENTATIONS:
            self.get_logger().error(f"unknown segmentation '{segmentation}' "
                                    f"(one of {', '.join(SEGMENTATIONS)})")
            return TransitionCallbackReturn.FAILURE
        if segmentation == "tabletop" and bounds is None:
            self.get_logger().error("segmentation 'tabletop' needs bounds: the workspace box "
                                    "the objects stand in (beyond it, walls and shelves "
                                    "above the table's height would be objects)")
            return TransitionCallbackReturn.FAILURE
        masks = ["instances"] if segmentation == "masks" else []
        # A pose topic is one more stream of the frame; tf and static poses are looked up.
        streams = ["rgb", "depth", "info"] + (["pose"] if self.pose_source == "topic" else [])
        self.syncs = {ns: FrameSync(streams, masks, slop=prm("sync_slop"))
                      for ns in self.cameras}
        if self.pose_source == "tf" and tf2_ros is None:
            self.get_logger().error("camera_pose_source 'tf' but tf2_ros is not installed")
            return TransitionCallbackReturn.FAILURE
        if self.pose_source not in ("tf", "topic", "static"):
            self.get_logger().error(f"unknown camera_pose_source '{self.pose_source}'")
            return TransitionCallbackReturn.FAILURE
        if self.pose_source == "tf" or (tf2_ros is not None and segmentation == "tabletop"):
            self.tf_buffer = tf2_ros.Buffer()
            self.tf_listener = tf2_ros.TransformListener(self.tf_buffer, self)
        sensor = qos_profile_sensor_data
        self.scene_subs = []
        for ns in self.cameras:
            for cls, topic, stream in [(Image, "color/image_raw", "rgb"),
                                       (Image, "depth/image_raw", "depth"),
                                       (CameraInfo, "color/camera_info", "info")] + \
                    [(Image, "instances/image_raw", "instances")] * bool(masks):
                self.scene_subs.append(self.create_subscription(
                    cls, f"{ns}/{topic}", lambda m, c=ns, s=stream: self._on_stream(c, s, m),
                    sensor))
            self.scene_subs.append(self.create_subscription(
                PoseStamped, f"{ns}/pose", lambda m, c=ns: self._on_pose(c, m), 10))
        self.pub_cloud = self.create_lifecycle_publisher(PointCloud2, "~/gaussians", 1)
        self.pub_info = self.create_lifecycle_publisher(SceneInfo, "~/info", 1)
        self.pub_objects = self.create_lifecycle_publisher(ObjectArray, "~/objects", 1)
        self.pub_object_markers = self.create_lifecycle_publisher(MarkerArray,
                                                                  "~/objects/markers", 1)
        self.pub_render = self.create_lifecycle_publisher(Image, "~/render/image", 1)
        if segmentation == "tabletop":
            self._start_tabletop(bounds)
        group = self._memory_group
        self.scene_timers = [self.create_timer(1.0 / prm("publish_rate"), self._publish_state,
                                               callback_group=group)]
        if prm("render_rate") > 0:
            self.scene_timers.append(self.create_timer(1.0 / prm("render_rate"),
                                                       self._publish_render,
                                                       callback_group=group))
        # Each worker has its own stop flag: one still finishing a frame after a cleanup
        # must not run on beside the next configure's.
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._integrate_loop,
                                        args=(self.memory, self.segmenter, self._stop),
                                        daemon=True)
        self._worker.start()
        self.get_logger().info(f"configured on {device}, cameras {', '.join(self.cameras)}, "
                               f"camera poses from {self.pose_source}")
        return TransitionCallbackReturn.SUCCESS

    def _start_tabletop(self, bounds) -> None:
        """Objects from depth: the segmenter, the robot's description and joint states."""
        prm = lambda n: self.get_parameter(n).value  # noqa: E731
        config = TabletopConfig(table_height=prm("tabletop.table_height"),
                                table_search=prm("tabletop.table_search"),
                                min_height=prm("tabletop.min_height"),
                                noise_sigmas=prm("tabletop.noise_sigmas"),
                                robot_margin=prm("tabletop.robot_margin"),
                                confirm_frames=prm("tabletop.confirm_frames"))
        config.bounds = bounds
        self.segmenter, self.robot_body, self._joint_states = TabletopSegmenter(config), None, []
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.scene_subs += [
            self.create_subscription(String, "/robot_description", self._on_description,
                                     latched),
            self.create_subscription(JointState, "joint_states", self._on_joint_states, 50)]
        self.pub_segmentation = self.create_lifecycle_publisher(Image, "~/segmentation/image",
                                                                1)

    def _teardown(self) -> None:
        self._active = False
        if getattr(self, "_worker", None) is not None:
            with self._frame_ready:
                self._stop.set()
                self._pending.clear()
                self._frame_ready.notify_all()
            self._worker.join(timeout=5.0)
            self._worker = None
        for sub in getattr(self, "scene_subs", []):
            self.destroy_subscription(sub)
        for timer in getattr(self, "scene_timers", []):
            self.destroy_timer(timer)
        self.scene_subs, self.scene_timers = [], []
        self.memory, self._frame_stamp = None, None
        self.segmenter, self.robot_body = None, None
        self._integrated_at.clear()

    # ---- input -----------------------------------------------------------------------------
    def _device_name(self) -> str:
        memory = self.memory
        return str(memory.device) if memory is not None else self.get_parameter("device").value

    def _report(self) -> tuple:
        """/diagnostics: counters always; WARN while unconfigured, on any problem since the
        last report (the latest named), or when no frame has been integrated for a while."""
        values = {"frames integrated": self.frames_integrated,
                  "frames rejected": self.frames_rejected,
                  "frames superseded": self.frames_superseded,
                  "frames skipped": self.frames_skipped, "problems": self.problems}
        memory = self.memory   # read without the lock: a report must not wait for a frame
        if memory is None:
            return WARN, "not configured", values
        quiet = None if self._integrated_wall is None \
            else time.monotonic() - self._integrated_wall
        values.update({"gaussians": len(memory.gaussians),
                       "max gaussians": memory.config.max_gaussians,
                       "memory MB": memory.memory_bytes() / 2 ** 20,
                       "objects": len(memory.objects),
                       **({"table height [m]": self.segmenter.table_height,
                           "table depth noise [m]": self.segmenter.table_noise}
                          if self.segmenter is not None else {}),
                       "seconds since a frame was integrated": math.nan if quiet is None
                       else quiet})
        problems = self._problems_reported(self.problems)
        if not self._active:
            return OK, "inactive", values
        if problems:
            return WARN, f"{problems} problem(s) since the last report; latest: " \
                         f"{self._last_problem}", values
        if quiet is None or quiet > QUIET_WARN_S:
            return WARN, "no frame integrated yet" if quiet is None else \
                f"no frame integrated for {quiet:.1f} s", values
        return OK, "mapping", values

    def _warn(self, key: str, text: str, period: float = 5.0) -> None:
        """Warning throttled per kind of problem (wall time); each counts on /diagnostics."""
        self.problems, self._last_problem = self.problems + 1, text
        now = time.monotonic()
        if now - self._warned.get(key, -1e9) >= period:
            self._warned[key] = now
            self.get_logger().warning(text)

    def _on_description(self, msg: String) -> None:
        try:
            self.robot_body = RobotBody.from_urdf(msg.data)
        except ValueError as err:   # the previous description, if any, stays
            self._warn("description", f"robot_description not usable: {err}")
            return
        self.get_logger().info(f"robot body from robot_description: "
                               f"{self.robot_body.sphere_count} spheres under "
                               f"'{self.robot_body.root}'")

    def _on_joint_states(self, msg: JointState) -> None:
        if len(msg.name) != len(msg.position) or \
                not all(math.isfinite(v) for v in msg.position):
            self._warn("joints", "dropped joint state: names and positions differ in number "
                                 "or a position is not finite")
            return
        stamp = to_seconds(msg.header.stamp)
        states = self._joint_states   # replaced, not changed: the worker reads it unlocked
        if states and stamp < states[-1][0]:
            states = []              # time jumped back (a bag replayed, a sim reset)
        self._joint_states = (states + [(stamp, dict(zip(msg.name, msg.position)))])[-200:]

    def _robot_spheres(self, stamp: float):
        """The robot's link spheres (centres (S, 3), radii (S,)) in the world at a frame's
        time. Raises ValueError when the robot cannot be placed."""
        body = self.robot_body
        if body is None:
            raise ValueError("no /robot_description yet: the robot cannot be told apart")
        centres, radii = body.place_at(self._joint_states, stamp,
                                       self.get_parameter("tabletop.joint_state_slop").value)
        if body.root != self.world:
            base = self._lookup(body.root, stamp)
            centres = centres @ torch.from_numpy(base[:3, :3]).float().T + \
                torch.from_numpy(base[:3, 3]).float()
        return centres, radii

    def _segment(self, memory: SceneMemory, segmenter: TabletopSegmenter, frame: Frame
                 ) -> Frame:
        """The frame labelled by the segmenter (raises ValueError as _robot_spheres)."""
        labels = segmenter.segment(frame.depth, frame.K, frame.cam_to_world,
                                   self._robot_spheres(frame.stamp), object_boxes(memory))
        if self._active:
            self.pub_segmentation.publish(numpy_to_image(
                labels.cpu().numpy().astype(np.uint16), "16UC1", to_time_msg(frame.stamp),
                self._frame_ids.get(frame.camera, "")))
        return dataclasses.replace(frame, instances=labels)

    def _on_pose(self, camera: str, msg: PoseStamped) -> None:
        p, q = msg.pose.position, msg.pose.orientation
        values = [p.x, p.y, p.z, q.x, q.y, q.z, q.w]
        if not all(math.isfinite(v) for v in values) or abs(np.linalg.norm(values[3:]) - 1) > 1e-3:
            self._warn("pose", f"dropped {camera} pose: not finite or not a unit quaternion")
            return
        if self.pose_source == "topic":
            self._on_stream(camera, "pose", msg)

    def _on_stream(self, camera: str, stream: str, msg) -> None:
        if not self._active:
            return
        sync = self.syncs[camera]
        matched = sync.add(stream, to_seconds(msg.header.stamp), msg)
        if matched is None:
            missing = sync.unmatched() if stream == "rgb" else []
            if missing:
                self.frames_rejected += 1
                self._warn("frame", f"dropped {camera} frame: no {', '.join(missing)} within "
                                    f"{sync.slop} s of the colour image")
            return
        try:
            frame = self._to_frame(camera, matched)
        except ValueError as err:
            self.frames_rejected += 1
            self._warn("frame", f"dropped {camera} frame: {err}")
            return
        with self._frame_ready:  # an unprocessed older frame of this camera is replaced
            if camera in self._pending:
                self.frames_superseded += 1
            self._pending[camera] = frame
            self._frame_ready.notify()

    def _frame_waiting(self) -> bool:
        """A frame the worker will integrate waits."""
        return any(self._needed(c, f.stamp) for c, f in list(self._pending.items()))

    def _next_frame(self, stop: threading.Event) -> Frame | None:
        """The oldest of the cameras' newest frames that is needed (`_needed`), once there
        is one (None once `stop` is set)."""
        while True:
            with self._frame_ready:
                while not stop.is_set() and not self._pending:
                    self._frame_ready.wait(timeout=0.5)
                if stop.is_set():
                    return None
                camera = min(self._pending, key=lambda c: self._pending[c].stamp)
                frame = self._pending.pop(camera)
            if self._needed(camera, frame.stamp):
                self._integrated_at[camera] = frame.stamp
                return frame
            self.frames_skipped += 1

    def _needed(self, camera: str, stamp: float) -> bool:
        """Every frame of the first camera; another camera's while the first one's latest
        frame hides an object, or when its own last integrated frame is a period old. On a
        CPU each frame costs as much as the cameras' frame interval: the extra views are
        spent where they see what the first camera cannot."""
        period = self.get_parameter("extra_camera_period").value
        if camera == self.cameras[0] or period == 0:
            return True
        if stamp - self._integrated_at.get(camera, -math.inf) >= period:
            return True
        memory, first = self.memory, self.cameras[0]
        return memory is not None and any(r.visible_in.get(first, 0.0) < HIDDEN_BELOW
                                          for r in list(memory.objects.values()))

    def _camera_pose(self, stamp: float, frame_id: str, matched) -> np.ndarray:
        if self.pose_source == "topic":
            p, q = matched["pose"][1].pose.position, matched["pose"][1].pose.orientation
            return pose_to_matrix([p.x, p.y, p.z], [q.x, q.y, q.z, q.w])
        if self.pose_source == "static":
            v = self.get_parameter("camera_pose").value
            return pose_to_matrix(v[:3], v[3:])
        return self._lookup(frame_id, stamp)

    def _lookup(self, frame_id: str, stamp: float) -> np.ndarray:
        """Pose (4, 4) of a frame in the world at a time, from tf2 (ValueError if none)."""
        if tf2_ros is None or getattr(self, "tf_buffer", None) is None:
            raise ValueError(f"no pose of '{frame_id}' in '{self.world}': tf2 is not in use")
        try:
            t = self.tf_buffer.lookup_transform(
                self.world, frame_id, rclpy.time.Time(seconds=stamp),
                timeout=rclpy.duration.Duration(seconds=0.05))
        except Exception as err:  # tf2 raises several kinds
            raise ValueError(f"no pose of '{frame_id}' from tf: {err}") from err
        tr, rot = t.transform.translation, t.transform.rotation
        return pose_to_matrix([tr.x, tr.y, tr.z], [rot.x, rot.y, rot.z, rot.w])

    def _to_frame(self, camera: str, matched) -> Frame:
        stamp, rgb_msg = matched["rgb"]
        now = self.get_clock().now().nanoseconds * 1e-9
        age = now - stamp
        if age > self.get_parameter("max_frame_age").value:
            raise ValueError(f"stale frame ({age:.2f} s old)")
        c2w = self._camera_pose(stamp, rgb_msg.header.frame_id, matched)
        self._frame_ids[camera] = rgb_msg.header.frame_id
        return frame_from_messages(rgb_msg, matched["depth"][1], matched["info"][1], c2w, stamp,
                                   matched["instances"][1] if "instances" in matched else None,
                                   self.get_parameter("downscale").value, camera)

    def _integrate_loop(self, memory: SceneMemory, segmenter: TabletopSegmenter | None,
                        stop: threading.Event) -> None:
        """Track every needed frame in `memory` (labelled by `segmenter` where there is one),
        refine it while no newer frame waits; until `stop` (the cleanup that drops this
        memory) is set."""
        def interrupted() -> bool:   # a newer frame, or the memory's end, cuts refining short
            return stop.is_set() or self._frame_waiting()

        while (frame := self._next_frame(stop)) is not None:
            with self._lock:
                try:
                    if segmenter is not None:
                        frame = self._segment(memory, segmenter, frame)
                except ValueError as err:
                    self.frames_rejected += 1
                    self._warn("segment", f"dropped {frame.camera} frame: {err}")
                    continue
                try:
                    view = memory.track(frame)
                except Exception as err:  # a bad frame must not stop the mapping thread
                    self._warn("integrate", f"frame not integrated: {type(err).__name__}: {err}")
                    continue
                self._frame_stamp = to_time_msg(frame.stamp)
                objects = self._objects_msg(memory, self._frame_stamp)
            self.frames_integrated += 1
            self._integrated_wall = time.monotonic()
            if self._active and not stop.is_set():  # as soon as tracked: the planner acts
                try:
                    self.pub_objects.publish(objects)
                except Exception:
                    if not self.context.ok():  # shut down (Ctrl-C) before this thread stopped
                        return
                    raise
            if interrupted():
                continue  # a newer frame waits: its objects matter more than a refined map
            with self._lock:
                try:
                    memory.config.iterations = self.get_parameter("iterations").value
                    stats = memory.refine(view, interrupted)
                except Exception as err:
                    self._warn("integrate", f"map not refined: {type(err).__name__}: {err}")
                    continue
            self.get_logger().debug(f"integrated frame: {stats}")

    # ---- output ----------------------------------------------------------------------------
    def _objects_msg(self, memory, stamp) -> ObjectArray:
        msg = ObjectArray()
        msg.header.stamp, msg.header.frame_id = stamp, self.world
        colours = memory.object_colours()
        for oid, record in sorted(memory.objects.items()):
            obj = ObjectState(id=oid, num_gaussians=record.num_gaussians,
                              last_seen=to_time_msg(max(record.last_seen, 0.0)))
            if oid in colours:
                obj.color.r, obj.color.g, obj.color.b = (float(v) for v in colours[oid])
                obj.color.a = 1.0
            matrix_to_pose(obj.pose, record.pose.cpu().numpy())
            he = record.half_extent.cpu().numpy()
            obj.half_extent.x, obj.half_extent.y, obj.half_extent.z = (float(v) for v in he)
            msg.objects.append(obj)
        return msg

    def _publish_state(self) -> None:
        memory = self.memory   # a lifecycle transition on the other thread may clear it
        if not self._active or memory is None:
            return
        now = self.get_clock().now().to_msg()
        with self._lock:
            stamp = self._frame_stamp or now
            g = memory.gaussians
            means, colors = g.means.cpu().numpy(), g.colors.cpu().numpy()
            objects = self._objects_msg(memory, stamp)
            info = SceneInfo(num_gaussians=len(g), max_gaussians=memory.config.max_gaussians,
                             memory_bytes=memory.memory_bytes(),
                             num_keyframes=len(memory.keyframes),
                             frames_integrated=memory.frames_integrated,
                             device=str(memory.device), objects=objects.objects)
        info.header = objects.header
        self.pub_cloud.publish(centres_cloud(means, colors, stamp, self.world))
        self.pub_info.publish(info)
        self.pub_objects.publish(objects)
        self.pub_object_markers.publish(object_markers(objects))

    def _virtual_camera(self):
        prm = lambda n: self.get_parameter(n).value  # noqa: E731
        w, h = prm("virtual_camera.width"), prm("virtual_camera.height")
        K, c2w = look_at_camera(prm("virtual_camera.position"), prm("virtual_camera.look_at"),
                                w, h, prm("virtual_camera.fovy_deg"))
        return K, c2w, w, h

    def _render(self, memory, K, c2w, w, h, overrides=None):
        with self._lock:
            out = memory.render(torch.linalg.inv(torch.tensor(c2w, dtype=torch.float32))[None],
                                torch.tensor(K, dtype=torch.float32)[None], w, h,
                                object_poses=overrides)
        rgb = (out.rgb[0].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        depth = out.depth[0].cpu().numpy().astype(np.float32)
        alpha = out.alpha[0].cpu().numpy().astype(np.float32)
        depth[alpha < 1e-3] = np.nan
        return rgb, depth, alpha

    def _publish_render(self) -> None:
        memory = self.memory
        if not self._active or memory is None or len(memory) == 0:
            return
        try:
            camera = self._virtual_camera()
        except ValueError as err:
            self._warn("virtual_camera", f"virtual camera: {err}")
            return
        rgb, _, _ = self._render(memory, *camera)
        self.pub_render.publish(numpy_to_image(rgb, "rgb8", self.get_clock().now().to_msg(),
                                               "virtual_camera_optical_frame"))

    # ---- services --------------------------------------------------------------------------
    def _refuse(self, response, text):
        response.success, response.message = False, text
        self.get_logger().error(text)
        return response

    def _on_save(self, request, response):
        memory = self.memory
        if memory is None:
            return self._refuse(response, "save refused: node not configured")
        try:
            with self._lock:
                save_ply(request.path, memory.gaussians)
                response.num_gaussians = len(memory)
        except (OSError, ValueError) as err:
            return self._refuse(response, f"cannot save {request.path}: {err}")
        response.success, response.message = True, f"saved {response.num_gaussians} Gaussians"
        return response

    def _on_load(self, request, response):
        memory = self.memory
        if memory is None:
            return self._refuse(response, "load refused: node not configured")
        try:
            gaussians = load_ply(request.path)
        except (OSError, ValueError) as err:
            return self._refuse(response, f"cannot load {request.path}: {err}")
        with self._lock:
            memory.set_gaussians(gaussians)
            response.num_gaussians = len(memory)
        response.success, response.message = True, f"loaded {response.num_gaussians} Gaussians"
        return response

    def _on_reset(self, request, response):
        memory = self.memory
        if memory is None:
            return self._refuse(response, "reset refused: node not configured")
        with self._lock:
            unknown = [i for i in request.object_ids if i not in memory.objects]
            if unknown:
                return self._refuse(response, f"unknown object ids {unknown}")
            memory.reset(list(request.object_ids))
            response.num_gaussians = len(memory)
        response.success = True
        response.message = "reset " + (f"objects {list(request.object_ids)}"
                                       if request.object_ids else "everything")
        return response

    def _on_render(self, request, response):
        memory = self.memory
        if memory is None:
            return self._refuse(response, "render refused: node not configured")
        info = request.camera_info
        K = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
        if info.width == 0 or info.height == 0 or info.width * info.height > 4096 * 4096 \
                or not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
            return self._refuse(response, "render refused: camera_info needs a size and a "
                                          "valid K")
        p, q = request.camera_pose.pose.position, request.camera_pose.pose.orientation
        values = [p.x, p.y, p.z, q.x, q.y, q.z, q.w]
        if not all(math.isfinite(v) for v in values) or np.linalg.norm(values[3:]) < 1e-6:
            return self._refuse(response, "render refused: camera pose not finite")
        overrides = {}
        for obj in request.object_overrides.objects:
            if obj.id not in memory.objects:
                return self._refuse(response, f"render refused: unknown object id {obj.id}")
            op, oq = obj.pose.position, obj.pose.orientation
            overrides[obj.id] = torch.tensor(pose_to_matrix(
                [op.x, op.y, op.z], [oq.x, oq.y, oq.z, oq.w]), dtype=torch.float32)
        c2w = pose_to_matrix(values[:3], np.array(values[3:]) / np.linalg.norm(values[3:]))
        rgb, depth, alpha = self._render(memory, K, c2w, info.width, info.height, overrides)
        stamp = request.camera_pose.header.stamp
        frame = info.header.frame_id or "virtual_camera_optical_frame"
        response.rgb = numpy_to_image(rgb, "rgb8", stamp, frame)
        response.depth = numpy_to_image(depth, "32FC1", stamp, frame)
        response.alpha = numpy_to_image(alpha, "32FC1", stamp, frame)
        response.success, response.message = True, ""
        return response


def main(args=None):
    run(SceneNode, args, threads=2)   # the memory's callbacks; the streams and the clock


if __name__ == "__main__":
    main()
