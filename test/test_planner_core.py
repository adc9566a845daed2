"""The planner's ROS-free core: samplers, limits, collision geometry, costs and the MPC loop
on the simulated robot (in one process)."""
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from gsplat_scene.queries import box_distance
from planner_node.actions import (PANDA_ACCELERATION, PANDA_JERK, ArmLimits, braking,
                                  executed_knots, integrate)
from planner_node.arm_history import ArmHistory
from planner_node.collision import DistanceField
from planner_node.costs import (END_EFFECTOR, OBJECT, CostWeights, Goal, Scene, Stage,
                                evaluate, face_reach, funnel_distance, goal_error,
                                horizon_weights, push_opening, push_speed_limit, pushed_bound,
                                reachable, rotation_angle, segment_distance, sighting_age,
                                stage)
from planner_node.guides import (guide_target, guides, line_guides, pose_jacobian,
                                 push_rotation, tool_heading)
from planner_node.mpc import PlannerConfig, build_planner
from planner_node.pushed_object import STALLED_S, PushedObject, pushed_position
from planner_node.samplers import SamplerConfig, coloured_noise, make_sampler, shift
from robot_model.spheres import ArmSpheres
from sim_robot import closed_loop, panda
from sim_robot.scenario import Scenario
from sim_robot.scene import CAMERA_NAME, OBJECT_IDS, SIDE_CAMERA_NAME
from sim_robot.sim import PandaSim
from sim_robot.trajectory_follower import JointTrajectoryFollower
from world_model_node.checkpoint import load_checkpoint
from ros_io.paths import share_path

DT = 0.1
DEFAULT_CHECKPOINT = share_path("models", "world_model")


@pytest.fixture(scope="module")
def chain():
    return load_checkpoint(DEFAULT_CHECKPOINT)[1]


@pytest.fixture(scope="module")
def limits(chain):
    return ArmLimits.from_chain(chain, PANDA_ACCELERATION, PANDA_JERK, scale=0.5)


@pytest.mark.parametrize("name", ["cem", "mppi", "icem"])
def test_sampler_finds_the_optimum_of_a_quadratic(name):
    """A smooth target sequence (H, D) with known optimum; each sampler gets close."""
    h, d = 12, 3
    t = torch.linspace(0, 1, h)[:, None]
    optimum = torch.cat([torch.sin(3 * t), t - 0.5, 0.3 * torch.ones(h, 1)], 1)

    def cost(x):
        return ((x - optimum) ** 2).sum((1, 2))

    sampler = make_sampler(name, SamplerConfig(samples=256, iterations=12, elites=24))
    gen = torch.Generator().manual_seed(0)
    mean, std = torch.zeros(h, d), torch.full((h, d), 0.5)
    start = float(cost(mean[None]))
    result = sampler.optimize(cost, mean, std, generator=gen)
    assert result.best_cost < 0.05 * start, (name, result.best_cost, start)
    assert result.cost_history == sorted(result.cost_history, reverse=True)
    assert (result.best - optimum).abs().max() < 0.3


def test_coloured_noise_is_unit_variance_and_smoother_than_white():
    gen = torch.Generator().manual_seed(1)
    white = coloured_noise(2000, 16, 2, 0.0, gen)
    pink = coloured_noise(2000, 16, 2, 2.0, gen)
    for x in (white, pink):
        assert abs(float(x.std()) - 1.0) < 0.05

    def lag1(x):
        return float((x[:, 1:] * x[:, :-1]).mean() / (x * x).mean())
    assert lag1(white) < 0.1 < 0.5 < lag1(pink)


def test_shift_moves_the_plan_forward():
    seq = torch.arange(10.0).reshape(5, 2)
    out = shift(seq, 2, torch.tensor([-1.0, -1.0]))
    assert torch.equal(out[:3], seq[2:]) and torch.equal(out[3:], -torch.ones(2, 2))


def test_integrated_knots_keep_every_limit(limits):
    """Wild desired velocities from a state near the upper limits: every knot keeps the
    position, velocity, acceleration and jerk limits, and zeros brake to rest."""
    gen = torch.Generator().manual_seed(2)
    q0 = limits.upper - 0.05
    v0 = limits.velocity * 0.3     # towards the limits, still able to stop before them
    u = torch.randn(500, 20, 7, generator=gen) * limits.velocity * 3
    q, v, a = integrate(q0, v0, torch.zeros(7), u, limits, DT)
    tol = 1e-5
    assert (q <= limits.upper + 0.02 + tol).all() and (q >= limits.lower - 0.02 - tol).all()
    assert (v.abs() <= limits.velocity + tol).all()
    assert (a.abs() <= limits.acceleration + tol).all()
    jerk = torch.diff(torch.cat([torch.zeros(500, 1, 7), a], 1), dim=1).abs() / DT
    assert (jerk <= limits.jerk + 1e-3).all()
    pos, vel, acc = braking(q[0, -1], v[0, -1], a[0, -1], limits, DT)
    assert torch.all(vel[-1] == 0) and (acc.abs() <= limits.acceleration + tol).all()


def test_sent_trajectories_keep_the_limits_between_knots(limits):
    """The controller's interpolation (quintic through our knots) of a chain of replanned
    trajectories: commanded acceleration never exceeds the limit, also across replacements."""
    a_lim = panda.ARM_LIMITS
    follower = JointTrajectoryFollower(panda.ARM_JOINT_NAMES, a_lim.lower, a_lim.upper,
                                       a_lim.velocity, panda.HOME_POSITION)
    gen = torch.Generator().manual_seed(3)
    peak, now = np.zeros(7), 0.0
    for _ in range(15):
        anchor = [torch.tensor(x, dtype=torch.float32) for x in follower.sample(now)]
        u = torch.randn(1, 10, 7, generator=gen) * limits.velocity
        q, v, a = (x[0] for x in integrate(*anchor, u, limits, DT))
        pos, vel, acc = executed_knots(q, v, a, 2, limits, DT)
        follower.set_trajectory(now, now, follower.joint_names,
                                (np.arange(len(pos)) + 1) * DT, pos.numpy(), vel.numpy(),
                                acc.numpy())
        for t in np.arange(now, now + 0.2, 0.002):
            peak = np.maximum(peak, np.abs(follower.sample(t)[2]))
        now += 0.2
    assert np.all(peak <= limits.acceleration.numpy() * 1.01), peak


def test_arm_spheres_cover_the_links_and_collide_with_the_table(chain, limits):
    urdf = (DEFAULT_CHECKPOINT / "robot.urdf").read_text()
    spheres = ArmSpheres.from_urdf(urdf, chain)
    assert len(spheres.radii) > 15
    home = torch.tensor(panda.HOME_POSITION, dtype=torch.float32)
    centres = spheres.centres(chain.link_poses(home))
    tcp = chain.forward(home)[:3, 3]
    assert torch.allclose(centres[-1], tcp)
    assert float((centres[:, 2] - spheres.radii).min()) > -0.01   # base on the table top
    # Lower the arm until the TCP is below the table: the collision term must see it.
    low = home.clone()
    low[1] = 1.2      # shoulder pitched forward: the tool ends below the table top
    q = torch.stack([home, low])[:, None].expand(2, 4, 7)
    from world_model_node.predictor import StaticPredictor, WorldState
    predictor = StaticPredictor(chain, DT)
    state = WorldState(home, torch.zeros(7), torch.tensor(0.0), [], torch.zeros(0, 3),
                       torch.zeros(0, 3, 3), torch.zeros(0, 3), torch.zeros(0, 4))
    futures = predictor.predict(state, q, torch.zeros(2, 4))
    assert float(futures.ee_poses[1, -1, 2, 3]) < 0.0
    goal = Goal(END_EFFECTOR, tcp)
    _, terms = evaluate(futures, q, chain.link_poses(q), goal, Stage("reach", CostWeights()),
                        spheres, Scene(), limits, DT, torch.zeros(0, 3))
    assert float(terms["collision"][0]) == 0.0 < float(terms["collision"][1])


