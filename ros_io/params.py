"""Parameter helpers shared by the nodes."""
from __future__ import annotations


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
