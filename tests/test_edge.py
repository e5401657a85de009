"""The service as deployed (`python -m config.edge`: nginx in front of gunicorn) against hostile
clients: slow, idle and dripping connections, abandoned requests, malformed HTTP, SIGTERM."""

from __future__ import annotations

import base64
import json
import signal
import socket
import threading
import time

import pytest
import requests

from tests import hostile
from tests.serverkit import fixture_images, post_image, running_server, wait_until_busy
from config.edge import HEADER_TIMEOUT_S, PER_CLIENT_CONNECTIONS
from tests.conftest import photo

PROBE_TIMEOUT_S = 5  # "answers within a few seconds": a hang check, not a speed figure


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    with running_server(log_dir=tmp_path_factory.mktemp("edge"), edge=True) as srv:
        yield srv


def probe(url: str) -> int:
    return requests.get(url + "/api/bg/health", timeout=PROBE_TIMEOUT_S).status_code


def test_without_the_edge_a_few_slow_clients_take_gunicorn_down(tmp_path):
    """The attack is real: one connection per gthread thread that sent one byte and waits
    makes gunicorn alone stop answering health probes (so the next test can fail)."""
    with running_server({"WEB_THREADS": "3"}, log_dir=tmp_path) as srv:
        with hostile.slow_connections(srv.port, 3, kinds=("one_byte",)):
            time.sleep(0.5)
            with pytest.raises(requests.RequestException):
                requests.get(srv.url + "/api/bg/health", timeout=3)


def test_fifty_slow_connections_leave_health_and_removal_answering(edge):
    """60 connections that never finish (one byte and wait; headers with a 100 KB body of which
    5 bytes come; headers dripped a byte a second) and 4 phones uploading 1.5 MB at 200 KB/s,
    on a worker with 7 threads: every probe and a real removal keep answering, and the honest
    slow uploads are served."""
    uploads: list[tuple[int, dict, bytes]] = []

    def phone():
        uploads.append(hostile.slow_upload(edge.port, photo("plants-1.jpg"), rate_bytes_s=200_000))

    phones = [threading.Thread(target=phone) for _ in range(4)]
    with hostile.slow_connections(edge.port, 60):
        for t in phones:
            t.start()
        time.sleep(1.0)
        statuses = [probe(edge.url) for _ in range(10)]
        removal = post_image(edge.url, fixture_images()[0], timeout=PROBE_TIMEOUT_S * 4)
        statuses += [probe(edge.url) for _ in range(5)]
        for t in phones:
            t.join(timeout=60)
    assert statuses == [200] * 15
    assert removal.status_code == 200 and removal.headers["Content-Type"] == "image/png"
    assert [status for status, _, _ in uploads] == [200] * 4
    assert all(body[:8] == b"\x89PNG\r\n\x1a\n" for _, _, body in uploads)


def test_one_client_cannot_hold_every_connection(edge):
    """Requests whose body never finishes count against their client's connections: past
    PER_CLIENT_CONNECTIONS it gets 429 JSON with Retry-After (the disk and the edge's connections
    stay for everybody else); health probes are never refused; closing them frees the client."""
    head = (b"POST /api/bg/remove HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n\r\nhello")
    held = [socket.create_connection(("127.0.0.1", edge.port), timeout=5) for _ in range(PER_CLIENT_CONNECTIONS)]
    try:
        for s in held:
            s.sendall(head)
        time.sleep(0.5)
        status, headers, body = hostile.raw_request(edge.port, head.replace(b"100000", b"5"))
        assert _json_error(status, headers, body, 429) == "too_many_connections"
        assert int(headers["retry-after"]) >= 1
        assert probe(edge.url) == 200
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + 5
    while hostile.raw_request(edge.port, head.replace(b"100000", b"5"))[0] == 429:
        assert time.monotonic() < deadline, "the client's connections were not freed"
        time.sleep(0.1)


@pytest.mark.parametrize("edge, env", [
    (True, {}),  # make run
    (True, {"PROXY_HOPS": "1"}),  # what the images set: the edge is that one proxy
    (False, {}),  # gunicorn alone, default settings
])
def test_a_client_cannot_choose_its_address(edge, env, tmp_path):
    """With no proxy in front of the service, X-Forwarded-For from the client is not believed (the
    edge replaces it with the peer's address): a new forged address per request buys no fresh
    rate-limit budget."""
    with running_server({"RATE_LIMIT": "3/minute", **env}, log_dir=tmp_path, edge=edge) as srv:
        statuses = [requests.post(srv.url + "/api/bg/remove", headers={"X-Forwarded-For": f"1.2.3.{i}"},
                                  timeout=10).status_code for i in range(6)]
    assert statuses == [400, 400, 400, 429, 429, 429]


def test_uploads_are_spooled_without_warnings(edge):
    """A 5 MB upload (a photo with 5 MB appended after its end) is read to disk by the edge before
    the app sees it, and nginx logs nothing about it."""
    body = photo("animal-1.jpg").read_bytes() + bytes(5 * 2**20)
    resp = requests.post(edge.url + "/api/bg/remove", files={"file": ("big.jpg", body, "image/jpeg")}, timeout=60)
    assert resp.status_code == 200 and resp.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert "buffered to a temporary file" not in edge.log()