def test_distance_field_and_box_distance():
    field = DistanceField.from_points(np.array([[0.5, 0.0, 0.3]]), [0, -0.5, 0], [1, 0.5, 1],
                                      0.01)
    x = torch.tensor([[0.5, 0.0, 0.3], [0.5, 0.2, 0.3], [0.8, 0.0, 0.7], [2.0, 0.0, 0.3]])
    expected = torch.tensor([0.0, 0.2, 0.5, 1.5])
    assert torch.allclose(field.distance(x), expected, atol=0.015)
    rot = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 deg yaw
    d = box_distance(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.3, 0.0], [0.25, 0.0, 0.0]]),
                     torch.zeros(1, 3), rot[None], torch.tensor([[0.2, 0.1, 0.1]]))
    assert torch.allclose(d[:, 0], torch.tensor([0.0, 0.1, 0.15]), atol=1e-6)


def test_limits_parameters_are_checked(chain):
    with pytest.raises(ValueError, match="max_acceleration"):
        ArmLimits.from_chain(chain, [1.0] * 6, PANDA_JERK)
    with pytest.raises(ValueError, match="max_jerk"):
        ArmLimits.from_chain(chain, PANDA_ACCELERATION, [-1.0] * 7)
    with pytest.raises(ValueError, match="scale"):
        ArmLimits.from_chain(chain, PANDA_ACCELERATION, PANDA_JERK, scale=0.0)


def test_guides_move_the_tool_towards_its_target(chain, limits):
    """The Jacobian matches finite motions; each guide, integrated within the limits, ends
    closer to the target at about its speed."""
    q = torch.tensor(panda.HOME_POSITION, dtype=torch.float32)
    dq = torch.tensor([0.01, -0.02, 0.015, 0.01, -0.01, 0.02, 0.01])
    pose, moved = chain.forward(q), chain.forward(q + dq)
    assert torch.allclose(pose_jacobian(chain, q)[:3] @ dq, moved[:3, 3] - pose[:3, 3],
                          atol=5e-4)
    target = pose[:3, 3] + torch.tensor([0.08, -0.05, -0.1])
    rotation = moved[:3, :3]
    sequences = guides(chain, q, (target, rotation), limits, DT, 16, speeds=(0.25, 0.1))
    assert sequences.shape == (2, 16, 7)
    assert bool((sequences.abs() <= limits.velocity + 1e-6).all())
    start = float((target - pose[:3, 3]).norm())
    for sequence, speed in zip(sequences, (0.25, 0.1)):
        knots = integrate(q, torch.zeros(7), torch.zeros(7), sequence[None], limits, DT)[0]
        path = chain.forward(knots[0])[:, :3, 3]
        remaining = (path - target).norm(dim=-1)
        # linearised once, so not all the way; the next cycle re-linearises
        assert float(remaining[-1]) < 0.3 * start, (speed, remaining)
        # half a second covers about half `speed` metres (the ramp-up costs a little)
        assert 0.3 * speed < start - float(remaining[4]) <= 0.55 * speed, (speed, remaining)



def test_line_guides_keep_the_tool_on_its_line(chain, limits):
    """Solved knot by knot, integrated within the limits from rest, each line guide keeps
    within a millimetre of the straight line and ends on its target; the single
    linearisation of `guides` bends the same 10 cm lift by centimetres."""
    q = torch.tensor(panda.HOME_POSITION, dtype=torch.float32)
    q[1], q[3] = 0.6, -2.2                      # the tool low in front of the robot
    start = chain.forward(q)[:3, 3]
    end = start + torch.tensor([0.0, 0.0, 0.1])
    assert torch.allclose(pose_jacobian(chain, torch.stack([q, q]))[1], pose_jacobian(chain, q))

    def off_line(sequences):
        out = []
        for sequence in sequences:
            knots = integrate(q, torch.zeros(7), torch.zeros(7), sequence[None], limits, DT)
            path = chain.forward(knots[0][0])[:, :3, 3]
            out.append((float(segment_distance(path, start, end).max()),
                        float((path[-1] - end).norm())))
        return out

    straight = off_line(line_guides(chain, q, (start, end), limits, DT, 16,
                                    speeds=(0.25, 0.1)))
    assert all(off < 0.001 and miss < 0.001 for off, miss in straight), straight
    bent = off_line(guides(chain, q, (end, None), limits, DT, 16, speeds=(0.25, 0.1)))
    assert max(off for off, _ in bent) > 0.005, bent
    # Half way along a line the guides go on from there (not back to its start).
    for sequence in line_guides(chain, q, (start - torch.tensor([0.0, 0.0, 0.1]), end),
                                limits, DT, 16):
        knots = integrate(q, torch.zeros(7), torch.zeros(7), sequence[None], limits, DT)
        heights = chain.forward(knots[0][0])[:, 2, 3]
        assert float(heights.min()) > float(start[2]) - 1e-3, heights
        assert float(heights[-1]) == pytest.approx(float(end[2]), abs=1e-3)


def test_a_goal_with_a_path_costs_the_tool_s_distance_from_its_line():
    start, end = torch.tensor([0.4, 0.0, 0.03]), torch.tensor([0.4, 0.0, 0.13])
    points = torch.tensor([[0.4, 0.0, 0.08], [0.42, 0.0, 0.05], [0.4, 0.03, 0.1],
                           [0.4, 0.0, 0.17]])
    assert segment_distance(points, start, end).tolist() == pytest.approx(
        [0.0, 0.02, 0.03, 0.04], abs=1e-6)      # beyond the ends: from the end points
    assert segment_distance(points, start, start).tolist() == pytest.approx(
        (points - start).norm(dim=-1).tolist(), abs=1e-6)
    # Two futures of one tool: up the line, and up while moving 2 cm sideways.
    from world_model_node.predictor import Futures
    urdf = (DEFAULT_CHECKPOINT / "robot.urdf").read_text()
    chain = load_checkpoint(DEFAULT_CHECKPOINT)[1]
    spheres = ArmSpheres.from_urdf(urdf, chain)
    limits = ArmLimits.from_chain(chain, PANDA_ACCELERATION, PANDA_JERK, scale=0.5)
    h = 4
    q = torch.tensor(panda.HOME_POSITION, dtype=torch.float32).expand(2, h, 7)
    links = chain.link_poses(q).clone()
    tcp = links[0, 0, -1, :3, 3].clone()
    rise = torch.linspace(0.025, 0.1, h)
    links[:, :, -1, 2, 3] += rise
    links[1, :, -1, 1, 3] += torch.linspace(0.005, 0.02, h)
    futures = Futures(q, torch.zeros(2, h), links[:, :, -1], [], torch.zeros(2, h, 0, 3),
                      torch.zeros(2, h, 0, 3, 3), None)
    goal = Goal(END_EFFECTOR, tcp + torch.tensor([0.0, 0.0, 0.1]), path_start=tcp)
    weights = CostWeights()
    _, terms = evaluate(futures, q, links, goal, Stage("reach", weights), spheres, Scene(),
                        limits, DT, torch.zeros(0, 3))
    assert float(terms["ee_path"][0]) == pytest.approx(0.0, abs=1e-5)
    assert float(terms["ee_path"][1]) == pytest.approx(weights.ee_path * 0.0125, rel=1e-3)
    _, free = evaluate(futures, q, links, replace(goal, path_start=None),
                       Stage("reach", weights), spheres, Scene(), limits, DT,
                       torch.zeros(0, 3))
    assert "ee_path" not in free


