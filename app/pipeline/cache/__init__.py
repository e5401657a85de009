"""The result cache: one front (:class:`ResultCache`), two real backends, chosen by ``CACHE_BACKEND``.

- ``local`` (default): files under ``CACHE_DIR``, bounded by ``CACHE_MAX_MB``, LRU eviction.
- ``gcs``: the bucket ``STORAGE_BUCKET`` under ``CACHE_PREFIX`` (the GPU fleet, shared by all instances).
- ``none``: no cache; every response says ``X-Cache: BYPASS``.

Flask-free, like the whole pipeline: one request's use of it is :class:`CacheUse` (``request.py``).
"""

from __future__ import annotations

from app.pipeline.cache.keys import entry_key, fingerprint, upload_digest
from app.pipeline.cache.results import BYPASS, HIT, MISS, Backend, CacheUnavailable, Lookup, ResultCache
from app.pipeline.cache.request import CacheUse
from typing import Callable

from config import ConfigError, Settings


def open_cache(settings: Settings, observe: Callable[[str], None] | None = None) -> ResultCache:
    """The cache ``CACHE_BACKEND`` names; ``observe(event)`` sees every counted event (metrics)."""
    if settings.cache_backend == "none":
        return ResultCache("none", None, settings.cache_ttl_s)
    if settings.cache_backend == "local":
        from app.pipeline.cache.local import LocalBackend

        def open_local() -> Backend:
            return LocalBackend(settings.cache_dir, int(settings.cache_max_mb * 2**20))

        return ResultCache("local", open_local, settings.cache_ttl_s, observe=observe)
    try:
        from app.pipeline.cache.gcs import GCSBackend
    except ImportError as exc:
        raise ConfigError(f"CACHE_BACKEND: gcs needs the `gcs` extra (pip install '.[gcs]'): {exc}") from None

    def open_gcs() -> Backend:
        return GCSBackend(settings.storage_bucket, settings.cache_prefix, settings.cache_timeout_s)

    return ResultCache("gcs", open_gcs, settings.cache_ttl_s, observe=observe)


__all__ = [
    "BYPASS", "HIT", "MISS", "CacheUnavailable", "CacheUse", "Lookup", "ResultCache",
    "entry_key", "fingerprint", "open_cache", "upload_digest",
]
