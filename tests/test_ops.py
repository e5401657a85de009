"""Operations: ops endpoints, metrics (also across gunicorn workers), logs, request ids, Server-Timing,
the OpenAPI document, API keys, rate limits, CORS and security headers."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import pytest
import requests
from openapi_spec_validator import validate

from tests.serverkit import ROOT, running_server
from tests.conftest import photo, post

DOG = photo("animal-1.jpg").read_bytes()
KEY = "client-key-0123456789"


def metric_value(text: str, name: str, **labels) -> float:
    """The sample ``name{labels}`` of a Prometheus exposition (0 if absent)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


# -- ops endpoints ---------------------------------------------------------------------

def test_health_alias_model_info_and_stats(client):
    alias, health = client.get("/health").get_json(), client.get("/api/bg/health").get_json()
    assert alias.keys() == health.keys() and alias.pop("memory_mb") > 0 and health.pop("memory_mb") > 0
    assert alias == health  # the same answer (memory moves by a few KB between two calls)
    info = client.get("/model-info").get_json()
    assert info == {"status": "ready", "adapter": "onnx", "model": "u2netp", "total_parameters": 1125485,
                    "model_size_mb": info["model_size_mb"], "target_size": [320, 320], "device": "cpu",
                    "file_sha256": info["file_sha256"], "runtime": info["runtime"]}
    assert info["runtime"]["precision"] == "fp32" and info["runtime"]["engine"].startswith("onnxruntime ")
    assert info["runtime"]["precision_reason"] == "ONNX_PRECISION=fp32"  # the session's settings (conftest)
    assert 4.0 < info["model_size_mb"] < 5.0 and len(info["file_sha256"]) == 64
    before = client.get("/stats").get_json()
    assert post(client, "/api/bg/remove", DOG).status_code == 200
    stats = client.get("/stats").get_json()
    assert stats["requests_total"] == before["requests_total"] + 1
    assert stats["latency_ms"]["p50"] > 0 and stats["latency_ms"]["p95"] >= stats["latency_ms"]["p50"]
    assert stats["active_requests"] == 0 and stats["model_memory_mb"] == 4.3
    assert stats["rss_mb"] > 50 and stats["gpu_memory_allocated_gb"] is None
    assert stats["cache_hit_rate"] is None and stats["cache"]["backend"] == "none"


def test_metrics_count_requests_stages_and_cache(make_app, tmp_path):
    client = make_app(cache_backend="local", cache_dir=tmp_path).test_client()
    before = client.get("/metrics").data.decode()
    post(client, "/api/bg/remove", DOG).close()
    post(client, "/api/bg/remove", DOG).close()
    post(client, "/api/bg/remove", b"junk").close()
    resp = client.get("/metrics")
    assert resp.headers["Content-Type"].startswith("text/plain")
    after = resp.data.decode()

    def delta(name, **labels):
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert delta("bgremove_http_requests_total", endpoint="/api/bg/remove", status="200") == 2
    assert delta("bgremove_http_requests_total", endpoint="/api/bg/remove", status="400") == 1
    assert delta("bgremove_http_request_duration_seconds_count", endpoint="/api/bg/remove") == 3
    assert delta("bgremove_http_request_duration_seconds_count", endpoint="/api/bg/remove", status="400") == 1
    assert delta("bgremove_stage_duration_seconds_count", stage="segment") == 1  # the second was a hit
    assert delta("bgremove_cache_events_total", event="output_hits") == 1
    assert delta("bgremove_cache_events_total", event="output_misses") == 2  # the junk too: looked up before decoding
    assert metric_value(after, "bgremove_worker_resident_memory_bytes") > 50e6
    assert "bgremove_inference_queue_depth" in after and "bgremove_http_requests_in_flight" in after


def test_metrics_add_up_across_gunicorn_workers(tmp_path):
    """Two workers: whichever answers /metrics reports every worker's requests."""
    with running_server({"WEB_CONCURRENCY": "2"}, log_dir=tmp_path) as srv:
        pids = set()
        for _ in range(600):  # the second worker may still be loading its model; wait until both answer
            pids.add(requests.get(srv.url + "/api/bg/status", timeout=30).json()["worker_pid"])
            if len(pids) == 2:
                break
        assert len(pids) == 2, "the requests did not reach both workers; the test proves nothing"
        baseline = metric_value(requests.get(srv.url + "/metrics", timeout=30).text,
                                "bgremove_http_requests_total", endpoint="/api/bg/status")
        served = {pid: 0 for pid in pids}
        for _ in range(40):
            served[requests.get(srv.url + "/api/bg/status", timeout=30).json()["worker_pid"]] += 1
        assert min(served.values()) > 0, served
        for _ in range(6):  # several scrapes, answered by either worker
            text = requests.get(srv.url + "/metrics", timeout=30).text
            assert metric_value(text, "bgremove_http_requests_total", endpoint="/api/bg/status") == baseline + 40
            assert metric_value(text, "bgremove_worker_resident_memory_bytes") > 2 * 50e6  # both workers' memory