def test_a_retreat_lifts_the_tool_straight_off_the_object_it_pushed():
    """The tool at the cube's back, still moving into it at 5 cm/s when the goal seems met:
    the retreat's plan brakes and lifts along the vertical instead of sweeping on over the
    cube (sampled freely, plans drift 2 cm sideways and into it)."""
    from sim_robot.ik import ArmIK
    from planner_node.settle import Retreat
    config = PlannerConfig(horizon=16, sampling=SamplerConfig(samples=64, iterations=3,
                                                              elites=8))
    planner = build_planner("learned", DEFAULT_CHECKPOINT, config)
    sim = PandaSim(Scenario(), 64, 48)
    cube = np.array(sim.object_poses()["cube"][0])
    contact = cube + [-0.045, 0.0, 0.0]         # push along +x; tool down, x along it
    q = torch.tensor(ArmIK().solve(contact, [1.0, 0.0, 0.0, 0.0],
                                   np.array(panda.HOME_POSITION)).q, dtype=torch.float32)
    chain = planner.cpu_chain
    tool = chain.forward(q)
    assert torch.allclose(tool[:3, 3], torch.tensor(contact, dtype=torch.float32), atol=1e-3)
    velocity = torch.linalg.pinv(pose_jacobian(chain, q)[:3]) @ torch.tensor([0.05, 0.0, 0.0])
    retreat = Retreat(0.1)
    assert retreat.update(True, tool)
    world = replace(closed_loop.world_state(sim), joint_positions=q)
    for seed in range(3):
        planner.reset(seed)
        plan = planner.plan(world, (q, velocity, torch.zeros(7)), retreat.goal, Scene(), 0.0)
        path = chain.forward(plan.targets)[:, :3, 3]
        off = segment_distance(path, retreat.goal.path_start, retreat.goal.position)
        assert float(off.max()) < 0.008, (seed, off)
        assert float(path[:, 0].max()) - contact[0] < 0.006, (seed, path)   # braking only
        assert float(path[-1, 2]) > contact[2] + 0.05, (seed, path)
    # The command wound up 1.5 cm ahead of the arm, which the cube holds up: the plan comes
    # back to the line at once, where the arm catching up with the command pushes on.
    ahead = torch.tensor(ArmIK().solve(contact + [0.015, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0],
                                       q.numpy()).q, dtype=torch.float32)
    for seed in range(3):
        planner.reset(seed)
        plan = planner.plan(world, (ahead, torch.zeros(7), torch.zeros(7)), retreat.goal,
                            Scene(), 0.0)
        path = chain.forward(plan.targets)[:, :3, 3]
        off = segment_distance(path, retreat.goal.path_start, retreat.goal.position)
        assert float(off[2:].max()) < 0.005, (seed, off)

def pose_at(position) -> torch.Tensor:
    pose = torch.eye(4)
    pose[:3, 3] = torch.as_tensor(position, dtype=torch.float32)
    return pose


def test_push_stages_and_their_guides():
    scene, weights = Scene(), CostWeights()
    cube = torch.tensor([[0.5, 0.0, 0.025]])
    extents = torch.tensor([[0.025, 0.025, 0.025]])
    goal = Goal(OBJECT, torch.tensor([0.5, 0.2, 0.025]), object_id=7)

    def staged(pose, objects=cube, previous=None, tool_seen=None):
        now = stage(weights, goal, pose, [7], objects, torch.eye(3)[None], extents, scene,
                    previous, tool_seen)
        now = replace(now, heading=now.direction)
        return now, guide_target(goal, now, pose, [7], objects, extents, scene)

    far = pose_at([0.3, 0.3, 0.3])
    now, (above, rot) = staged(far)
    contact_height = scene.table_height + scene.push_height
    assert now.name == "approach" and torch.equal(now.object_pose[0], cube[0])
    assert now.weights.object == now.weights.uncertainty == 0.0
    assert now.weights.approach == 2 * weights.approach
    assert torch.allclose(now.contact, above - torch.tensor([0.0, 0.0, scene.approach_height]))
    assert float(above[2]) > contact_height + 0.05 and float(above[1]) < 0.0   # behind the cube
    assert torch.allclose(rot[:, 2], torch.tensor([0.0, 0.0, -1.0]))
    now, (contact, _) = staged(pose_at(above - torch.tensor([0.0, 0.0, 0.005])))
    assert now.name == "approach" and float(contact[2]) == pytest.approx(contact_height)
    now, (end, rot) = staged(pose_at(contact))
    assert now.name == "push" and now.weights == weights
    assert now.contact is None and torch.equal(now.object_pose[0], cube[0])
    assert torch.allclose(now.direction, torch.tensor([0.0, 1.0]))   # fixed for the cycle
    assert float(end[1]) == pytest.approx(float(contact[1]) + 0.2, abs=1e-5)   # the push
    assert abs(float(rot[1, 0])) == pytest.approx(1.0, abs=1e-5)     # tool x along it
    # Pushing goes on while the tool stays low at the object's back, even where the contact
    # point has swung away (the object slid sideways); a tool beside the object approaches.
    slid = torch.tensor([[0.53, 0.02, 0.025]])
    behind = pose_at([0.51, -0.045, contact_height])
    assert staged(behind, slid)[0].name == "approach"
    assert staged(behind, slid, previous="push")[0].name == "push"
    beside = pose_at([0.59, 0.02, contact_height])
    assert staged(beside, slid, previous="push")[0].name == "approach"
    lifted = pose_at([0.51, -0.045, contact_height + 0.08])
    assert staged(lifted, slid, previous="push")[0].name == "approach"
    # Perception lags: the object as seen half a second ago, the tool now past where it was
    # (it pushed the object on). Judged where the tool was when the object was seen, the push
    # goes on, unless the tool has lifted since.
    on = pose_at([0.51, 0.02, contact_height])
    assert staged(on, slid, previous="push")[0].name == "approach"
    assert staged(on, slid, "push", behind[:3, 3])[0].name == "push"
    assert staged(lifted, slid, "push", behind[:3, 3])[0].name == "approach"
    # The funnel: the approach costs nothing at the contact point, falls all the way down
    # from above it, and a tool low beside the object costs more than one above it.
    lift = torch.tensor([0.0, 0.0, 0.05])
    side = torch.tensor([0.0, -0.05, 0.0])
    cost = funnel_distance(torch.stack([contact, contact + lift, contact + 2 * lift,
                                        contact + side + lift, contact + side]), contact, scene)
    assert float(cost[0]) == 0.0 and float(cost[1]) < float(cost[2])
    assert float(cost[3]) < float(cost[4])
    # Within tolerance: hold it there, with no guide but staying put.
    now, target = staged(far, torch.tensor([[0.5, 0.19, 0.025]]))
    assert now.name == "hold" and now.weights.approach == now.weights.tool_pose == 0.0
    assert target is None
    assert now.weights.object == weights.object


