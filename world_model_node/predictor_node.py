"""ROS 2 lifecycle node `world_model_node`: the world model as a service.

Configure loads the predictor (a learned checkpoint, or the `static` baseline) on the device
named by parameter; while active, ~/predict answers batches of candidate action sequences
with their predicted futures and uncertainty, and ~/futures (MarkerArray) shows the
end-effector and object paths of the first `markers.futures` futures. With
`render_service` set, the final predicted object poses of the first future are rendered by
the scene memory (its ~/render service) and published on ~/predicted_image, one render at a
time: predictions that come while one is rendered draw none, and a render unanswered after
`render_timeout` is given up (its reply may have been lost) so that the next one is asked.
Objects left empty in a request are taken from the latest ObjectArray on `objects`.
Malformed requests get success=false and the reason; the node keeps serving.
Health on /diagnostics ("world_model_node: predictor"): requests served and refused (a
warning names the latest refusal), the last prediction's time.
"""
from __future__ import annotations

import functools
import math
import time

import numpy as np
import torch
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.lifecycle import State, TransitionCallbackReturn
from scipy.spatial.transform import Rotation
from std_msgs.msg import ColorRGBA
from sensor_msgs.msg import Image
from visualization_msgs.msg import Marker, MarkerArray

from gsplat_scene.frames import look_at_camera
from ros_io.diagnostics import OK, WARN, Diagnostics, Since
from ros_io.lifecycle import ManagedNode, run
from ros_io.markers import line_strip
from ros_io.params import CONFIGURE, declare, ranged, report_unknown_overrides
from ros_io.paths import share_path
from ros_io.stamps import to_seconds
from world_model_node.messages import futures_to_msg, joint_state_to_tensors, objects_to_tensors
from world_model_node.predictor import Futures, WorldState, make_predictor
from world_model_planning.msg import ObjectArray, ObjectState
from world_model_planning.srv import Predict, RenderScene

