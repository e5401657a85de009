"""Backpressure: a fixed number of inference slots and a bounded wait queue in front of them,
served first come, first served.

A request that finds every slot busy and the queue full is shed at once with
503 + Retry-After instead of piling up; one that waits past its deadline gets
the same. Nothing here is per-user state: it is the instance's own capacity.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Callable, Iterator

from app.pipeline.errors import ClientGone, Overloaded

POLL_S = 0.25  # how often a queued request looks whether its client is still there


class _Waiter:
    """One queued request: its event is set when a freed slot has been handed to it."""

    __slots__ = ("granted", "event")

    def __init__(self) -> None:
        self.granted = False
        self.event = threading.Event()


class InferenceGate:
    def __init__(self, slots: int, max_queue: int, observe: Callable[[int, int], None] | None = None):
        """``observe(active, waiting)`` is called on every change (e.g. to set metrics gauges)."""
        self.slots = slots
        self._observe = observe or (lambda active, waiting: None)
        self.max_queue = max_queue
        self._lock = threading.Lock()
        self._free = slots
        # First come, first served: a freed slot goes to the head of the queue, never to a newcomer.
        self._queue: deque[_Waiter] = deque()
        self._active = 0
        self._mean_s = 0.5  # running mean of time in a slot, for Retry-After

    @property
    def waiting(self) -> int:
        return len(self._queue)

    @property
    def active(self) -> int:
        return self._active

    def retry_after_s(self) -> int:
        """Seconds until a slot is likely free for a newcomer: the queue ahead, drained at our pace."""
        return max(1, math.ceil((len(self._queue) + 1) * self._mean_s / self.slots))

    @contextmanager
    def slot(self, timeout_s: float, cancelled: Callable[[], bool] = lambda: False) -> Iterator[None]:
        """Hold a slot; wait in the queue, in arrival order, for at most ``timeout_s``, leaving it
        early (with :class:`ClientGone`) when ``cancelled()`` turns true (checked every ``POLL_S``)."""
        with self._lock:
            if self._free and not self._queue:
                self._free -= 1
                waiter = None
            else:
                if len(self._queue) >= self.max_queue:
                    raise Overloaded(
                        f"server busy: {self.slots} running and {len(self._queue)} waiting; retry later",
                        self.retry_after_s(),
                    )
                waiter = _Waiter()
                self._queue.append(waiter)
                self._observe(self._active, len(self._queue))
        if waiter is not None:
            self._wait(waiter, timeout_s, cancelled)
        with self._lock:
            self._active += 1
            self._observe(self._active, len(self._queue))
        started = time.monotonic()
        try:
            yield
        finally:
            elapsed = time.monotonic() - started
            with self._lock:
                self._active -= 1
                self._mean_s = 0.8 * self._mean_s + 0.2 * elapsed
                self._hand_on()
                self._observe(self._active, len(self._queue))

    def _wait(self, waiter: _Waiter, timeout_s: float, cancelled: Callable[[], bool]) -> None:
        """Until ``waiter`` is handed a slot; raises if its deadline passes or its client leaves first."""
        deadline = time.monotonic() + timeout_s
        while True:
            if waiter.event.wait(max(0.0, min(deadline - time.monotonic(), POLL_S))):
                return
            gone = cancelled()
            if gone or time.monotonic() >= deadline:
                break
        with self._lock:
            if waiter.granted:  # handed a slot just as it gave up: pass it on
                self._hand_on()
            else:
                self._queue.remove(waiter)
            self._observe(self._active, len(self._queue))
        if gone:
            raise ClientGone("the client closed the connection while waiting for a slot")
        raise Overloaded("server busy: the request waited past its deadline; retry later", self.retry_after_s(),
                         code="timeout")

    def _hand_on(self) -> None:
        """A slot is free (under the lock): hand it to the head of the queue, or keep it."""
        if self._queue:
            head = self._queue.popleft()
            head.granted = True
            head.event.set()
        else:
            self._free += 1
