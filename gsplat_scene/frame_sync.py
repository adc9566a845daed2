"""Approximate-time matching of camera streams (colour, depth, info, mask, pose), ROS-free.

message_filters' ApproximateTimeSynchronizer does not exist on every install; this keeps a
short queue per stream and emits a set when every required stream has a message within
`slop` seconds of the colour image's stamp. Messages older than an emitted set are dropped,
so a slow consumer always gets the newest frame.
"""
from __future__ import annotations

from collections import deque


class FrameSync:
    """Collect stamped items per stream; `add` returns a matched {stream: item} or None.

    Args:
        required: streams every set needs; the first one (the colour image) is the anchor.
        optional: streams included when a match exists (e.g. the instance mask).
        slop: largest stamp difference within a set [s].
        wait_optional: how long past a required set's stamp to wait for an optional stream
            that has published before [s].
        queue_size: items kept per stream.
    """

    def __init__(self, required, optional=(), slop: float = 0.02, wait_optional: float = 0.1,
                 queue_size: int = 10):
        self.required = list(required)
        self.optional = list(optional)
        self.slop = slop
        self.wait_optional = wait_optional
        self.queues = {s: deque(maxlen=queue_size) for s in self.required + self.optional}
        self.last_emitted = float("-inf")
        self.seen: set[str] = set()
        self.out_of_order = 0

    def add(self, stream: str, stamp: float, item):
        """Add an item; returns a matched set {stream: (stamp, item)} or None."""
        queue = self.queues[stream]
        if stamp <= self.last_emitted or (queue and stamp < queue[-1][0]):
            self.out_of_order += 1  # old or out-of-order stamps never go back in time
            return None
        queue.append((stamp, item))
        self.seen.add(stream)
        return self._match(latest_stamp=stamp)

    def unmatched(self) -> list[str]:
        """Required streams with nothing near the oldest queued anchor, whose frame can no
        longer complete once newer anchors have arrived (what to tell the user)."""
        anchors = self.queues[self.required[0]]
        if len(anchors) < 2:
            return []
        stamp = anchors[0][0]
        return [s for s in self.required[1:] if self._closest(s, stamp) is None]

    def _closest(self, stream: str, stamp: float):
        best = None
        for entry in self.queues[stream]:
            if abs(entry[0] - stamp) <= self.slop and \
                    (best is None or abs(entry[0] - stamp) < abs(best[0] - stamp)):
                best = entry
        return best

    def _match(self, latest_stamp: float):
        anchor = self.required[0]
        for stamp, item in reversed(self.queues[anchor]):  # newest first
            found = {anchor: (stamp, item)}
            for stream in self.required[1:]:
                entry = self._closest(stream, stamp)
                if entry is None:
                    break
                found[stream] = entry
            else:
                for stream in self.optional:
                    entry = self._closest(stream, stamp)
                    if entry is not None:
                        found[stream] = entry
                    elif stream in self.seen and latest_stamp - stamp < self.wait_optional:
                        return None  # a stream that has been publishing may still arrive
                self._emit(stamp)
                return found
        return None

    def _emit(self, stamp: float) -> None:
        self.last_emitted = stamp
        for queue in self.queues.values():
            while queue and queue[0][0] <= stamp + self.slop:
                queue.popleft()
