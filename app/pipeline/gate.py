"""Backpressure: a semaphore around inference and a bounded wait queue in front of it.

A request that finds every slot busy and the queue full is shed at once with
503 + Retry-After instead of piling up; one that waits past its deadline gets
the same. Nothing here is per-user state: it is the instance's own capacity.
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from app.pipeline.errors import ClientGone, Overloaded

POLL_S = 0.25  # how often a queued request looks whether its client is still there


class InferenceGate:
    def __init__(self, slots: int, max_queue: int, observe: Callable[[int, int], None] | None = None):
        """``observe(active, waiting)`` is called on every change (e.g. to set metrics gauges)."""
        self.slots = slots
        self._observe = observe or (lambda active, waiting: None)
        self.max_queue = max_queue
        self._semaphore = threading.Semaphore(slots)
        self._lock = threading.Lock()
        self._waiting = 0
        self._active = 0
        self._mean_s = 0.5  # running mean of time in a slot, for Retry-After

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def active(self) -> int:
        return self._active

    def _wait(self, timeout_s: float, cancelled: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._semaphore.acquire(timeout=min(left, POLL_S)):
                return True
            if cancelled():
                raise ClientGone("the client closed the connection while waiting for a slot")

    def retry_after_s(self) -> int:
        """Seconds until a slot is likely free for a newcomer: the queue ahead, drained at our pace."""
        return max(1, math.ceil((self._waiting + 1) * self._mean_s / self.slots))

    @contextmanager
    def slot(self, timeout_s: float, cancelled: Callable[[], bool] = lambda: False) -> Iterator[None]:
        """Hold a slot; wait in the queue for at most ``timeout_s``, leaving it early (with
        :class:`ClientGone`) when ``cancelled()`` turns true (checked every ``POLL_S``)."""
        with self._lock:
            acquired = self._semaphore.acquire(blocking=False)
            if not acquired:
                if self._waiting >= self.max_queue:
                    raise Overloaded(
                        f"server busy: {self.slots} running and {self._waiting} waiting; retry later",
                        self.retry_after_s(),
                    )
                self._waiting += 1
                self._observe(self._active, self._waiting)
        if not acquired:
            try:
                acquired = self._wait(timeout_s, cancelled)
            finally:
                with self._lock:
                    self._waiting -= 1
                    self._observe(self._active, self._waiting)
            if not acquired:
                raise Overloaded(
                    "server busy: the request waited past its deadline; retry later",
                    self.retry_after_s(),
                    code="timeout",
                )
        with self._lock:
            self._active += 1
            self._observe(self._active, self._waiting)
        started = time.monotonic()
        try:
            yield
        finally:
            elapsed = time.monotonic() - started
            with self._lock:
                self._active -= 1
                self._mean_s = 0.8 * self._mean_s + 0.2 * elapsed
                self._observe(self._active, self._waiting)
            self._semaphore.release()
