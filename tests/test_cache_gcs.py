"""The GCS backend with the real google-cloud-storage client against a real emulator process (no mocks)."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import requests
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from app.pipeline.cache import results as results_module
from tests.serverkit import fixture_images, post_image, running_emulator, running_server, start_emulator
from PIL import Image

from tests.conftest import png_bytes, post, wait_for

TOKEN = "gcs-admin-token-0123456789"
DOG = fixture_images()[0].read_bytes()


@pytest.fixture(scope="module")
def emulator():
    with running_emulator() as emu:
        yield emu


@pytest.fixture()
def prefix(request):
    return f"t-{request.node.name[:40]}/"  # each test its own prefix in the shared bucket


@pytest.fixture()
def gcs_app(make_app, emulator, prefix, monkeypatch):
    def build(**overrides):
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator.host)
        return make_app(cache_backend="gcs", storage_bucket=emulator.bucket, cache_prefix=prefix,
                        admin_token=TOKEN, **overrides)
    return build


def bucket_client(host: str) -> storage.Client:
    """The test's own view of the emulator's bucket (the service builds its client from STORAGE_EMULATOR_HOST)."""
    return storage.Client(project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": host})


def call(client, endpoint="/api/bg/remove", data=DOG, **fields):
    resp = post(client, endpoint, data, **fields)
    resp.close()  # the cache writes once the response is sent
    return resp


def stats(client):
    return client.get("/stats").get_json()["cache"]


def test_miss_then_hit_over_http_with_objects_in_the_bucket(emulator, tmp_path):
    prefix = "served/"
    with running_server(emulator.env(prefix), log_dir=tmp_path) as srv:
        first = post_image(srv.url, fixture_images()[0])
        assert first.status_code == 200 and first.headers["X-Cache"] == "MISS"
        deadline = time.monotonic() + 10  # the write happens just after the response; poll for it
        while True:
            again = post_image(srv.url, fixture_images()[0])
            if again.headers["X-Cache"] == "HIT" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert again.status_code == 200 and again.headers["X-Cache"] == "HIT"
        assert again.content == first.content
        other = post_image(srv.url, fixture_images()[0], "/api/bg/change_color", {"color": "navy"})
        assert other.headers["X-Cache"] == "MISS" and other.headers["X-Cache-Mask"] == "HIT"
        status = requests.get(srv.url + "/api/bg/status", timeout=5).json()["cache"]
        assert status["backend"] == "gcs" and status["lookups"]["output"]["hits"] >= 1
    blobs = list(bucket_client(emulator.host).list_blobs(emulator.bucket, prefix=prefix))
    assert len(blobs) >= 2 and all(b.custom_time is not None for b in blobs)  # for the lifecycle rule
    assert all(len(b.name) == len(prefix) + 64 for b in blobs)


def test_entries_expire_after_the_ttl(gcs_app):
    client = gcs_app(cache_ttl_s=1).test_client()
    assert call(client).headers["X-Cache"] == "MISS"
    assert call(client).headers["X-Cache"] == "HIT"
    time.sleep(1.3)
    resp = call(client)
    assert resp.status_code == 200 and resp.headers["X-Cache"] == "MISS" and resp.headers["X-Cache-Mask"] == "MISS"
    assert stats(client)["expired"] == 2
    assert call(client).headers["X-Cache"] == "HIT"  # rewritten with a fresh time


def test_corrupt_objects_are_detected_and_recomputed(gcs_app, emulator, prefix):
    client = gcs_app().test_client()
    first = call(client)
    bucket = bucket_client(emulator.host).bucket(emulator.bucket)
    names = [b.name for b in bucket.list_blobs(prefix=prefix)]
    assert len(names) == 2
    for name in names:  # truncate one, replace the other with garbage
        blob = bucket.blob(name)
        data = blob.download_as_bytes()
        blob.upload_from_string(data[: len(data) // 3] if name == names[0] else b"garbage" * 50)
    again = call(client)
    assert again.status_code == 200 and again.data == first.data
    assert again.headers["X-Cache"] == "MISS" and again.headers["X-Cache-Mask"] == "MISS"
    assert stats(client)["corrupt"] == 2
    assert call(client).headers["X-Cache"] == "HIT"


def test_clear_cache_deletes_only_our_prefix(gcs_app, emulator, prefix):
    client = gcs_app().test_client()
    call(client)
    call(client, "/api/bg/change_color", color="teal")
    bucket = bucket_client(emulator.host).bucket(emulator.bucket)
    bucket.blob("someone-else/keep.txt").upload_from_string(b"not ours")
    resp = client.post("/api/bg/clear_cache", headers={"Authorization": f"Bearer {TOKEN}"})
    assert resp.status_code == 200 and resp.get_json() == {"cleared": 3, "backend": "gcs"}
    assert list(bucket.list_blobs(prefix=prefix)) == []
    assert bucket.blob("someone-else/keep.txt").download_as_bytes() == b"not ours"
    assert call(client).headers["X-Cache"] == "MISS"


def test_emulator_killed_mid_run_then_back(tmp_path):
    emu = start_emulator()
    try:
        env = {**emu.env(), "ADMIN_TOKEN": TOKEN, "CACHE_TIMEOUT_S": "0.5"}
        with running_server(env, log_dir=tmp_path) as srv:
            assert post_image(srv.url, fixture_images()[1]).headers["X-Cache"] == "MISS"
            expected = post_image(srv.url, fixture_images()[0]).content
            emu.kill()
            for _ in range(4):
                resp = post_image(srv.url, fixture_images()[0], timeout=15)
                assert resp.status_code == 200 and resp.content == expected
                assert resp.headers["X-Cache"] == "BYPASS"
            cache = requests.get(srv.url + "/stats", timeout=5).json()["cache"]
            assert cache["errors"] >= 1
            assert cache["lookups"]["output"]["bypassed"] == 4
            cleared = requests.post(srv.url + "/api/bg/clear_cache", headers={"Authorization": f"Bearer {TOKEN}"},
                                    timeout=15)
            assert cleared.status_code == 503 and cleared.json()["error"]["code"] == "cache_unavailable"
            assert "Retry-After" in cleared.headers
            # The emulator comes back (empty, on the same port): after its back-off the service uses it again.
            emu = start_emulator(port=emu.port)
            deadline = time.monotonic() + 60  # the back-off has doubled a few times by now (2, 4, 8 s...)
            seen = []
            while time.monotonic() < deadline and "HIT" not in seen:
                seen.append(post_image(srv.url, fixture_images()[0]).headers["X-Cache"])
                time.sleep(0.2)
            # (A lookup skipped during the back-off may still store its result once the bucket is back.)
            assert seen[-1] == "HIT" and set(seen[:-1]) <= {"BYPASS", "MISS"}, seen
            log = srv.log()
        assert log.count("serving without the cache") <= 2, log  # rate-limited, not once per request
    finally:
        emu.kill()


class BlackHole:
    """A TCP server that reads requests and never answers: the slowest possible bucket."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.accepted: list[socket.socket] = []
        self.request_lines: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn):
        try:
            self.request_lines.append(conn.makefile("rb").readline().decode("latin-1").strip())
        except OSError:
            pass

    def object_reads(self) -> int:
        """Requests for objects' contents (the cache's lookups); the client library also fetches
        the bucket's metadata in a background thread of its own, which is not counted."""
        return sum("/download/" in line for line in self.request_lines)

    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def close(self):
        for conn in self.accepted:
            conn.close()
        self.sock.close()


