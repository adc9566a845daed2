"""MuJoCo simulation of the Panda on a table with objects, and two fixed RGB-D + instance cameras."""

from __future__ import annotations

import math
import os
import sys

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402  (needs MUJOCO_GL set first)
import numpy as np  # noqa: E402

from sim_robot import panda, scene  # noqa: E402
from sim_robot.scenario import Scenario  # noqa: E402

# Rotation from a MuJoCo camera frame (x right, y up, z backward) to the REP-103 optical
# frame (x right, y down, z forward).
_MUJOCO_TO_OPTICAL = np.diag([1.0, -1.0, -1.0])


def _wxyz_to_xyzw(quat) -> np.ndarray:
    return np.array([quat[1], quat[2], quat[3], quat[0]])


def _matrix_to_xyzw(matrix) -> np.ndarray:
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, np.ascontiguousarray(matrix, dtype=float).ravel())
    return _wxyz_to_xyzw(quat)


class _CameraRenderer:
    """Off-screen renderer of the model's fixed cameras at one image size.

    Each frame takes two passes: a lit colour pass, and an unlit segmentation pass whose
    colour buffer encodes geom ids and whose depth buffer gives metric depth.
    """

    def __init__(self, model: mujoco.MjModel, width: int, height: int):
        self._gl = None  # lets close() run even if context creation fails
        self._gl = mujoco.GLContext(width, height)
        self._gl.make_current()
        self._context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_100)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._context)
        # MuJoCo renders with reversed z: 1 at the near plane, 0 at the far plane.
        self._context.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR
        self._scene = mujoco.MjvScene(model, maxgeom=max(1000, 2 * model.ngeom))
        self._option = mujoco.MjvOption()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._color = np.empty((height, width, 3), np.uint8)
        self._segment = np.empty((height, width, 3), np.uint8)
        self._depth = np.empty((height, width), np.float32)
        near = model.vis.map.znear * model.stat.extent
        far = model.vis.map.zfar * model.stat.extent
        # Reversed-z buffer value b maps to distance near * far / ((far - near) b + near).
        self._depth_numerator = np.float32(near * far)
        self._depth_scale = np.float32(far - near)
        self._depth_offset = np.float32(near)

    def render(self, model: mujoco.MjModel, data: mujoco.MjData, geom_instance: np.ndarray,
               camera_id: int):
        """(rgb (H, W, 3) uint8, depth (H, W) float32 m or NaN, instance (H, W) uint16) of
        fixed camera camera_id, new arrays."""
        self._gl.make_current()
        self._camera.fixedcamid = camera_id
        mujoco.mjv_updateScene(
            model, data, self._option, None, self._camera, mujoco.mjtCatBit.mjCAT_ALL, self._scene
        )
        mujoco.mjr_render(self._rect, self._scene, self._context)
        mujoco.mjr_readPixels(self._color, None, self._rect, self._context)

        flags = self._scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = 1
        flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = 1
        try:
            mujoco.mjr_render(self._rect, self._scene, self._context)
            mujoco.mjr_readPixels(self._segment, self._depth, self._rect, self._context)
        finally:
            flags[mujoco.mjtRndFlag.mjRND_SEGMENT] = 0
            flags[mujoco.mjtRndFlag.mjRND_IDCOLOR] = 0

        # OpenGL rows run bottom-up; flipping while converting gives top-down images.
        rgb = self._color[::-1].copy()
        buffer = self._depth[::-1]
        depth = self._depth_numerator / (buffer * self._depth_scale + self._depth_offset)
        depth[buffer <= 0.0] = np.nan
        instance = self._segment_lookup(model, geom_instance)[self._segment_ids()[::-1]]
        return rgb, depth, instance

    def _segment_ids(self) -> np.ndarray:
        """Per-pixel segmentation colour as an integer: 0 background, k scene geom k - 1."""
        ids = self._segment[..., 0].astype(np.int32)
        if self._scene.ngeom >= 255:
            ids |= self._segment[..., 1].astype(np.int32) << 8
            ids |= self._segment[..., 2].astype(np.int32) << 16
        return ids

    def _segment_lookup(self, model: mujoco.MjModel, geom_instance: np.ndarray) -> np.ndarray:
        """Table from segmentation colour to instance id for the current scene."""
        lookup = np.zeros(self._scene.ngeom + 1, np.uint16)
        for i in range(self._scene.ngeom):
            geom = self._scene.geoms[i]
            if geom.objtype == mujoco.mjtObj.mjOBJ_GEOM and 0 <= geom.objid < model.ngeom:
                lookup[geom.segid + 1] = geom_instance[geom.objid]
        return lookup

    def close(self) -> None:
        """Free the GL resources; the context must be current while MuJoCo's are freed."""
        if self._gl is None:
            return
        self._gl.make_current()
        self._context.free()
        self._gl.free()
        self._gl = None

    def __del__(self):
        # At interpreter exit the GL display may already be gone; the OS reclaims everything.
        if not sys.is_finalizing():
            self.close()


