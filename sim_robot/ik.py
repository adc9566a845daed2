"""Damped-least-squares inverse kinematics of the Panda TCP on a MuJoCo model of the arm."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import NamedTuple

import mujoco
import numpy as np
from scipy.spatial.transform import Rotation

from sim_robot import panda


class IKResult(NamedTuple):
    q: np.ndarray  # (7,) rad, within the joint limits
    converged: bool
    error: float  # norm of the final [position error (m), orientation error (rad)] 6-vector


def arm_model() -> mujoco.MjModel:
    """MuJoCo model of the robot alone, base at the world origin."""
    root = ET.Element("mujoco", model="panda_arm")
    worldbody = ET.SubElement(root, "worldbody")
    worldbody.append(panda.mjcf_robot_body())
    return mujoco.MjModel.from_xml_string(ET.tostring(root, encoding="unicode"))


class ArmIK:
    """Solves for arm joint positions that put the TCP at a world-frame pose.

    Uses its own MjData, so solving never disturbs a running simulation that shares the model.
    """

    def __init__(self, model: mujoco.MjModel | None = None, limit_margin: float = 0.005):
        self._model = model if model is not None else arm_model()
        self._data = mujoco.MjData(self._model)
        joints = [mujoco.mj_name2id(self._model, mujoco.mjtObj.mjOBJ_JOINT, n) for n in panda.ARM_JOINT_NAMES]
        self._qpos = self._model.jnt_qposadr[joints]
        self._dof = self._model.jnt_dofadr[joints]
        self._site = mujoco.mj_name2id(self._model, mujoco.mjtObj.mjOBJ_SITE, panda.TCP_FRAME)
        # Solutions keep a small margin from the limits so servos never ride on a joint stop.
        self._lower = panda.ARM_LIMITS.lower + limit_margin
        self._upper = panda.ARM_LIMITS.upper - limit_margin
        self._jacp = np.zeros((3, self._model.nv))
        self._jacr = np.zeros((3, self._model.nv))

    def forward(self, q) -> tuple[np.ndarray, np.ndarray]:
        """TCP (position (3,) m, rotation matrix (3, 3)) in the world for joint positions q (7,)."""
        self._data.qpos[self._qpos] = q
        mujoco.mj_kinematics(self._model, self._data)
        return self._data.site_xpos[self._site].copy(), self._data.site_xmat[self._site].reshape(3, 3).copy()

    def solve(
        self,
        target_position,
        target_quat_xyzw,
        q_init,
        max_iterations: int = 300,
        position_tolerance: float = 1e-4,
        orientation_tolerance: float = 1e-3,
        damping: float = 0.02,
        rest_position=panda.HOME_POSITION,
        rest_gain: float = 0.05,
    ) -> IKResult:
        """Iterate from ``q_init`` (7,) towards the TCP target (position m, quaternion xyzw).

        The null space of the task pulls gently towards ``rest_position`` so solutions stay
        in a familiar posture.
        """
        target_position = np.asarray(target_position, float)
        target_rotation = Rotation.from_quat(target_quat_xyzw).as_matrix()
        q = np.clip(np.asarray(q_init, float), self._lower, self._upper)
        rest = np.asarray(rest_position, float)
        for iteration in range(max_iterations + 1):
            position, rotation = self.forward(q)
            error = np.concatenate(
                [target_position - position, Rotation.from_matrix(target_rotation @ rotation.T).as_rotvec()]
            )
            converged = bool(
                np.linalg.norm(error[:3]) < position_tolerance and np.linalg.norm(error[3:]) < orientation_tolerance
            )
            if converged or iteration == max_iterations:
                break
            mujoco.mj_comPos(self._model, self._data)
            mujoco.mj_jacSite(self._model, self._data, self._jacp, self._jacr, self._site)
            jacobian = np.vstack([self._jacp[:, self._dof], self._jacr[:, self._dof]])
            pseudo_inverse = jacobian.T @ np.linalg.inv(jacobian @ jacobian.T + damping**2 * np.eye(6))
            step = pseudo_inverse @ error
            # Exact projector: the damped inverse would leak the posture pull into the task.
            null_space = np.eye(7) - np.linalg.pinv(jacobian) @ jacobian
            step += null_space @ (rest_gain * (rest - q))
            # Limit the step so the linearisation stays valid far from the target.
            largest = np.abs(step).max()
            if largest > 0.3:
                step *= 0.3 / largest
            q = np.clip(q + step, self._lower, self._upper)
        return IKResult(q, converged, float(np.linalg.norm(error)))
