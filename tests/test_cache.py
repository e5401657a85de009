"""The result cache through the API, on the local backend: keys, headers, reuse of masks, admin clearing, faults."""

from __future__ import annotations

import io
import time

import diskcache
import msgspec
import numpy as np
import pytest
from PIL import Image

from app.pipeline import Rendered
from app.pipeline.cache import entry
from app.pipeline.cache.keys import entry_key, fingerprint
from app.pipeline.options import ChangeColorOptions, ProcessOptions, RemoveOptions
from config import ConfigError, Settings
from tests.conftest import open_response, photo, post

TOKEN = "t0ken-for-tests-0123456789"
DOG = photo("animal-1.jpg").read_bytes()
CAT = photo("animal-2.jpg").read_bytes()


def call(client, endpoint, data=DOG, **fields):
    """POST and close the response, as a server does once it is sent (the cache writes then)."""
    resp = post(client, endpoint, data, **fields)
    resp.close()
    return resp


@pytest.fixture()
def cached_app(make_app, tmp_path):
    return make_app(cache_backend="local", cache_dir=tmp_path / "cache", admin_token=TOKEN)


@pytest.fixture()
def cached(cached_app):
    return cached_app.test_client()


def stats(client):
    return client.get("/stats").get_json()["cache"]


# -- entries and keys ------------------------------------------------------------------

def test_entry_round_trip_and_any_damage_is_detected():
    packed = entry.pack(b"payload" * 100, created=1234.5)
    found = entry.unpack(packed)
    assert found.payload == b"payload" * 100 and found.created == 1234.5
    for damaged in (packed[:-1], packed[: entry.HEADER_BYTES - 1], packed[:40] + bytes([packed[40] ^ 1]) + packed[41:],
                    packed[:10] + bytes([packed[10] ^ 1]) + packed[11:], b"", b"PNG not ours" * 10):
        with pytest.raises(entry.CorruptEntry):
            entry.unpack(damaged)


@pytest.mark.parametrize("cls, a, b", [
    (RemoveOptions, {}, {"format": "PNG", "quality": "40", "use_cache": "true"}),  # PNG ignores quality
    (RemoveOptions, {"only_mask": "true"}, {"only_mask": "1", "refine_foreground": "true"}),  # the mask is not refined
    (ChangeColorOptions, {"color": "red"}, {"color": "#FF0000", "format": "jpg"}),
    (ChangeColorOptions, {"color": "255,0,0", "quality": "90"}, {"color": "f00"}),
    (ProcessOptions, {"effects": '["dither"]'}, {"effects": '["dither"]', "effect_params": '{"dither": {}}'}),
    (ProcessOptions, {"effects": '["8bit"]', "format": "jpeg"}, {"effects": '["8bit"]', "format": "jpg", "background": "white"}),
])
def test_equivalent_requests_share_a_key(cls, a, b):
    assert cls.from_form(a).cache_fields() == cls.from_form(b).cache_fields()


@pytest.mark.parametrize("cls, a, b", [
    (RemoveOptions, {}, {"format": "webp"}),
    (RemoveOptions, {"format": "webp", "quality": "80"}, {"format": "webp", "quality": "81"}),
    (RemoveOptions, {}, {"refine_foreground": "true"}),
    (RemoveOptions, {}, {"only_mask": "true"}),
    (ChangeColorOptions, {"color": "red"}, {"color": "#FF0001"}),
    (ProcessOptions, {"effects": '["dither"]'}, {"effects": '["dither"]', "effect_params": '{"dither": {"dot_spacing": 3}}'}),
    (ProcessOptions, {"effects": '["dither", "8bit"]'}, {"effects": '["8bit", "dither"]'}),
    (ProcessOptions, {"effects": '["dither"]'}, {"effects": '["dither"]', "remove_background": "false"}),
])
def test_different_outputs_have_different_keys(cls, a, b):
    assert cls.from_form(a).cache_fields() != cls.from_form(b).cache_fields()


def test_key_covers_upload_model_file_and_settings(segmenter, settings):
    model = fingerprint(segmenter.info, settings)
    base = entry_key("remove", "ab" * 32, model, {"format": "png"})
    assert entry_key("remove", "ab" * 32, dict(model), {"format": "png"}) == base  # deterministic
    assert entry_key("remove", "ac" * 32, model, {"format": "png"}) != base
    assert entry_key("change_color", "ab" * 32, model, {"format": "png"}) != base
    assert entry_key("remove", "ab" * 32, {**model, "model_sha256": "0" * 64}, {"format": "png"}) != base
    other = fingerprint(segmenter.info, settings.replace(max_dimension=512))
    assert entry_key("remove", "ab" * 32, other, {"format": "png"}) != base