def test_remove_background_alias_matches_the_main_endpoints(client):
    png = post(client, "/remove-background", DOG)
    assert png.status_code == 200 and png.headers["Content-Type"] == "image/png"
    assert png.data == post(client, "/api/bg/remove", DOG).data
    jpeg = post(client, "/remove-background", DOG, output_format="jpeg", quality="80")
    assert jpeg.headers["Content-Type"] == "image/jpeg"
    assert jpeg.data == post(client, "/api/bg/change_color", DOG, color="white", format="jpeg", quality="80").data
    assert post(client, "/remove-background", DOG, output_format="webp").headers["Content-Type"] == "image/webp"
    bad = post(client, "/remove-background", DOG, output_format="gif")
    assert bad.status_code == 400 and bad.get_json()["error"]["field"] == "output_format"


def test_remove_background_shares_cache_entries(make_app, tmp_path):
    client = make_app(cache_backend="local", cache_dir=tmp_path).test_client()
    post(client, "/api/bg/remove", DOG).close()
    assert post(client, "/remove-background", DOG).headers["X-Cache"] == "HIT"
    post(client, "/remove-background", DOG, output_format="jpeg").close()
    assert post(client, "/api/bg/change_color", DOG, format="jpg").headers["X-Cache"] == "HIT"


# -- request ids, Server-Timing, logs -------------------------------------------------------

def test_request_id_is_echoed_taken_from_the_trace_or_made(client):
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    trace = "0123456789abcdef0123456789ABCDEF/42;o=1"
    assert client.get("/health", headers={"X-Cloud-Trace-Context": trace}).headers["X-Request-ID"] == (
        "0123456789abcdef0123456789abcdef")
    for bad in ("x" * 200, "has space", "new\\nline", "<script>"):
        made = client.get("/health", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
        assert re.fullmatch(r"[0-9a-f]{32}", made), bad
    a, b = (client.get("/health").headers["X-Request-ID"] for _ in range(2))
    assert a != b
    assert post(client, "/api/bg/remove", b"junk").headers["X-Request-ID"]  # errors carry it too


def test_server_timing_names_the_steps(client):
    timing = post(client, "/api/bg/remove", DOG).headers["Server-Timing"]
    steps = dict(item.strip().split(";dur=") for item in timing.split(","))
    assert {"decode", "segment", "compose", "encode"} <= set(steps) and all(float(v) >= 0 for v in steps.values())
    assert float(steps["segment"]) > float(steps["decode"]) / 10
    timing = post(client, "/api/v2/process", DOG, effects='["dither", "8bit"]').headers["Server-Timing"]
    assert {"decode", "segment", "dither", "8bit", "encode"} <= {i.split(";")[0].strip() for i in timing.split(",")}


def test_json_logs_over_a_real_server(tmp_path):
    env = {"LOG_FORMAT": "json", "GOOGLE_CLOUD_PROJECT": "my-project"}
    with running_server(env, log_dir=tmp_path) as srv:
        resp = requests.post(srv.url + "/api/bg/remove", files={"file": ("x.jpg", DOG)}, timeout=60,
                             headers={"X-Cloud-Trace-Context": "0123456789abcdef0123456789abcdef/1;o=1"})
        assert resp.status_code == 200
        requests.post(srv.url + "/api/bg/remove", files={"file": ("x.jpg", b"junk")}, timeout=60)
        log = srv.log()
    records = [json.loads(line) for line in log.splitlines() if line.strip()]  # every line is JSON
    assert any(r.get("logger", "").startswith("gunicorn") or "Booting worker" in r["message"] for r in records)
    access = [r for r in records if r.get("logger") == "app.access" and r["httpRequest"]["requestUrl"] == "/api/bg/remove"]
    assert [r["httpRequest"]["status"] for r in access] == [200, 400]
    ok = access[0]
    assert ok["severity"] == "INFO" and ok["request_id"] == "0123456789abcdef0123456789abcdef"
    assert ok["logging.googleapis.com/trace"] == "projects/my-project/traces/0123456789abcdef0123456789abcdef"
    assert ok["httpRequest"]["requestMethod"] == "POST" and re.fullmatch(r"\d+\.\d+s", ok["httpRequest"]["latency"])
    assert int(ok["httpRequest"]["responseSize"]) == len(resp.content)
    assert {"severity", "message", "time"} <= set(records[0])


# -- the OpenAPI document ------------------------------------------------------------------

def test_openapi_covers_every_route_and_is_valid(app, client):
    spec = client.get("/openapi.json").get_json()
    validate(spec)  # a valid OpenAPI 3 document
    for rule in app.url_map.iter_rules():
        if rule.endpoint in ("static", "docs.static"):
            continue
        assert not rule.arguments, f"{rule.rule}: a route with parameters; check how /openapi.json writes them"
        path = rule.rule
        assert path in spec["paths"], f"{rule.rule} is missing from /openapi.json"
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in spec["paths"][path], f"{method} {rule.rule} is missing from /openapi.json"
    remove = spec["paths"]["/api/bg/remove"]["post"]
    assert set(remove["responses"]["200"]["content"]) == {"image/png", "image/webp", "image/heic", "image/avif", "image/jpeg", "application/zip"}
    assert "X-Cache" in remove["responses"]["200"]["headers"]


def processing_forms(app):
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        # remove.bg's route documents its own names (tests/test_removebg_api.py checks each)
        if getattr(view, "processing", False) and view.processing.form is None:
            yield rule.rule, view.processing.options


def test_every_documented_form_field_is_the_one_parsed(app, client):
    """A bad value for each documented field is refused naming that field: the document and the
    parser cannot drift apart."""
    checked = 0
    for path, form in processing_forms(app):
        base = {"effects": '["dither"]'} if path == "/api/v2/process" else {}
        for field, schema in form.form_schema().items():
            bad = {"boolean": "maybe", "integer": "999"}.get(schema.get("type")) or ("nope" if "enum" in schema else "{[")
            if field in ("color", "background"):
                bad = "not-a-colour"
            resp = post(client, path, DOG, **{**base, field: bad})
            body = resp.get_json()
            assert resp.status_code == 400 and body["error"]["field"] == field, (path, field, body)
            checked += 1
    assert checked >= 20


def test_docs_page_uses_local_assets_only(client):
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.data.decode())
    assert assets and all(a.startswith("/") for a in assets)  # nothing from a CDN
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    assert "/openapi.json" in client.get("/docs/init.js").data.decode()
    assert "script-src" not in page.headers["Content-Security-Policy"]  # default-src 'self' covers scripts
    assert "'unsafe-inline'" not in page.headers["Content-Security-Policy"].split("style-src")[0]


