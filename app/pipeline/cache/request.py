"""One request's use of the result cache: its finished output (a hit skips everything), else its
mask (another colour, format or effect on an image seen before skips inference), and what to
store afterwards (:meth:`CacheUse.flush`, called by the HTTP edge once the response is sent).
Its statuses are the ``X-Cache`` (output) and ``X-Cache-Mask`` headers (docs/cache.md).
"""

from __future__ import annotations

import io
import logging
from typing import Any, Callable, Mapping

import numpy as np
from PIL import Image

from app.pipeline.cache.keys import entry_key, upload_digest
from app.pipeline.cache.results import BYPASS, HIT, ResultCache

log = logging.getLogger(__name__)


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

    def output(self, kind: str, options: Mapping[str, Any]) -> bytes | None:
        """The stored output for this upload, kind of result and options, or None (then compute it)."""
        if not self._use:
            return None
        self._output_key = entry_key(kind, self._upload_sha256, self._model, options)
        found = self._cache.lookup(self._output_key, "output")
        self.status = found.status
        return found.data

    def keep_output(self, data: bytes) -> None:
        """Store the output computed after a miss (at :meth:`flush`)."""
        if self._output_key is not None and self.status != HIT:
            self._pending.append((self._output_key, lambda: data))

    def stored_mask(self, size: tuple[int, int]) -> np.ndarray | None:
        """The stored subject's alpha for this upload, if it is one of ``size``; else None (compute it)."""
        if not self._use:
            return None
        found = self._cache.lookup(self._mask_key(), "mask")
        self.mask_status = found.status
        return None if found.data is None else _decode_mask(found.data, size)

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
        """Write what this request computed (after the response has been sent)."""
        pending, self._pending = self._pending, []
        for key, payload in pending:
            try:
                self._cache.store(key, payload())
            except Exception:  # noqa: BLE001 - encoding a mask cannot fail a sent response
                log.exception("could not prepare a cache entry")

    def headers(self) -> dict[str, str]:
        out = {"X-Cache": self.status}
        if self.status != HIT and self.mask_status is not None:
            out["X-Cache-Mask"] = self.mask_status
        return out


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
