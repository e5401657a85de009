"""The batch engine: a folder or a bucket prefix of images in, the same structure of results out.
Local folders and ``gs://`` prefixes go through it alike, each behind :mod:`app.cli.storage`.

- **The walk**: every image under the input (by extension, hidden files and the output's own folder
  left out), in key order; each output at the same relative path with the format's extension
  (``a/b.jpg`` -> ``a/b.png``; two inputs that would meet, ``b.jpg`` and ``b.png``, keep theirs:
  ``b.jpg.png``; several effects: ``b.dither.png``, ``b.popart.png``).
- **Sharding**: task ``i`` of ``n`` (Cloud Run Jobs' ``CLOUD_RUN_TASK_INDEX``/``CLOUD_RUN_TASK_COUNT``)
  takes the inputs whose key hashes to ``i`` modulo ``n``: the same share on every attempt, whatever
  the listing's order or the other tasks' progress.
- **Resuming**: an input is done when its outputs exist for the same input hash, options and
  deployment (the model file, its precision, the settings that change the pixels: the job key); it
  is skipped, and only what is missing is made (another model or ``EDGE_MATTING`` redoes it). The
  manifest says what was done: one JSON line per input (input, input hash, options as given and
  their key, the deployment, outputs, status, error, time, seconds, task), ``OUT/.bgremove/manifest.jsonl`` (one task) or ``manifest-task-NNNN.jsonl``.
  GCS objects also carry the job key in their metadata, so a task killed before its manifest was
  saved does not redo what it finished.
- **Atomic writes**: an output appears whole or not at all (the storage's write); Ctrl-C is held off
  while an input's outputs and its manifest line are written, so neither is ever half there.
- **Errors**: an input that fails (corrupt, too large, refused) is recorded with the error code and
  message the API would answer, and the batch goes on; the summary lists them.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import queue
import signal
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Callable, Iterator

from app.cli.flags import Request
from app.cli.local import Outcome
from app.cli.storage import Storage, sha256_digest
from app.pipeline.imaging import ALLOWED_EXTENSIONS, OUTPUT_FORMATS

MANIFEST_DIR = ".bgremove/"


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not (self.count >= 1 and 0 <= self.index < self.count):
            raise ValueError(f"task {self.index} of {self.count}: expected 0 <= index < count")

    def takes(self, key: str) -> bool:
        return self.count == 1 or int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) % self.count == self.index

    @property
    def manifest(self) -> str:
        return MANIFEST_DIR + ("manifest.jsonl" if self.count == 1 else f"manifest-task-{self.index:04d}.jsonl")


@dataclass
class Item:
    key: str
    outputs: dict[str, str]  # image name (``image`` or an effect) -> output key
    digest: str | None = None  # the input's hash, when known before reading it


@dataclass
class Failure:
    input: str
    code: str
    message: str


@dataclass
class Summary:
    source: str
    destination: str
    inputs: int = 0  # images in this task's share
    done: int = 0  # made in this run
    skipped: int = 0  # already done by an earlier run
    failed: int = 0
    interrupted: bool = False
    stopped: str | None = None  # why the batch stopped before its end (the service refused the API key)
    seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)
    manifest: str = ""
    task: dict[str, int] = field(default_factory=lambda: {"index": 0, "count": 1})
    mode: str = "in-process"
    workers: int = 1
    retries: dict[str, int] = field(default_factory=dict)

    @property
    def remaining(self) -> int:
        return self.inputs - self.done - self.skipped - self.failed

    @property
    def images_per_s(self) -> float:
        return self.done / self.seconds if self.seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.update(remaining=self.remaining, images_per_s=round(self.images_per_s, 3), seconds=round(self.seconds, 3))
        return out


class Runner:
    """Where inputs are processed: ``submit(token, data)``; ``next()`` -> ``(token, Outcome)`` as
    each finishes; ``capacity`` inputs in flight at most; ``abort()`` drops what is in flight."""

    capacity = 1

    def submit(self, token: Any, data: bytes) -> None: ...
    def next(self) -> tuple[Any, Outcome]: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...


class InlineRunner(Runner):
    """In this thread, one input at a time (``--workers 1``, the default)."""

    def __init__(self, process: Callable[[bytes], Outcome]):
        self.process = process
        self._done: deque[tuple[Any, Outcome]] = deque()

    def submit(self, token: Any, data: bytes) -> None:
        self._done.append((token, self.process(data)))

    def next(self) -> tuple[Any, Outcome]:
        return self._done.popleft()

    def close(self) -> None:
        pass

    def abort(self) -> None:
        self._done.clear()


class PoolRunner(Runner):
    """``workers`` processes (multiprocessing's forkserver, the pipeline's modules preloaded once and
    shared), each with its own model, two inputs queued per worker."""

    def __init__(self, workers: int, initializer: Callable[..., None], initargs: tuple, work: Callable[[bytes], Outcome]):
        import multiprocessing

        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        context = multiprocessing.get_context(method)
        if method == "forkserver":
            context.set_forkserver_preload(["app.cli.local", "app.pipeline.runtime", "app.pipeline.run"])
        self.capacity = workers * 2
        self._work = work
        self._results: queue.Queue = queue.Queue()
        self._pool = context.Pool(workers, initializer=initializer, initargs=initargs)

    def submit(self, token: Any, data: bytes) -> None:
        self._pool.apply_async(self._work, (data,), callback=lambda outcome: self._results.put((token, outcome)),
                               error_callback=lambda exc: self._results.put(
                                   (token, Outcome(code="internal_error", message=f"{type(exc).__name__}: {exc}"))))

    def next(self) -> tuple[Any, Outcome]:
        return self._results.get()

    def close(self) -> None:
        self._pool.close()
        self._pool.join()

    def abort(self) -> None:
        self._pool.terminate()
        self._pool.join()


class ThreadRunner(Runner):
    """``threads`` daemon threads (``--server``: each waits on the network, not the CPU)."""

    def __init__(self, threads: int, process: Callable[[bytes, str], Outcome], stop: threading.Event | None = None):
        self.capacity = threads
        self._process = process
        self._stop = stop or threading.Event()
        self._todo: queue.Queue = queue.Queue()
        self._results: queue.Queue = queue.Queue()
        self._threads = [threading.Thread(target=self._run, daemon=True, name=f"bgremove-{n}") for n in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self) -> None:
        while True:
            job = self._todo.get()
            if job is None:
                return
            token, data = job
            try:
                outcome = self._process(data, PurePosixPath(token.key).name)
            except Exception as exc:  # noqa: BLE001 - one input's failure, recorded; the batch goes on
                outcome = Outcome(code="internal_error", message=f"{type(exc).__name__}: {exc}")
            self._results.put((token, outcome))

    def submit(self, token: Any, data: bytes) -> None:
        self._todo.put((token, data))

    def next(self) -> tuple[Any, Outcome]:
        return self._results.get()

    def close(self) -> None:
        for _ in self._threads:
            self._todo.put(None)
        for thread in self._threads:
            thread.join()

    def abort(self) -> None:
        """Nothing more is sent; waits in progress end; answers in flight are dropped (daemon threads:
        the process does not wait for them)."""
        self._stop.set()
        while True:
            try:
                self._todo.get_nowait()
            except queue.Empty:
                break
        for _ in self._threads:
            self._todo.put(None)


class Progress:
    """What the batch reports as it goes (the command line's progress bar, or nothing)."""

    def start(self, total: int, skipped: int) -> None: ...
    def advance(self, failed: int) -> None: ...
    def close(self) -> None: ...


def job_key(digest: str, options_key: dict[str, Any], deployment: dict[str, Any] | None = None) -> str:
    """What decides an output: the input's hash, the options (as the result cache keys them) and the
    deployment that makes it (the model file, its precision, the settings that change the pixels:
    app.cli.local.deployment, or what a server says of its model)."""
    text = json.dumps({"input": digest, "options": options_key, "deployment": deployment or {}},
                      sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def options_digest(options_key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(options_key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def is_image(key: str) -> bool:
    return PurePosixPath(key).suffix.lower().lstrip(".") in ALLOWED_EXTENSIONS


def output_names(keys: list[str], request: Request) -> dict[str, dict[str, str]]:
    """Each input key's output keys (see the module's rule)."""
    extension = OUTPUT_FORMATS[request.options.format][2]
    effects = list(getattr(request.options, "effect_params", {}) or {})
    names = effects if len(effects) > 1 else ["image" if not effects else effects[0]]

    def base(key: str, keep_suffix: bool) -> str:
        path = PurePosixPath(key)
        return str(path) if keep_suffix else str(path.with_suffix(""))

    plain = {key: base(key, False) for key in keys}
    seen: dict[str, int] = {}
    for stem in plain.values():
        seen[stem] = seen.get(stem, 0) + 1
    out = {}
    for key in keys:
        stem = plain[key] if seen[plain[key]] == 1 else base(key, True)
        if len(names) > 1:
            out[key] = {name: f"{stem}.{name}.{extension}" for name in names}
        else:
            out[key] = {names[0]: f"{stem}.{extension}"}
    return out


class Interrupts:
    """Ctrl-C (SIGINT) as :class:`KeyboardInterrupt`, except while :meth:`held`: then it is kept and
    raised when the held section ends, so that an input's outputs and its manifest line are written
    together or not at all. (A Python signal handler always runs in the main thread, whichever
    thread the signal reached: a thread's signal mask would not be enough.)"""

    def __init__(self) -> None:
        self._held = 0  # nesting depth of held sections
        self._pending = False
        self._previous: Any = None

    def __enter__(self) -> "Interrupts":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handler(self, signum: int, frame: Any) -> None:
        if self._held:
            self._pending = True
        else:
            raise KeyboardInterrupt

    @contextmanager
    def held(self) -> Iterator[None]:
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
        if not self._held and self._pending:
            self._pending = False
            raise KeyboardInterrupt


class Batch:
    """One task's share of a batch: :meth:`plan` it, then :meth:`run` it with a :class:`Runner`."""

    def __init__(self, source: Storage, destination: Storage, request: Request, shard: Shard = Shard(),
                 skip: Any = None, deployment: dict[str, Any] | None = None):
        self.source, self.destination, self.request, self.shard = source, destination, request, shard
        self.deployment = deployment or {}
        self.options_key = request.options_key
        self.options_hash = options_digest(self.options_key)
        self._interrupts = Interrupts()
        self._skip = skip  # the output's own location inside the input's (never read as input)
        self.summary = Summary(source.url, destination.url, manifest=destination.describe(shard.manifest),
                               task={"index": shard.index, "count": shard.count})

    def plan(self) -> tuple[list[Item], int]:
        """This task's inputs that are not done yet, and how many are (skipped)."""
        entries = [e for e in self.source.list(skip=self._skip) if is_image(e.key)]
        outputs = output_names([e.key for e in entries], self.request)
        mine = [Item(e.key, outputs[e.key], e.digest) for e in entries if self.shard.takes(e.key)]
        self.summary.inputs = len(mine)
        records = self._manifest_records()
        existing = {e.key for e in self.destination.list()}
        tags = self.destination.tags()
        todo, skipped = [], 0
        for item in mine:
            try:
                digest = item.digest or self._digest(item.key)
            except OSError:
                todo.append(item)  # its read fails again in the run, and is reported there
                continue
            item.digest = digest
            key = job_key(digest, self.options_key, self.deployment)
            made = list(item.outputs.values())
            by_tag = all(tags.get(out) == key for out in made)
            record = records.get(item.key)
            by_record = record is not None and record.get("key") == key and record.get("status") == "done" \
                and all(out in existing for out in made)
            if by_tag or by_record:
                skipped += 1
            else:
                todo.append(item)
        self.summary.skipped = skipped
        return todo, skipped

    def _digest(self, key: str) -> str:
        return sha256_digest(self.source.read(key))

    def _manifest_records(self) -> dict[str, dict[str, Any]]:
        """Every earlier record of every task (the latest per input)."""
        records: dict[str, dict[str, Any]] = {}
        for entry in sorted(self.destination.list(MANIFEST_DIR), key=lambda e: e.key):
            if not entry.key.endswith(".jsonl"):
                continue
            for line in self.destination.read(entry.key).decode("utf-8", "replace").splitlines():
                try:
                    record = json.loads(line)
                    records[record["input"]] = record
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut short by a kill: that input is checked again
        return records

    def run(self, runner: Runner, progress: Progress | None = None) -> Summary:
        """Plan, then process what is not done, ``runner.capacity`` inputs in flight; Ctrl-C stops it
        (what is in flight is dropped, nothing half-written), the summary says what is left."""
        progress = progress or Progress()
        started = time.perf_counter()
        manifest = None
        with Interrupts() as interrupts:
            self._interrupts = interrupts
            try:
                todo, skipped = self.plan()
                progress.start(len(todo), skipped)
                manifest = self.destination.manifest(self.shard.manifest)
                pending, inflight = deque(todo), 0
                while pending or inflight:
                    while pending and inflight < runner.capacity:
                        item = pending.popleft()
                        try:
                            data = self.source.read(item.key)
                        except OSError as exc:  # gone since the listing, unreadable: this input's failure
                            self._finish(item, Outcome(code="unreadable", message=str(exc)), manifest)
                            progress.advance(self.summary.failed)
                            continue
                        if item.digest is None or item.digest.startswith("sha256:"):
                            item.digest = sha256_digest(data)  # what is processed is what is recorded
                        runner.submit(item, data)
                        inflight += 1
                    if not inflight:
                        continue
                    item, outcome = runner.next()
                    inflight -= 1
                    self._finish(item, outcome, manifest)
                    progress.advance(self.summary.failed)
                    if outcome.fatal:
                        self.summary.stopped = f"{outcome.code}: {outcome.message}"
                        runner.abort()
                        break
                else:
                    runner.close()
            except KeyboardInterrupt:
                self.summary.interrupted = True
                runner.abort()
            finally:
                try:
                    with interrupts.held():
                        if manifest is not None:
                            manifest.close()
                except KeyboardInterrupt:
                    self.summary.interrupted = True
                progress.close()
                self.summary.seconds = time.perf_counter() - started
        return self.summary

    def _finish(self, item: Item, outcome: Outcome, manifest: Any) -> None:
        if outcome.code == "interrupted":
            raise KeyboardInterrupt
        key = job_key(item.digest or "", self.options_key, self.deployment)
        record: dict[str, Any] = {
            "input": item.key, "input_hash": item.digest, "options": self.request.form,
            "options_key": self.options_hash, "deployment": self.deployment, "key": key,
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(outcome.seconds, 3), "task": self.shard.index,
        }
        with self._interrupts.held():
            if outcome.ok:
                assert outcome.images is not None
                missing = [name for name in item.outputs if name not in outcome.images]
                if missing:
                    outcome = Outcome(code="internal_error", message=f"no image {missing[0]!r} in the result")
                else:
                    for name, out in item.outputs.items():
                        self.destination.write(out, outcome.images[name], tag=key)
                    record.update(status="done", outputs=list(item.outputs.values()))
                    self.summary.done += 1
            if not outcome.ok:
                record.update(status="failed", code=outcome.code, message=outcome.message)
                self.summary.failed += 1
                self.summary.failures.append(Failure(item.key, outcome.code or "error", outcome.message or ""))
            manifest.add(json.dumps(record, separators=(",", ":"), ensure_ascii=False))

