"""The result cache as the service sees it: one front for every backend, which never fails a request
(content hash and TTL per entry, any backend error served around with a back-off, counters);
the details: docs/cache.md ("The front").

It also keeps the outputs being looked up or computed in this process (:class:`Flight`): a request
for a key that another request is reading or computing waits for that one's result.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from typing import Callable, NamedTuple, Protocol

from app.pipeline.cache import entry
from app.pipeline.errors import ClientGone, Overloaded, ServiceError

log = logging.getLogger(__name__)

HIT, MISS, BYPASS = "HIT", "MISS", "BYPASS"
KINDS = ("output", "mask")
_BACKOFF_FIRST_S = 2.0
_BACKOFF_MAX_S = 60.0
_LOG_INTERVAL_S = 60.0
POLL_S = 0.25  # how often a request waiting for another's result looks whether its client is still there


class Backend(Protocol):
    name: str

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, data: bytes, ttl_s: int) -> None: ...

    def delete(self, key: str) -> None: ...

    def clear(self) -> int: ...

    def usage(self) -> dict[str, object]: ...

    # Optional: ``reopen_after_error = False`` keeps the same object after a failure (default: reopen).
    # Optional: ``try_lock(key)``, a lock on the key shared by this host's processes (see ResultCache.lock).


class CacheUnavailable(ServiceError):
    """The cache could not do what an admin asked (clearing it); the message says why."""

    code = "cache_unavailable"


class Flight:
    """One output being looked up, then computed if it missed, in this process; other requests
    for its key wait for it."""

    def __init__(self) -> None:
        self.landed = threading.Event()  # set once its result is there, or its leader gave up
        self.data: bytes | None = None
        self.bypassed = False  # its leader found the cache not working: each request computes its own


class Lookup(NamedTuple):
    data: bytes | None
    status: str  # HIT | MISS | BYPASS (not consulted: disabled, or backing off after an error)


class ResultCache:
    def __init__(self, name: str, open_backend: Callable[[], Backend] | None, ttl_s: int,
                 clock: Callable[[], float] = time.time, observe: Callable[[str], None] | None = None):
        """``observe(event)`` is called with every counted event (e.g. to feed a metrics counter)."""
        self.name = name
        self._observe = observe
        self.ttl_s = ttl_s
        self._open_backend = open_backend
        self._backend: Backend | None = None
        self._clock = clock
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._retry_at = 0.0  # monotonic time before which the backend is not tried
        self._backoff_s = 0.0
        self._reopen = False  # a failure since the backend was opened: open it afresh at the next try
        self._last_log = -_LOG_INTERVAL_S
        self._unlogged = 0
        self._flights: dict[str, Flight] = {}
        if open_backend is not None:
            self._usable()  # open at boot, so that a misconfiguration shows in the boot log

    @property
    def enabled(self) -> bool:
        return self._open_backend is not None

    # -- the request path -------------------------------------------------------------

    def lookup(self, key: str, kind: str) -> Lookup:
        backend = self._usable()
        if backend is None:
            self._count(f"{kind}_bypassed")
            return Lookup(None, BYPASS)
        try:
            raw = backend.get(key)
        except Exception as exc:  # noqa: BLE001 - any backend failure means "serve without the cache"
            self._failed("read", exc)
            self._count(f"{kind}_bypassed")
            return Lookup(None, BYPASS)
        self._succeeded()
        if raw is None:
            self._count(f"{kind}_misses")
            return Lookup(None, MISS)
        try:
            found = entry.unpack(raw)
        except entry.CorruptEntry as exc:
            self._count("corrupt")
            self._warn(f"cache entry {key[:16]}… is corrupt ({exc}); recomputing it")
            self._quietly(backend.delete, key)
            self._count(f"{kind}_misses")
            return Lookup(None, MISS)
        if found.age_s(self._clock()) > self.ttl_s:
            self._count("expired")
            self._count(f"{kind}_misses")
            return Lookup(None, MISS)
        self._count(f"{kind}_hits")
        return Lookup(found.payload, HIT)

    # -- single flight: one computation per key at a time --------------------------------

    def join(self, key: str) -> tuple[Flight, bool]:
        """The flight computing ``key`` in this process, and whether the caller leads it (there was none)."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = Flight()
            return flight, True

    def land(self, key: str, flight: Flight) -> None:
        """End the flight: its result is stored (or it gave up); the next miss of ``key`` leads a new one."""
        with self._lock:
            if self._flights.get(key) is flight:
                del self._flights[key]
        flight.landed.set()

    def follow(self, flight: Flight, deadline: float, cancelled: Callable[[], bool]) -> Lookup | None:
        """The flight's result once it lands, counted as this request's lookup; None if its leader
        gave up (look again). Raises like the inference queue when the deadline passes or the
        client leaves first."""
        while not flight.landed.wait(max(0.0, min(deadline - time.monotonic(), POLL_S))):
            if cancelled():
                raise ClientGone("the client closed the connection while its result was being computed")
            if time.monotonic() >= deadline:
                raise Overloaded("server busy: the request waited past its deadline for the same request's "
                                 "result; retry later", 2, code="timeout")
        if flight.data is not None:
            self._count("output_hits")
            self._count("output_shared")
            return Lookup(flight.data, HIT)
        if flight.bypassed:
            self._count("output_bypassed")
            return Lookup(None, BYPASS)
        return None

    def lock(self, key: str) -> Callable[[], None] | None:
        """The key's lock across this host's processes, as its release; None while another process
        holds it. Backends without one (GCS: single flight within a process only), a backend that
        is failing, or a lock that cannot be made: a release that does nothing."""
        backend = self._usable()
        try_lock = getattr(backend, "try_lock", None)
        if try_lock is None:
            return _nothing
        try:
            return try_lock(key)
        except OSError:  # e.g. a read-only directory: the entry cannot be written either
            return _nothing

    def store(self, key: str, payload: bytes) -> None:
        backend = self._usable()
        if backend is None:
            self._count("writes_skipped")
            return
        try:
            backend.put(key, entry.pack(payload, self._clock()), self.ttl_s)
        except Exception as exc:  # noqa: BLE001
            self._failed("write", exc)
            self._count("write_errors")
            return
        self._succeeded()
        self._count("writes")

    # -- admin and reporting ----------------------------------------------------------

    def clear(self) -> int:
        """Delete every entry; raises :class:`CacheUnavailable` if the backend cannot."""
        if self._open_backend is None:
            return 0
        backend = self._current()  # an admin's request: tried even while backing off
        if backend is None:
            raise CacheUnavailable(f"the {self.name} cache cannot be opened")
        try:
            cleared = backend.clear()
        except Exception as exc:  # noqa: BLE001
            self._failed("clear", exc)
            raise CacheUnavailable(f"the {self.name} cache failed to clear: {type(exc).__name__}") from None
        self._succeeded()
        log.info("cache cleared: %d entries", cleared)
        return cleared

    def stats(self) -> dict[str, object]:
        with self._lock:
            counts = dict(self._counts)
        out: dict[str, object] = {"backend": self.name, "enabled": self.enabled}
        if not self.enabled:
            return out
        usage = self._usage()
        hits, misses = counts.get("output_hits", 0), counts.get("output_misses", 0)
        out.update({
            "available": self._backend is not None and time.monotonic() >= self._retry_at,
            "ttl_s": self.ttl_s,
            "entries": usage.get("entries"),
            "size_mb": None if usage.get("size_bytes") is None else round(usage["size_bytes"] / 2**20, 2),
            "max_mb": None if usage.get("max_bytes") is None else round(usage["max_bytes"] / 2**20, 2),
            "usage_complete": usage.get("complete"),
            # This process's lookups since it started (each worker counts its own).
            "hit_rate": round(hits / (hits + misses), 4) if hits + misses else None,
            "lookups": {kind: {status: counts.get(f"{kind}_{status}", 0) for status in ("hits", "misses", "bypassed")}
                        for kind in KINDS},
            "writes": counts.get("writes", 0),
            "write_errors": counts.get("write_errors", 0),
            "writes_skipped": counts.get("writes_skipped", 0),
            "errors": counts.get("errors", 0),
            "corrupt": counts.get("corrupt", 0),
            "expired": counts.get("expired", 0),
            "shared": counts.get("output_shared", 0),  # hits handed over by the request reading or computing them
        })
        return out

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    # -- failure handling -------------------------------------------------------------

    def _usable(self) -> Backend | None:
        if self._open_backend is None or time.monotonic() < self._retry_at:
            return None
        return self._current()

    def _current(self) -> Backend | None:
        """The backend, opened afresh if it failed since it was opened (and it wants that)."""
        if self._reopen:  # (read without the lock: at worst one more request sees the old backend)
            with self._lock:
                if self._reopen and getattr(self._backend, "reopen_after_error", True):
                    # Dropped, not closed: other threads may be inside it still; the last one out frees it
                    # (diskcache's connections are per thread and close when the object goes).
                    self._backend = None
                self._reopen = False
        return self._backend or self._open()

    def _open(self) -> Backend | None:
        try:
            backend = self._open_backend()
        except Exception as exc:  # noqa: BLE001
            self._failed("open", exc)
            return None
        self._backend = backend
        return backend

    def _usage(self) -> dict[str, object]:
        backend = self._usable()
        if backend is None:
            return {}
        try:
            return backend.usage()
        except Exception as exc:  # noqa: BLE001
            self._failed("usage", exc)
            return {}

    def _failed(self, what: str, exc: Exception) -> None:
        self._count("errors")
        with self._lock:
            self._reopen = True
            self._backoff_s = min(_BACKOFF_MAX_S, self._backoff_s * 2 or _BACKOFF_FIRST_S)
            self._retry_at = time.monotonic() + self._backoff_s
            backoff = self._backoff_s
        self._warn(f"{self.name} cache {what} failed ({type(exc).__name__}: {exc}); "
                   f"serving without the cache for {backoff:g} s")

    def _succeeded(self) -> None:
        if self._backoff_s:
            with self._lock:
                self._backoff_s = 0.0

    def _quietly(self, action: Callable[[str], None], key: str) -> None:
        try:
            action(key)
        except Exception:  # noqa: BLE001 - best effort; the entry is rewritten anyway
            pass

    def _count(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1
        if self._observe is not None:
            self._observe(name)

    def _warn(self, message: str) -> None:
        """Log at most once a minute; the next line says how many were held back."""
        now = time.monotonic()
        with self._lock:
            if now - self._last_log < _LOG_INTERVAL_S:
                self._unlogged += 1
                return
            held, self._unlogged, self._last_log = self._unlogged, 0, now
        suffix = f" ({held} similar messages held back)" if held else ""
        log.warning("%s%s", message, suffix)


def _nothing() -> None:
    pass