# -- the API ---------------------------------------------------------------------------

def test_miss_then_hit_gives_the_same_bytes(cached, client):
    first = call(cached, "/api/bg/remove")
    assert first.status_code == 200 and first.headers["X-Cache"] == "MISS" and first.headers["X-Cache-Mask"] == "MISS"
    second = call(cached, "/api/bg/remove", quality="10")  # PNG: quality changes nothing, same entry
    assert second.status_code == 200 and second.headers["X-Cache"] == "HIT" and "X-Cache-Mask" not in second.headers
    assert second.data == first.data
    assert second.headers["Content-Type"] == "image/png"
    assert second.headers["Content-Disposition"] == "inline; filename=nobg_photo.png"
    uncached = call(client, "/api/bg/remove")  # the app without a cache computes the same image
    assert uncached.headers["X-Cache"] == "BYPASS" and uncached.data == first.data
    s = stats(cached)
    assert s["lookups"]["output"] == {"hits": 1, "misses": 1, "bypassed": 0}
    assert s["entries"] == 2 and s["size_mb"] > 0 and s["hit_rate"] == 0.5  # the output and the mask


def test_a_hit_needs_no_inference_slot(cached_app, cached):
    """With the only inference slot taken and no queue, a miss is shed but a hit is served."""
    app = cached_app
    call(cached, "/api/bg/remove")
    state = app.extensions["bgremove"]
    gate = state.gate
    assert gate.slots == 1
    with gate.slot(timeout_s=1):
        state.gate.max_queue = 0
        try:
            hit = call(cached, "/api/bg/remove")
            miss = call(cached, "/api/bg/remove", CAT)
        finally:
            state.gate.max_queue = state.settings.max_queue
    assert hit.status_code == 200 and hit.headers["X-Cache"] == "HIT"
    assert miss.status_code == 503 and miss.headers["X-Cache"] == "MISS"


def test_mask_is_reused_by_other_outputs(cached, client):
    call(cached, "/api/bg/remove")
    for endpoint, fields in [("/api/bg/change_color", {"color": "#3366cc"}),
                             ("/api/bg/remove", {"only_mask": "true"}),
                             ("/api/bg/remove", {"format": "webp"}),
                             ("/api/v2/process", {"effects": '["dither", "8bit"]'})]:
        resp = call(cached, endpoint, **fields)
        assert resp.status_code == 200 and resp.headers["X-Cache"] == "MISS", endpoint
        assert resp.headers["X-Cache-Mask"] == "HIT", (endpoint, fields)
        fresh = call(client, endpoint, **fields)
        if endpoint == "/api/v2/process":  # timings differ; the images must not
            assert resp.get_json()["images"] == fresh.get_json()["images"]
        else:
            assert resp.data == fresh.data, (endpoint, fields)
    assert stats(cached)["lookups"]["mask"]["hits"] == 4


def test_process_hit_returns_the_same_images_and_says_so(cached):
    fields = {"effects": '["blackwhite", "popart"]', "effect_params": '{"popart": {"layout": "grid"}}'}
    first = call(cached, "/api/v2/process", **fields).get_json()
    hit = call(cached, "/api/v2/process", **fields)
    body = hit.get_json()
    assert hit.headers["X-Cache"] == "HIT"
    assert body["images"] == first["images"] and (body["width"], body["height"]) == (first["width"], first["height"])
    assert list(body["metadata"]["timings_ms"]) == ["cache"]
    assert body["metadata"]["params"] == first["metadata"]["params"]


def test_use_cache_false_bypasses_reading_and_writing(cached):
    resp = call(cached, "/api/bg/remove", use_cache="false")
    assert resp.status_code == 200 and resp.headers["X-Cache"] == "BYPASS" and "X-Cache-Mask" not in resp.headers
    assert stats(cached)["entries"] == 0
    assert call(cached, "/api/bg/remove").headers["X-Cache"] == "MISS"
    bad = call(cached, "/api/bg/remove", use_cache="maybe")
    assert bad.status_code == 400 and bad.get_json()["error"]["field"] == "use_cache"


def test_errors_are_not_cached(cached):
    resp = call(cached, "/api/bg/remove", b"not an image")
    assert resp.status_code == 400 and resp.get_json()["error"]["code"] == "invalid_image"
    assert stats(cached)["entries"] == 0