def test_a_bucket_that_never_answers_costs_one_timeout_then_is_skipped(make_app, monkeypatch, client):
    hole = BlackHole()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", hole.host)
        # the second request must come within the first back-off: 30 s instead of 2 s, so a busy
        # machine (two test files at once) cannot make it arrive after the back-off and try again
        monkeypatch.setattr(results_module, "_BACKOFF_FIRST_S", 30.0)
        app = make_app(cache_backend="gcs", storage_bucket="b", cache_timeout_s=0.3)
        cached = app.test_client()
        small = png_bytes(Image.open(fixture_images()[0]).resize((96, 64)))  # quick to segment
        expected = call(client, data=small).data
        first = call(cached, data=small)
        assert first.status_code == 200 and first.headers["X-Cache"] == "BYPASS" and first.data == expected
        wait_for(lambda: hole.object_reads() == 1, what="the lookup to reach the silent bucket")  # sent, timed out
        second = call(cached, data=small)  # within the back-off: the bucket is not even tried
        assert second.status_code == 200 and second.headers["X-Cache"] == "BYPASS"
        # a lookup would have reached the socket before the 0.3 s timeout the answer then waited for
        assert hole.object_reads() == 1
        s = stats(cached)
        assert s["errors"] == 1 and s["lookups"]["output"]["bypassed"] == 2 and s["writes_skipped"] >= 1
    finally:
        hole.close()
