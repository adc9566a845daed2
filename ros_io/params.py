"""Parameter helpers shared by the nodes."""
from __future__ import annotations

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException


# A lifecycle node's parameter that its configure transition reads: it can be set while the
# node is unconfigured and not otherwise (`ros_io.lifecycle.ManagedNode`), so that a
# cleanup, a new value and a configure swap, say, a checkpoint without a restart.
CONFIGURE = "applied on configure: set it while the node is unconfigured"


def ranged(description: str, lo, hi, integer: bool = False, read_only: bool = False,
           additional_constraints: str = "") -> ParameterDescriptor:
    """A descriptor with an inclusive integer or floating-point range."""
    d = ParameterDescriptor(description=description, read_only=read_only,
                            additional_constraints=additional_constraints)
    if integer:
        d.integer_range = [IntegerRange(from_value=lo, to_value=hi, step=1)]
    else:
        d.floating_point_range = [FloatingPointRange(from_value=lo, to_value=hi, step=0.0)]
    return d


def declare(node, name: str, default, descriptor: ParameterDescriptor | None = None):
    """node.declare_parameter, except that a given value (command line, YAML) its descriptor
    refuses, out of range or of the wrong type, is logged as an error and the default used:
    a bad value must not take the node down at start-up."""
    descriptor = descriptor or ParameterDescriptor()
    try:
        return node.declare_parameter(name, default, descriptor)
    except (InvalidParameterValueException, InvalidParameterTypeException) as err:
        node.get_logger().error(f"parameter '{name}' rejected ({err}); using the default "
                                f"{default!r}")
        return node.declare_parameter(name, default, descriptor, ignore_override=True)


def report_unknown_overrides(node) -> list[str]:
    """Log an error for every parameter given to the node (command line, YAML) that it does
    not declare: a misspelt name would otherwise be ignored silently. Returns the names."""
    unknown = sorted(name for name in node._parameter_overrides
                     if not node.has_parameter(name))
    for name in unknown:
        node.get_logger().error(
            f"unknown parameter '{name}' ignored; declared parameters: "
            f"{sorted(node._parameters)}")
    return unknown