class WorldModelNode(ManagedNode):
    def __init__(self, **kwargs):
        super().__init__("world_model_node", **kwargs)
        p = functools.partial(declare, self)
        p("model", "learned", ParameterDescriptor(
            description="learned (a checkpoint) or static (objects never move)",
            additional_constraints=CONFIGURE))
        p("checkpoint", str(share_path("models", "world_model")), ParameterDescriptor(
            description="Checkpoint directory (model.safetensors, config.yaml, robot.urdf)",
            additional_constraints=CONFIGURE))
        p("device", "cpu", ParameterDescriptor(description="Torch device (cpu, cuda, cuda:N)",
                                               additional_constraints=CONFIGURE))
        p("max_batch", 4096, ranged("Largest number of sequences per request", 1, 1 << 20, True))
        p("max_horizon", 64, ranged("Largest number of steps per request", 1, 10_000, True))
        p("gripper_joints", ["panda_finger_joint1", "panda_finger_joint2"], ParameterDescriptor(
            description="Joints whose positions sum to the gripper width",
            additional_constraints=CONFIGURE))
        p("world_frame", "world", ParameterDescriptor(description="Frame of all poses",
                                                      additional_constraints=CONFIGURE))
        p("markers.futures", 8, ranged("Futures drawn on ~/futures (0 = none)", 0, 1024, True))
        p("render_service", "", ParameterDescriptor(
            description="Scene-memory render service for predicted images ('' = off), "
                        "e.g. /gsplat_scene/render"))
        p("render_timeout", 5.0, ranged("A render unanswered this long is given up [s]",
                                        0.1, 600.0))
        p("image.position", [1.4, -0.7, 0.95], ParameterDescriptor(
            description="Camera of the predicted images: position in the world [m]"))
        p("image.look_at", [0.4, 0.0, 0.22], ParameterDescriptor(
            description="Point the predicted-image camera looks at [m]"))
        p("image.width", 320, ranged("Predicted image width [px]", 16, 4096, True))
        p("image.height", 240, ranged("Predicted image height [px]", 16, 4096, True))
        p("image.fovy_deg", 58.0, ranged("Predicted image vertical FOV [deg]", 1.0, 170.0))
        p("autostart", True, ParameterDescriptor(
            description="Configure and activate at start-up (no lifecycle manager needed)",
            read_only=True))
        self.diagnostics = Diagnostics(self, "predictor",
                                       lambda: self.get_parameter("device").value,
                                       self._report)
        report_unknown_overrides(self)
        self.predictor = None
        self._active = False
        self._objects: ObjectArray | None = None
        self.requests_served = 0
        self.requests_refused = 0
        self._refusals_reported = Since()
        self._last_refusal = ""
        self._predict_ms = math.nan     # of the latest prediction served
        # The service lives as long as the node: a request that meets a lifecycle transition
        # is answered (refused while inactive), never left without a reply.
        self.create_service(Predict, "~/predict", self._on_predict,
                            callback_group=MutuallyExclusiveCallbackGroup())
        self.pub_markers = self.create_lifecycle_publisher(MarkerArray, "~/futures", 1)
        self.pub_image = self.create_lifecycle_publisher(Image, "~/predicted_image", 1)
        self.render_client = None
        self._render_pending = None   # (future, time.monotonic() when it was asked)

    # ---- lifecycle -----------------------------------------------------------------------
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        prm = lambda n: self.get_parameter(n).value  # noqa: E731
        device = prm("device")
        if device.startswith("cuda") and not torch.cuda.is_available():
            self.get_logger().error(f"device '{device}' requested but CUDA is not available")
            return TransitionCallbackReturn.FAILURE
        try:
            self.predictor = make_predictor(prm("model"), prm("checkpoint"), device=device)
        except (ValueError, RuntimeError) as err:
            self.get_logger().error(f"cannot load the world model: {err}")
            return TransitionCallbackReturn.FAILURE
        self.predictor.max_batch = prm("max_batch")
        group = ReentrantCallbackGroup()
        self.sub_objects = self.create_subscription(
            ObjectArray, "objects", lambda m: setattr(self, "_objects", m), 1,
            callback_group=group)
        if prm("render_service"):
            self.render_client = self.create_client(RenderScene, prm("render_service"),
                                                    callback_group=group)
        self.get_logger().info(f"serving {self.predictor.name} on {device}, "
                               f"step {self.predictor.step} s, joints "
                               f"{list(self.predictor.chain.limits.names)}")
        return TransitionCallbackReturn.SUCCESS

    def _teardown(self) -> None:
        self._active = False
        if getattr(self, "sub_objects", None) is not None:
            self.destroy_subscription(self.sub_objects)
            self.sub_objects = None
        if self.render_client is not None:
            self.destroy_client(self.render_client)
            self.render_client = None
        self._render_pending = None
        self.predictor = None

    # ---- service -------------------------------------------------------------------------
    def _report(self) -> tuple:
        """/diagnostics: WARN while unconfigured and when a request was refused since the
        last report (the latest reason named)."""
        predictor = self.predictor
        values = {"requests served": self.requests_served,
                  "requests refused": self.requests_refused,
                  "last prediction ms": self._predict_ms,
                  "model": "" if predictor is None else predictor.name}
        refused = self._refusals_reported(self.requests_refused)
        if predictor is None:
            return WARN, "not configured", values
        if not self._active:
            return OK, "inactive", values
        if refused:
            return WARN, f"{refused} request(s) refused since the last report; latest: " \
                         f"{self._last_refusal}", values
        return OK, "serving", values

    def _refuse(self, response, text: str):
        self.requests_refused += 1
        self._last_refusal = text
        self.get_logger().error(f"predict request refused: {text}")
        response.success, response.message = False, text
        return response

    def _on_predict(self, request, response):
        predictor = self.predictor   # a cleanup on the other thread may drop it meanwhile
        if not self._active or predictor is None:
            return self._refuse(response, "node is not active")
        try:
            state, targets, widths = self._request_to_tensors(request, predictor)
            tic = time.perf_counter()
            futures = predictor.predict(state, targets, widths)
        except ValueError as err:
            return self._refuse(response, str(err))
        except RuntimeError as err:  # e.g. out of device memory: refuse, keep serving
            return self._refuse(response, f"prediction failed: {err}")
        elapsed = time.perf_counter() - tic
        self._predict_ms = elapsed * 1e3
        header = request.robot_state.header
        header.frame_id = self.get_parameter("world_frame").value
        response.futures = futures_to_msg(futures, request.actions, header, predictor.name)
        response.success = True
        self.requests_served += 1
        self.get_logger().debug(f"predicted {targets.shape[0]} x {targets.shape[1]} in "
                                f"{elapsed * 1e3:.1f} ms")
        try:  # visualisation must never cost the caller its answer
            self._publish_markers(futures, header)
            self._request_image(futures, header)
        except (ValueError, RuntimeError) as err:
            self.get_logger().error(f"visualising the futures failed: {err}")
        return response

    def _request_to_tensors(self, request, predictor):
        a = request.actions
        n, h = int(a.num_sequences), int(a.horizon)
        if n == 0 or h == 0:
            raise ValueError("empty batch: num_sequences and horizon must be positive")
        if n > self.get_parameter("max_batch").value:
            raise ValueError(f"{n} sequences exceed max_batch "
                             f"{self.get_parameter('max_batch').value}")
        if h > self.get_parameter("max_horizon").value:
            raise ValueError(f"horizon {h} exceeds max_horizon "
                             f"{self.get_parameter('max_horizon').value}")
        step = to_seconds(a.step_duration)
        if abs(step - predictor.step) > 1e-6:
            raise ValueError(f"step_duration {step} s does not match the model's "
                             f"{predictor.step} s")
        arm_joints = list(predictor.chain.limits.names)
        names = list(a.joint_names)
        if sorted(names) != sorted(arm_joints) or len(set(names)) != len(names):
            raise ValueError(f"action joint_names {names} must be the arm joints "
                             f"{arm_joints}")
        j = len(names)
        if len(a.joint_targets) != n * h * j:
            raise ValueError(f"joint_targets has {len(a.joint_targets)} values, expected "
                             f"{n} x {h} x {j} = {n * h * j}")
        if len(a.gripper_widths) != n * h:
            raise ValueError(f"gripper_widths has {len(a.gripper_widths)} values, expected "
                             f"{n} x {h} = {n * h}")
        order = [names.index(name) for name in arm_joints]
        targets = torch.from_numpy(np.asarray(a.joint_targets, np.float32)
                                   .reshape(n, h, j)[..., order].copy())
        widths = torch.from_numpy(np.asarray(a.gripper_widths, np.float32).reshape(n, h).copy())
        q, qd, width = joint_state_to_tensors(request.robot_state, arm_joints,
                                              self.get_parameter("gripper_joints").value)
        objects = request.objects if request.objects.objects else self._objects
        if objects is None:
            objects = ObjectArray()
        ids, pos, rot, ext, look = objects_to_tensors(objects)
        state = WorldState(q.float(), qd.float(), width.float(), ids, pos, rot, ext, look)
        return state, targets, widths

    # ---- visualisation -------------------------------------------------------------------
    def _publish_markers(self, f: Futures, header) -> None:
        count = min(self.get_parameter("markers.futures").value, f.joint_positions.shape[0])
        if count == 0 or self.pub_markers.get_subscription_count() == 0:
            return
        markers = MarkerArray(markers=[Marker(header=header, action=Marker.DELETEALL)])
        ee = f.ee_poses[:count, :, :3, 3].cpu().numpy()
        obj = f.object_positions[:count].cpu().numpy()
        std = None if f.object_position_std is None else f.object_position_std[:count].cpu()

        for n in range(count):
            markers.markers.append(line_strip(header, "ee_paths", n, ee[n],
                                              ColorRGBA(r=0.1, g=0.6, b=1.0, a=0.8), 0.004))
            for k in range(obj.shape[2]):
                # Objects whose predicted spread is large are drawn red.
                u = 0.0 if std is None else float(min(1.0, std[n, -1, k] / 0.05))
                markers.markers.append(line_strip(
                    header, f"object_{f.object_ids[k]}", n, obj[n, :, k],
                    ColorRGBA(r=u, g=1.0 - u, b=0.2, a=0.9), 0.006))
        self.pub_markers.publish(markers)

    def _request_image(self, f: Futures, header) -> None:
        client = self.render_client
        if client is None or not f.object_ids or not client.service_is_ready():
            return
        prm = lambda n: self.get_parameter(n).value  # noqa: E731
        if self._render_pending is not None and not self._render_pending[0].done():
            future, asked = self._render_pending
            if time.monotonic() - asked < prm("render_timeout"):
                return  # the scene renders one image at a time: do not queue more on it
            client.remove_pending_request(future)
            self.get_logger().warning(
                f"no predicted image from {client.srv_name} in {prm('render_timeout')} s; "
                "asking again", throttle_duration_sec=10.0)
        request = RenderScene.Request()
        w, h = prm("image.width"), prm("image.height")
        try:
            K, c2w = look_at_camera(prm("image.position"), prm("image.look_at"), w, h,
                                    prm("image.fovy_deg"))
        except ValueError as err:
            self.get_logger().error(f"predicted-image camera: {err}")
            return
        request.camera_info.width, request.camera_info.height = w, h
        request.camera_info.k = [float(v) for v in K.ravel()]
        request.camera_pose.header = header
        p = request.camera_pose.pose
        p.position.x, p.position.y, p.position.z = (float(v) for v in c2w[:3, 3])
        (p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w) = (
            float(v) for v in Rotation.from_matrix(c2w[:3, :3]).as_quat())
        final = ObjectArray(header=header)
        quats = Rotation.from_matrix(f.object_rotations[0, -1].double().cpu().numpy()).as_quat()
        for k, oid in enumerate(f.object_ids):
            o = ObjectState(id=int(oid))
            p = f.object_positions[0, -1, k].cpu().numpy()
            o.pose.position.x, o.pose.position.y, o.pose.position.z = (float(v) for v in p)
            (o.pose.orientation.x, o.pose.orientation.y, o.pose.orientation.z,
             o.pose.orientation.w) = (float(v) for v in quats[k])
            final.objects.append(o)
        request.object_overrides = final
        future = client.call_async(request)
        self._render_pending = (future, time.monotonic())
        future.add_done_callback(self._on_rendered)

    def _on_rendered(self, future) -> None:
        result = future.result()
        if result is None or not result.success:
            self.get_logger().warning(
                "predicted image: render failed: "
                f"{'no answer' if result is None else result.message}",
                throttle_duration_sec=10.0)
            return
        self.pub_image.publish(result.rgb)


def main(args=None):
    run(WorldModelNode, args, threads=2)


if __name__ == "__main__":
    main()
