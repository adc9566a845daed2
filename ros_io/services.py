"""Service calls that survive a lost reply."""
from __future__ import annotations

from typing import Callable


def call_repeatable(client, request, wait: Callable[[Callable[[], bool], float], bool],
                    timeout: float, attempts: int, on_lost: Callable[[int], None] = None):
    """The response to `request`, asked up to `attempts` times; None if none came.

    A reply to a new client can be lost: Fast DDS drops it when the server has not yet
    matched the client's reply reader (within 100 ms, so likely on a loaded machine or a
    freshly started server). Only for a request that may be carried out twice (a reset, a
    render, a prediction). `wait(condition, seconds)` spins until condition() or the time
    is up and returns condition(); an unanswered request is dropped so that its late reply
    is not taken for the next one's, and `on_lost(attempt)` is called before asking again.
    """
    for attempt in range(1, attempts + 1):
        future = client.call_async(request)
        if wait(future.done, timeout):
            return future.result()
        client.remove_pending_request(future)
        if on_lost is not None and attempt < attempts:
            on_lost(attempt)
    return None
