"""visualization_msgs helpers shared by the nodes that draw paths."""
from __future__ import annotations

from geometry_msgs.msg import Point
from visualization_msgs.msg import Marker


def line_strip(header, ns: str, marker_id: int, points, colour, width: float) -> Marker:
    """A LINE_STRIP marker through points (P, 3) [m] in header.frame_id."""
    m = Marker(header=header, ns=ns, id=marker_id, type=Marker.LINE_STRIP, action=Marker.ADD)
    m.pose.orientation.w = 1.0
    m.scale.x = width
    m.color = colour
    m.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in points]
    return m
