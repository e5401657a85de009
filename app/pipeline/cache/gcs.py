"""The GPU fleet's shared cache: objects in a Google Cloud Storage bucket, through google-cloud-storage,
one GET with no retry per lookup, bounded by ``CACHE_TIMEOUT_S``; the details: docs/cache.md ("GCS").
"""

from __future__ import annotations

import datetime
import time

from google.api_core.exceptions import NotFound
from google.cloud import storage
from google.cloud.storage.retry import DEFAULT_RETRY

# GCS accepts at most 100 calls in one batch request.
_BATCH = 100
# /stats lists the prefix to count entries; beyond this many objects it reports a lower bound.
USAGE_LIST_LIMIT = 10_000
_USAGE_TTL_S = 60.0


class GCSBackend:
    name = "gcs"
    # Plain HTTP requests: after a failure the same client is tried again (results.py); a new one
    # would redo credential discovery and close the connections other threads are using.
    reopen_after_error = False

    def __init__(self, bucket: str, prefix: str, timeout_s: float):
        self.bucket_name = bucket
        self.prefix = prefix
        self.timeout = (timeout_s, timeout_s)  # (connect, read)
        # The library's default retry keeps trying for 120 s; nothing here may wait that long.
        # Writes (after the response) and clearing (an admin's request) retry for 4 x CACHE_TIMEOUT_S, at least 2 s.
        self._retry = DEFAULT_RETRY.with_delay(initial=0.1, maximum=1.0).with_timeout(max(2.0, 4 * timeout_s))
        self._client = storage.Client()
        self._bucket = self._client.bucket(bucket)  # no request: the bucket is only named here
        self._usage: tuple[float, dict[str, object]] | None = None

    def _blob(self, key: str) -> storage.Blob:
        return self._bucket.blob(self.prefix + key)

    def get(self, key: str) -> bytes | None:
        try:
            return self._blob(key).download_as_bytes(timeout=self.timeout, retry=None)
        except NotFound:
            return None

    def put(self, key: str, data: bytes, ttl_s: int) -> None:
        blob = self._blob(key)
        blob.custom_time = datetime.datetime.now(datetime.timezone.utc)
        blob.upload_from_string(data, content_type="application/octet-stream", timeout=self.timeout,
                                retry=self._retry)

    def delete(self, key: str) -> None:
        try:
            self._blob(key).delete(timeout=self.timeout, retry=None)
        except NotFound:
            pass

    def clear(self) -> int:
        """Delete every object under the prefix, 100 per batch request; returns how many."""
        deleted = 0
        for page in self._client.list_blobs(self._bucket, prefix=self.prefix, fields="items(name),nextPageToken",
                                            timeout=self.timeout, retry=self._retry).pages:
            names = [blob.name for blob in page]
            for start in range(0, len(names), _BATCH):
                with self._client.batch(raise_exception=False):
                    for name in names[start:start + _BATCH]:
                        self._bucket.blob(name).delete()
            deleted += len(names)
        self._usage = None
        return deleted

    def usage(self) -> dict[str, object]:
        """Entries and bytes under the prefix, from a listing at most a minute old."""
        now = time.monotonic()
        if self._usage and now - self._usage[0] < _USAGE_TTL_S:
            return self._usage[1]
        entries = size = 0
        for blob in self._client.list_blobs(self._bucket, prefix=self.prefix, max_results=USAGE_LIST_LIMIT,
                                            fields="items(size),nextPageToken", timeout=self.timeout, retry=None):
            entries += 1
            size += blob.size or 0
        usage = {"entries": entries, "size_bytes": size, "max_bytes": None, "complete": entries < USAGE_LIST_LIMIT}
        self._usage = (now, usage)
        return usage
