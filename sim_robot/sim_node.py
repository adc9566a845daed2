"""ROS 2 node: the simulated Panda behaving like a ros2_control robot.

Publishes /clock, /joint_states, /robot_description, two fixed RGB-D cameras (camera/... and,
unless `side_camera` is off, side_camera/...) each with CameraInfo and an instance mask
(sensor-data QoS) and its pose (topic and tf), and ground truth for evaluation under
/ground_truth. Accepts trajectory_msgs/JointTrajectory on
/joint_trajectory_controller/joint_trajectory (joint_trajectory_controller semantics, see
trajectory_follower.py) and gripper widths on /gripper_controller/commands
(std_msgs/Float64MultiArray, one value in metres). The physics runs in its own thread at
`real_time_factor` (0 = as fast as possible); every stamp is simulation time.
"""
from __future__ import annotations

import functools
import threading
import time

import numpy as np
import rclpy
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.node import Node
from rclpy._rclpy_pybind11 import RCLError
from rclpy.qos import DurabilityPolicy, QoSProfile, qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from geometry_msgs.msg import PoseStamped
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory

from ros_io.images import numpy_to_image
from ros_io.params import declare, report_unknown_overrides
from ros_io.paths import share_path
from ros_io.stamps import to_seconds, to_time_msg
from sim_robot import panda
from sim_robot.scene import CAMERA_NAMESPACES, OBJECT_IDS
from sim_robot.scenario import Scenario, load_scenario
from sim_robot.sim import PandaSim
from sim_robot.trajectory_follower import JointTrajectoryFollower, TrajectoryRejected
from world_model_planning.msg import ObjectArray, ObjectState
from world_model_planning.srv import ResetSim

try:  # tf2 is on every robot; this machine has no tf2_msgs wheel.
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage
except ImportError:
    TFMessage = None


def _descriptor(description, *, lo=None, hi=None, integer=False, read_only=False):
    d = ParameterDescriptor(description=description, read_only=read_only)
    if lo is not None and integer:
        d.integer_range = [IntegerRange(from_value=lo, to_value=hi, step=1)]
    elif lo is not None:
        d.floating_point_range = [FloatingPointRange(from_value=lo, to_value=hi, step=0.0)]
    return d


def _pose_msg(pose, position, quat_xyzw):
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in position)
    (pose.orientation.x, pose.orientation.y,
     pose.orientation.z, pose.orientation.w) = (float(v) for v in quat_xyzw)
    return pose


