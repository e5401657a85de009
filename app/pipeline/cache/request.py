"""One request's use of the result cache: its finished output (a hit skips everything), else its
mask (another colour, format or effect on an image seen before skips inference), and what to
store afterwards (:meth:`CacheUse.flush`, called by the HTTP edge once the response is sent).
Its statuses are the ``X-Cache`` (output) and ``X-Cache-Mask`` headers (docs/cache.md).

Single flight: while a request of this process looks up an output, or computes it after a miss,
other requests for the same output wait for its result (``X-Cache: HIT``): a burst of requests
for one result reads it once, or computes it once. The waiting requests of the process get the
result as soon as it is computed; later ones, and other processes on the host, wait on the key's
lock file (local backend) until it is stored. On GCS, instances do not wait for each other
(only a process's own threads do).
"""

from __future__ import annotations

import io
import logging
import math
import time
import weakref
from types import TracebackType
from typing import Any, Callable, Mapping

import numpy as np
from PIL import Image

from app.pipeline.cache.keys import entry_key, upload_digest
from app.pipeline.cache.results import BYPASS, HIT, MISS, Flight, Lookup, ResultCache
from app.pipeline.errors import ClientGone, Overloaded

log = logging.getLogger(__name__)
LOCK_POLL_S = 0.05  # how often a request waiting for another process's computation tries the key's lock


class CacheUse:
    def __init__(self, cache: ResultCache, use: bool, upload: bytes, model: Mapping[str, Any]):
        self._cache = cache
        self._use = use and cache.enabled
        self._upload_sha256 = upload_digest(upload) if self._use else ""
        self._model = model
        self._output_key: str | None = None
        self._pending: list[tuple[str, Callable[[], bytes]]] = []
        self.status = BYPASS
        self.mask_status: str | None = None
        self._flight: Flight | None = None  # the computation this request leads, if any
        self._landing: weakref.finalize | None = None

    def __enter__(self) -> "CacheUse":
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        """The job is over: a flight it leads without a result ends now, so that a waiting request
        computes instead (one with a result ends at :meth:`flush`, once the result is stored)."""
        if self._flight is not None and self._flight.data is None:
            self._land()

    def output(self, kind: str, options: Mapping[str, Any], timeout_s: float = math.inf,
               cancelled: Callable[[], bool] = lambda: False) -> bytes | None:
        """The stored output for this upload, kind of result and options, or None: then compute it,
        within ``with`` this object, and :meth:`keep_output` it. While another request of this
        process reads or computes the same output, wait for its result, for at most ``timeout_s``,
        leaving early (:class:`ClientGone`) when ``cancelled()`` turns true; past the deadline
        :class:`Overloaded` (``timeout``)."""
        if not self._use:
            return None
        deadline = time.monotonic() + timeout_s
        key = self._output_key = entry_key(kind, self._upload_sha256, self._model, options)
        while True:
            flight, leads = self._cache.join(key)
            found = self._lead(key, flight, deadline, cancelled) if leads else \
                self._cache.follow(flight, deadline, cancelled)
            if found is not None:
                self.status = found.status
                return found.data
            # its leader gave up (an error, its client left): look again, and lead if nobody else does

    def _lead(self, key: str, flight: Flight, deadline: float, cancelled: Callable[[], bool]) -> Lookup:
        """Look ``key`` up for everyone waiting on ``flight``; on a miss, lead its computation (until
        :meth:`flush`, or the end of the job without a result), holding the key's lock across processes."""
        release = _nothing
        try:
            found = self._cache.lookup(key, "output")
            if found.status == MISS:
                release, waited = self._lock(key, deadline, cancelled)
                if waited:  # another process was computing it: stored by now, unless it gave up
                    found = self._cache.lookup(key, "output")
        except BaseException:
            _land(self._cache, key, flight, release)
            raise
        if found.status == MISS:
            self._flight = flight
            self._landing = weakref.finalize(self, _land, self._cache, key, flight, release)  # even if never flushed
        else:
            flight.data, flight.bypassed = found.data, found.status == BYPASS
            _land(self._cache, key, flight, release)
        return found

    def _lock(self, key: str, deadline: float, cancelled: Callable[[], bool]) -> tuple[Callable[[], None], bool]:
        """The key's lock across this host's processes, and whether another one held it (then we waited)."""
        waited = False
        while (release := self._cache.lock(key)) is None:
            waited = True
            if cancelled():
                raise ClientGone("the client closed the connection while its result was being computed")
            if time.monotonic() >= deadline:
                raise Overloaded("server busy: the request waited past its deadline for the same request's "
                                 "result; retry later", 2, code="timeout")
            time.sleep(LOCK_POLL_S)
        return release, waited

    def _land(self) -> None:
        if self._landing is not None:
            self._landing()

    def keep_output(self, data: bytes) -> None:
        """Store the output computed after a miss (at :meth:`flush`). Requests of this process
        waiting for it get it now; later ones, and other processes, find it stored (the key's lock
        is held until then)."""
        if self._output_key is not None and self.status != HIT:
            self._pending.append((self._output_key, lambda: data))
            if self._flight is not None:
                self._flight.data = data
                self._cache.land(self._output_key, self._flight)

    def stored_mask(self, size: tuple[int, int]) -> np.ndarray | None:
        """The stored subject's alpha for this upload, if it is one of ``size``; else None (compute it)."""
        if not self._use:
            return None
        found = self._cache.lookup(self._mask_key(), "mask")
        alpha = None if found.data is None else _decode_mask(found.data, size)
        self.mask_status = MISS if found.status == HIT and alpha is None else found.status  # another size's: the model runs
        return alpha

    def keep_mask(self, alpha: np.ndarray) -> None:
        """Store the mask computed after a miss (at :meth:`flush`)."""
        if self._use:
            self._pending.append((self._mask_key(), lambda: _encode_mask(alpha)))

    def _mask_key(self) -> str:
        return entry_key("mask", self._upload_sha256, self._model, {})

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def flush(self) -> None:
        """Write what this request computed (after the response has been sent), then end its flight."""
        pending, self._pending = self._pending, []
        try:
            for key, payload in pending:
                try:
                    self._cache.store(key, payload())
                except Exception:  # noqa: BLE001 - encoding a mask cannot fail a sent response
                    log.exception("could not prepare a cache entry")
        finally:
            self._land()

    def headers(self) -> dict[str, str]:
        out = {"X-Cache": self.status}
        if self.status != HIT and self.mask_status is not None:
            out["X-Cache-Mask"] = self.mask_status
        return out


def _nothing() -> None:
    pass


def _land(cache: ResultCache, key: str, flight: Flight, release: Callable[[], None]) -> None:
    cache.land(key, flight)
    release()


def _encode_mask(alpha: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(alpha, "L").save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _decode_mask(data: bytes, size: tuple[int, int]) -> np.ndarray | None:
    """The stored mask, or None if it is not a mask of this image's size (then it is recomputed)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.mode != "L" or img.size != size:
                return None
            return np.asarray(img).copy()
    except (OSError, ValueError):
        return None
