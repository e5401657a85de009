"""``--server URL``: the same batch sent to a running service (one instance or many behind a load
balancer) instead of the pipeline in this process.

Each input is one POST of the same form the flags made to the endpoint of its kind of result. The
service's backpressure is honoured: a 503 or 429 is retried after its ``Retry-After`` (or an
exponential back-off when it has none), stretched by a random 0-50% so that clients shed together
do not come back together; these waits are bounded by ``max_wait_s`` per input, not by a count.
Network errors (a refused or reset connection, a timeout, a 502/504 from a proxy) are retried
``retries`` times with jittered exponential back-off. Any other answer is final: a 4xx is the
input's error, with the service's code and message. Each input is answered once and written once
by the batch engine, so a file is never lost nor written twice.
"""

from __future__ import annotations

import base64
import email.utils
import json
import mimetypes
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import urllib3

from app.cli.flags import BACKGROUND_FILE, Request
from app.cli.local import Outcome

SHED = (429, 503)
FATAL = (401, 403)  # the API key: every other input would be refused the same way
GATEWAY = (502, 504)  # a proxy or load balancer in front of the instances: the instance was not reached


@dataclass
class RetryCounts:
    shed: int = 0  # 503/429 answers waited out
    network: int = 0  # connection errors and gateway answers retried
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, shed: int = 0, network: int = 0) -> None:
        with self._lock:
            self.shed += shed
            self.network += network


class Remote:
    """Posts inputs to ``url`` as ``request`` says; thread-safe (one connection pool, ``concurrency`` wide)."""

    def __init__(self, url: str, request: Request, *, api_key: str | None = None, concurrency: int = 4,
                 retries: int = 5, max_wait_s: float = 600.0, timeout_s: float = 300.0,
                 stop: threading.Event | None = None, rng: random.Random | None = None):
        self.url = url.rstrip("/") + request.result.endpoint
        self.request = request
        self.retries, self.max_wait_s = retries, max_wait_s
        self.headers = {"Accept": "application/json" if request.result.name == "process" else "*/*",
                        "User-Agent": "bgremove-cli"}
        if api_key:
            self.headers["X-API-Key"] = api_key
        self.http = urllib3.PoolManager(num_pools=2, maxsize=max(1, concurrency), block=False, retries=False,
                                        timeout=urllib3.Timeout(connect=10.0, read=timeout_s))
        self.stop = stop or threading.Event()
        self.counts = RetryCounts()
        self._rng = rng or random.Random()

    def check(self) -> None:
        """One GET of the service's health before the batch: a wrong URL fails at once, not per file."""
        base = self.url[: -len(self.request.result.endpoint)]
        try:
            resp = self.http.request("GET", base + "/api/bg/health", headers=self.headers, timeout=10.0)
        except urllib3.exceptions.HTTPError as exc:
            raise ConnectionError(f"{base}: cannot reach the service ({_reason(exc)})") from None
        if resp.status not in (200, 503):
            raise ConnectionError(f"{base}/api/bg/health answered {resp.status}: is this the service's URL?")

    def deployment(self) -> dict[str, Any]:
        """What the service says of its model (GET /model-info: adapter, model, file's sha256), part of
        the batch's resume key: outputs made by another model are redone. Empty when it does not say."""
        base = self.url[: -len(self.request.result.endpoint)]
        try:
            resp = self.http.request("GET", base + "/model-info", headers=self.headers, timeout=10.0)
            info = json.loads(resp.data) if resp.status == 200 else {}
        except (urllib3.exceptions.HTTPError, ValueError):
            return {}
        if not isinstance(info, dict):
            return {}
        return {"server_" + name: info.get(name) for name in ("adapter", "model", "file_sha256")}

    def process(self, data: bytes, filename: str) -> Outcome:
        started = time.perf_counter()
        fields: dict[str, object] = dict(self.request.form)
        fields["file"] = (filename, data, mimetypes.guess_type(filename)[0] or "application/octet-stream")
        if self.request.background is not None:
            fields[BACKGROUND_FILE] = (self.request.background_name or "background", self.request.background)
        if self.request.result.name == "process":
            fields["response"] = "json"  # every effect's image in one answer
        network = shed_tries = 0
        waited = 0.0
        while True:
            if self.stop.is_set():
                return Outcome(code="interrupted", message="stopped before the service answered")
            try:
                resp = self.http.request("POST", self.url, fields=fields, headers=self.headers)
            except urllib3.exceptions.HTTPError as exc:
                failure = f"network error: {_reason(exc)}"
                resp = None
            else:
                failure = f"{resp.status} from a proxy (no instance answered)" if resp.status in GATEWAY else None
            if failure is not None:
                network += 1
                if network > self.retries:
                    return Outcome(code="network_error", message=f"{failure} (after {self.retries} retries)",
                                   seconds=time.perf_counter() - started)
                self.counts.add(network=1)
                self._sleep(min(30.0, 0.5 * 2 ** (network - 1)) * self._rng.uniform(0.5, 1.5))
                continue
            assert resp is not None
            if resp.status in SHED:
                shed_tries += 1
                delay = (_retry_after(resp.headers.get("Retry-After"))
                         or min(30.0, 0.5 * 2 ** min(shed_tries - 1, 6))) * self._rng.uniform(1.0, 1.5)
                if waited + delay > self.max_wait_s:
                    code, message = _error(resp)
                    return Outcome(code=code, message=f"{message} (still refused after waiting {waited:.0f} s)",
                                   seconds=time.perf_counter() - started)
                self.counts.add(shed=1)
                waited += delay
                self._sleep(delay)
                continue
            if resp.status != 200:
                code, message = _error(resp)
                return Outcome(code=code, message=message, seconds=time.perf_counter() - started,
                               fatal=resp.status in FATAL)
            return self._images(resp, time.perf_counter() - started)

    def _images(self, resp: urllib3.BaseHTTPResponse, seconds: float) -> Outcome:
        width, height = int(resp.headers.get("X-Width", 0) or 0), int(resp.headers.get("X-Height", 0) or 0)
        if self.request.result.name != "process":
            return Outcome({"image": resp.data}, seconds=seconds, width=width, height=height)
        body = json.loads(resp.data)
        images = {name: base64.b64decode(text) for name, text in body["images"].items()}
        return Outcome(images, seconds=seconds, width=body.get("width", 0), height=body.get("height", 0))

    def _sleep(self, seconds: float) -> bool:
        """Wait ``seconds`` unless stopped first (then False)."""
        return not self.stop.wait(seconds)


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error(resp: urllib3.BaseHTTPResponse) -> tuple[str, str]:
    """The service's ``{"error": {"code", "message"}}``, or the status for anything else."""
    try:
        error = json.loads(resp.data)["error"]
        return str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        return f"http_{resp.status}", f"HTTP {resp.status}: {resp.data[:200].decode('utf-8', 'replace').strip()}"


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or exc
    return str(reason).split(": ", 1)[-1][:200] or type(exc).__name__
