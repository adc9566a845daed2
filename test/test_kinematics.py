"""Batched forward kinematics from the URDF against MuJoCo's kinematics of the same arm."""
import numpy as np
import pytest
import torch

from robot_model.kinematics import KinematicChain
from ros_io.paths import share_path
from sim_robot import panda
from sim_robot.ik import ArmIK


@pytest.fixture(scope="module")
def chain():
    urdf = open(share_path("config", "panda.urdf")).read()
    return KinematicChain.from_urdf(urdf, "world", panda.TCP_FRAME)


def test_limits_come_from_the_urdf(chain):
    assert chain.dof == 7
    np.testing.assert_allclose(chain.limits.lower.numpy(), panda.ARM_LIMITS.lower, atol=1e-6)
    np.testing.assert_allclose(chain.limits.upper.numpy(), panda.ARM_LIMITS.upper, atol=1e-6)


def test_tcp_pose_matches_mujoco(chain):
    rng = np.random.default_rng(0)
    qs = rng.uniform(panda.ARM_LIMITS.lower, panda.ARM_LIMITS.upper, (64, 7))
    poses = chain.forward(torch.tensor(qs, dtype=torch.float64)).numpy()
    ik = ArmIK()
    for q, pose in zip(qs, poses):
        position, rotation = ik.forward(q)
        np.testing.assert_allclose(pose[:3, 3], position, atol=1e-5)
        np.testing.assert_allclose(pose[:3, :3], rotation, atol=1e-5)


def test_batched_equals_one_by_one_and_is_differentiable(chain):
    q = torch.rand(4, 3, 7, dtype=torch.float64, requires_grad=True)
    batched = chain.link_poses(q)
    assert batched.shape == (4, 3, len(chain.links), 4, 4)
    torch.testing.assert_close(batched[2, 1], chain.link_poses(q[2, 1]))
    batched[..., -1, :3, 3].sum().backward()
    assert torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0


def test_bad_chains_and_inputs_are_refused(chain):
    urdf = open(share_path("config", "panda.urdf")).read()
    with pytest.raises(ValueError, match="no joint chain"):
        KinematicChain.from_urdf(urdf, "world", "no_such_link")
    with pytest.raises(ValueError, match="expected 7"):
        chain.forward(torch.zeros(6))