def test_boot_answers_probes_cleanly_and_says_once_where_it_listens(tmp_path):
    """Polled from the moment config/serve starts, the service refuses connections or answers 200
    (never an nginx error: the edge starts once a worker serves, so it never logs [crit] or
    [error] about the app's socket); it prints one "listening on" line with its public address,
    which answers 200 at once."""
    import os
    import subprocess
    import sys

    from tests.serverkit import ROOT, free_port

    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "PYTHON": sys.executable, "CACHE_BACKEND": "none"}
    log_path = tmp_path / "serve.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["config/serve"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    statuses, line_seen = [], None
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if line_seen is None and "listening on" in log_path.read_text():
                line_seen = len(statuses)
                url = log_path.read_text().split("listening on ", 1)[1].split()[0]
                assert url == f"http://127.0.0.1:{port}"
                assert requests.get(url + "/api/bg/health", timeout=PROBE_TIMEOUT_S).status_code == 200
            try:
                statuses.append(requests.get(f"http://127.0.0.1:{port}/api/bg/health", timeout=PROBE_TIMEOUT_S)
                                .status_code)
            except requests.ConnectionError:
                continue
            if line_seen is not None and len(statuses) > line_seen + 20:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    text = log_path.read_text()
    assert line_seen is not None, text
    assert statuses and set(statuses) <= {200, 503}, statuses
    assert text.count("listening on") == 1, text
    assert "[crit]" not in text and "[error]" not in text, text


def test_gunicorn_alone_says_once_where_it_listens(bare):
    """Without the edge, gunicorn's first serving worker prints the line (its model loaded and warm)."""
    assert bare.log().count(f"listening on {bare.url}") == 1, bare.log()


def test_idle_and_dripping_connections_are_closed_at_the_header_deadline(edge):
    started = time.monotonic()
    with hostile.slow_connections(edge.port, 6, kinds=("one_byte", "drip_headers")) as socks:
        for s in socks:
            s.settimeout(HEADER_TIMEOUT_S + 10)
            try:
                data = s.recv(4096)
            except ConnectionResetError:  # nginx resets timed-out connections (reset_timedout_connection)
                data = b""
            except TimeoutError:
                pytest.fail("a connection that never finished its headers is still open")
            assert data == b"" or data.startswith(b"HTTP/1.1 408"), data[:100]
    elapsed = time.monotonic() - started
    assert elapsed < HEADER_TIMEOUT_S + 10, f"connections still open after {elapsed:.0f} s"


def _json_error(status: int, headers: dict, body: bytes, expected_status: int) -> str:
    assert status == expected_status, (status, body[:200])
    assert headers.get("content-type", "").startswith("application/json"), headers
    error = json.loads(body)["error"]
    assert error["message"]
    return error["code"]


