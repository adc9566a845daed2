"""joint_trajectory_controller semantics of the follower, without ROS."""
import numpy as np
import pytest

from sim_robot.trajectory_follower import JointTrajectoryFollower, TrajectoryRejected

NAMES = ["a", "b"]


def follower(q0=(0.0, 0.0)):
    return JointTrajectoryFollower(NAMES, lower=[-2, -2], upper=[2, 2], velocity=[1, 1],
                                   initial_positions=q0)


def test_holds_initial_state_without_trajectory():
    f = follower((0.5, -0.5))
    q, qd, _ = f.sample(3.0)
    np.testing.assert_allclose(q, [0.5, -0.5])
    np.testing.assert_allclose(qd, 0)


def test_linear_interpolation_relative_to_stamp_and_hold_at_end():
    f = follower()
    f.set_trajectory(now=1.0, start_time=2.0, joint_names=NAMES, times=[1.0],
                     positions=[[0.5, -0.5]])
    np.testing.assert_allclose(f.sample(1.5)[0], [0, 0])      # before the stamp: hold
    np.testing.assert_allclose(f.sample(2.5)[0], [0.25, -0.25])  # halfway
    np.testing.assert_allclose(f.sample(3.0)[0], [0.5, -0.5])
    np.testing.assert_allclose(f.sample(9.0)[0], [0.5, -0.5])    # held after the end


def test_joint_order_follows_names():
    f = follower()
    f.set_trajectory(now=0.0, start_time=0.0, joint_names=["b", "a"], times=[1.0],
                     positions=[[0.3, 0.1]])
    np.testing.assert_allclose(f.sample(1.0)[0], [0.1, 0.3])


def test_cubic_segments_match_endpoint_velocities():
    f = follower()
    f.set_trajectory(now=0.0, start_time=0.0, joint_names=NAMES, times=[1.0, 2.0],
                     positions=[[0.5, 0.0], [1.0, 0.0]], velocities=[[0.5, 0.0], [0.0, 0.0]])
    q, qd, _ = f.sample(1.0)
    np.testing.assert_allclose(q, [0.5, 0.0])
    np.testing.assert_allclose(qd, [0.5, 0.0], atol=1e-9)
    eps = 1e-6
    numeric = (f.sample(1.5 + eps)[0] - f.sample(1.5 - eps)[0]) / (2 * eps)
    np.testing.assert_allclose(f.sample(1.5)[1], numeric, atol=1e-6)


def test_quintic_segment_hits_accelerations():
    f = follower()
    f.set_trajectory(now=0.0, start_time=0.0, joint_names=NAMES, times=[1.0],
                     positions=[[0.4, 0.0]], velocities=[[0.2, 0.0]],
                     accelerations=[[-0.3, 0.0]])
    q, qd, qdd = f.sample(1.0 - 1e-9)
    np.testing.assert_allclose([q[0], qd[0], qdd[0]], [0.4, 0.2, -0.3], atol=1e-6)


def test_replacement_starts_from_commanded_state_at_its_start_time():
    f = follower()
    f.set_trajectory(now=0.0, start_time=0.0, joint_names=NAMES, times=[2.0],
                     positions=[[1.0, 1.0]])
    # New trajectory stamped at t=1: the old one runs until then, the new one starts from
    # the old one's commanded state there (0.5) and goes to -0.5 by t=2.
    f.set_trajectory(now=0.5, start_time=1.0, joint_names=NAMES, times=[1.0],
                     positions=[[-0.5, -0.5]])
    np.testing.assert_allclose(f.sample(0.75)[0], [0.375, 0.375])
    np.testing.assert_allclose(f.sample(1.0)[0], [0.5, 0.5])
    np.testing.assert_allclose(f.sample(1.5)[0], [0.0, 0.0])
    np.testing.assert_allclose(f.sample(2.0)[0], [-0.5, -0.5])


def test_points_in_the_past_are_skipped():
    f = follower()
    f.set_trajectory(now=1.5, start_time=1.0, joint_names=NAMES, times=[0.25, 1.5],
                     positions=[[0.9, 0.9], [0.5, 0.5]])
    np.testing.assert_allclose(f.sample(1.5)[0], [0.0, 0.0])  # starts from the held state
    np.testing.assert_allclose(f.sample(2.5)[0], [0.5, 0.5])


@pytest.mark.parametrize("kwargs, reason", [
    (dict(joint_names=["a", "x"]), "unknown joint"),
    (dict(joint_names=["a"], positions=[[0.1]]), "missing joints"),
    (dict(joint_names=["a", "a"]), "duplicate"),
    (dict(times=[], positions=[]), "empty"),
    (dict(positions=[[float("nan"), 0.0]]), "NaN"),
    (dict(positions=[[2.5, 0.0]]), "outside"),
    (dict(times=[1.0, 1.0], positions=[[0.1, 0.1], [0.2, 0.2]]), "strictly increasing"),
    (dict(times=[2.0, 1.0], positions=[[0.1, 0.1], [0.2, 0.2]]), "strictly increasing"),
    (dict(times=[-1.0]), "strictly increasing"),
    (dict(positions=[[0.1, 0.1, 0.1]]), "values"),
    (dict(velocities=[[5.0, 0.0]]), "exceeds"),
    (dict(times=[0.01], positions=[[1.0, 1.0]]), "would move"),
    (dict(start_time=0.5, times=[0.4]), "in the past"),
])
def test_malformed_trajectories_are_rejected_and_queue_is_kept(kwargs, reason):
    f = follower()
    f.set_trajectory(now=0.0, start_time=0.0, joint_names=NAMES, times=[2.0],
                     positions=[[1.0, 1.0]])
    before = [f.sample(t)[0] for t in (0.5, 1.0, 2.0)]
    args = dict(now=1.0, start_time=0.0, joint_names=NAMES, times=[1.0],
                positions=[[0.1, 0.1]])
    args.update(kwargs)
    with pytest.raises(TrajectoryRejected, match=reason):
        f.set_trajectory(**args)
    after = [f.sample(t)[0] for t in (0.5, 1.0, 2.0)]
    np.testing.assert_allclose(before, after)
