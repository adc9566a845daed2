"""visualization_msgs helpers shared by the nodes that draw paths and objects."""
from __future__ import annotations

from geometry_msgs.msg import Point
from scipy.spatial.transform import Rotation
from visualization_msgs.msg import Marker


def line_strip(header, ns: str, marker_id: int, points, colour, width: float) -> Marker:
    """A LINE_STRIP marker through points (P, 3) [m] in header.frame_id."""
    m = Marker(header=header, ns=ns, id=marker_id, type=Marker.LINE_STRIP, action=Marker.ADD)
    m.pose.orientation.w = 1.0
    m.scale.x = width
    m.color = colour
    m.points = [Point(x=float(p[0]), y=float(p[1]), z=float(p[2])) for p in points]
    return m


def box(header, ns: str, marker_id: int, position, rotation, size, colour) -> Marker:
    """A CUBE marker: centre position (3,) [m], rotation (3, 3), edge lengths size (3,) [m]."""
    m = Marker(header=header, ns=ns, id=marker_id, type=Marker.CUBE, action=Marker.ADD)
    m.pose.position.x, m.pose.position.y, m.pose.position.z = (float(v) for v in position)
    (m.pose.orientation.x, m.pose.orientation.y, m.pose.orientation.z,
     m.pose.orientation.w) = (float(v) for v in Rotation.from_matrix(rotation).as_quat())
    m.scale.x, m.scale.y, m.scale.z = (float(v) for v in size)
    m.color = colour
    return m


def label(header, ns: str, marker_id: int, position, text: str, colour,
          height: float = 0.03) -> Marker:
    """A TEXT_VIEW_FACING marker: text of `height` [m] centred at position (3,)."""
    m = Marker(header=header, ns=ns, id=marker_id, type=Marker.TEXT_VIEW_FACING,
               action=Marker.ADD, text=text)
    m.pose.position.x, m.pose.position.y, m.pose.position.z = (float(v) for v in position)
    m.pose.orientation.w = 1.0
    m.scale.z = height
    m.color = colour
    return m