# -- protection ----------------------------------------------------------------------------

def test_api_keys_guard_processing_but_not_probes(make_app):
    client = make_app(api_keys=(KEY, "second-key-0123456789")).test_client()
    for path, extra in (("/api/bg/remove", {}), ("/api/bg/change_color", {}),
                        ("/api/v2/process", {"effects": '["8bit"]'}), ("/remove-background", {})):
        missing = post(client, path, DOG, **extra)
        assert missing.status_code == 401 and missing.get_json()["error"]["code"] == "unauthorized", path
        assert "X-API-Key" in missing.headers["WWW-Authenticate"]
        wrong = client.post(path, data={"file": (io.BytesIO(DOG), "a.jpg"), **extra}, headers={"X-API-Key": KEY + "x"})
        assert wrong.status_code == 401 and wrong.get_json()["error"]["message"] == "invalid API key"
        ok = client.post(path, data={"file": (io.BytesIO(DOG), "a.jpg"), **extra}, headers={"X-API-Key": KEY})
        assert ok.status_code == 200, (path, ok.get_json() if ok.is_json else None)
    for path in ("/api/bg/health", "/health", "/api/bg/status", "/stats", "/metrics", "/model-info",
                 "/openapi.json", "/docs", "/api/v2/effects", "/"):
        assert client.get(path).status_code == 200, path
    spec = client.get("/openapi.json").get_json()
    assert spec["paths"]["/api/bg/remove"]["post"]["security"] == [{"ApiKey": []}]


def test_rate_limit_per_key_with_retry_after(make_app):
    client = make_app(rate_limit="2/minute", api_keys=(KEY, "other-key-0123456789")).test_client()

    def send(key):
        return client.post("/api/bg/remove", data={"file": (io.BytesIO(DOG), "a.jpg")}, headers={"X-API-Key": key})

    assert [send(KEY).status_code for _ in range(2)] == [200, 200]
    limited = send(KEY)
    assert limited.status_code == 429 and limited.get_json()["error"]["code"] == "too_many_requests"
    assert 0 < int(limited.headers["Retry-After"]) <= 60
    assert send("other-key-0123456789").status_code == 200  # a different key has its own budget
    assert all(client.get("/api/bg/health").status_code == 200 for _ in range(5))  # probes are not limited


def test_rate_limit_per_client_ip_behind_a_proxy(make_app):
    client = make_app(rate_limit="1/minute", proxy_hops=1).test_client()

    def send(ip):
        return client.post("/api/bg/remove", data={"file": (io.BytesIO(DOG), "a.jpg")},
                           headers={"X-Forwarded-For": ip})

    assert send("203.0.113.7").status_code == 200
    assert send("203.0.113.7").status_code == 429
    assert send("198.51.100.1").status_code == 200