def test_approach_avoids_the_goal_object_and_pushes_are_slow(chain, limits):
    """While approaching, a tool that passes through the goal object where it is now
    collides (wherever the model imagines the object); while pushing it may touch it. A push
    faster than Scene.push_speed, measured from where the tool is, costs in proportion to
    the excess."""
    from world_model_node.predictor import Futures
    urdf = (DEFAULT_CHECKPOINT / "robot.urdf").read_text()
    spheres = ArmSpheres.from_urdf(urdf, chain)
    scene = Scene()
    goal = Goal(OBJECT, torch.tensor([0.5, 0.2, 0.025]), object_id=7)
    home = torch.tensor(panda.HOME_POSITION, dtype=torch.float32)
    tcp = chain.forward(home)[:3, 3]
    h = 5
    q = home.expand(2, h, 7)
    links = chain.link_poses(q).clone()
    links[:, :, -1, 1, 3] += torch.arange(h) * torch.tensor([[0.01], [0.03]])   # 0.1, 0.3 m/s
    # The model imagines the cube 30 cm from the tool; the second future starts in it.
    imagined = (tcp + torch.tensor([0.3, 0.0, 0.0])).expand(2, h, 1, 3)
    futures = Futures(q, torch.zeros(2, h), links[:, :, -1], [7], imagined,
                      torch.eye(3).expand(2, h, 1, 3, 3), None)
    extents = torch.full((1, 3), 0.025)
    weights = CostWeights()
    costs = {}
    for name, at in (("approach", tcp), ("push", tcp)):
        now = Stage(name, weights, torch.tensor([0.0, 1.0]),
                    **(dict(contact=at, object_pose=(at, torch.eye(3))) if name == "approach"
                       else dict(tool=(tcp, DT))))
        costs[name] = evaluate(futures, q, links, goal, now, spheres, scene, limits, DT,
                               extents)[1]
    assert float(costs["approach"]["collision"][0]) > 0.0      # both start in the cube
    assert float(costs["approach"]["collision"][1]) < float(costs["approach"]["collision"][0])
    assert float(costs["push"]["collision"].abs().max()) == 0.0
    assert "tool_speed" not in costs["approach"]
    # Over 5 steps from the measured tool: each step's speed over the limit, plus the
    # average speed from the tool to each knot over it (a command that runs ahead of the arm).
    def excess(distances, limit):
        """Expected term for knots at these distances along a line from the tool."""
        d = torch.tensor([0.0] + distances)
        steps = (d[1:] - d[:-1]) / DT
        average = d[1:] / (DT * torch.arange(1, len(distances) + 1))
        return float(((steps - limit).clamp(min=0) + (average - limit).clamp(min=0)).mean())

    speeds = costs["push"]["tool_speed"] / weights.tool_speed
    assert float(speeds[0]) == pytest.approx(0.0, abs=1e-5)      # 0.1 m/s: at the limit
    assert float(speeds[1]) == pytest.approx(excess([0.0, 0.03, 0.06, 0.09, 0.12], 0.1),
                                             rel=1e-3)
    assert float(speeds[1]) > 4 / 5 * (0.3 - scene.push_speed)     # step speeds alone
    # A command 5 cm ahead of the measured tool (an arm held up) is a fast first step, and
    # a wound-up command costs until the arm has caught up at the limit speed.
    behind = Stage("push", weights, torch.tensor([0.0, 1.0]),
                   tool=(tcp - torch.tensor([0.0, 0.05, 0.0]), DT))
    wound_up = evaluate(futures, q, links, goal, behind, spheres, scene, limits, DT,
                        extents)[1]["tool_speed"] / weights.tool_speed
    assert float(wound_up[0]) == pytest.approx(
        excess([0.05, 0.06, 0.07, 0.08, 0.09], 0.1), rel=1e-3)
    assert float(wound_up[0]) > (0.5 - scene.push_speed) / 5
    # Near the target on lagging frames the push must be slower: the stage's limit counts.
    slow = Stage("push", weights, torch.tensor([0.0, 1.0]), tool=(tcp, DT), speed=0.05)
    speeds = evaluate(futures, q, links, goal, slow, spheres, scene, limits, DT,
                      extents)[1]["tool_speed"] / weights.tool_speed
    assert float(speeds[0]) == pytest.approx(excess([0.0, 0.01, 0.02, 0.03, 0.04], 0.05),
                                             rel=1e-3)


