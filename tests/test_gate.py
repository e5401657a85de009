"""The inference gate's queue under real threads: first come, first served, and no slot lost by leaving it."""

from __future__ import annotations

import threading
import time

import pytest

from app.pipeline.errors import ClientGone, Overloaded
from app.pipeline.gate import InferenceGate
from tests.conftest import wait_for


class Waiter(threading.Thread):
    """Queues for a slot, records when it got one, holds it until told to let go."""

    def __init__(self, gate: InferenceGate, name: str, served: list[str], timeout_s: float = 30,
                 cancelled=lambda: False):
        super().__init__(daemon=True)
        self.gate, self.label, self.served = gate, name, served
        self.timeout_s, self.cancelled = timeout_s, cancelled
        self.release = threading.Event()
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            with self.gate.slot(self.timeout_s, self.cancelled):
                self.served.append(self.label)
                self.release.wait(30)
        except (Overloaded, ClientGone) as exc:
            self.error = exc


def enqueue(gate: InferenceGate, waiter: Waiter) -> Waiter:
    """Start ``waiter`` and return once it is in the queue (so that the order is known)."""
    before = gate.waiting
    waiter.start()
    wait_for(lambda: gate.waiting == before + 1, what=f"{waiter.label} in the queue")
    return waiter


def all_slots_acquirable(gate: InferenceGate) -> bool:
    """Every slot can be taken at once, without waiting: none was lost."""
    held = []
    try:
        for _ in range(gate.slots):
            cm = gate.slot(timeout_s=0.05)
            cm.__enter__()
            held.append(cm)
        return True
    except Overloaded:
        return False
    finally:
        for cm in held:
            cm.__exit__(None, None, None)


def held(gate: InferenceGate):
    """A slot taken by the test's own thread; ``.__exit__(None, None, None)`` gives it back."""
    cm = gate.slot(timeout_s=1)
    cm.__enter__()
    return cm


def test_waiters_are_served_in_the_order_they_came():
    """Waiters that came at different moments and waited for a while are served in arrival order
    (before: each re-polled the semaphore every 0.25 s, and the order rotated with their phases)."""
    gate = InferenceGate(slots=1, max_queue=20)
    served: list[str] = []
    slot = held(gate)
    queued = []
    for i in range(8):
        queued.append(enqueue(gate, Waiter(gate, f"w{i}", served)))
        queued[-1].release.set()  # once served, each gives its slot back at once
        time.sleep(0.03)
    time.sleep(0.4)
    slot.__exit__(None, None, None)
    for w in queued:
        w.join(10)
    assert served == [f"w{i}" for i in range(8)]
    assert gate.waiting == 0 and gate.active == 0 and all_slots_acquirable(gate)


def test_a_newcomer_never_overtakes_the_queue():
    """A freed slot is handed to the head of the queue; a request arriving at that very moment
    queues behind it (before: its non-blocking acquire won, ahead of requests that had waited)."""
    gate = InferenceGate(slots=1, max_queue=50)
    served: list[str] = []
    slot = held(gate)
    first = enqueue(gate, Waiter(gate, "first", served))
    first.release.set()
    slot.__exit__(None, None, None)
    with gate.slot(timeout_s=5):  # the same thread, at once: it still has the interpreter
        served.append("newcomer")
    first.join(5)
    assert served == ["first", "newcomer"]
    assert gate.waiting == 0 and gate.active == 0 and all_slots_acquirable(gate)


def test_a_waiter_that_times_out_leaves_the_queue_without_losing_a_slot():
    gate = InferenceGate(slots=1, max_queue=10)
    served: list[str] = []
    holder = Waiter(gate, "holder", served)
    holder.start()
    wait_for(lambda: gate.active == 1, what="the slot taken")
    late = enqueue(gate, Waiter(gate, "late", served, timeout_s=0.3))
    after = enqueue(gate, Waiter(gate, "after", served))
    late.join(5)
    assert isinstance(late.error, Overloaded) and late.error.code == "timeout" and late.error.retry_after >= 1
    assert gate.waiting == 1  # it left; `after` is still there
    holder.release.set()
    wait_for(lambda: served == ["holder", "after"], what="the next waiter served")
    after.release.set()
    after.join(5)
    assert gate.active == 0 and gate.waiting == 0 and all_slots_acquirable(gate)


def test_a_cancelled_waiter_leaves_the_queue_without_losing_a_slot():
    gate = InferenceGate(slots=2, max_queue=10)
    served: list[str] = []
    holders = [Waiter(gate, f"holder{i}", served) for i in range(2)]
    for h in holders:
        h.start()
    wait_for(lambda: gate.active == 2, what="both slots taken")
    gone = threading.Event()
    leaver = enqueue(gate, Waiter(gate, "leaver", served, cancelled=gone.is_set))
    stayer = enqueue(gate, Waiter(gate, "stayer", served))
    gone.set()
    leaver.join(5)
    assert isinstance(leaver.error, ClientGone)
    for h in holders:
        h.release.set()
    wait_for(lambda: "stayer" in served, what="the remaining waiter served")
    stayer.release.set()
    stayer.join(5)
    assert sorted(served[:2]) == ["holder0", "holder1"] and served[2:] == ["stayer"]  # holders: either order
    assert gate.active == 0 and gate.waiting == 0 and all_slots_acquirable(gate)


def test_a_slot_freed_as_its_waiter_gives_up_goes_to_the_next():
    """Many waiters with short deadlines racing slot releases: whatever the interleaving, no slot leaks."""
    gate = InferenceGate(slots=2, max_queue=100)
    served: list[str] = []
    threads = [Waiter(gate, f"w{i}", served, timeout_s=0.01 * (i % 7)) for i in range(60)]
    for t in threads:
        t.release.set()  # each holds its slot for no time at all
        t.start()
    for t in threads:
        t.join(10)
    assert gate.active == 0 and gate.waiting == 0 and all_slots_acquirable(gate)


def test_a_full_queue_sheds_at_once_and_the_gauges_follow():
    seen: list[tuple[int, int]] = []
    gate = InferenceGate(slots=1, max_queue=1, observe=lambda active, waiting: seen.append((active, waiting)))
    served: list[str] = []
    holder = Waiter(gate, "holder", served)
    holder.start()
    wait_for(lambda: gate.active == 1, what="the slot taken")
    queued = enqueue(gate, Waiter(gate, "queued", served))
    started = time.monotonic()
    with pytest.raises(Overloaded) as shed:
        with gate.slot(timeout_s=5):
            pass
    assert time.monotonic() - started < 1 and shed.value.code == "overloaded" and shed.value.retry_after >= 1
    holder.release.set()
    wait_for(lambda: served == ["holder", "queued"], what="the queued one served")
    queued.release.set()
    queued.join(5)
    assert seen[:2] == [(1, 0), (1, 1)] and seen[-1] == (0, 0)
    assert (1, 0) in seen[2:]  # the queued one took the slot: one active, nobody waiting
