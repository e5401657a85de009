"""One processing request's use of the result cache: ``use_cache``, ``X-Cache``, storing after the response.

A request first looks for its finished output (keyed by the upload's hash and its
normalised options): a hit skips decoding, inference, effects and encoding. On a
miss it looks for the subject's mask, so that another colour, format or effect on
an image seen before skips inference. What it computed is stored once the response
has been sent (``call_on_close``), so the client never waits for the cache's write.

Headers: ``X-Cache: HIT | MISS | BYPASS`` for the output (BYPASS: ``use_cache=false``,
no cache configured, or the cache is failing), and ``X-Cache-Mask`` for the mask
lookup of a request that missed.
"""

from __future__ import annotations

import io
import logging
from typing import Any, Callable, Mapping

import numpy as np
from flask import Flask, Response, g, request
from PIL import Image

from app.pipeline.cache import BYPASS, HIT, ResultCache, entry_key, upload_digest
from app.pipeline.imaging import DecodedImage
from app.pipeline.options import parse_bool

log = logging.getLogger(__name__)


class RequestCache:
    def __init__(self, cache: ResultCache, use: bool, upload: bytes, model: Mapping[str, Any]):
        self._cache = cache
        self._use = use and cache.enabled
        self._upload_sha256 = upload_digest(upload) if self._use else ""
        self._model = model
        self._output_key: str | None = None
        self._pending: list[tuple[str, Callable[[], bytes]]] = []
        self.status = BYPASS
        self.mask_status: str | None = None

    def cached_output(self, kind: str, options: Mapping[str, Any]) -> bytes | None:
        """The stored output for this upload, kind of result and options, or None (then compute it)."""
        if not self._use:
            return None
        self._output_key = entry_key(kind, self._upload_sha256, self._model, options)
        found = self._cache.lookup(self._output_key, "output")
        self.status = found.status
        return found.data

    def keep_output(self, data: bytes) -> None:
        """Store the output computed after a miss, once the response is sent."""
        if self._output_key is not None and self.status != HIT:
            self._pending.append((self._output_key, lambda: data))

    def mask(self, image: DecodedImage, compute: Callable[[], np.ndarray]) -> np.ndarray:
        """The subject's alpha for ``image``: the stored one, or ``compute()`` (then stored)."""
        if not self._use:
            return compute()
        key = entry_key("mask", self._upload_sha256, self._model, {})
        found = self._cache.lookup(key, "mask")
        self.mask_status = found.status
        if found.data is not None:
            alpha = _decode_mask(found.data, image.size)
            if alpha is not None:
                return alpha
        alpha = compute()
        self._pending.append((key, lambda: _encode_mask(alpha)))
        return alpha

    def flush(self) -> None:
        """Write what this request computed (called after the response has been sent)."""
        pending, self._pending = self._pending, []
        for key, payload in pending:
            try:
                self._cache.store(key, payload())
            except Exception:  # noqa: BLE001 - encoding a mask cannot fail a sent response
                log.exception("could not prepare a cache entry")

    @property
    def has_pending(self) -> bool:
        return bool(self._pending)

    def headers(self) -> dict[str, str]:
        out = {"X-Cache": self.status}
        if self.status != HIT and self.mask_status is not None:
            out["X-Cache-Mask"] = self.mask_status
        return out


def open_request_cache(cache: ResultCache, model: Mapping[str, Any], upload: bytes) -> RequestCache:
    """This request's cache (``use_cache`` form field, default true), attached to ``flask.g``."""
    rc = RequestCache(cache, parse_bool(request.form, "use_cache", True), upload, model)
    g.request_cache = rc
    return rc


def register(app: Flask) -> None:
    @app.after_request
    def _cache_headers(response: Response) -> Response:
        rc: RequestCache | None = g.pop("request_cache", None)
        if rc is None:
            return response
        response.headers.update(rc.headers())
        if rc.has_pending:
            response.call_on_close(rc.flush)
        return response


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
