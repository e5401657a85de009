"""Uploads that are cheap to send and expensive to serve, against the service as deployed on the
512 MB tier's settings: they are refused from their structure or served within the memory
budget, and normal requests sent alongside are served. Plus the request deadline on the
CPU-bound steps."""

from __future__ import annotations

import threading

import pytest
import requests

from tests import hostile
from tests.serverkit import RssSampler, fixture_images, post_image, running_server
from tests.conftest import photo, post

MEMORY_BUDGET_MB = 350  # the 512 MB tier's process tree, edge included


@pytest.fixture(scope="module")
def edge(tmp_path_factory):
    with running_server(log_dir=tmp_path_factory.mktemp("hostile"), edge=True) as srv:
        yield srv


def post_bytes(url: str, name: str, data: bytes, endpoint: str = "/api/bg/remove", fields: dict | None = None,
               timeout: float = 120) -> requests.Response:
    return requests.post(url + endpoint, files={"file": (name, data)}, data=fields or {}, timeout=timeout)


def test_scan_bomb_is_refused_and_a_normal_request_alongside_is_served(edge):
    bomb = hostile.scan_bomb_jpeg(4096, 3000)  # ~20 s of decoding if it were decoded
    answers: dict[str, requests.Response] = {}
    threads = [
        threading.Thread(target=lambda: answers.setdefault("bomb", post_bytes(edge.url, "bomb.jpg", bomb))),
        threading.Thread(target=lambda: answers.setdefault("photo", post_image(edge.url, fixture_images()[0]))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert answers["bomb"].status_code == 422
    error = answers["bomb"].json()["error"]
    assert error["code"] == "image_too_complex" and error["field"] == "file" and "scans" in error["message"]
    assert answers["photo"].status_code == 200 and answers["photo"].headers["Content-Type"] == "image/png"


@pytest.mark.parametrize("endpoint, fields", [("/api/bg/remove", {}), ("/api/v2/process", {"effects": '["dither"]'})])
def test_huge_progressive_jpeg_is_judged_by_its_full_size(edge, endpoint, fields):
    resp = post_bytes(edge.url, "huge.jpg", hostile.huge_progressive_jpeg(13000), endpoint, fields)
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "image_too_large"
    assert "progressive" in resp.json()["error"]["message"]


def test_lossless_webp_bomb_is_refused_by_its_decoded_size(edge):
    resp = post_bytes(edge.url, "bomb.webp", hostile.lossless_webp_rgba(4096))
    assert resp.status_code == 422 and resp.json()["error"]["code"] == "image_too_large"
    assert "MB" in resp.json()["error"]["message"]


def test_memory_bombs_under_eight_clients_stay_within_the_budget(edge):
    """Eight clients sending the small-but-large-once-decoded inputs (and a 4096² progressive JPEG,
    the largest one accepted) on every processing endpoint: each is answered 200, a 422 or a
    503 shed, the process tree (nginx, the supervisor, gunicorn's master and worker) stays under
    350 MB, and the worker is the same one afterwards."""
    bombs = {**hostile.memory_bombs(), "progressive_4096.jpg": hostile.huge_progressive_jpeg(4096)}
    names = sorted(bombs)
    endpoints = [("/api/bg/remove", {}), ("/api/bg/change_color", {}), ("/api/v2/process", {"effects": '["8bit"]'})]
    statuses: list[tuple[str, int]] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        for k in range(2):  # 16 requests: eight in flight at once is what the budget is about
            name = names[(i + k) % len(names)]
            endpoint, fields = endpoints[(i + k) % len(endpoints)]
            status = post_bytes(edge.url, name, bombs[name], endpoint, fields).status_code
            with lock:
                statuses.append((name, status))

    for path in fixture_images():  # the worker at rest after ordinary work
        assert post_image(edge.url, path).status_code == 200
    rest_before = edge.tree_rss_mb()
    with RssSampler(edge, interval_s=0.02) as rss:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    assert len(statuses) == 16 and {s for _, s in statuses} <= {200, 422, 503}, statuses
    assert any(s == 200 for _, s in statuses)
    print(f"peak process tree RSS, 8 clients of memory bombs: {rss.peak_mb:.0f} MB (at rest before: {rest_before:.0f} MB)")
    assert rss.peak_mb <= MEMORY_BUDGET_MB, f"peak {rss.peak_mb:.0f} MB"
    assert post_image(edge.url, fixture_images()[0]).status_code == 200
    # what the bombs freed went back to the OS (app/memory.py): the worker is back near its rest
    rest_after = edge.tree_rss_mb()
    print(f"process tree at rest: {rest_before:.0f} MB before, {rest_after:.0f} MB after")
    assert rest_after <= rest_before + 12, f"{rest_before:.0f} -> {rest_after:.0f} MB"


def test_the_deadline_holds_on_cpu_bound_steps(make_app):
    """Four effects on a photo take longer than a 0.3 s request budget: the request stops between
    steps with 503 ``timeout`` and Retry-After (it used to run to the end once it had a slot);
    with the default budget the same request is served."""
    data = photo("animal-1.jpg").read_bytes()
    effects = '["blackwhite", "dither", "popart", "8bit"]'
    resp = post(make_app(request_timeout_s=0.3).test_client(), "/api/v2/process", data, effects=effects)
    assert resp.status_code == 503 and resp.json["error"]["code"] == "timeout"
    assert int(resp.headers["Retry-After"]) >= 1
    assert post(make_app().test_client(), "/api/v2/process", data, effects=effects).status_code == 200
