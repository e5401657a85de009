"""Run the real service under gunicorn on a free loopback port and measure it.

Shared by the server tests and the memory benchmark: start/stop the server,
sample the whole process tree's RSS, post images concurrently.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import psutil
import requests

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "data" / "fixtures"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tree_rss_mb(self) -> float:
        try:
            parent = psutil.Process(self.process.pid)
            procs = [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0.0
        total = 0
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total / 2**20

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def running_server(env: dict[str, str] | None = None, boot_timeout_s: float = 60.0, log_dir: Path | None = None,
                   edge: bool = False) -> Iterator[Server]:
    """gunicorn with ``env`` on a free port; with ``edge``, the service as deployed (``config/serve``:
    nginx on the port, gunicorn behind it). The result cache is off unless ``env``
    sets CACHE_BACKEND: tests and benchmarks measure the pipeline, not repeated answers."""
    port = free_port()
    full_env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "CACHE_BACKEND": "none", **(env or {})}
    log_dir = log_dir or Path(os.environ.get("TMPDIR", "/tmp"))
    log_path = log_dir / f"{'edge' if edge else 'gunicorn'}-{port}.log"
    command = (["config/serve"] if edge else
               [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "app.web.factory:create_app()"])
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env={**full_env, "PYTHON": sys.executable}, stdout=log,
                                stderr=subprocess.STDOUT)
    server = Server(proc, port, log_path)
    try:
        wait_healthy(server, boot_timeout_s)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def surviving_server(env: dict[str, str] | None = None, log_dir: Path | None = None) -> Iterator[Server]:
    """:func:`running_server` for hostile tests, checked when they are done: the same worker still
    serving (none crashed or hung), healthy, and no traceback or internal error in its log."""
    with running_server(env, log_dir=log_dir) as srv:
        pid = requests.get(srv.url + "/api/bg/status", timeout=10).json()["worker_pid"]
        yield srv
        status = requests.get(srv.url + "/api/bg/status", timeout=10).json()
        assert status["worker_pid"] == pid, "the worker was replaced: it crashed or hung"
        assert requests.get(srv.url + "/api/bg/health", timeout=10).status_code == 200
        log = srv.log()
        assert "Traceback" not in log and "internal_error" not in log, log[-3000:]


def wait_healthy(server: Server, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {server.process.returncode}:\n{server.log()}")
        try:
            if requests.get(server.url + "/api/bg/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"gunicorn not healthy after {timeout_s}s:\n{server.log()}")


def wait_until_busy(server: Server, requests_inside: int, timeout_s: float = 10.0) -> None:
    """Until at least ``requests_inside`` requests hold or wait for an inference slot (or the timeout)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        inference = requests.get(server.url + "/api/bg/status", timeout=5).json()["inference"]
        if inference["active"] + inference["waiting"] >= requests_inside:
            return
        time.sleep(0.02)


@dataclass
class Emulator:
    """A gcp-storage-emulator process: a real GCS JSON API server, in memory, with one bucket."""

    process: subprocess.Popen
    port: int
    bucket: str

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, prefix: str = "bgremove-cache/") -> dict[str, str]:
        """What the service needs to use it: CACHE_BACKEND=gcs on this bucket through this emulator."""
        return {"CACHE_BACKEND": "gcs", "STORAGE_BUCKET": self.bucket, "STORAGE_EMULATOR_HOST": self.host,
                "CACHE_PREFIX": prefix}

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def start_emulator(bucket: str = "bgremove-test", port: int | None = None, timeout_s: float = 30.0) -> Emulator:
    port = port or free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gcp_storage_emulator", "start", "--host", "127.0.0.1", "--port", str(port),
         "--default-bucket", bucket, "--in-memory", "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    emulator = Emulator(proc, port, bucket)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gcp-storage-emulator exited with {proc.returncode}")
        try:
            if requests.get(f"{emulator.host}/storage/v1/b/{bucket}", timeout=1).status_code == 200:
                return emulator
        except requests.RequestException:
            pass
        time.sleep(0.05)
    emulator.kill()
    raise RuntimeError(f"gcp-storage-emulator not answering after {timeout_s}s")


@contextmanager
def running_emulator(bucket: str = "bgremove-test") -> Iterator[Emulator]:
    emulator = start_emulator(bucket)
    try:
        yield emulator
    finally:
        emulator.kill()


@dataclass
class RssSampler:
    """Samples the server's process-tree RSS every ``interval_s`` in a thread."""

    server: Server
    interval_s: float = 0.05
    samples: list[float] = field(default_factory=list)

    def __enter__(self) -> "RssSampler":
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.server.tree_rss_mb())
            self._stop.wait(self.interval_s)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(self.server.tree_rss_mb())

    @property
    def peak_mb(self) -> float:
        return max(self.samples)


def fixture_images() -> list[Path]:
    return sorted((FIXTURES / "images").glob("*.jpg"))


def post_image(url: str, path: Path, endpoint: str = "/api/bg/remove", data: dict | None = None, timeout: float = 120):
    with open(path, "rb") as f:
        return requests.post(url + endpoint, files={"file": (path.name, f, "image/jpeg")}, data=data or {}, timeout=timeout)


ALL_EFFECTS = {"effects": '["blackwhite", "dither", "popart", "8bit"]'}


def concurrent_clients(
    url: str, clients: int, paths: list[Path], rounds: int = 1, endpoint: str = "/api/bg/remove", data: dict | None = None
) -> list[tuple[int, float]]:
    """``clients`` threads each send every image of ``paths`` ``rounds`` times; returns (status, seconds) per request."""
    results: list[tuple[int, float]] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client(offset: int) -> None:
        start.wait()
        order = paths[offset:] + paths[:offset]
        for _ in range(rounds):
            for path in order:
                t0 = time.perf_counter()
                status = post_image(url, path, endpoint, data).status_code
                with lock:
                    results.append((status, time.perf_counter() - t0))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
