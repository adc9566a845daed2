"""The gripper's state for the scene memory from joint states: interpolation at a frame's
stamp, and forward kinematics of the robot description against the simulator's TCP."""
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from gsplat_scene.gripper import GripperKinematics, JointHistory, root_link
from ros_io.paths import share_path
from sim_robot.panda import ARM_JOINT_NAMES, FINGER_JOINT_NAMES, TCP_FRAME, urdf
from sim_robot.scenario import load_scenario
from sim_robot.sim import PandaSim


def test_joint_history_interpolates_and_refuses_gaps():
    history = JointHistory(window=1.0, max_gap=0.1)
    history.add(0.0, ["a", "b"], [0.0, 1.0])
    history.add(0.1, ["a", "b"], [1.0, math.nan])  # b unknown here
    history.add(0.05, ["a"], [5.0])                 # out of order: ignored
    history.add(0.2, ["a", "b"], [2.0, 3.0])
    assert history.at(0.15, ["a"]) == pytest.approx([1.5])
    assert history.at(0.05, ["a", "b"]) is None      # b missing at 0.1
    assert history.at(0.21, ["a"]) == pytest.approx([2.0])  # past the last sample, near it
    assert history.at(0.5, ["a"]) is None            # too far from any sample
    assert history.at(0.2, ["c"]) is None
    history.add(2.0, ["a"], [0.0])                   # older samples leave the window
    assert history.stamps == [2.0]


def test_gripper_kinematics_match_the_simulator():
    sim = PandaSim(load_scenario(share_path("config", "scenarios", "default.yaml")), 64, 48)
    description = urdf()
    assert root_link(description) == "world"
    kinematics = GripperKinematics(description, TCP_FRAME, FINGER_JOINT_NAMES)
    history = JointHistory()
    for t, q in enumerate(([0.0, -0.5, 0.0, -2.0, 0.0, 1.6, 0.8],
                           [0.3, -0.2, 0.1, -2.3, 0.2, 2.0, 0.5])):
        sim.set_arm_targets(q)
        sim.set_gripper_width(0.03)
        sim.step(600)
        history.add(float(t), list(ARM_JOINT_NAMES) + list(FINGER_JOINT_NAMES),
                    list(sim.arm_positions()) + list(sim.finger_positions()))
        gripper = kinematics.gripper(history, float(t))
        position, quat = sim.tcp_pose()
        np.testing.assert_allclose(gripper.pose[:3, 3].numpy(), position, atol=1e-4)
        np.testing.assert_allclose(gripper.pose[:3, :3].numpy(),
                                   Rotation.from_quat(quat).as_matrix(), atol=1e-4)
        assert gripper.opening == pytest.approx(sim.gripper_width(), abs=1e-6)
    assert kinematics.gripper(history, 10.0) is None  # no joint states then
    with pytest.raises(ValueError, match="no joint chain"):
        GripperKinematics(description, "no_such_link", FINGER_JOINT_NAMES)
