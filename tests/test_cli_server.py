"""``bgremove batch --server``: the batch sent to a live gunicorn over real HTTP, shedding with a tiny
queue (503 + Retry-After waited out), connections dropped on the way (retried), an API key."""

from __future__ import annotations

import socket
import threading

import numpy as np
import pytest
import requests

from tests.clikit import bgremove, decoded, manifest_lines, small_photos, summary
from tests.serverkit import running_server

KEY = "cli-test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # one inference at a time and no queue: a second request at once is shed with 503 + Retry-After
    env = {"MAX_CONCURRENT_INFERENCES": "1", "MAX_QUEUE": "0", "API_KEYS": KEY}
    with running_server(env, log_dir=tmp_path_factory.mktemp("logs")) as srv:
        yield srv


def served(server) -> int:
    return requests.get(server.url + "/api/bg/status", timeout=10).json()["requests_served"]


def test_a_batch_through_a_shedding_server_makes_every_file_once(server, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    photos = small_photos(inputs, 6)
    before = served(server)
    done = bgremove("batch", str(inputs), str(out), "--server", server.url, "--api-key", KEY, "--concurrency", "4",
                    "--color", "navy", "--json")
    assert done.returncode == 0, done.stderr.decode()
    report = summary(done)
    assert (report["done"], report["failed"], report["skipped"]) == (6, 0, 0)
    assert report["retries"]["shed"] >= 1  # four at once against one slot and no queue: some were shed
    assert served(server) - before == 6  # each file processed once by the service
    for photo in photos:
        img = decoded(out / photo.relative_to(inputs).with_suffix(".jpg"))  # change_color's default: JPEG
        assert img.format == "JPEG" and img.size == decoded(photo).size and img.mode == "RGB"
    assert sorted(r["input"] for r in manifest_lines(out)) == sorted(p.relative_to(inputs).as_posix() for p in photos)
    again = bgremove("batch", str(inputs), str(out), "--server", server.url, "--api-key", KEY, "--color", "navy",
                     "--json")
    assert (summary(again)["skipped"], summary(again)["done"]) == (6, 0) and served(server) - before == 6


def test_effects_come_back_as_one_file_each(server, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    photo = small_photos(inputs, 1, nested=False)[0]
    done = bgremove("batch", str(inputs), str(out), "--server", server.url, "--api-key", KEY,
                    "--effects", '["blackwhite", "dither"]', "--format", "webp", "--json")
    assert done.returncode == 0, done.stderr.decode()
    for effect in ("blackwhite", "dither"):
        img = decoded(out / f"{photo.stem}.{effect}.webp")
        assert img.format == "WEBP" and img.size == decoded(photo).size
        assert np.asarray(img.convert("RGBA").getchannel("A")).min() == 0  # on the cut-out subject


def test_a_refused_api_key_stops_the_batch_at_once(server, tmp_path):
    inputs = tmp_path / "in"
    small_photos(inputs, 5)
    refused = bgremove("batch", str(inputs), str(tmp_path / "out"), "--server", server.url, "--api-key", "wrong",
                       "--concurrency", "1")
    assert refused.returncode == 1
    text = refused.stdout.decode()
    assert "stopped: unauthorized:" in text and "1 failed, 4 left of 5 images" in text, text


class FlakyProxy:
    """A TCP proxy to the server that drops the connections whose number is in ``drop`` (1 = the
    first) as soon as the request arrives, before the server sees it: a network error."""

    def __init__(self, upstream_port: int, drop: set[int]):
        self.upstream, self.drop, self.count = upstream_port, drop, 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.count += 1
            if self.count in self.drop:
                threading.Thread(target=self._drop, args=(conn,), daemon=True).start()
            else:
                upstream = socket.create_connection(("127.0.0.1", self.upstream))
                for a, b in ((conn, upstream), (upstream, conn)):
                    threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _drop(conn):
        conn.recv(65536)
        conn.close()

    @staticmethod
    def _pump(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.sock.close()


def test_dropped_connections_are_retried_and_nothing_is_done_twice(server, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    small_photos(inputs, 4)
    proxy = FlakyProxy(server.port, drop={2, 3})  # 1: the health check; the next two are dropped
    try:
        before = served(server)
        done = bgremove("batch", str(inputs), str(out), "--server", proxy.url, "--api-key", KEY, "--concurrency", "2",
                        "--json")
    finally:
        proxy.close()
    assert done.returncode == 0, done.stderr.decode()
    report = summary(done)
    assert report["done"] == 4 and report["retries"]["network"] >= 1
    assert served(server) - before == 4 and len(list(out.rglob("*.png"))) == 4
