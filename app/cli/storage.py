"""Where a batch reads its inputs and writes its outputs: a local folder or a ``gs://`` prefix, behind
one small interface (:class:`Storage`) that the batch engine (:mod:`app.cli.batch`) alone uses.

Keys are paths relative to the root, ``/``-separated. Writes are atomic on both: a local file is
written under a temporary name in its folder and renamed over its final name (an interrupted run
leaves no partial file, and removes its temporary one); a GCS object exists only once its upload
is complete. What a store can keep beside an output (GCS: the object's metadata) is its ``tag``:
the batch records there which input and options made it, so a task killed before its manifest was
saved still knows the output is done.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

TEMP_MARK = ".bgremove-tmp-"  # in the name of a file being written: never an input, never an output
TAG_KEY = "bgremove-key"  # the GCS object metadata holding an output's tag


@dataclass(frozen=True)
class Entry:
    """An object under the root: its key and, where the store has one without reading the object, a
    digest of its contents (GCS: ``md5:<hex>`` from the listing; local files: None, hashed when read)."""

    key: str
    digest: str | None = None


class ManifestLog(Protocol):
    def add(self, line: str) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class Storage(Protocol):
    url: str

    def list(self, prefix: str = "", skip: Any = None) -> Iterator[Entry]: ...
    def read(self, key: str) -> bytes: ...
    def write(self, key: str, data: bytes, tag: str | None = None) -> None: ...
    def exists(self, key: str) -> bool: ...
    def tags(self, prefix: str = "") -> dict[str, str]: ...
    def manifest(self, key: str) -> ManifestLog: ...
    def describe(self, key: str) -> str: ...


def open_storage(location: str, *, create: bool = False) -> Storage:
    """The store at ``location``: ``gs://bucket/prefix/`` or a folder (made when ``create``)."""
    if location.startswith("gs://"):
        bucket, _, prefix = location[5:].partition("/")
        if not bucket:
            raise ValueError(f"{location}: expected gs://BUCKET/PREFIX/")
        return GCSStorage(bucket, prefix)
    return LocalStorage(Path(location), create=create)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class LocalStorage:
    """A folder: inputs found recursively (hidden files and folders skipped), outputs written atomically."""

    def __init__(self, root: Path, create: bool = False):
        self.root = root
        if create:
            root.mkdir(parents=True, exist_ok=True)
        self.url = str(root)

    def path(self, key: str) -> Path:
        return self.root.joinpath(*key.split("/"))

    def describe(self, key: str) -> str:
        return str(self.path(key))

    def list(self, prefix: str = "", skip: Path | None = None) -> Iterator[Entry]:
        """Every file under the root (or ``prefix``), hidden ones and the folder ``skip`` left out."""
        top = self.path(prefix) if prefix else self.root
        skip_resolved = skip.resolve() if skip is not None else None
        for folder, dirs, files in os.walk(top):
            here = Path(folder)
            dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                             and (skip_resolved is None or (here / d).resolve() != skip_resolved))
            for name in sorted(files):
                if not name.startswith(".") and TEMP_MARK not in name:
                    yield Entry((here / name).relative_to(self.root).as_posix())

    def read(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def write(self, key: str, data: bytes, tag: str | None = None) -> None:
        """``data`` under ``key``, atomically: a temporary file in the same folder, renamed over it.
        Interrupted (Ctrl-C, a full disk), the temporary file is removed and ``key`` is as it was."""
        final = self.path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        temp = final.with_name(f".{final.name}{TEMP_MARK}{os.getpid()}-{secrets.token_hex(3)}")
        try:
            with open(temp, "wb") as f:
                f.write(data)
            os.replace(temp, final)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def tags(self, prefix: str = "") -> dict[str, str]:
        return {}  # a file keeps no tag: the manifest says what made it

    def manifest(self, key: str) -> "LocalManifest":
        return LocalManifest(self.path(key))

    def remove_stale_temporaries(self) -> int:
        """Temporary files left by a process that no longer runs (killed, not interrupted): removed."""
        removed = 0
        pattern = re.compile(re.escape(TEMP_MARK) + r"(\d+)-")
        for folder, _dirs, files in os.walk(self.root):
            for name in files:
                found = pattern.search(name)
                if found and not _running(int(found.group(1))):
                    (Path(folder) / name).unlink(missing_ok=True)
                    removed += 1
        return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalManifest:
    """A JSON-lines file appended to, one line a finished input, flushed to the OS as it is written."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")

    def add(self, line: str) -> None:
        self._file.write(line + "\n")
        self._file.flush()

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class GCSStorage:
    """A ``gs://bucket/prefix/``: objects listed with their MD5 (no download to know an input), outputs
    uploaded whole (an object appears only once complete) with their tag in the object's metadata.
    Credentials: Application Default Credentials (a Cloud Run Job's service account), or
    ``STORAGE_EMULATOR_HOST`` for an emulator. Needs the ``gcs`` extra (google-cloud-storage)."""

    def __init__(self, bucket: str, prefix: str):
        from google.cloud import storage  # the gcs extra: imported by whoever names a gs:// location

        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.url = f"gs://{bucket}/{self.prefix}"
        self._client = storage.Client()
        self._bucket = self._client.bucket(bucket)

    def describe(self, key: str) -> str:
        return self.url + key

    def list(self, prefix: str = "", skip: str | None = None) -> Iterator[Entry]:
        """Every object under the prefix (``skip``: a ``gs://`` location whose objects are left out)."""
        import base64

        full = self.prefix + prefix
        skipped = skip[len(f"gs://{self._bucket.name}/"):] if skip and skip.startswith(f"gs://{self._bucket.name}/") \
            else None
        for blob in self._client.list_blobs(self._bucket, prefix=full, fields="items(name,md5Hash),nextPageToken"):
            name = blob.name
            if name.endswith("/") or (skipped and name.startswith(skipped)):
                continue
            key = name[len(self.prefix):]
            if any(part.startswith(".") or TEMP_MARK in part for part in key[len(prefix):].split("/")):
                continue
            digest = "md5:" + base64.b64decode(blob.md5_hash).hex() if blob.md5_hash else None
            yield Entry(key, digest)

    def read(self, key: str) -> bytes:
        return self._bucket.blob(self.prefix + key).download_as_bytes()

    def write(self, key: str, data: bytes, tag: str | None = None) -> None:
        import mimetypes

        blob = self._bucket.blob(self.prefix + key)
        if tag is not None:
            blob.metadata = {TAG_KEY: tag}
        blob.upload_from_string(data, content_type=mimetypes.guess_type(key)[0] or "application/octet-stream")

    def exists(self, key: str) -> bool:
        return self._bucket.blob(self.prefix + key).exists()

    def tags(self, prefix: str = "") -> dict[str, str]:
        """Each object's tag under ``prefix`` (one listing, no download)."""
        tags = {}
        for blob in self._client.list_blobs(self._bucket, prefix=self.prefix + prefix,
                                            fields="items(name,metadata),nextPageToken"):
            tag = (blob.metadata or {}).get(TAG_KEY)
            if tag:
                tags[blob.name[len(self.prefix):]] = tag
        return tags

    def manifest(self, key: str) -> "GCSManifest":
        return GCSManifest(self, key)


class GCSManifest:
    """An object is written whole, never appended to: the task's lines are kept and the object
    rewritten at most every ``interval_s`` and at the end. A task killed in between loses only its
    last lines, which the outputs' tags make up for."""

    def __init__(self, storage: GCSStorage, key: str, interval_s: float = 5.0):
        import time

        self._time = time.monotonic
        self.storage, self.key, self.interval_s = storage, key, interval_s
        try:
            existing = storage.read(key).decode("utf-8")
        except Exception as exc:  # noqa: BLE001 - NotFound: a first run
            if type(exc).__name__ != "NotFound":
                raise
            existing = ""
        self.lines = [line for line in existing.splitlines() if line.strip()]
        self._saved = len(self.lines)
        self._last = self._time()

    def add(self, line: str) -> None:
        self.lines.append(line)
        if self._time() - self._last >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        if len(self.lines) != self._saved:
            self.storage.write(self.key, ("\n".join(self.lines) + "\n").encode("utf-8"))
            self._saved = len(self.lines)
        self._last = self._time()

    def close(self) -> None:
        self.flush()