def test_a_pushed_object_is_imagined_where_the_tool_can_have_put_it(chain, limits):
    """The push's object term bounds the model's prediction by the tool's face: a tool that
    stands behind the cube, passes over it or beside it moves it nowhere, whatever the
    model imagines; a tool that pushes moves it as far as its face has been, and no less
    far than where its face is."""
    from world_model_node.predictor import Futures
    scene = Scene()
    low = scene.table_height + scene.push_height
    origin, direction = torch.tensor([0.5, 0.0, 0.025]), torch.tensor([0.0, 1.0])
    extent, square = torch.full((3,), 0.025), torch.eye(3)
    h = 6
    steps = torch.arange(1, h + 1, dtype=torch.float32)

    def moved(progress):                                  # (h,) along the push, 1 mm/step aside
        return origin + torch.stack([0.001 * steps, progress, torch.zeros(h)], -1)

    def tool_path(y, x=0.5, z=low):
        return torch.stack([torch.full((h,), x), torch.as_tensor(y, dtype=torch.float32),
                            torch.full((h,), z)], -1)

    imagined = moved(0.01 * steps)                        # the model: 1 cm a step
    contact_y = -(0.025 * math.sqrt(2) + scene.push_offset)   # where the approach ends
    standing = tool_path(torch.full((h,), contact_y - 0.01))
    pushing = tool_path(contact_y + 0.01 * steps)
    back_and_forth = tool_path(contact_y + 0.01 * torch.tensor([1, 2, 3, 2, 1, 4]))
    over, beside = tool_path(0.01 * steps, z=0.08), tool_path(0.01 * steps, x=0.5 + 0.04)
    paths = torch.stack([standing, pushing, back_and_forth, over, beside])
    bounded = pushed_bound(imagined.expand(5, h, 3), paths, origin, direction, extent, square,
                           scene)
    progress = bounded[..., 1]
    face = paths[..., 1] + scene.tool_radius + 0.025     # the cube's centre at the face
    for k in (0, 3, 4):                                   # never pushed: it stays
        assert progress[k].tolist() == pytest.approx([0.0] * h, abs=1e-7), k
    assert progress[1].tolist() == pytest.approx(face[1].clamp(min=0).tolist(), abs=1e-7)
    assert float(progress[1, -1]) > 0.0
    # Once pushed, it stays pushed while the tool draws back.
    assert progress[2].tolist() == pytest.approx(
        face[2].clamp(min=0).cummax(0).values.tolist(), abs=1e-7)
    # Only along the push: the model's sideways drift and height stay its own.
    assert torch.equal(bounded[..., 0], imagined[..., 0].expand(5, h))
    assert torch.equal(bounded[..., 2], imagined[..., 2].expand(5, h))
    # A model that leaves the cube where it is while the tool goes through it: the cube is
    # at the face.
    still = moved(torch.zeros(h))
    through = pushed_bound(still[None], pushing[None], origin, direction, extent, square,
                           scene)[0, :, 1]
    assert through.tolist() == pytest.approx(face[1].clamp(min=0).tolist(), abs=1e-7)
    # Unless the arm does not follow its command (held up): then it stays where the model
    # has it.
    assert torch.equal(pushed_bound(still[None], pushing[None], origin, direction, extent,
                                    square, scene, torch.tensor([False])), still[None])
    # Turned 45 degrees, the cube's centre may lie anywhere from its smallest half size to
    # its half diagonal ahead of the face; a prediction in between is left alone.
    turned = torch.tensor([[math.sqrt(0.5), -math.sqrt(0.5), 0.0],
                           [math.sqrt(0.5), math.sqrt(0.5), 0.0], [0.0, 0.0, 1.0]])
    between = moved((pushing[:, 1] + scene.tool_radius + 0.03).clamp(min=0))
    assert torch.equal(pushed_bound(between[None], pushing[None], origin, direction, extent,
                                    turned, scene), between[None])

    # In the push stage the object term scores the bounded prediction: standing still
    # costs the distance the cube is from its goal, as if the model had not imagined it on.
    urdf = (DEFAULT_CHECKPOINT / "robot.urdf").read_text()
    spheres = ArmSpheres.from_urdf(urdf, chain)
    home = torch.tensor(panda.HOME_POSITION, dtype=torch.float32)
    q = home.expand(2, h, 7)
    links = chain.link_poses(q).clone()
    links[:, :, -1, :3, 3] = paths[:2]
    goal = Goal(OBJECT, origin + torch.tensor([0.0, 0.1, 0.0]), object_id=7)
    futures = Futures(q, torch.zeros(2, h), links[:, :, -1], [7],
                      imagined[:, None].expand(2, h, 1, 3), square.expand(2, h, 1, 3, 3), None)
    weights = CostWeights()
    measured = tool_path(torch.full((h,), contact_y))[0]      # a step behind the push
    now = Stage("push", weights, direction, object_pose=(origin, square), tool=(measured, DT))
    terms = evaluate(futures, q, links, goal, now, spheres, scene, limits, DT,
                     extent[None])[1]
    expected = [float((horizon_weights(h, "cpu") * (goal.position[:2] - b[:, :2]).norm(dim=-1))
                      .sum()) * weights.object for b in bounded[:2]]
    assert terms["object"].tolist() == pytest.approx(expected, rel=1e-5)
    assert float(terms["object"][0]) == pytest.approx(weights.object * 0.1, rel=0.01)
    assert float(terms["object"][1]) < float(terms["object"][0])
    # The same push commanded for an arm held up 2 cm further back (push_speed 0.1 m/s,
    # 1 cm a step): the arm can be 1 cm behind each knot, and pushes the cube that much less.
    held = replace(now, tool=(measured - torch.tensor([0.0, 0.01, 0.0]), DT))
    reach = scene.push_speed * DT * steps                  # from a tool measured a step before
    tool, follows = reachable(pushing[None], held.tool[0], direction, reach)
    assert torch.allclose(tool[0], pushing - torch.tensor([0.0, 0.01, 0.0]))
    assert follows.tolist() == [False]
    tool, follows = reachable(pushing[None], now.tool[0], direction, reach)
    assert torch.equal(tool[0], pushing) and follows.tolist() == [True]
    late = evaluate(futures, q, links, goal, held, spheres, scene, limits, DT,
                    extent[None])[1]["object"]
    assert float(late[0]) == pytest.approx(float(terms["object"][0]))
    assert float(late[1]) > float(terms["object"][1]) + weights.object * 0.005


def test_a_push_slows_near_the_target_as_far_as_perception_lags():
    scene = Scene()         # push_speed 0.1 m/s, min_push_speed 0.02, push_stop_time 0.2 s
    assert push_speed_limit(scene, 0.10, 0.0) == pytest.approx(0.1)      # far: full speed
    assert push_speed_limit(scene, 0.10, 0.5) == pytest.approx(0.1)
    # 3 cm to go, seen in a frame 0.5 s old: the object may be 0.7 s * speed further on.
    assert push_speed_limit(scene, 0.03, 0.5) == pytest.approx(0.03 / 0.7)
    assert push_speed_limit(scene, 0.03, 0.5) * (0.5 + 0.2) <= 0.03 + 1e-9
    assert push_speed_limit(scene, 0.005, 2.0) == pytest.approx(0.02)    # never below
    assert push_speed_limit(scene, 0.03, 0.1) > push_speed_limit(scene, 0.03, 0.4)


def test_a_push_opens_the_fingers_inside_the_object_s_narrowest_side():
    widest = Scene().push_gripper_width
    cube = torch.tensor([0.025, 0.025, 0.025])
    assert push_opening(cube, widest) == pytest.approx(0.03)    # pads 1 cm inside each edge
    assert push_opening(torch.tensor([0.04, 0.02, 0.05]), widest) == pytest.approx(0.02)
    assert push_opening(torch.tensor([0.1, 0.1, 0.1]), widest) == widest
    assert push_opening(torch.tensor([0.008, 0.03, 0.02]), widest) == 0.0   # narrow: closed


def test_a_push_slows_for_the_age_of_the_object_s_pose_seen_or_hidden():
    assert sighting_age(10.0, 10.4) == pytest.approx(0.4)      # seen in the newest frame
    # Hidden since 9 s (the newest frames show the hand in front of it): the tool may have
    # pushed it on all that time, so the push slows as for a pose that old.
    assert sighting_age(9.0, 10.4) == pytest.approx(1.4)
    assert push_speed_limit(Scene(), 0.05, sighting_age(9.0, 10.4)) == pytest.approx(0.05 / 1.6)
    assert sighting_age(None, 10.4) == 0.0                     # not an object goal


def closed_loop_episode(model: str, task: str, seed: int, timeout_s: float, **options):
    """(start error [m], EpisodeResult, planner) of one seeded episode in one process."""
    config = PlannerConfig(horizon=16, sampling=SamplerConfig(samples=96, iterations=3,
                                                              elites=12))
    planner = build_planner(model, DEFAULT_CHECKPOINT, config)
    sim = PandaSim(Scenario(), 64, 48)
    goal = closed_loop.sample_goal(task, sim.object_poses(), np.random.default_rng(seed))
    start_error = closed_loop.current_error(goal, sim)[0]
    return start_error, closed_loop.run_episode(sim, planner, goal, task, seed,
                                                timeout_s=timeout_s, **options), planner


