"""rosbag2 files (MCAP or sqlite3 + metadata.yaml) through the pure-Python `rosbags` library.

The on-disk format is rosbag2's own, so `ros2 bag info/play` read these bags on a full ROS
install. Messages stay CDR-serialised end to end: the recorder writes the bytes it received,
and readers deserialise only what they use.
"""
from __future__ import annotations

import functools
from pathlib import Path

from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from ros_io.paths import PACKAGE, share_path

STORAGE = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}


@functools.lru_cache(maxsize=1)
def typestore():
    """Jazzy's standard message types plus this package's messages."""
    store = get_typestore(Stores.ROS2_JAZZY)
    types = {}
    for path in sorted(share_path("msg").glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{PACKAGE}/msg/{path.stem}"))
    store.register(types)
    return store


class BagWriter:
    """Append serialised messages to a new rosbag2 bag.

    Args:
        path: bag directory to create (must not exist).
        storage: "mcap" (default) or "sqlite3".
        deferred_open: leave opening to open() (sqlite3 bags must be used from the thread
            that opened them).
    """

    def __init__(self, path, storage: str = "mcap", deferred_open: bool = False):
        if storage not in STORAGE:
            raise ValueError(f"unknown storage '{storage}', expected one of {sorted(STORAGE)}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            raise ValueError(f"bag {self.path} exists already")
        self._writer = Writer(self.path, version=8, storage_plugin=STORAGE[storage])
        self._connections = {}
        self.counts: dict[str, int] = {}
        self.bytes_written = 0
        if not deferred_open:
            self.open()

    def open(self) -> None:
        self._writer.open()

    @staticmethod
    def check_type(msgtype: str) -> None:
        """Raise ValueError if the bag cannot store messages of this type."""
        if msgtype not in typestore().fielddefs:
            raise ValueError(f"message type '{msgtype}' is unknown to the bag writer")

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Declare a topic; msgtype like "sensor_msgs/msg/Image"."""
        if topic in self._connections:
            return
        self.check_type(msgtype)
        self._connections[topic] = self._writer.add_connection(topic, msgtype,
                                                               typestore=typestore())
        self.counts[topic] = 0

    def write(self, topic: str, timestamp_ns: int, cdr: bytes) -> None:
        self._writer.write(self._connections[topic], int(timestamp_ns), cdr)
        self.counts[topic] += 1
        self.bytes_written += len(cdr)

    def close(self) -> None:
        self._writer.close()


def read_messages(path, topics=None):
    """Yield (topic, msgtype, timestamp_ns, message) from a bag, deserialised in file order.

    Messages are decoded with the definitions stored in the bag, so bags recorded with an
    older version of a message (or a robot's own types) stay readable.

    Raises:
        ValueError: if the bag cannot be opened or read (corrupt or truncated).
    """
    try:
        with AnyReader([Path(path)], default_typestore=typestore()) as reader:
            conns = [c for c in reader.connections if topics is None or c.topic in topics]
            for conn, stamp, raw in reader.messages(connections=conns):
                yield conn.topic, conn.msgtype, stamp, reader.deserialize(raw, conn.msgtype)
    except Exception as err:  # rosbags raises many kinds for damaged files
        raise ValueError(f"cannot read bag {path}: {err}") from err


def topic_summary(path) -> dict[str, tuple[str, int]]:
    """{topic: (msgtype, message count)} from the bag's metadata."""
    try:
        with Reader(path) as reader:
            return {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}
    except Exception as err:
        raise ValueError(f"cannot read bag {path}: {err}") from err
