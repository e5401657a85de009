"""The real thing: gunicorn with config/gunicorn.conf.py on a free loopback port, real HTTP."""

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import psutil
import pytest
import requests

from tests.serverkit import (
    ALL_EFFECTS, ROOT, RssSampler, concurrent_clients, fixture_images, free_port, post_image, running_server,
    wait_until_busy,
)
from tests.test_imaging import bomb_png


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(log_dir=tmp_path_factory.mktemp("logs")) as srv:
        yield srv


def worker_pids(server):
    return sorted(p.pid for p in psutil.Process(server.process.pid).children())


def test_health_and_remove_over_http(server):
    health = requests.get(server.url + "/api/bg/health", timeout=5)
    assert health.status_code == 200 and health.json()["model_loaded"] is True
    resp = post_image(server.url, fixture_images()[0])
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "image/png"
    assert resp.headers["Content-Disposition"] == f"inline; filename=nobg_{fixture_images()[0].stem}.png"


def largest_photos(count: int = 4) -> list:
    """The fixture photos with the most pixels: four clients sending them hold the most at once."""
    from PIL import Image

    def pixels(path) -> int:
        with Image.open(path) as img:
            return img.size[0] * img.size[1]

    return sorted(fixture_images(), key=pixels, reverse=True)[:count]


def test_four_concurrent_clients_within_memory_budget(server):
    images = largest_photos()
    expected = {p.name: hashlib.sha256(post_image(server.url, p).content).hexdigest() for p in images[:2]}
    with RssSampler(server) as rss:
        results = concurrent_clients(server.url, clients=4, paths=images)
    assert [status for status, _ in results] == [200] * (4 * len(images))
    # concurrency changes nothing in the answers
    for p in images[:2]:
        assert hashlib.sha256(post_image(server.url, p).content).hexdigest() == expected[p.name]
    print(f"process tree peak RSS with 4 clients: {rss.peak_mb:.0f} MB")
    assert rss.peak_mb <= 350, f"peak RSS {rss.peak_mb:.0f} MB over the 512 MB tier's 350 MB budget"


def test_effects_under_concurrency_within_memory_budget(server):
    """/api/v2/process with all four effects, 4 clients at once: every request answered, memory bounded."""
    images = largest_photos()
    with RssSampler(server) as rss:
        results = concurrent_clients(server.url, clients=4, paths=images, endpoint="/api/v2/process", data=ALL_EFFECTS)
    assert [status for status, _ in results] == [200] * (4 * len(images))
    body = post_image(server.url, images[0], "/api/v2/process", ALL_EFFECTS).json()
    assert list(body["images"]) == ["blackwhite", "dither", "popart", "8bit"]
    print(f"process tree peak RSS with 4 clients, 4 effects each: {rss.peak_mb:.0f} MB")
    assert rss.peak_mb <= 350, f"peak RSS {rss.peak_mb:.0f} MB over the 512 MB tier's 350 MB budget"