def test_mpc_reaches_a_pose_on_the_simulated_robot():
    """Closed loop in one process, static world model (reach needs only the arm)."""
    start_error, result, planner = closed_loop_episode("static", "reach", 1, 6.0)
    assert result.success, (start_error, result.position_error, result.orientation_error)
    assert result.position_error < 0.02 < start_error
    assert np.all(result.peak_acceleration <= planner.limits.acceleration.numpy() * 1.01)
    assert math.isfinite(result.orientation_error)


def test_mpc_pushes_the_cube_though_it_sees_it_late_and_the_arm_hides_it():
    """Closed loop in one process, learned model, the objects as a camera-fed scene memory
    gives them: 0.5 s late, and held where last seen while the arm hides them. The planner
    judges the goal on what it sees; the push must hold on the truth when it stops."""
    perception = closed_loop.PerceivedObjects(0.5, cameras=(CAMERA_NAME,))
    start_error, result, _ = closed_loop_episode("learned", "push", 3, 15.0,
                                                 perception=perception)
    assert result.hidden_s > 1.0, result.hidden_s      # this seed's push hides the cube
    assert result.success, (start_error, result.position_error, result.time_s)
    assert result.position_error < 0.02 < start_error
    # The push went on while the hand hid the cube (reckoned from the tool, not broken off
    # for a new approach on the pose last seen).
    pushing = result.stages[result.stages.index("push"):]
    assert "approach" not in pushing, result.stages


def test_a_push_heading_leaves_the_wrist_room_and_is_kept_while_it_can_be(chain, limits):
    """Either way along the push serves; the tool turns the least unless that leaves a
    joint near its limit, keeps its heading while it can turn to it, and the tool-pose cost
    then rises the farther the tool is turned from it (without a heading, either way)."""
    def unit(v):
        v = torch.tensor(v, dtype=torch.float32)
        return v / v.norm()

    def x_axis(q):
        x = chain.forward(q)[:2, 0]
        return x / x.norm()

    home = torch.tensor(panda.HOME_POSITION, dtype=torch.float32)
    turned = torch.tensor([[0.866, -0.5], [0.5, 0.866]]) @ x_axis(home)     # 30 degrees
    assert float(tool_heading(chain, home, turned, limits) @ turned) > 0.999
    assert float(tool_heading(chain, home, -turned, limits) @ turned) > 0.999
    # Joint 7 near its upper limit after a push along (0.8, 0.6): turning the tool the
    # least to a push along (1, 0) would take it past the limit, so the tool turns the other
    # way round; to a push along (0.6, 0.8) (the other sense of turn) it turns the least.
    pushed = torch.tensor([-0.154, 0.406, -0.085, -2.412, 0.3, 2.772, 2.762])
    tool = x_axis(pushed)
    blocked, free = unit([1.0, 0.0]), unit([0.6, 0.8])
    assert abs(float(tool @ unit([0.8, 0.6]))) == pytest.approx(1.0, abs=0.02)
    assert float(tool_heading(chain, pushed, blocked, limits) @ tool) < -0.7
    assert float(tool_heading(chain, pushed, free, limits) @ tool) > 0.7
    # A heading that can be turned to is kept, even 150 degrees away; one the wrist cannot
    # reach any more is given up. (The tool points down: turning it anticlockwise seen from
    # above turns joint 7 back, away from its upper limit.)
    clockwise = torch.tensor([[0.866, 0.5], [-0.5, 0.866]]) @ x_axis(home)
    kept = tool_heading(chain, home, clockwise, limits, previous=-clockwise)
    assert float(kept @ clockwise) < -0.999
    assert float(tool_heading(chain, home, turned, limits, previous=-turned) @ turned) > 0.999
    closest = blocked if float(blocked @ tool) > 0 else -blocked
    assert float(tool_heading(chain, pushed, blocked, limits, previous=closest) @ tool) < -0.7
    # The cost of the tool's pose: along the heading 0, across it 1, against it 2.
    urdf = (DEFAULT_CHECKPOINT / "robot.urdf").read_text()
    from world_model_node.predictor import Futures
    heading = unit([0.0, 1.0])
    h = 3
    q = home.expand(4, h, 7)
    links = chain.link_poses(q).clone()
    ways = torch.stack([heading, unit([1.0, 0.0]), -heading, unit([-1.0, -1.0])])
    links[:, :, -1, :3, :3] = push_rotation(ways)[:, None]
    tcp = links[0, 0, -1, :3, 3]
    futures = Futures(q, torch.zeros(4, h), links[:, :, -1], [7],
                      (tcp + torch.tensor([0.0, 0.1, 0.0])).expand(4, h, 1, 3),
                      torch.eye(3).expand(4, h, 1, 3, 3), None)
    goal = Goal(OBJECT, tcp + torch.tensor([0.0, 0.3, 0.0]), object_id=7)
    cost = {}
    for name, way in (("heading", heading), ("either", None)):
        now = Stage("approach", CostWeights(), heading, contact=tcp,
                    object_pose=(tcp, torch.eye(3)), heading=way)
        cost[name] = evaluate(futures, q, links, goal, now, ArmSpheres.from_urdf(urdf, chain),
                              Scene(), limits, DT, torch.full((1, 3), 0.02))[1]["tool_pose"] \
            / CostWeights().tool_pose
    assert cost["heading"].tolist() == pytest.approx([0.0, 1.0, 2.0, 1.5], abs=1e-4)
    assert cost["either"].tolist() == pytest.approx([0.0, 1.0, 0.0, 0.5], abs=1e-4)


def test_a_push_turned_against_a_wrist_at_its_limit_turns_the_other_way_round():
    """The arm as a diagonal push left it, the wrist (joint 7) near its upper limit; the next
    push runs 37 degrees to the right of the last, the way the wrist cannot turn. A tool
    heading either way along the push (the closest turn) stalls there; the heading the
    other way round (a half turn) lets the push go on."""
    q_pushed = [-0.154, 0.406, -0.085, -2.412, 0.3, 2.772, 2.762]
    planner = build_planner("static", DEFAULT_CHECKPOINT, PlannerConfig(
        horizon=16, sampling=SamplerConfig(samples=96, iterations=3, elites=12)))
    sim = PandaSim(Scenario(), 64, 48)
    sim.set_arm_positions(q_pushed)
    sim.set_object_pose("cube", [0.523, -0.129, 0.025])
    goal = Goal(OBJECT, torch.tensor([0.576, -0.13, 0.025]), object_id=OBJECT_IDS["cube"])
    result = closed_loop.run_episode(sim, planner, goal, "push", 0, timeout_s=12.0)
    assert result.success, (result.position_error, result.stages)
    assert float(sim.arm_positions()[6]) < 2.0      # it turned the wrist the other way


