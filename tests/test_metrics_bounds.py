"""Metrics label cardinality (issue 12, point 5), against a real gunicorn.

Every label of every metric takes values from a fixed set: a flood of requests with invented
HTTP methods and random paths must leave /metrics and the worker's memory where they were.
Before the fix each new method added a counter series and a 14-bucket histogram to /metrics
(~1.8 KB per method: 5.8 MB after this test's flood) and ~30 KB to the worker's memory.
"""

from __future__ import annotations

import http.client
import random
import string
import threading

import psutil
import requests

from app.ops import metrics
from tests.serverkit import running_server
from tests.test_ops import metric_value

STANDARD_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
FLOOD = 3000  # requests with a fresh random method each
CLIENTS = 4
# Bounds, from measurements of this very flood (3,000 requests after a 400-request warm-up):
# - with bounded labels /metrics grows by ~30 bytes (counter digits, histogram sums); with the
#   method as given it grew by 5.8 MB, ~1.8 KB per new method (a counter and a 14-line histogram).
#   1 KB is less than a single leaked label set.
# - the worker's RSS grows by 0.4-0.7 MB (allocator noise); with the method as given it grew by
#   96 MB (126 -> 223 MB). 8 MB is a twelfth of that and ten times the noise.
MAX_METRICS_GROWTH_BYTES = 1024
MAX_RSS_GROWTH_MB = 8.0


def odd_method(rng: random.Random) -> str:
    """An invented method gunicorn accepts (uppercase token, 3 to 20 characters)."""
    return "".join(rng.choices(string.ascii_uppercase, k=rng.randint(3, 20)))


def odd_path(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return "/api/bg/health"
    return "/" + "/".join("".join(rng.choices(string.ascii_lowercase + string.digits, k=8))
                          for _ in range(rng.randint(1, 4)))


def flood(port: int, requests_total: int, seed: int) -> dict[int, int]:
    """``requests_total`` requests with random methods and paths, over keep-alive connections;
    returns {status: count}. Every request gets an answer (an exception fails the test)."""
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def client(index: int) -> None:
        rng = random.Random(seed * 100 + index)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for _ in range(requests_total // CLIENTS):
                conn.request(odd_method(rng), odd_path(rng))
                resp = conn.getresponse()
                resp.read()
                with lock:
                    statuses[resp.status] = statuses.get(resp.status, 0) + 1
                if resp.will_close:
                    conn.close()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return statuses


def label_values(text: str, name: str, label: str) -> set[str]:
    values = set()
    for line in text.splitlines():
        if line.startswith(name + "{"):
            for part in line[len(name) + 1:line.index("}")].split(","):
                key, _, value = part.partition("=")
                if key == label:
                    values.add(value.strip('"'))
    return values


def test_flood_of_odd_methods_and_paths_leaves_metrics_and_memory_flat(tmp_path):
    with running_server({"WEB_CONCURRENCY": "1"}, log_dir=tmp_path) as srv:
        worker = psutil.Process(srv.process.pid).children()[0]
        # Warm-up: the first odd requests create the collapsed series ("other", "unmatched", 404, 405)
        # and let the allocator reach its working size; the flood after it must add nothing.
        flood(srv.port, 400, seed=1)
        requests.get(srv.url + "/metrics", timeout=30)  # /metrics' own series exist before the baseline
        before = requests.get(srv.url + "/metrics", timeout=30).text
        rss_before = worker.memory_info().rss / 2**20

        statuses = flood(srv.port, FLOOD, seed=2)

        after = requests.get(srv.url + "/metrics", timeout=60).text
        rss_after = worker.memory_info().rss / 2**20
        growth = len(after.encode()) - len(before.encode())
        print(f"/metrics: {len(before.encode())} -> {len(after.encode())} bytes ({growth:+d}); "
              f"worker RSS {rss_before:.1f} -> {rss_after:.1f} MB; statuses {statuses}")

        # The flood reached the app and was counted, under the collapsed labels.
        assert sum(statuses.values()) == FLOOD and set(statuses) <= {404, 405}, statuses
        counted = (metric_value(after, "bgremove_http_requests_total", method="other")
                   - metric_value(before, "bgremove_http_requests_total", method="other"))
        assert counted == FLOOD, counted
        assert label_values(after, "bgremove_http_requests_total", "method") <= set(STANDARD_METHODS) | {"other"}
        assert label_values(after, "bgremove_http_request_duration_seconds_bucket", "method") <= (
            set(STANDARD_METHODS) | {"other"})
        assert label_values(after, "bgremove_http_requests_total", "endpoint") <= {
            "unmatched", "/api/bg/health", "/metrics"}
        assert label_values(after, "bgremove_http_requests_total", "status") <= {"200", "404", "405"}

        assert growth <= MAX_METRICS_GROWTH_BYTES, f"/metrics grew by {growth} bytes"
        assert rss_after - rss_before <= MAX_RSS_GROWTH_MB, f"worker RSS grew {rss_after - rss_before:.1f} MB"
        assert requests.get(srv.url + "/api/bg/health", timeout=5).status_code == 200


def test_label_helpers_collapse_what_is_not_in_their_set():
    assert [metrics.method_label(m) for m in ("GET", "OPTIONS", "PROPFIND", "get", "X" * 20)] == [
        "GET", "OPTIONS", "other", "other", "other"]
    assert [metrics.status_label(s) for s in (200, 429, 499, 503, 299, 600, 1000)] == [
        "200", "429", "499", "503", "other", "other", "other"]
    capped = metrics._CappedLabel(limit=3)
    assert [capped(v) for v in ("decode", "segment", "encode", "decode", "x1", "x2", "segment")] == [
        "decode", "segment", "encode", "decode", "other", "other", "segment"]
