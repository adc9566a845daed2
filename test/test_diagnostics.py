"""ros_io.diagnostics over DDS: reports at the set period, values formatted, and a report
that raises published as an ERROR instead of silencing the node."""
import math

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.parameter import Parameter

from ros_io.diagnostics import OK, Diagnostics
from support.graph import ros_context, spin_until


def test_reports_and_a_failing_report_is_an_error():
    with ros_context():
        node = rclpy.create_node("health_probe", parameter_overrides=[
            Parameter("diagnostics_period", value=0.2)])
        received = []
        node.create_subscription(DiagnosticArray, "/diagnostics",
                                 lambda m: received.extend(m.status), 10)
        broken = [False]

        def report():
            if broken[0]:
                raise RuntimeError("boom")
            return OK, "fine", {"count": 3, "rate": 2.0 / 3.0, "age": math.nan}
        Diagnostics(node, "test", lambda: "cpu", report)
        try:
            assert spin_until(node, lambda: len(received) >= 2, 10.0)
            status = received[-1]
            assert (status.level, status.name, status.message, status.hardware_id) == \
                (DiagnosticStatus.OK, "health_probe: test", "fine", "cpu")
            assert {v.key: v.value for v in status.values} == \
                {"count": "3", "rate": "0.6667", "age": "nan"}
            broken[0] = True
            assert spin_until(node, lambda: received[-1].level == DiagnosticStatus.ERROR, 5.0)
            assert received[-1].message == "report failed: RuntimeError: boom"
        finally:
            node.destroy_node()