def test_an_object_goal_s_orientation_must_hold_already():
    """A push moves an object without turning it on purpose: an object goal whose
    orientation is farther from the object's than its tolerance is refused; one within it,
    or free, is taken."""
    from scipy.spatial.transform import Rotation

    from planner_node.planner_node import goal_from_spec
    from world_model_planning.msg import GoalSpec

    def spec(yaw, tolerance):
        s = GoalSpec(target_type=GoalSpec.TARGET_OBJECT, object_id=7, position_tolerance=0.02,
                     orientation_tolerance=tolerance)
        s.target_pose.header.frame_id = "world"
        p = s.target_pose.pose
        p.position.x, p.position.z = 0.5, 0.025
        (p.orientation.x, p.orientation.y, p.orientation.z,
         p.orientation.w) = Rotation.from_euler("z", yaw).as_quat()
        return s

    def yawed(yaw):
        return torch.tensor(Rotation.from_euler("z", yaw).as_matrix(), dtype=torch.float32)

    held = torch.stack([yawed(1.0), yawed(0.3)])         # objects 5 and 7
    goal = goal_from_spec(spec(0.2, 0.15), "world", [5, 7], held, 0.85, 0.0)
    assert torch.allclose(goal.rotation, yawed(0.2), atol=1e-6)
    assert goal.orientation_tolerance == 0.15
    assert goal_from_spec(spec(1.0, -1.0), "world", [5, 7], held, 0.85, 0.0).rotation is None
    with pytest.raises(ValueError, match="object 7 is turned 0.800 rad from the target "
                                         "orientation, beyond orientation_tolerance 0.5"):
        goal_from_spec(spec(1.1, 0.5), "world", [5, 7], held, 0.85, 0.0)
    # A cube turned a quarter turn and 0.1 rad from the target looks as it would at 0.1 rad:
    # with its four-fold symmetry the goal is taken, and judged to the nearest turn.
    quarter = spec(0.3 + math.pi / 2 + 0.1, 0.15)
    with pytest.raises(ValueError, match="turned 1.671 rad"):
        goal_from_spec(quarter, "world", [5, 7], held, 0.85, 0.0)
    quarter.orientation_symmetry = 4
    goal = goal_from_spec(quarter, "world", [5, 7], held, 0.85, 0.0)
    assert goal.symmetry == 4
    assert goal_error(goal, torch.eye(4), [5, 7], torch.zeros(2, 3), held)[1] == \
        pytest.approx(0.1, abs=1e-4)
    quarter.orientation_symmetry = 65
    with pytest.raises(ValueError, match="orientation_symmetry must be at most 64"):
        goal_from_spec(quarter, "world", [5, 7], held, 0.85, 0.0)


def test_a_symmetric_goal_counts_and_guides_to_the_nearest_turn():
    from scipy.spatial.transform import Rotation

    from planner_node.costs import goal_angle, nearest_target

    def rot(*euler):
        return torch.tensor(Rotation.from_euler("xyz", euler).as_matrix(), dtype=torch.float32)

    down = rot(math.pi, 0.0, 0.0)                          # a tool pointing down
    goal = Goal(END_EFFECTOR, torch.tensor([0.5, 0.0, 0.3]), rot(0.0, 0.0, 1.5) @ down,
                orientation_tolerance=0.1, symmetry=2)      # a parallel gripper's two ways
    tool = rot(0.0, 0.0, 1.5 - math.pi + 0.05) @ down       # the other way round, 0.05 off
    assert float(goal_angle(tool, goal)) == pytest.approx(0.05, abs=1e-4)
    assert float(goal_angle(tool, replace(goal, symmetry=1))) == pytest.approx(
        math.pi - 0.05, abs=1e-3)
    assert float(rotation_angle(nearest_target(tool, goal), tool)) == pytest.approx(
        0.05, abs=1e-4)
    batch = torch.stack([tool, goal.rotation, rot(0.0, 0.0, 0.2) @ down])
    assert goal_angle(batch, goal).tolist() == pytest.approx([0.05, 0.0, 1.3], abs=1e-4)


def test_a_goal_settles_on_cycles_and_an_object_goal_on_new_sightings():
    from planner_node.settle import GoalSettle

    arm = GoalSettle(2)          # a goal on the robot's own state: two cycles that hold
    assert [arm.update(h, t) for t, h in [(0.0, True), (0.2, False), (0.4, True),
                                          (0.6, True)]] == [False, False, False, True]
    assert not arm.confirming
    # Sightings 0.5 s late: after the first cycle that holds (at 1.0 s, on a sighting of
    # 0.5 s) only sightings taken since count; the same sighting twice counts once.
    cube = GoalSettle(3)
    steps = [(1.0, 0.5), (1.2, 0.7), (1.4, 0.9), (1.6, 1.1), (1.8, 1.1), (2.0, 1.3)]
    done = [cube.update(True, t, seen) for t, seen in steps]
    assert done == [False] * 5 + [True]
    cube = GoalSettle(2)
    assert not cube.update(True, 2.0, 1.5) and cube.confirming
    assert not cube.update(False, 2.2, 2.1) and not cube.confirming   # it moved: start over
    assert not cube.update(True, 2.4, 2.1) and cube.update(True, 2.6, 2.5)


def test_an_object_goal_is_not_judged_done_on_a_pose_no_camera_confirms():
    # The cube lies at the target already. With the only camera turned away the planner
    # holds it where it was first seen and cannot confirm the goal; seen, it is done at once.
    config = PlannerConfig(horizon=8, sampling=SamplerConfig(samples=16, iterations=1,
                                                             elites=4))
    planner = build_planner("static", DEFAULT_CHECKPOINT, config)
    results = {}
    for name, turned in [("turned away", True), ("looking", False)]:
        sim = PandaSim(Scenario(), 64, 48)
        if turned:
            sim.set_camera((1.4, -0.7, 0.95), (1.4, -1.5, 0.9), CAMERA_NAME)
        position, _ = sim.object_poses()["cube"]
        goal = Goal(OBJECT, torch.tensor(position, dtype=torch.float32),
                    object_id=OBJECT_IDS["cube"], position_tolerance=0.03)
        results[name] = closed_loop.run_episode(
            sim, planner, goal, "push", 0, timeout_s=1.0,
            perception=closed_loop.PerceivedObjects(cameras=(CAMERA_NAME,)))
    assert not results["turned away"].success and results["turned away"].cycles >= 4
    assert results["turned away"].position_error < 0.03     # it was there all along
    assert results["looking"].success and results["looking"].cycles == 1, results["looking"]


def test_perceived_objects_are_held_while_no_camera_shows_them():
    # The main camera turned away from the cube: with it alone the cube moved is still
    # perceived where it was; the side camera sees it move.
    sim = PandaSim(Scenario(), 64, 48)
    sim.set_camera((1.4, -0.7, 0.95), (1.4, -1.5, 0.9), CAMERA_NAME)
    start, quat = sim.object_poses()["cube"]
    cube = closed_loop.world_state(sim).object_ids.index(OBJECT_IDS["cube"])
    main_only = closed_loop.PerceivedObjects(cameras=(CAMERA_NAME,))
    both = closed_loop.PerceivedObjects(cameras=(CAMERA_NAME, SIDE_CAMERA_NAME))
    truth = closed_loop.PerceivedObjects()
    for perception in (main_only, both, truth):
        perception.see(sim, closed_loop.world_state(sim))
    sim.set_object_pose("cube", start + [0.05, 0.0, 0.0], quat)
    seen = {}
    for name, perception in [("main", main_only), ("both", both), ("truth", truth)]:
        world, sightings, frame_time = perception.see(sim, closed_loop.world_state(sim))
        seen[name] = (float(world.object_positions[cube, 0]), bool(sightings[cube] == frame_time))
    assert seen["main"] == pytest.approx((start[0], False)), seen
    assert seen["both"] == pytest.approx((start[0] + 0.05, True)) == seen["truth"], seen


