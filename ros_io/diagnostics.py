"""Node health on /diagnostics (diagnostic_msgs/DiagnosticArray), the topic that
rqt_robot_monitor and diagnostic_aggregator read.

Each node reports one status, `"<node name>: <task>"`, every `diagnostics_period` seconds
and in every lifecycle state. The period runs on the steady clock, so a simulated clock that
has stopped does not silence the report; stamps are the node's clock. diagnostic_updater
is not needed for one status per node (and does not install from PyPI).
"""
from __future__ import annotations

import math
from typing import Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.clock import Clock, ClockType

from ros_io.params import declare, ranged

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


def format_value(value) -> str:
    if isinstance(value, float):
        return "nan" if not math.isfinite(value) else f"{value:.4g}"
    return str(value)


class Diagnostics:
    """Publishes `report()` -> (level, message, {key: value}) on /diagnostics.

    Declares the node's `diagnostics_period` parameter (so construct it before the node
    reports unknown parameters). A report that raises is published as an ERROR naming the
    exception: a broken check must not hide the node.
    """

    def __init__(self, node, task: str, hardware_id: Callable[[], str],
                 report: Callable[[], tuple]):
        self.node, self.report, self.hardware_id = node, report, hardware_id
        self.name = f"{node.get_name()}: {task}"
        period = declare(node, "diagnostics_period", 1.0, ranged(
            "Seconds between reports on /diagnostics", 0.1, 60.0, read_only=True)).value
        self.pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.timer = node.create_timer(period, self.publish,
                                       clock=Clock(clock_type=ClockType.STEADY_TIME))

    def publish(self) -> None:
        try:
            level, message, values = self.report()
        except Exception as err:   # reported, not raised
            level, message, values = ERROR, f"report failed: {type(err).__name__}: {err}", {}
        status = DiagnosticStatus(
            level=level, name=self.name, message=message, hardware_id=self.hardware_id(),
            values=[KeyValue(key=k, value=format_value(v)) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.pub.publish(msg)


class Since:
    """How much a counter grew since the last report: `Since()(total)`."""

    def __init__(self):
        self.last = 0

    def __call__(self, total: int) -> int:
        grown, self.last = total - self.last, total
        return grown