def test_cors_only_for_configured_origins(make_app):
    client = make_app(cors_origins=("https://shop.example",)).test_client()
    preflight = client.options("/api/bg/remove", headers={
        "Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "X-API-Key"})
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "x-api-key" in preflight.headers["Access-Control-Allow-Headers"].lower()
    resp = client.post("/api/bg/remove", data={"file": (io.BytesIO(DOG), "a.jpg")},
                       headers={"Origin": "https://shop.example"})
    assert resp.headers["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "X-Cache" in resp.headers["Access-Control-Expose-Headers"]
    assert "Origin" in resp.headers["Vary"]  # caches keep one answer per origin
    other = client.get("/api/bg/health", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    evil_preflight = client.options("/api/bg/remove", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert not any(h.startswith("Access-Control-") for h in evil_preflight.headers.keys())
    # No Origin (curl, servers, same-origin navigation): no CORS headers at all, not the allowed origin.
    for answer in (client.get("/api/bg/health"), client.post("/api/bg/remove"),
                   client.options("/api/bg/remove", headers={"Access-Control-Request-Method": "POST"})):
        assert not any(h.startswith("Access-Control-") for h in answer.headers.keys()), dict(answer.headers)


def test_cors_wildcard_answers_any_origin_but_only_with_an_origin(make_app):
    client = make_app(cors_origins=("*",)).test_client()
    resp = client.post("/api/bg/remove", headers={"Origin": "https://anyone.example"})
    assert resp.status_code == 400 and resp.headers["Access-Control-Allow-Origin"] in ("*", "https://anyone.example")
    preflight = client.options("/api/bg/remove", headers={
        "Origin": "https://anyone.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "X-API-Key"})
    assert preflight.status_code == 200 and "x-api-key" in preflight.headers["Access-Control-Allow-Headers"].lower()
    assert "Access-Control-Allow-Origin" not in client.get("/api/bg/health").headers


def test_security_headers_on_every_response(client):
    for resp in (client.get("/api/bg/health"), client.get("/nope"), post(client, "/api/bg/remove", DOG),
                 post(client, "/api/bg/remove", b"junk"), client.get("/metrics")):
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert "default-src 'none'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["Strict-Transport-Security"].startswith("max-age=")


def test_protection_settings_from_the_environment():
    from config import ConfigError, Settings

    s = Settings.from_env({"API_KEYS": f"{KEY}, second-key-0123456789 ,", "RATE_LIMIT": "10/second;100/day",
                           "CORS_ORIGINS": "https://a.example,https://b.example", "PROXY_HOPS": "1"})
    assert s.api_keys == (KEY, "second-key-0123456789") and KEY not in repr(s)
    assert s.rate_limit == "10/second;100/day" and s.cors_origins == ("https://a.example", "https://b.example")
    with pytest.raises(ConfigError, match="^RATE_LIMIT:"):
        Settings.from_env({"RATE_LIMIT": "fast"})
    with pytest.raises(ConfigError, match="^LOG_FORMAT:"):
        Settings.from_env({"LOG_FORMAT": "xml"})


@pytest.mark.parametrize("variable, value", [
    ("ADMIN_TOKEN", "caf\u00e9-0123456789abcdef"),  # Latin-1 or UTF-8 on the wire, depending on the client
    ("ADMIN_TOKEN", "token-\u2603-0123456789abcdef"),
    ("ADMIN_TOKEN", "tab\there-0123456789abcdef"),  # a control character no header carries
    ("API_KEYS", f"{KEY},caf\u00e9-key-0123456789"),
    ("API_KEYS", "\u043a\u043b\u044e\u0447-0123456789"),
])
def test_secrets_must_be_printable_ascii(variable, value):
    """A non-ASCII secret would match only clients that happen to encode it as the server decodes
    it: refused at boot, naming the variable and never echoing the secret."""
    from config import ConfigError, Settings

    with pytest.raises(ConfigError) as err:
        Settings.from_env({variable: value})
    message = str(err.value)
    assert message.startswith(variable + ":") and "ASCII" in message and "\n" not in message
    assert not any(part in message for part in value.split(",") if len(part) > 3)
    assert Settings.from_env({"ADMIN_TOKEN": "ascii-token-0123456789", "API_KEYS": f"{KEY}, x-y_z.0123456789"})


def test_non_ascii_admin_token_stops_boot_with_one_line(tmp_path):
    from tests.serverkit import free_port

    env = {**os.environ, "PORT": str(free_port()), "HOST": "127.0.0.1", "ADMIN_TOKEN": "caf\u00e9-0123456789abcdef"}
    proc = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py", "app:create_app()"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    assert proc.returncode != 0 and len(lines) == 1 and "ADMIN_TOKEN:" in lines[0], lines
    assert "caf" not in lines[0]
