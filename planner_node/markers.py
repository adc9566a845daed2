"""RViz markers of a planning cycle: the sampled futures' end-effector paths coloured by cost
(green cheap, red expensive), the chosen plan thicker, the predicted object poses along it
and the goal."""
from __future__ import annotations

from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from planner_node.costs import OBJECT, Goal
from ros_io.markers import box, line_strip


def plan_markers(plan, goal: Goal, header, extents, count: int) -> MarkerArray:
    """Markers of a Plan (planner_node.mpc): its first `count` futures (index 0 = the plan)."""
    out = MarkerArray(markers=[Marker(header=header, action=Marker.DELETEALL)])
    f = plan.futures
    count = min(count, f.ee_poses.shape[0])
    ee = f.ee_poses[:count, :, :3, 3].cpu().numpy()
    costs = plan.costs[:count].cpu()
    lo, hi = float(costs.min()), float(costs.max())
    for n in range(count - 1, -1, -1):    # the plan (n = 0) drawn last, on top
        u = 0.0 if hi <= lo else (float(costs[n]) - lo) / (hi - lo)
        colour = ColorRGBA(r=u, g=1.0 - u, b=0.1, a=0.5 if n else 1.0)
        out.markers.append(line_strip(header, "futures" if n else "plan", n, ee[n], colour,
                                  0.003 if n else 0.008))
    positions = f.object_positions[0].cpu().numpy()        # (H, K, 3) along the plan
    rotations = f.object_rotations[0].double().cpu().numpy()
    for k, oid in enumerate(f.object_ids):
        out.markers.append(line_strip(header, "object_paths", int(oid), positions[:, k],
                                  ColorRGBA(r=1.0, g=0.8, b=0.2, a=0.9), 0.005))
        out.markers.append(box(header, "predicted_objects", int(oid), positions[-1, k],
                               rotations[-1, k], 2 * extents[k].cpu().numpy(),
                               ColorRGBA(r=1.0, g=0.8, b=0.2, a=0.35)))
    target = Marker(header=header, ns="goal", id=0, type=Marker.SPHERE, action=Marker.ADD)
    target.pose.position.x, target.pose.position.y, target.pose.position.z = (
        float(v) for v in goal.position)
    target.pose.orientation.w = 1.0
    size = 2 * max(goal.position_tolerance, 0.005)
    target.scale.x = target.scale.y = target.scale.z = size
    target.color = ColorRGBA(r=0.2, g=0.4, b=1.0, a=0.6) if goal.kind == OBJECT \
        else ColorRGBA(r=0.2, g=1.0, b=1.0, a=0.6)
    out.markers.append(target)
    return out