class PandaSim:
    """Panda arm + gripper on a table with objects, stepped at ``timestep`` seconds.

    All poses are in the world frame (origin at the robot base on the table top, z up);
    quaternions are (x, y, z, w).
    """

    def __init__(self, scenario: Scenario, width: int = 320, height: int = 240):
        self._width = width
        self._height = height
        self._renderers: dict[tuple[int, int], _CameraRenderer] = {}
        self._xml: str | None = None
        self._scenario = scenario
        self.reset(scenario)

    # --- lifecycle ---

    def reset(self, scenario: Scenario | None = None) -> None:
        """Restore the initial state of ``scenario`` (default: the current one).

        The arm starts at HOME_POSITION with the gripper open; identical scenarios and
        identical command sequences give bit-identical trajectories.
        """
        if scenario is not None:
            self._scenario = scenario
        xml = scene.build_mjcf(self._scenario)
        if xml != self._xml:
            self._load_model(xml)
        mujoco.mj_resetData(self._model, self._data)
        self._data.qpos[self._arm_qpos] = panda.HOME_POSITION
        self._data.qpos[self._finger_qpos] = panda.FINGER_MAX_OPENING
        self._data.ctrl[self._arm_position_act] = panda.HOME_POSITION
        self._data.ctrl[self._arm_velocity_act] = 0.0
        self._data.ctrl[self._gripper_act] = panda.GRIPPER_MAX_WIDTH
        mujoco.mj_forward(self._model, self._data)

    def _load_model(self, xml: str) -> None:
        self.close()
        model = mujoco.MjModel.from_xml_string(xml)
        self._model = model
        self._data = mujoco.MjData(model)
        self._xml = xml

        def joint_id(name):
            return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, name)

        def actuator_id(name):
            return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, name)

        arm_joints = [joint_id(n) for n in panda.ARM_JOINT_NAMES]
        finger_joints = [joint_id(n) for n in panda.FINGER_JOINT_NAMES]
        self._arm_qpos = model.jnt_qposadr[arm_joints]
        self._arm_dof = model.jnt_dofadr[arm_joints]
        self._finger_qpos = model.jnt_qposadr[finger_joints]
        self._finger_dof = model.jnt_dofadr[finger_joints]
        self._arm_position_act = np.array([actuator_id(f"{n}_position") for n in panda.ARM_JOINT_NAMES])
        self._arm_velocity_act = np.array([actuator_id(f"{n}_velocity") for n in panda.ARM_JOINT_NAMES])
        self._gripper_act = actuator_id("gripper")
        self._tcp_site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, panda.TCP_FRAME)
        self._camera_ids = {name: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name)
                            for name in scene.CAMERA_NAMESPACES.values()}

        distractors = scene.distractor_specs(self._scenario)
        self._object_extents = {name: np.array(scene.OBJECT_HALF_EXTENTS[name]) for name in scene.MAIN_OBJECTS}
        self._object_extents.update({spec.name: np.array(spec.half_extents) for spec in distractors})
        self._object_qpos = {
            name: model.jnt_qposadr[joint_id(f"{name}_free")] for name in self._object_extents
        }
        # Instance id of every geom, from the top-level body it belongs to.
        root_instance = np.full(model.nbody, scene.BACKGROUND_ID, np.uint16)
        for body in range(1, model.nbody):
            name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, body)
            if name == panda.BASE_LINK:
                root_instance[body] = scene.ROBOT_ID
            elif name in scene.OBJECT_IDS:
                root_instance[body] = scene.OBJECT_IDS[name]
        self._geom_instance = root_instance[model.body_rootid[model.geom_bodyid]]

    def close(self) -> None:
        """Release the rendering contexts."""
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()

    # --- properties ---

    @property
    def model(self) -> mujoco.MjModel:
        return self._model

    @property
    def data(self) -> mujoco.MjData:
        return self._data

    @property
    def scenario(self) -> Scenario:
        return self._scenario

    @property
    def width(self) -> int:
        """Default image width, px."""
        return self._width

    @property
    def height(self) -> int:
        """Default image height, px."""
        return self._height

    @property
    def time(self) -> float:
        """Simulated time since reset, s."""
        return float(self._data.time)

    @property
    def timestep(self) -> float:
        """Physics step, s."""
        return float(self._model.opt.timestep)

    # --- stepping and commands ---

    def step(self, n: int = 1) -> None:
        """Advance ``n`` physics steps."""
        mujoco.mj_step(self._model, self._data, nstep=n)
        # Bring positions of bodies, sites and camera in line with the new joint positions.
        mujoco.mj_kinematics(self._model, self._data)

    def set_arm_targets(self, q, qd=None) -> None:
        """Servo targets: positions q (7,) rad, clipped to the joint limits, and optional
        feed-forward velocities qd (7,) rad/s (zero if None)."""
        q = np.asarray(q, float).reshape(7)
        self._data.ctrl[self._arm_position_act] = np.clip(q, panda.ARM_LIMITS.lower, panda.ARM_LIMITS.upper)
        if qd is None:
            self._data.ctrl[self._arm_velocity_act] = 0.0
        else:
            qd = np.asarray(qd, float).reshape(7)
            self._data.ctrl[self._arm_velocity_act] = np.clip(qd, -panda.ARM_LIMITS.velocity, panda.ARM_LIMITS.velocity)

    def set_arm_positions(self, q) -> None:
        """Place the arm at rest at q (7,) rad, clipped to the joint limits, its servo
        targets there too (a scripted start, as `reset` places it at HOME_POSITION)."""
        q = np.clip(np.asarray(q, float).reshape(7), panda.ARM_LIMITS.lower,
                    panda.ARM_LIMITS.upper)
        self._data.qpos[self._arm_qpos] = q
        self._data.qvel[self._arm_dof] = 0.0
        self.set_arm_targets(q)
        mujoco.mj_forward(self._model, self._data)

    def set_gripper_width(self, width_m: float) -> None:
        """Target distance between the finger pads, m, clipped to [0, GRIPPER_MAX_WIDTH]."""
        self._data.ctrl[self._gripper_act] = float(np.clip(width_m, 0.0, panda.GRIPPER_MAX_WIDTH))

    def arm_targets(self) -> np.ndarray:
        """Current servo position targets (7,), rad."""
        return self._data.ctrl[self._arm_position_act].copy()

    # --- state ---

    def arm_positions(self) -> np.ndarray:
        """(7,) rad."""
        return self._data.qpos[self._arm_qpos].copy()

    def arm_velocities(self) -> np.ndarray:
        """(7,) rad/s."""
        return self._data.qvel[self._arm_dof].copy()

    def finger_positions(self) -> np.ndarray:
        """(2,) m, opening of each finger from the centre."""
        return self._data.qpos[self._finger_qpos].copy()

    def finger_velocities(self) -> np.ndarray:
        """(2,) m/s."""
        return self._data.qvel[self._finger_dof].copy()

    def gripper_width(self) -> float:
        """Distance between the finger pads, m."""
        return float(self._data.qpos[self._finger_qpos].sum())

    def joint_efforts(self) -> np.ndarray:
        """(7,) Nm the arm's motors apply: servo torque plus gravity compensation."""
        return self._data.qfrc_actuator[self._arm_dof] + self._data.qfrc_gravcomp[self._arm_dof]

    def finger_efforts(self) -> np.ndarray:
        """(2,) N the gripper drive applies to each finger (negative closes)."""
        return self._data.qfrc_actuator[self._finger_dof].copy()

    def tcp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Tool centre point between the fingertips: (position (3,) m, quat_xyzw (4,))."""
        position = self._data.site_xpos[self._tcp_site].copy()
        return position, _matrix_to_xyzw(self._data.site_xmat[self._tcp_site])

    def object_poses(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Body pose of every object: name -> (position (3,) m, quat_xyzw (4,))."""
        poses = {}
        for name, address in self._object_qpos.items():
            qpos = self._data.qpos[address : address + 7]
            poses[name] = (qpos[:3].copy(), _wxyz_to_xyzw(qpos[3:]))
        return poses

    def set_object_pose(self, name: str, position, quat_xyzw=(0.0, 0.0, 0.0, 1.0)) -> None:
        """Teleport an object (at rest) to position (3,) m with orientation quat_xyzw (4,)."""
        address = self._object_qpos[name]
        x, y, z, w = quat_xyzw
        self._data.qpos[address:address + 7] = [*position, w, x, y, z]
        dof = self._model.jnt_dofadr[self._model.body_jntadr[self._model.body(name).id]]
        self._data.qvel[dof:dof + 6] = 0.0
        mujoco.mj_forward(self._model, self._data)

    def object_extents(self) -> dict[str, np.ndarray]:
        """Half sizes (3,) m of every object's bounding box in its body frame."""
        return {name: extents.copy() for name, extents in self._object_extents.items()}

    # --- camera ---

    def _camera(self, name: str) -> int:
        if name not in self._camera_ids:
            raise ValueError(f"unknown camera '{name}' (cameras: {', '.join(self._camera_ids)})")
        return self._camera_ids[name]

    def render(self, width: int | None = None, height: int | None = None,
               camera: str = scene.CAMERA_NAME):
        """Images of a fixed camera: (rgb (H, W, 3) uint8, depth (H, W) float32, instance (H, W) uint16).

        Depth is the distance along the optical axis in metres, NaN where nothing is within
        the far plane. Instance ids are those of ``scene.OBJECT_IDS`` (0 background, 1 robot).
        Defaults to the size given at construction.
        """
        camera_id = self._camera(camera)
        size = (width or self._width, height or self._height)
        renderer = self._renderers.get(size)
        if renderer is None:
            global_visual = self._model.vis.global_
            global_visual.offwidth = max(global_visual.offwidth, size[0])
            global_visual.offheight = max(global_visual.offheight, size[1])
            renderer = _CameraRenderer(self._model, *size)
            self._renderers[size] = renderer
        return renderer.render(self._model, self._data, self._geom_instance, camera_id)

    def set_camera(self, position, look_at, camera: str = scene.CAMERA_NAME) -> None:
        """Move a (world-fixed) camera to position (3,) m, looking at look_at (3,) m."""
        camera_id = self._camera(camera)
        rotation = scene.camera_axes(position, look_at)
        quat = np.empty(4)
        mujoco.mju_mat2Quat(quat, rotation.reshape(-1))
        self._model.cam_pos[camera_id] = position
        self._model.cam_quat[camera_id] = quat
        mujoco.mj_kinematics(self._model, self._data)
        mujoco.mj_camlight(self._model, self._data)

    def camera_intrinsics(self, width: int | None = None, height: int | None = None,
                          camera: str = scene.CAMERA_NAME) -> tuple[float, float, float, float]:
        """Pinhole (fx, fy, cx, cy) in pixels of the rendered image; pixel centres at integers."""
        width = width or self._width
        height = height or self._height
        fovy = self._model.cam_fovy[self._camera(camera)]
        fy = 0.5 * height / math.tan(math.radians(fovy) / 2)
        return fy, fy, (width - 1) / 2, (height - 1) / 2

    def camera_pose(self, camera: str = scene.CAMERA_NAME) -> tuple[np.ndarray, np.ndarray]:
        """Optical frame (z forward, x right, y down) in the world: (position (3,) m, quat_xyzw (4,))."""
        camera_id = self._camera(camera)
        rotation = self._data.cam_xmat[camera_id].reshape(3, 3) @ _MUJOCO_TO_OPTICAL
        return self._data.cam_xpos[camera_id].copy(), _matrix_to_xyzw(rotation)
