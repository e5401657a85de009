"""Rate limits that hold (issue 12, point 6), against real gunicorn servers and a real redis-server.

- Only a validated API key names a bucket: with ``API_KEYS`` unset, invented keys share the
  client IP's budget.
- Failed API-key checks are limited per client IP (``AUTH_FAILURE_LIMIT``): over the budget a
  request with a key gets 429 before its key is compared; other clients keep working.
- ``RATE_LIMIT_STORAGE_URI=redis://…``: two workers, and two instances, spend one budget exactly;
  a Redis outage (hung, then dead) neither fails requests nor holds them up; the shared budget
  is enforced again once Redis is back on the same port.

The requests are cheap on purpose: ``POST /api/bg/remove`` without a body is counted by the
limiter and answers 400 ``missing_file`` in about a millisecond. Each request names its client
with ``X-Forwarded-For`` (``PROXY_HOPS=1``), so every test has buckets of its own.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass

import pytest
import redis
import requests

from tests.serverkit import free_port, running_server

N = 6  # the shared budget: RATE_LIMIT=6/minute
KEY = "client-key-0123456789"
OTHER_KEY = "other-key-0123456789"
AUTH_BUDGET = 4  # AUTH_FAILURE_LIMIT=4/minute
HANG_BOUND_S = 2.0  # the one timing assertion: a request during an outage is not held up (a hang check)


# -- a real redis-server -------------------------------------------------------------------------

@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=1, socket_connect_timeout=1)

    def start(self, timeout_s: float = 10.0) -> None:
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"redis-server exited with {self.process.returncode}"
            try:
                if self.client().ping():
                    return
            except redis.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server not answering on port {self.port} after {timeout_s}s")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def counter(self, client_ip: str) -> int:
        """The shared request counter of ``client_ip`` (every hit increments it, refused ones too)."""
        conn = self.client()
        keys = list(conn.scan_iter(match=f"*/ip:{client_ip}/processing/*"))
        return sum(int(conn.get(k) or 0) for k in keys)


REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@pytest.fixture(scope="module")
def redis_server():
    # Missing means failed, not skipped: `make setup-dev` installs it.
    assert os.access(REDIS_SERVER, os.X_OK), "redis-server is missing: run `make setup-dev`"
    server = RedisServer(free_port())
    server.start()
    yield server
    server.kill()


# -- HTTP over connections pinned to one worker ----------------------------------------------------

class Pinned:
    """One keep-alive connection; gunicorn serves all of it in the worker that accepted it."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.conn.connect()
        self.local = self.conn.sock.getsockname()
        self.pid = self.get("/api/bg/status")[2]["worker_pid"]

    def send(self, method: str, path: str, headers: dict[str, str] | None = None):
        """(status, headers, JSON body, seconds); asserts the answer came over this same connection."""
        started = time.perf_counter()
        self.conn.request(method, path, headers=headers or {})
        resp = self.conn.getresponse()
        body = resp.read()
        seconds = time.perf_counter() - started
        assert self.conn.sock is not None and self.conn.sock.getsockname() == self.local, "connection was closed"
        return resp.status, resp.headers, json.loads(body) if body else None, seconds

    def get(self, path: str):
        return self.send("GET", path)

    def cheap(self, client_ip: str, key: str | None = None):
        """A processing request that the limiter counts and the app answers 400 at once."""
        headers = {"X-Forwarded-For": client_ip, "Content-Length": "0"}
        if key is not None:
            headers["X-API-Key"] = key
        return self.send("POST", "/api/bg/remove", headers)

    def close(self) -> None:
        self.conn.close()


def pin_workers(port: int, workers: int, timeout_s: float = 90.0) -> list[Pinned]:
    """One connection per worker of the server on ``port`` (new connections land on either; a worker
    still loading its model takes none yet, for longer on a busy machine: tried until ``timeout_s``)."""
    pinned: dict[int, Pinned] = {}
    deadline, attempts = time.monotonic() + timeout_s, 0
    while time.monotonic() < deadline:
        conn = Pinned(port)
        attempts += 1
        if conn.pid in pinned:
            conn.close()
            time.sleep(0.02)
        else:
            pinned[conn.pid] = conn
        if len(pinned) == workers:
            return list(pinned.values())
    raise AssertionError(f"only {len(pinned)} of {workers} workers answered in {attempts} connections, {timeout_s:g} s")