def test_clear_cache_needs_the_admin_token(cached, client):
    call(cached, "/api/bg/remove")
    assert stats(cached)["entries"] == 2
    missing = cached.post("/api/bg/clear_cache")
    assert missing.status_code == 401 and missing.get_json()["error"]["code"] == "unauthorized"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer")
    for header in ("Bearer wrong-token-wrong-token", "Basic " + TOKEN, "Bearer " + TOKEN[:-1], TOKEN):
        resp = cached.post("/api/bg/clear_cache", headers={"Authorization": header})
        assert resp.status_code in (401, 403) and stats(cached)["entries"] == 2, header
    wrong = cached.post("/api/bg/clear_cache", headers={"Authorization": "Bearer " + "x" * len(TOKEN)})
    assert wrong.status_code == 403 and wrong.get_json()["error"]["code"] == "forbidden"
    ok = cached.post("/api/bg/clear_cache", headers={"Authorization": "Bearer " + TOKEN})
    assert ok.status_code == 200 and ok.get_json() == {"cleared": 2, "backend": "local"}
    assert stats(cached)["entries"] == 0
    assert call(cached, "/api/bg/remove").headers["X-Cache"] == "MISS"
    # Without ADMIN_TOKEN, the endpoint is off for everyone, whatever they send.
    off = client.post("/api/bg/clear_cache", headers={"Authorization": "Bearer " + TOKEN})
    assert off.status_code == 403 and off.get_json()["error"]["code"] == "admin_disabled"