class SimNode(Node):
    def __init__(self, **kwargs):
        super().__init__("sim_robot", **kwargs)
        p = functools.partial(declare, self)
        p("scenario", str(share_path("config", "scenarios", "default.yaml")), _descriptor(
            "Scenario YAML (object poses, perturbations)", read_only=True))
        p("perturb", False, _descriptor("Apply the scenario's perturbations at start-up"))
        p("seed", 0, _descriptor("Seed of the perturbations", lo=0, hi=2**31 - 1, integer=True))
        p("camera_width", 320, _descriptor("Camera image width [px]", lo=16, hi=1920,
                                           integer=True, read_only=True))
        p("camera_height", 240, _descriptor("Camera image height [px]", lo=16, hi=1080,
                                            integer=True, read_only=True))
        p("camera_rate", 15.0, _descriptor("Camera frame rate [Hz, sim time]", lo=0.5, hi=60.0))
        p("joint_state_rate", 100.0, _descriptor("Joint state rate [Hz, sim time]",
                                                 lo=1.0, hi=1000.0))
        p("clock_rate", 250.0, _descriptor("/clock rate [Hz, sim time]", lo=10.0, hi=1000.0))
        p("ground_truth_rate", 30.0, _descriptor("Ground-truth rate [Hz, sim time]",
                                                 lo=1.0, hi=500.0))
        p("real_time_factor", 1.0, _descriptor(
            "Sim seconds per wall second; 0 runs as fast as possible", lo=0.0, hi=20.0))
        p("world_frame", "world", _descriptor("Fixed frame of every pose", read_only=True))
        p("camera_frame", "camera_color_optical_frame",
          _descriptor("Optical frame of the camera (z forward, x right, y down)", read_only=True))
        p("side_camera", True, _descriptor(
            "Publish the second camera across the table (side_camera/...; optical frame "
            "side_camera_color_optical_frame)", read_only=True))
        p("publish_instances", True, _descriptor("Publish the instance-mask images"))
        prm = self.get_parameter
        report_unknown_overrides(self)

        try:
            scenario = load_scenario(prm("scenario").value)
        except (OSError, ValueError) as err:
            self.get_logger().error(
                f"cannot load scenario {prm('scenario').value}: {err}; using the built-in "
                "default scene")
            scenario = Scenario()
        if prm("perturb").value:
            scenario = scenario.perturbed(prm("seed").value)
        self._lock = threading.Lock()
        self.sim = PandaSim(scenario, width=prm("camera_width").value,
                            height=prm("camera_height").value)
        limits = panda.ARM_LIMITS
        self.follower = JointTrajectoryFollower(
            panda.ARM_JOINT_NAMES, limits.lower, limits.upper, limits.velocity,
            self.sim.arm_positions())
        self.gripper_width = panda.GRIPPER_MAX_WIDTH
        self.sim.set_gripper_width(self.gripper_width)
        # Simulation time keeps running across resets so /clock never jumps back.
        self._time_offset = 0.0
        self._world = prm("world_frame").value
        # Topic namespace -> (simulator camera, optical frame).
        self._cameras = {"camera": (CAMERA_NAMESPACES["camera"], prm("camera_frame").value)}
        if prm("side_camera").value:
            self._cameras["side_camera"] = (CAMERA_NAMESPACES["side_camera"],
                                            "side_camera_color_optical_frame")

        self.pub_clock = self.create_publisher(Clock, "/clock", 10)
        self.pub_joints = self.create_publisher(JointState, "/joint_states", 10)
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pub_description = self.create_publisher(String, "/robot_description", latched)
        self.pub_description.publish(String(data=panda.urdf()))
        sensor = qos_profile_sensor_data
        self.pub_cameras = {ns: {
            "rgb": self.create_publisher(Image, f"{ns}/color/image_raw", sensor),
            "rgb_info": self.create_publisher(CameraInfo, f"{ns}/color/camera_info", sensor),
            "depth": self.create_publisher(Image, f"{ns}/depth/image_raw", sensor),
            "depth_info": self.create_publisher(CameraInfo, f"{ns}/depth/camera_info", sensor),
            "instances": self.create_publisher(Image, f"{ns}/instances/image_raw", sensor),
            "pose": self.create_publisher(PoseStamped, f"{ns}/pose", 10)}
            for ns in self._cameras}
        self.pub_tf = self.create_publisher(TFMessage, "/tf", 10) if TFMessage else None
        self.pub_gt_objects = self.create_publisher(ObjectArray, "/ground_truth/objects", 10)
        self.pub_gt_tcp = self.create_publisher(PoseStamped, "/ground_truth/tcp_pose", 10)

        self.create_subscription(JointTrajectory, "/joint_trajectory_controller/joint_trajectory",
                                 self._on_trajectory, 10)
        self.create_subscription(Float64MultiArray, "/gripper_controller/commands",
                                 self._on_gripper, 10)
        self.create_service(ResetSim, "~/reset", self._on_reset)

        self._scenario_path = prm("scenario").value
        self._running = True
        self._pending_reset = None
        self._thread = threading.Thread(target=self._physics_loop, daemon=True)
        self._thread.start()
        self.get_logger().info(
            f"simulated robot up: scenario {self._scenario_path}, cameras "
            f"{', '.join(self._cameras)} {self.sim.width}x{self.sim.height} at "
            f"{prm('camera_rate').value} Hz, "
            f"real-time factor {prm('real_time_factor').value}")

    # ---- time ---------------------------------------------------------------------------
    def now_s(self) -> float:
        """Current simulation time [s] (the time /clock publishes)."""
        return self._time_offset + self.sim.time

    # ---- commands -------------------------------------------------------------------------
    def _on_trajectory(self, msg: JointTrajectory) -> None:
        try:
            times = [to_seconds(pt.time_from_start) for pt in msg.points]
            with self._lock:
                n = self.follower.set_trajectory(
                    now=self.now_s(), start_time=to_seconds(msg.header.stamp),
                    joint_names=msg.joint_names, times=times,
                    positions=[pt.positions for pt in msg.points],
                    velocities=[pt.velocities for pt in msg.points],
                    accelerations=[pt.accelerations for pt in msg.points])
        except TrajectoryRejected as err:
            self.get_logger().error(f"rejected joint trajectory: {err}")
            return
        self.get_logger().debug(f"queued {n} trajectory points")

    def _on_gripper(self, msg: Float64MultiArray) -> None:
        values = list(msg.data)
        if len(values) != 1 or not np.isfinite(values[0]) \
                or not 0.0 <= values[0] <= panda.GRIPPER_MAX_WIDTH + 1e-6:
            self.get_logger().error(
                f"rejected gripper command {values}: expected one width in "
                f"[0, {panda.GRIPPER_MAX_WIDTH}] m")
            return
        with self._lock:
            self.gripper_width = float(values[0])
            self.sim.set_gripper_width(self.gripper_width)

    def _on_reset(self, request, response):
        path = request.scenario_path or self._scenario_path
        try:
            scenario: Scenario = load_scenario(path)
            if request.perturb:
                scenario = scenario.perturbed(int(request.seed))
        except (OSError, ValueError) as err:
            response.success, response.message = False, f"cannot load scenario {path}: {err}"
            self.get_logger().error(response.message)
            return response
        # The physics thread owns the renderer's GL context, so it performs the reset.
        done = threading.Event()
        self._pending_reset = (scenario, done)
        if not done.wait(timeout=60.0):
            response.success, response.message = False, "reset timed out"
            return response
        self._scenario_path = path
        response.success = True
        response.message = f"reset to {path}" + (f" (seed {request.seed})" if request.perturb
                                                 else "")
        self.get_logger().info(response.message)
        return response

    # ---- physics and publishing ------------------------------------------------------------
    def _physics_loop(self) -> None:
        try:
            self._run_physics()
        finally:
            # The renderer's GL context is current in this thread: release it here.
            self.sim.close()

    def _apply_pending_reset(self) -> None:
        scenario, done = self._pending_reset
        self._pending_reset = None
        with self._lock:
            # Round the offset up to a whole step so stamps stay on the physics grid.
            dt = self.sim.timestep
            self._time_offset = np.ceil((self.now_s() + dt) / dt) * dt
            self.sim.reset(scenario)
            self.follower.reset(self.sim.arm_positions())
            self.gripper_width = panda.GRIPPER_MAX_WIDTH
            self.sim.set_gripper_width(self.gripper_width)
        done.set()

    def _run_physics(self) -> None:
        next_due = {"clock": 0.0, "joints": 0.0, "camera": 0.0, "truth": 0.0}
        wall0, sim0 = time.monotonic(), self.now_s()
        dt = self.sim.timestep
        while self._running and self.context.ok():
            if self._pending_reset is not None:
                self._apply_pending_reset()
            prm = self.get_parameter
            rtf = prm("real_time_factor").value
            periods = {"clock": 1.0 / prm("clock_rate").value,
                       "joints": 1.0 / prm("joint_state_rate").value,
                       "camera": 1.0 / prm("camera_rate").value,
                       "truth": 1.0 / prm("ground_truth_rate").value}
            # Step up to the next publication (or to where wall time says we should be).
            with self._lock:
                now = self.now_s()
                if now < sim0:  # a reset moved the offset
                    wall0, sim0 = time.monotonic(), now
                horizon = min(next_due.values())
                if rtf > 0:
                    horizon = min(horizon, sim0 + (time.monotonic() - wall0) * rtf)
                steps = 0
                while self.now_s() + 0.5 * dt < horizon and steps < 50:
                    q, qd, _ = self.follower.sample(self.now_s())
                    self.sim.set_arm_targets(q, qd)
                    self.sim.step()
                    steps += 1
                now = self.now_s()
                due = [k for k, t in next_due.items() if now + 0.5 * dt >= t]
                for k in due:
                    next_due[k] = max(next_due[k] + periods[k], now + 0.5 * dt)
                outputs = self._gather(due, now)
            try:
                self._publish(outputs)
            except RCLError:  # the context shut down under us (Ctrl-C): stop quietly
                if self.context.ok():
                    raise
                return
            if rtf > 0 and steps == 0 and not due:
                time.sleep(min(0.002, dt / rtf))

    def _gather(self, due, now):
        """Read everything due from the simulator (under the lock)."""
        out = {"stamp": to_time_msg(now)}
        if "clock" in due:
            out["clock"] = True
        if "joints" in due:
            out["joints"] = (np.concatenate([self.sim.arm_positions(), self.sim.finger_positions()]),
                             np.concatenate([self.sim.arm_velocities(),
                                             self.sim.finger_velocities()]),
                             np.concatenate([self.sim.joint_efforts(),
                                             self.sim.finger_efforts()]))
        if "camera" in due:
            out["camera"] = {ns: self.sim.render(camera=name) + (self.sim.camera_pose(name),)
                             for ns, (name, _) in self._cameras.items()}
        if "truth" in due:
            out["truth"] = (self.sim.object_poses(), self.sim.object_extents(), self.sim.tcp_pose())
        return out

    def _publish(self, out) -> None:
        stamp = out["stamp"]
        if "clock" in out:
            self.pub_clock.publish(Clock(clock=stamp))
        if "joints" in out:
            q, qd, effort = out["joints"]
            msg = JointState(name=list(panda.ARM_JOINT_NAMES + panda.FINGER_JOINT_NAMES),
                             position=q.tolist(), velocity=qd.tolist(), effort=effort.tolist())
            msg.header.stamp = stamp
            self.pub_joints.publish(msg)
        if "camera" in out:
            for ns, images in out["camera"].items():
                self._publish_camera(ns, stamp, *images)
        if "truth" in out:
            self._publish_truth(stamp, *out["truth"])

    def _camera_info(self, ns: str, stamp) -> CameraInfo:
        name, frame = self._cameras[ns]
        fx, fy, cx, cy = self.sim.camera_intrinsics(camera=name)
        info = CameraInfo(width=self.sim.width, height=self.sim.height,
                          distortion_model="plumb_bob", d=[0.0] * 5)
        info.header.stamp, info.header.frame_id = stamp, frame
        info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
        info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
        info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
        return info

    def _publish_camera(self, ns: str, stamp, rgb, depth, instances, camera_pose) -> None:
        frame = self._cameras[ns][1]
        pub = self.pub_cameras[ns]
        info = self._camera_info(ns, stamp)
        pub["rgb"].publish(numpy_to_image(rgb, "rgb8", stamp, frame))
        pub["rgb_info"].publish(info)
        pub["depth"].publish(numpy_to_image(depth, "32FC1", stamp, frame))
        pub["depth_info"].publish(info)
        if self.get_parameter("publish_instances").value:
            pub["instances"].publish(numpy_to_image(instances, "16UC1", stamp, frame))
        pose = PoseStamped()
        pose.header.stamp, pose.header.frame_id = stamp, self._world
        _pose_msg(pose.pose, *camera_pose)
        pub["pose"].publish(pose)
        if self.pub_tf is not None:
            tf = TransformStamped()
            tf.header = pose.header
            tf.child_frame_id = frame
            tf.transform.translation.x, tf.transform.translation.y, tf.transform.translation.z = \
                (float(v) for v in camera_pose[0])
            tf.transform.rotation = pose.pose.orientation
            self.pub_tf.publish(TFMessage(transforms=[tf]))

    def _publish_truth(self, stamp, poses, extents, tcp) -> None:
        msg = ObjectArray()
        msg.header.stamp, msg.header.frame_id = stamp, self._world
        for name, (pos, quat) in poses.items():
            obj = ObjectState(id=OBJECT_IDS[name], name=name, last_seen=stamp)
            _pose_msg(obj.pose, pos, quat)
            obj.half_extent.x, obj.half_extent.y, obj.half_extent.z = \
                (float(v) for v in extents[name])
            msg.objects.append(obj)
        self.pub_gt_objects.publish(msg)
        tcp_msg = PoseStamped()
        tcp_msg.header.stamp, tcp_msg.header.frame_id = stamp, self._world
        _pose_msg(tcp_msg.pose, *tcp)
        self.pub_gt_tcp.publish(tcp_msg)

    def destroy_node(self):
        self._running = False
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
        super().destroy_node()


def main(args=None):
    rclpy.init(args=args)
    node = SimNode()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, rclpy.executors.ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