def spread(connections: list[Pinned], total: int, client_ip: str, fresh_key: bool = False):
    """``total`` cheap requests from ``client_ip``, sent at once from one thread per connection;
    returns [(status, headers, body, seconds)]. ``fresh_key``: each with a new random X-API-Key."""
    results, errors = [], []
    lock = threading.Lock()
    start = threading.Barrier(len(connections))

    def run(conn: Pinned, count: int) -> None:
        try:
            start.wait()
            for _ in range(count):
                answer = conn.cheap(client_ip, uuid.uuid4().hex if fresh_key else None)
                with lock:
                    results.append(answer)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    shares = [total // len(connections) + (i < total % len(connections)) for i in range(len(connections))]
    threads = [threading.Thread(target=run, args=(c, s)) for c, s in zip(connections, shares)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == total
    return results


def served(results) -> int:
    """How many got through the limiter (400 missing_file); the others must be proper 429s."""
    for status, headers, body, _ in results:
        assert status in (400, 429), (status, body)
        if status == 429:
            assert body["error"]["code"] == "too_many_requests" and 1 <= int(headers["Retry-After"]) <= 60
        else:
            assert body["error"]["code"] == "missing_file"
    return sum(1 for status, *_ in results if status == 400)


@pytest.fixture(scope="module")
def fleet(redis_server, tmp_path_factory):
    """Two instances of two workers each, sharing one Redis; no API keys."""
    env = {"WEB_CONCURRENCY": "2", "RATE_LIMIT": f"{N}/minute", "RATE_LIMIT_STORAGE_URI": redis_server.uri,
           "PROXY_HOPS": "1"}
    logs = tmp_path_factory.mktemp("fleet-logs")
    with ExitStack() as stack:
        servers = [stack.enter_context(running_server(env, log_dir=logs)) for _ in range(2)]
        yield servers


def fleet_connections(fleet) -> list[Pinned]:
    return [conn for srv in fleet for conn in pin_workers(srv.port, 2)]


# -- buckets -------------------------------------------------------------------------------------

def test_unvalidated_api_keys_name_no_bucket(make_app):
    """API_KEYS unset: a fresh random X-API-Key per request is still the same client (its IP)."""
    client = make_app(rate_limit="3/minute", proxy_hops=1).test_client()

    def send(ip, key):
        return client.post("/api/bg/remove", headers={"X-Forwarded-For": ip, "X-API-Key": key}).status_code

    assert [send("203.0.113.10", uuid.uuid4().hex) for _ in range(6)] == [400, 400, 400, 429, 429, 429]
    assert send("203.0.113.11", uuid.uuid4().hex) == 400  # another client has its own budget


def test_one_budget_per_client_across_processing_endpoints_and_free_preflights(make_app):
    client = make_app(rate_limit="3/minute", proxy_hops=1, cors_origins=("https://shop.example",)).test_client()
    ip = {"X-Forwarded-For": "203.0.113.20"}
    for _ in range(5):  # CORS preflights cost nothing
        pre = client.options("/api/bg/remove", headers={**ip, "Origin": "https://shop.example",
                                                        "Access-Control-Request-Method": "POST"})
        assert pre.status_code == 200
    statuses = [client.post(path, headers=ip).status_code
                for path in ("/api/bg/remove", "/api/bg/change_color", "/api/v2/process", "/remove-background")]
    assert statuses == [400, 400, 400, 429]  # one budget, not one per endpoint


# -- failed authentication --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def keyed_server(redis_server, tmp_path_factory):
    env = {"WEB_CONCURRENCY": "2", "API_KEYS": f"{KEY},{OTHER_KEY}", "AUTH_FAILURE_LIMIT": f"{AUTH_BUDGET}/minute",
           "RATE_LIMIT_STORAGE_URI": redis_server.uri, "PROXY_HOPS": "1"}
    with running_server(env, log_dir=tmp_path_factory.mktemp("keyed-logs")) as srv:
        yield srv


def test_failed_api_key_checks_are_limited_per_client_across_workers(keyed_server):
    workers = pin_workers(keyed_server.port, 2)
    attacker, other = "198.51.100.30", "198.51.100.31"
    guesses = [workers[i % 2].cheap(attacker, f"guess-{i:04d}-0123456789") for i in range(2 * AUTH_BUDGET + 2)]
    statuses = [status for status, *_ in guesses]
    # One budget over both workers (through Redis): AUTH_BUDGET failures, then 429s.
    assert statuses == [401] * AUTH_BUDGET + [429] * (AUTH_BUDGET + 2), statuses
    assert guesses[0][2]["error"] == {"code": "unauthorized", "message": "invalid API key"}
    for status, headers, body, _ in guesses[AUTH_BUDGET:]:
        assert body["error"]["code"] == "too_many_requests" and "failed API key" in body["error"]["message"]
        assert 1 <= int(headers["Retry-After"]) <= 60
    # Over the budget the key is not compared: the right key from that client gets 429 too.
    for conn in workers:
        assert conn.cheap(attacker, KEY)[0] == 429
        assert conn.cheap(attacker)[0] == 401  # no key: nothing to guess, still "API key required"
        assert conn.get("/api/bg/health")[0] == 200
    # Valid keys from other clients keep working, and their own failures have their own budget.
    for conn in workers:
        assert conn.cheap(other, KEY)[0] == 400 and conn.cheap(other, OTHER_KEY)[0] == 400
    assert workers[0].cheap(other, "wrong-key-0123456789")[0] == 401
    # Successes cost nothing: many valid requests never lock a client out.
    assert [workers[i % 2].cheap("198.51.100.32", KEY)[0] for i in range(3 * AUTH_BUDGET)] == [400] * (3 * AUTH_BUDGET)
    for conn in workers:
        conn.close()


# -- one budget through Redis ------------------------------------------------------------------------

def test_two_workers_share_one_budget_exactly(fleet, redis_server):
    workers = pin_workers(fleet[0].port, 2)  # both workers of one instance
    results = spread(workers, 3 * N, "192.0.2.1", fresh_key=True)  # random keys: API_KEYS unset, same bucket
    assert served(results) == N  # per-worker counters would have let 2N through
    assert redis_server.counter("192.0.2.1") == 3 * N  # every request was counted in Redis
    for conn in workers:
        conn.close()


def test_two_instances_share_one_budget_exactly(fleet, redis_server):
    connections = fleet_connections(fleet)  # 2 instances x 2 workers
    results = spread(connections, 3 * N, "192.0.2.2")
    assert served(results) == N  # per-instance counters would have let 2N (per-worker 4N) through
    assert redis_server.counter("192.0.2.2") == 3 * N
    for conn in connections:
        conn.close()


def test_redis_outage_neither_fails_nor_holds_up_requests_and_limits_recover(fleet, keyed_server, redis_server):
    connections = fleet_connections(fleet)
    assert served(spread(connections, 3 * N, "192.0.2.3")) == N  # shared budget before the outage
    for conn in connections:
        conn.close()
    latencies = {}
    try:
        # Redis hangs (stopped: the kernel still accepts connections, nothing answers), then dies.
        def hang() -> None:
            redis_server.process.send_signal(signal.SIGSTOP)

        for phase, client_ip, outage in (("hung", "192.0.2.4", hang), ("dead", "192.0.2.5", redis_server.kill)):
            outage()
            # Fresh connections per phase (gunicorn closes keep-alive connections idle for 5 s).
            connections, keyed = fleet_connections(fleet), pin_workers(keyed_server.port, 2)
            # 5N requests over 4 workers: each worker sees more than N of them.
            results = spread(connections, 5 * N, client_ip)
            # Served, never failed or refused wholesale: each worker counts in its own memory
            # meanwhile, so the limit still holds, per worker (exactly N each).
            assert served(results) == 4 * N, phase
            # Failed-auth limits fall back the same way; valid keys are served.
            keyed_results = []
            for i in range(3):
                for conn in keyed:
                    keyed_results.append((conn.cheap(client_ip, f"wrong-{phase}-{i}-0123456789"), 401))
                    keyed_results.append((conn.cheap(client_ip, KEY), 400))
            assert [answer[0] for answer, _ in keyed_results] == [want for _, want in keyed_results], phase
            latencies[phase] = max(seconds for *_, seconds in results + [a for a, _ in keyed_results])
            for srv in (*fleet, keyed_server):
                assert requests.get(srv.url + "/api/bg/health", timeout=5).status_code == 200
            for conn in connections + keyed:
                conn.close()
        print("worst request latency while Redis was "
              + ", ".join(f"{phase}: {seconds * 1000:.0f} ms" for phase, seconds in latencies.items()))
        # Nothing waited on Redis for longer than its short timeouts (a hang check, not a benchmark).
        assert max(latencies.values()) < HANG_BOUND_S, latencies
    finally:
        redis_server.kill()
        redis_server.start()  # back on the same port, empty
    # Recovery: each worker goes back to Redis at its next probe (exponential back-off from 1 s).
    # Poll with fresh clients until a whole round is counted in Redis and the budget is shared again.
    deadline = time.monotonic() + 45
    rounds = 0
    while True:
        rounds += 1
        client_ip = f"192.0.2.{100 + rounds}"
        connections = fleet_connections(fleet)
        results = spread(connections, 3 * N, client_ip)
        for conn in connections:
            conn.close()
        if redis_server.counter(client_ip) == 3 * N:  # every request of the round went through Redis
            assert served(results) == N
            break
        assert time.monotonic() < deadline, "the shared budget did not come back within 45 s"
        time.sleep(0.5)
    print(f"shared budget enforced again after {rounds} round(s)")


def test_boot_with_redis_unreachable_still_serves(tmp_path):
    """A store that is down at boot is no reason not to start: requests are limited per worker."""
    env = {"RATE_LIMIT": "2/minute", "RATE_LIMIT_STORAGE_URI": f"redis://127.0.0.1:{free_port()}/0"}
    with running_server(env, log_dir=tmp_path) as srv:
        statuses = [requests.post(srv.url + "/api/bg/remove", timeout=10).status_code for _ in range(4)]
        assert statuses == [400, 400, 429, 429]
        assert "falling back to in-memory storage" in srv.log()


def test_storage_settings_are_validated_at_boot():
    from config import ConfigError, Settings

    s = Settings.from_env({"RATE_LIMIT_STORAGE_URI": "redis://:secret@cache.internal:6380/2",
                           "RATE_LIMIT_STORAGE_TIMEOUT_S": "0.5", "AUTH_FAILURE_LIMIT": "5/minute;50/hour"})
    assert (s.rate_limit_storage_uri, s.rate_limit_storage_timeout_s) == ("redis://:secret@cache.internal:6380/2", 0.5)
    assert s.auth_failure_limit == "5/minute;50/hour"
    d = Settings.from_env({})
    assert (d.rate_limit_storage_uri, d.rate_limit_storage_timeout_s, d.auth_failure_limit) == (
        "memory://", 0.25, "10/minute")
    for env, variable in (({"RATE_LIMIT_STORAGE_URI": "memcached://:secret@host"}, "RATE_LIMIT_STORAGE_URI"),
                          ({"RATE_LIMIT_STORAGE_URI": "redis.internal:6379"}, "RATE_LIMIT_STORAGE_URI"),
                          ({"RATE_LIMIT_STORAGE_TIMEOUT_S": "0"}, "RATE_LIMIT_STORAGE_TIMEOUT_S"),
                          ({"AUTH_FAILURE_LIMIT": "ten a minute"}, "AUTH_FAILURE_LIMIT")):
        with pytest.raises(ConfigError, match=f"^{variable}:") as err:
            Settings.from_env(env)
        assert "secret" not in str(err.value)  # a Redis URI's password is never echoed


def test_behind_the_edge_each_client_has_its_own_bucket(tmp_path):
    """As deployed behind a platform's proxy (Cloud Run's front, then config/serve's nginx:
    PROXY_HOPS=2), the client is the address the outer proxy saw, not nginx nor one it forged."""
    env = {"RATE_LIMIT": "2/minute", "PROXY_HOPS": "2"}
    with running_server(env, log_dir=tmp_path, edge=True) as srv:
        def send(client_ip):
            return requests.post(srv.url + "/api/bg/remove", headers={"X-Forwarded-For": client_ip},
                                 timeout=10).status_code

        assert [send("203.0.113.50") for _ in range(3)] == [400, 400, 429]
        assert [send("203.0.113.51") for _ in range(3)] == [400, 400, 429]  # not nginx's bucket, not the first's
        # what the outer proxy appends to a forged header: the forged part buys nothing
        assert [send(f"1.2.3.{i}, 203.0.113.52") for i in range(3)] == [400, 400, 429]