def test_corrupt_entry_is_detected_and_recomputed(cached_app, cached, tmp_path):
    first = call(cached, "/api/bg/remove")
    # The cut-out is the largest entry; diskcache keeps values over 32 KB in files of their own.
    output_file = max((tmp_path / "cache").rglob("*.val"), key=lambda p: p.stat().st_size)
    output_file.write_bytes(output_file.read_bytes()[: output_file.stat().st_size // 2])  # truncated
    again = call(cached, "/api/bg/remove")
    assert again.status_code == 200 and again.data == first.data
    assert again.headers["X-Cache"] == "MISS" and again.headers["X-Cache-Mask"] == "HIT"
    assert stats(cached)["corrupt"] == 1
    assert call(cached, "/api/bg/remove").headers["X-Cache"] == "HIT"  # rewritten


def test_entries_expire_after_the_ttl(make_app, tmp_path):
    client = make_app(cache_backend="local", cache_dir=tmp_path, cache_ttl_s=1).test_client()
    assert call(client, "/api/bg/remove").headers["X-Cache"] == "MISS"
    assert call(client, "/api/bg/remove").headers["X-Cache"] == "HIT"
    time.sleep(1.3)
    resp = call(client, "/api/bg/remove")
    assert resp.status_code == 200 and resp.headers["X-Cache"] == "MISS" and resp.headers["X-Cache-Mask"] == "MISS"


def test_unusable_cache_directory_never_fails_a_request(make_app, tmp_path, caplog):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the cache directory should be")
    client = make_app(cache_backend="local", cache_dir=blocker / "cache").test_client()
    expected = call(make_app().test_client(), "/api/bg/remove").data
    for _ in range(3):
        resp = call(client, "/api/bg/remove")
        assert resp.status_code == 200 and resp.headers["X-Cache"] == "BYPASS" and resp.data == expected
    s = stats(client)
    assert s["available"] is False and s["entries"] is None
    assert s["errors"] >= 1 and s["lookups"]["output"]["bypassed"] == 3
    warnings = [r for r in caplog.records if "local cache open failed" in r.getMessage()]
    assert len(warnings) == 1  # logged once, not once per request


def test_status_reports_the_cache(cached):
    call(cached, "/api/bg/remove")
    call(cached, "/api/bg/remove")
    s = cached.get("/api/bg/status").get_json()["cache"]
    assert s["backend"] == "local" and s["enabled"] is True and s["available"] is True
    assert s["entries"] == 2 and s["max_mb"] == 1024.0 and s["ttl_s"] == 86400 and s["hit_rate"] == 0.5
    assert s["writes"] == 2 and s["errors"] == 0


def test_no_cache_backend(client):
    resp = call(client, "/api/bg/remove")
    assert resp.headers["X-Cache"] == "BYPASS"
    assert client.get("/stats").get_json()["cache"] == {"backend": "none", "enabled": False}


# -- settings --------------------------------------------------------------------------

def test_cache_settings():
    s = Settings.from_env({"CACHE_BACKEND": "gcs", "STORAGE_BUCKET": "b", "CACHE_PREFIX": "/x", "CACHE_TTL": "60",
                           "CACHE_MAX_MB": "0.5", "CACHE_TIMEOUT_S": "0.25", "ADMIN_TOKEN": TOKEN})
    assert (s.cache_backend, s.storage_bucket, s.cache_prefix, s.cache_ttl_s, s.cache_max_mb, s.cache_timeout_s) == (
        "gcs", "b", "x/", 60, 0.5, 0.25)
    assert TOKEN not in repr(s)
    d = Settings.from_env({})
    assert (d.cache_backend, d.cache_ttl_s, d.admin_token) == ("local", 86400, "")


@pytest.mark.parametrize("env, name", [
    ({"CACHE_BACKEND": "gcs"}, "STORAGE_BUCKET"),
    ({"CACHE_BACKEND": "redis"}, "CACHE_BACKEND"),
    ({"CACHE_TTL": "0"}, "CACHE_TTL"),
    ({"CACHE_MAX_MB": "-1"}, "CACHE_MAX_MB"),
    ({"ADMIN_TOKEN": "short"}, "ADMIN_TOKEN"),
])
def test_bad_cache_settings_name_the_variable(env, name):
    with pytest.raises(ConfigError, match=f"^{name}:"):
        Settings.from_env(env)


def test_entries_are_the_mask_as_a_png_and_the_encoded_output(cached, client, tmp_path):
    """The mask is stored as a PNG; an output as its encoded images themselves (MessagePack, no base64)."""
    first = call(cached, "/api/bg/remove")  # stores the cut-out (RGBA) and the mask
    with diskcache.Cache(str(tmp_path / "cache")) as raw:
        payloads = [entry.unpack(raw[key]).payload for key in raw]
    outputs = [msgspec.msgpack.decode(p, type=Rendered) for p in payloads if not p.startswith(b"\x89PNG")]
    assert len(payloads) == 2 and len(outputs) == 1 and outputs[0].images == {"image": first.data}
    stored = next(np.asarray(Image.open(io.BytesIO(p))) for p in payloads if p.startswith(b"\x89PNG"))
    assert Image.open(io.BytesIO(first.data)).mode == "RGBA" and stored.ndim == 2
    expected = np.asarray(open_response(call(client, "/api/bg/remove", only_mask="true")).convert("L"))
    assert np.array_equal(stored, expected)


# Computes a key in a process of its own, on the source tree it runs in (argv: the model file's sha256).
KEY_PROBE = r"""
import sys
from adapters import ModelInfo
from app.pipeline.cache.keys import entry_key, fingerprint
from config import Settings
info = ModelInfo("onnx", "u2netp", (320, 320), 1, "cpu", sys.argv[1], 1)
print(entry_key("remove", "ab" * 32, fingerprint(info, Settings.from_env({})), {"format": "png"}))
"""


def test_the_key_holds_the_pipeline_version_and_the_model_not_the_source_files(tmp_path):
    """An edit to a file that changes no output keeps every key (before: any edit under app/ changed
    them all, and a deployment started with an empty cache); the key changes with
    PIPELINE_VERSION (bumped when output bytes change) and with the model file."""
    import shutil
    import subprocess
    import sys

    from app.pipeline.cache import keys
    from tests.conftest import ROOT

    for package in ("app", "adapters", "effects", "config"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "models").symlink_to(ROOT / "models")  # the settings check that the model file is there

    def key(model_sha256: str = "0" * 64) -> str:
        return subprocess.run([sys.executable, "-c", KEY_PROBE, model_sha256], cwd=tmp_path, capture_output=True,
                              text=True, check=True).stdout.strip()

    before = key()
    assert len(before) == 64
    unrelated = tmp_path / "app" / "web" / "ops.py"
    unrelated.write_text(unrelated.read_text() + "\n# an edit that changes no output\n")
    assert key() == before
    assert key("1" * 64) != before
    source = tmp_path / "app" / "pipeline" / "cache" / "keys.py"
    version = f"PIPELINE_VERSION = {keys.PIPELINE_VERSION}\n"
    assert version in source.read_text()
    source.write_text(source.read_text().replace(version, f"PIPELINE_VERSION = {keys.PIPELINE_VERSION + 1}\n"))
    assert key() != before