def test_oversized_body_refused_from_headers(server):
    """Content-Length over MAX_FILE_SIZE_MB: 413 before a byte of the body is read."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/bg/remove HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: multipart/form-data; boundary=xyz\r\n"
            b"Content-Length: 52428800\r\n\r\n"
        )
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert json.loads(body)["error"]["code"] == "file_too_large"


def test_oversized_upload_over_http(server):
    big = os.urandom(9 * 2**20)  # 9 MB > 8 MB
    try:
        resp = requests.post(server.url + "/api/bg/remove", files={"file": ("big.jpg", big)}, timeout=30)
    except requests.ConnectionError:
        pytest.fail("server reset the connection instead of answering 413")
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "file_too_large"


def test_bad_inputs_never_break_the_worker(server):
    before = worker_pids(server)
    data = fixture_images()[0].read_bytes()
    bad = [b"", b"junk" * 100, data[:5000], bomb_png(30000, 30000), bytes(range(256)) * 100]
    for payload in bad:
        resp = requests.post(server.url + "/api/bg/remove", files={"file": ("x.png", payload)}, timeout=30)
        assert 400 <= resp.status_code < 500, (resp.status_code, resp.text)
        assert {"code", "message"} <= set(resp.json()["error"]) <= {"code", "message", "field"}
    resp = requests.post(server.url + "/api/bg/change_color", data={"color": "nope"},
                         files={"file": ("a.jpg", data)}, timeout=30)
    assert resp.status_code == 400 and resp.json()["error"]["message"].startswith("color:")
    assert post_image(server.url, fixture_images()[1]).status_code == 200
    assert worker_pids(server) == before  # same worker: nothing crashed or was restarted


def test_overload_is_shed_with_503_and_retry_after(tmp_path):
    with running_server({"MAX_QUEUE": "0", "WEB_THREADS": "6"}, log_dir=tmp_path) as srv:
        results = []
        lock = threading.Lock()

        def one():
            with open(fixture_images()[0], "rb") as f:
                r = requests.post(srv.url + "/api/bg/remove", files={"file": f}, timeout=60)
            with lock:
                results.append((r.status_code, r.headers.get("Retry-After"), r.headers.get("Content-Type")))

        threads = [threading.Thread(target=one) for _ in range(5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = sorted(s for s, _, _ in results)
        assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses, statuses
        for status, retry_after, ctype in results:
            if status == 503:
                assert int(retry_after) >= 1 and ctype == "application/json"
        assert requests.get(srv.url + "/api/bg/health", timeout=5).status_code == 200


def test_sigterm_finishes_in_flight_requests(tmp_path):
    with running_server(log_dir=tmp_path) as srv:
        results = []
        threads = [threading.Thread(target=lambda p=p: results.append(post_image(srv.url, p).status_code))
                   for p in fixture_images()[:3]]
        for t in threads:
            t.start()
        wait_until_busy(srv, 2)  # the requests are inside the worker
        srv.process.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=60)
        assert results == [200, 200, 200]
        assert srv.process.wait(timeout=30) == 0


def boot(env, tmp_path, timeout=60):
    full_env = {**os.environ, "PORT": str(free_port()), "HOST": "127.0.0.1", **env}
    return subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "app.web.factory:create_app()"],
        cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout,
    )


@pytest.mark.parametrize(
    "env, needle",
    [
        ({"SEGMENTER": "nonsense"}, "SEGMENTER"),
        ({"MAX_QUEUE": "lots"}, "MAX_QUEUE"),
        ({"MODEL_PATH": "models/missing.onnx"}, "MODEL_PATH"),
    ],
)
def test_bad_setting_stops_boot_with_one_line(env, needle, tmp_path):
    proc = boot(env, tmp_path)
    assert proc.returncode != 0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert lines == [next(line for line in lines if needle in line)], lines
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("content", [b"this is not an onnx model", b"\x08\x07" + os.urandom(5000)])
def test_corrupt_model_stops_boot_without_traceback(content, tmp_path):
    bad = tmp_path / "corrupt.onnx"
    bad.write_bytes(content)
    proc = boot({"MODEL_PATH": str(bad)}, tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 4, output  # gunicorn's "App failed to load": the master halts, no respawn loop
    assert "Traceback" not in output
    assert sum(1 for line in output.splitlines() if "MODEL_PATH" in line and str(bad) in line) == 1


def test_a_burst_of_eight_uploads_is_queued_not_shed(tmp_path):
    """Default settings, as `make run` serves them (behind the edge): 8 uploads at once all get
    200 (one runs, the rest wait their turn); only past the queue is anything shed."""
    with running_server(log_dir=tmp_path, edge=True) as srv:
        results = concurrent_clients(srv.url, 8, [fixture_images()[0]])
    assert sorted(status for status, _ in results) == [200] * 8

