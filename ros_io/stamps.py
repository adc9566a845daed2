"""builtin_interfaces Time/Duration <-> float seconds."""
from __future__ import annotations


def to_time_msg(seconds: float):
    """builtin_interfaces/Time for a non-negative time in seconds (rounded to nanoseconds)."""
    from builtin_interfaces.msg import Time

    ns = int(round(seconds * 1e9))
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def to_duration_msg(seconds: float):
    from builtin_interfaces.msg import Duration

    ns = int(round(seconds * 1e9))
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def to_seconds(stamp) -> float:
    """Seconds of a builtin_interfaces Time or Duration."""
    return stamp.sec + stamp.nanosec * 1e-9