@pytest.mark.parametrize("request_bytes, status, code", [
    (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
    (b"GET /api/bg/health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 20000 + b"\r\n\r\n", 431,
     "request_header_fields_too_large"),
    (b"POST /api/bg/remove HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", 400, "bad_request"),
    (b"POST /api/bg/remove HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400, "bad_request"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 garbage\r\n\r\n", 400, "bad_request"),
    (b"POST /api/bg/remove HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n", 413, "file_too_large"),
    # passed on by nginx, refused by gunicorn itself (config/worker.py)
    (b"GET /api/bg/health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(300)) + b"\r\n",
     431, "request_header_fields_too_large"),
    (b"ABCDEFGHIJKLMNOPQRSTUVWXYZABCD /api/bg/health HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"),
    (b"GET /api/bg/health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501,
     "not_implemented"),
    (b"GET /api/bg/health HTTP/2.0\r\nHost: x\r\n\r\n", 505, "http_version_not_supported"),
])
def test_malformed_http_gets_the_json_error_shape(edge, request_bytes, status, code):
    assert _json_error(*hostile.raw_request(edge.port, request_bytes), status) == code
    assert probe(edge.url) == 200


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    with running_server(log_dir=tmp_path_factory.mktemp("bare")) as srv:
        yield srv


@pytest.mark.parametrize("request_bytes, status, code", [
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
    (b"GET /api/bg/health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(300)) + b"\r\n",
     431, "request_header_fields_too_large"),
    (b"POST /api/bg/remove HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", 400, "bad_request"),
    (b"POST /api/bg/remove HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400, "bad_request"),
])
def test_gunicorn_alone_answers_its_own_errors_as_json(bare, request_bytes, status, code):
    """Without the edge (e.g. `make` targets that run gunicorn directly), gunicorn's own refusals
    are JSON too, not its HTML pages."""
    assert _json_error(*hostile.raw_request(bare.port, request_bytes), status) == code
    assert probe(bare.url) == 200


def test_oversized_chunked_upload_is_refused_while_reading(edge):
    body = b"x" * (9 * 2**20)
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as s:
        s.sendall(b"POST /api/bg/remove HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                  b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")
        try:
            for start in range(0, len(body), 2**20):
                chunk = body[start:start + 2**20]
                s.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert _json_error(*hostile.read_response(s, 10), 413) == "file_too_large"


def test_abandoned_requests_leave_the_queue(edge):
    """One slot, a request holding it, four uploads sent and abandoned: their work is dropped
    (logged 499) instead of run, and a normal request sent after them is served."""
    holder = threading.Thread(target=lambda: post_image(edge.url, fixture_images()[4], "/api/v2/process",
                                                       {"effects": '["blackwhite", "dither", "popart", "8bit"]'}))
    holder.start()
    time.sleep(0.3)
    body, ctype = hostile.multipart({}, "animal.jpg", photo("animal-1.jpg").read_bytes())
    abandoned = []
    for _ in range(4):
        s = socket.create_connection(("127.0.0.1", edge.port), timeout=5)
        s.sendall(f"POST /api/bg/remove HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        abandoned.append(s)
    time.sleep(0.3)
    for s in abandoned:
        s.close()
    holder.join(timeout=60)
    assert post_image(edge.url, fixture_images()[0], timeout=30).status_code == 200
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and edge.log().count("POST /api/bg/remove 499") < 4:
        time.sleep(0.1)
    assert edge.log().count("POST /api/bg/remove 499") == 4, edge.log()[-3000:]


def test_sigterm_answers_every_queued_request(tmp_path):
    """SIGTERM to the container's process 1 while requests wait in the queue: nginx drains first,
    then gunicorn, and every request taken is answered."""
    with running_server(log_dir=tmp_path, edge=True) as srv:
        results: list[int] = []
        lock = threading.Lock()

        def one(path):
            status = post_image(srv.url, path, timeout=60).status_code
            with lock:
                results.append(status)

        threads = [threading.Thread(target=one, args=(p,)) for p in fixture_images()[:5]]
        for t in threads:
            t.start()
        wait_until_busy(srv, 4)
        srv.process.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=90)
        assert sorted(results) == [200] * 5
        assert srv.process.wait(timeout=60) == 0


@pytest.mark.parametrize("env, status, needle", [
    ({"MAX_QUEUE": "lots"}, 2, "MAX_QUEUE"),  # refused while rendering the edge's config
    ({"MODEL_PATH": "README.md"}, 4, "MODEL_PATH"),  # the app fails to load: gunicorn halts, nginx is stopped
])
def test_a_service_that_cannot_start_stops_the_container(env, status, needle, tmp_path):
    import os
    import subprocess
    import sys

    from tests.serverkit import ROOT, free_port

    full_env = {**os.environ, "PORT": str(free_port()), "HOST": "127.0.0.1", "PYTHON": sys.executable, **env}
    proc = subprocess.run(["config/serve"], cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=90)
    assert proc.returncode == status, proc.stdout + proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    with pytest.raises(ConnectionRefusedError):  # no nginx left behind on the port
        socket.create_connection(("127.0.0.1", int(full_env["PORT"])), timeout=2)


def test_edge_without_the_app_answers_503_json_with_retry_after(tmp_path):
    """While gunicorn boots or restarts, nginx cannot reach it: clients get 503 `unavailable`
    with Retry-After in the API's shape, not nginx's HTML 502."""
    import os
    import subprocess
    import sys

    from tests.serverkit import ROOT, free_port
    from config.edge import nginx_binary

    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1"}
    subprocess.run([sys.executable, "-m", "config.edge", "render", str(tmp_path)], cwd=ROOT, env=env, check=True)
    nginx = subprocess.Popen([nginx_binary(), "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", "stderr"],
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                resp = requests.get(f"http://127.0.0.1:{port}/api/bg/health", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)
        assert resp.status_code == 503 and int(resp.headers["Retry-After"]) >= 1
        assert resp.headers["Content-Type"].startswith("application/json")
        assert resp.json()["error"]["code"] == "unavailable"
    finally:
        nginx.send_signal(signal.SIGQUIT)
        nginx.wait(timeout=10)


def test_remove_bg_route_gets_its_error_shape_and_base64_room_from_the_edge(edge):
    """Under /v1.0/ the edge answers in remove.bg's shape, and lets through a body a third larger
    than the upload limit (the image as base64), which the app then judges by the decoded size."""
    status, headers, body = hostile.raw_request(
        edge.port, b"POST /v1.0/removebg HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n")
    assert status == 400 and json.loads(body)["errors"][0]["code"] == "file_too_large", body[:200]
    image = fixture_images()[0].read_bytes()
    padded = base64.b64encode(image).decode() + " " * (int(8 * 1024 * 1024 * 1.2) - len(image) * 4 // 3)
    resp = requests.post(f"{edge.url}/v1.0/removebg", json={"image_file_b64": padded, "size": "preview"}, timeout=120)
    assert resp.status_code == 200, resp.text[:300]
    assert probe(edge.url) == 200