def test_plan_markers_show_futures_plan_objects_and_goal():
    from std_msgs.msg import Header

    from planner_node.markers import plan_markers

    config = PlannerConfig(horizon=8, top_futures=6,
                           sampling=SamplerConfig(samples=24, iterations=1, elites=4))
    planner = build_planner("static", DEFAULT_CHECKPOINT, config)
    sim = PandaSim(Scenario(), 64, 48)
    goal = closed_loop.sample_goal("push", sim.object_poses(), np.random.default_rng(0))
    state = closed_loop.world_state(sim)
    plan = planner.plan(state, (state.joint_positions, torch.zeros(7), torch.zeros(7)), goal,
                        Scene(), 0.0)
    assert plan.targets.shape == (8, 7) and plan.futures.ee_poses.shape[0] == 6
    assert plan.costs[0] == pytest.approx(plan.cost) and 0.0 <= plan.success_probability <= 1
    markers = plan_markers(plan, goal, Header(frame_id="world"), state.object_extents, 4)
    by_ns = {}
    for m in markers.markers[1:]:
        by_ns.setdefault(m.ns, []).append(m)
    assert len(by_ns["futures"]) == 3 and len(by_ns["plan"]) == 1
    assert len(by_ns["plan"][0].points) == 8
    assert len(by_ns["predicted_objects"]) == len(state.object_ids) == len(by_ns["object_paths"])
    assert by_ns["goal"][0].pose.position.x == pytest.approx(float(goal.position[0]))
    assert markers.markers[-1].header.frame_id == "world"


def test_arm_history_interpolates_within_its_span():
    history = ArmHistory(span_s=1.0)
    for i in range(100):                        # 50 Hz for 2 s
        history.add(i * 0.02, torch.full((7,), float(i)))
    history.add(0.5, torch.zeros(7))            # out of order: dropped
    assert history.positions_at(0.5) is None    # older than the span
    assert history.positions_at(2.0) is None    # newer than the last state
    assert torch.allclose(history.positions_at(1.98), torch.full((7,), 99.0))
    assert torch.allclose(history.positions_at(1.505), torch.full((7,), 75.25))


def test_a_pushed_object_is_reckoned_at_the_tool_s_face_while_unseen():
    scene = Scene()              # tool_radius 0.0105 m, push_offset 0.02 m
    cube, turn = torch.tensor([0.5, 0.0, 0.025]), torch.eye(3)
    extent = torch.tensor([0.025, 0.025, 0.025])
    goal = Goal(OBJECT, torch.tensor([0.6, 0.0, 0.025]), object_id=3)
    low = scene.table_height + scene.push_height
    seen_at_contact = torch.tensor([0.445, 0.0, low])
    # 2 cm past the cube's centre as it was seen: the cube is at the tool's face.
    pushed = pushed_position(cube, turn, extent, goal, torch.tensor([0.52, 0.0, low]),
                             seen_at_contact, scene)
    assert pushed.tolist() == pytest.approx([0.52 + 0.025 + 0.0105, 0.0, 0.025])
    turned = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    diagonal = torch.tensor([[math.sqrt(0.5), -math.sqrt(0.5), 0.0],
                             [math.sqrt(0.5), math.sqrt(0.5), 0.0], [0.0, 0.0, 1.0]])
    assert face_reach(extent, turned, torch.tensor([1.0, 0.0])) == pytest.approx(0.025)
    assert face_reach(extent, diagonal, torch.tensor([1.0, 0.0])) == \
        pytest.approx(0.025 * math.sqrt(2))
    # Not pushing it: behind its back, beside it, above it, or past it since the sighting
    # (the tool was already where it is when the cube was seen ahead of it).
    contact = seen_at_contact.tolist()
    for tool, then in [([0.44, 0.0, low], contact), ([0.52, 0.05, low], contact),
                       ([0.52, 0.0, low + 0.05], contact), ([0.52, 0.0, low], [0.52, 0.0, low])]:
        assert pushed_position(cube, turn, extent, goal, torch.tensor(tool),
                               torch.tensor(then), scene) is None, tool


def test_the_reckoned_object_holds_until_a_newer_sighting():
    scene = Scene()
    low = scene.table_height + scene.push_height
    world = closed_loop.world_state(PandaSim(Scenario(), 64, 48))
    k = world.object_ids.index(OBJECT_IDS["cube"])
    cube = world.object_positions[k]
    goal = Goal(OBJECT, cube + torch.tensor([0.1, 0.0, 0.0]), object_id=OBJECT_IDS["cube"])
    behind = cube + torch.tensor([-0.06, 0.0, 0.0])
    behind[2] = low
    estimate = PushedObject()
    assert estimate.update(world, goal, 2.0, behind, 1.0, behind, True, 2.0, scene) is world
    tool = behind + torch.tensor([0.08, 0.0, 0.0])     # on 8 cm, past the centre seen, unseen
    pushed = estimate.update(world, goal, 2.2, tool, 1.0, behind, True, 2.2, scene)
    assert estimate.reckoned
    reach = face_reach(world.object_extents[k], world.object_rotations[k], goal.position[:2]
                       .new_tensor([1.0, 0.0]))
    assert float(pushed.object_positions[k, 0]) == pytest.approx(
        float(tool[0]) + reach + scene.tool_radius, abs=1e-5)
    assert torch.equal(pushed.object_positions[:k], world.object_positions[:k])
    # Judged with a margin while the push moves it: the reckoning runs ahead where the
    # tool's face is not flat on it. A push stopped for STALLED_S is judged on the tolerance.
    assert estimate.judged(goal, scene, 2.2).position_tolerance == pytest.approx(
        goal.position_tolerance - scene.reckoning_margin)
    assert estimate.judged(goal, scene, 2.2 + STALLED_S) is goal
    # Its age counts from the tool's last push on it, not from the sighting.
    assert estimate.as_of(1.0) == 2.2
    # The tool lifts off (no push this cycle) or falls back: the object stays where pushed.
    for tool_now, pushing in [(tool + torch.tensor([0.0, 0.0, 0.1]), False),
                              (behind, True)]:
        held = estimate.update(world, goal, 2.4, tool_now, 1.0, behind, pushing, 2.4,
                                scene)
        assert torch.equal(held.object_positions, pushed.object_positions)
    # A newer sighting replaces the reckoning; so does the object shown in the newest
    # frame (its pose only late); a goal on the robot's state has none.
    assert estimate.update(world, goal, 2.6, tool, 1.5, tool, False, 2.6, scene) is world
    assert not estimate.reckoned and estimate.judged(goal, scene, 2.6) is goal
    assert estimate.as_of(1.5) == 1.5
    assert estimate.update(world, goal, 2.6, tool, 1.0, behind, True, 1.0, scene) is world
    assert not estimate.reckoned
    arm_goal = Goal(END_EFFECTOR, torch.tensor([0.5, 0.0, 0.3]))
    assert PushedObject().update(world, arm_goal, 2.6, tool, None, None, True, 2.6,
                                 scene) is world
