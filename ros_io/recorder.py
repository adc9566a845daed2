"""Record chosen topics of a live ROS 2 graph into a rosbag2 bag.

Subscriptions take serialised messages (no deserialisation on the hot path) and hand them
to a writer thread, so a burst of camera frames never waits on the disk. Each topic is
subscribed with QoS compatible with its publishers (best effort for sensor streams,
transient local for latched topics such as /robot_description) as soon as it appears.
"""
from __future__ import annotations

import importlib
import queue
import threading

from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy)

from ros_io.bag import BagWriter


def message_class(msgtype: str):
    """Python class of a type name like "sensor_msgs/msg/Image"."""
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


class Recorder:
    """Records `topics` seen by `node` into a bag at `path`.

    The timestamp of each message is its receive time on the node's clock (sim time when
    the node uses it), as `ros2 bag record --use-sim-time` does.
    """

    def __init__(self, node, path, topics, storage: str = "mcap", queue_depth: int = 200):
        self.node = node
        self.topics = list(dict.fromkeys(topics))
        # Every bag operation happens on the writer thread (sqlite3 demands one thread).
        self.writer = BagWriter(path, storage, deferred_open=True)
        self.queue_depth = queue_depth
        self._pending = set(self.topics)
        self._subscriptions = []
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self.received = 0
        self._error = None
        self._thread = threading.Thread(target=self._write_loop, daemon=True)
        self._thread.start()
        self._timer = node.create_timer(0.2, self.discover)
        self.discover()

    def discover(self) -> None:
        """Subscribe to every wanted topic that has appeared on the graph since last time."""
        if not self._pending:
            return
        graph = dict(self.node.get_topic_names_and_types())
        for topic in sorted(self._pending):
            types = graph.get(topic)
            if not types:
                continue
            msgtype = types[0]
            try:
                cls = message_class(msgtype)
                self.writer.check_type(msgtype)
            except (ImportError, AttributeError, ValueError) as err:
                self.node.get_logger().error(f"cannot record {topic} ({msgtype}): {err}")
                self._pending.discard(topic)
                continue
            self._queue.put(("topic", topic, msgtype))
            qos = self._qos_for(topic)
            self._subscriptions.append(self.node.create_subscription(
                cls, topic, lambda raw, t=topic: self._on_message(t, raw), qos, raw=True))
            self._pending.discard(topic)
            self.node.get_logger().info(f"recording {topic} [{msgtype}]")

    def _qos_for(self, topic: str) -> QoSProfile:
        infos = self.node.get_publishers_info_by_topic(topic)
        best_effort = any(i.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
                          for i in infos)
        latched = bool(infos) and all(
            i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
        return QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=self.queue_depth,
            reliability=ReliabilityPolicy.BEST_EFFORT if best_effort
            else ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if latched
            else DurabilityPolicy.VOLATILE)

    def _on_message(self, topic: str, raw: bytes) -> None:
        self.received += 1
        self._queue.put(("message", topic, self.node.get_clock().now().nanoseconds, raw))

    def _write_loop(self) -> None:
        self.writer.open()
        while True:
            item = self._queue.get()
            if item is None:
                self.writer.close()
                return
            try:
                if item[0] == "topic":
                    self.writer.add_topic(*item[1:])
                else:
                    self.writer.write(*item[1:])
            except Exception as err:  # keep draining; report once
                if self._error is None:
                    self._error = err
                    self.node.get_logger().error(f"bag write failed: {err}")

    @property
    def counts(self) -> dict[str, int]:
        """Messages written per topic so far."""
        return dict(self.writer.counts)

    def close(self) -> dict[str, int]:
        """Stop subscribing, write what is queued, close the bag; returns the counts."""
        self.node.destroy_timer(self._timer)
        for sub in self._subscriptions:
            self.node.destroy_subscription(sub)
        self._queue.put(None)
        self._thread.join()
        return self.counts
