"""Micro-batching: requests that reach the model at about the same time share one forward pass.

A GPU runs a batch of 4 in much less than 4 times the time of one, so concurrent
requests are stacked. The rules:

- A caller first ``announce``s itself (before its preprocessing), then ``submit``s its
  item and blocks until its own result comes back.
- One thread takes the oldest item, plus every item already waiting, up to
  ``max_batch``. While other announced callers are still preparing theirs, it waits for
  them, but never more than ``window_s`` after the first item. A lone request is
  therefore never delayed, and requests that arrive while a batch runs form the next one.
- ``run_batch(items)`` returns one entry per item, in order. An entry that is an
  exception is raised in that item's caller only, so each request gets its own answer
  and its own error. If ``run_batch`` itself raises, every item of that batch gets the
  error.

Nothing here knows about models or tensors.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Job(Generic[T]):
    item: T
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None


@dataclass
class BatchStats:
    batches: int = 0
    items: int = 0
    largest: int = 0

    def as_dict(self) -> dict[str, float]:
        return {
            "batches": self.batches,
            "items": self.items,
            "mean_batch_size": round(self.items / self.batches, 2) if self.batches else 0.0,
            "largest_batch": self.largest,
        }


class MicroBatcher(Generic[T, R]):
    def __init__(self, run_batch: Callable[[list[T]], Sequence[R | BaseException]], max_batch: int,
                 window_s: float, name: str = "micro-batcher"):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.run_batch = run_batch
        self.max_batch = max_batch
        self.window_s = window_s
        self.stats = BatchStats()
        self._cond = threading.Condition()
        self._queue: list[_Job[T]] = []
        self._announced = 0  # callers between announce() and being taken into a batch
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    @contextmanager
    def announce(self) -> Iterator[Callable[[T], R]]:
        """``with batcher.announce() as submit: ...prepare...; result = submit(item)``."""
        with self._cond:
            self._announced += 1
        submitted = False

        def submit(item: T) -> R:
            nonlocal submitted
            job: _Job[T] = _Job(item)
            with self._cond:
                submitted = True
                self._queue.append(job)
                self._cond.notify_all()
            job.done.wait()
            if isinstance(job.result, BaseException):
                raise job.result
            return job.result

        try:
            yield submit
        finally:
            if not submitted:  # preparation failed: stop counting on this caller
                with self._cond:
                    self._announced -= 1
                    self._cond.notify_all()

    def _take(self) -> list[_Job[T]]:
        with self._cond:
            while not self._queue:
                self._cond.wait()
            deadline = time.monotonic() + self.window_s
            while len(self._queue) < self.max_batch and self._announced > len(self._queue):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            jobs = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            self._announced -= len(jobs)
            return jobs

    def _loop(self) -> None:
        while True:
            jobs = self._take()
            try:
                results = list(self.run_batch([job.item for job in jobs]))
                if len(results) != len(jobs):
                    raise RuntimeError(f"run_batch returned {len(results)} results for {len(jobs)} items")
            except BaseException as exc:  # noqa: BLE001 - every caller must be answered, whatever happened
                results = [exc] * len(jobs)
            self.stats.batches += 1
            self.stats.items += len(jobs)
            self.stats.largest = max(self.stats.largest, len(jobs))
            for job, result in zip(jobs, results):
                job.result = result
                job.done.set()
