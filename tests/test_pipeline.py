"""The one pipeline: a job runs the same outside Flask, its timings have one source, its cache
entries hold encoded images, its errors carry no HTTP statuses, and health tells the truth."""

from __future__ import annotations

import base64
import inspect
import subprocess
import sys
from pathlib import Path

import diskcache
import msgspec
import pytest
from prometheus_client import REGISTRY

from app.pipeline import IMAGE, Job, Rendered, errors as pipeline_errors
from app.pipeline.cache import entry
from app.pipeline.options import ChangeColorOptions, ProcessOptions, RemoveOptions
from app.pipeline.runtime import build_runtime
from app.web.errors import STATUSES, status_of
from tests.conftest import photo, post

ROOT = Path(__file__).resolve().parent.parent

DOG = photo("animal-1.jpg").read_bytes()
EFFECTS2 = '["dither", "8bit"]'


def test_a_job_outside_flask_gives_the_bytes_the_endpoints_give(settings, segmenter, client):
    """Every way in (the CLI, a batch) runs the same Job as the endpoints: same options, same bytes."""
    runtime = build_runtime(settings.replace(warmup=False), segmenter)
    for endpoint, options, fields in [
        ("/api/bg/remove", RemoveOptions(use_cache=False), {}),
        ("/api/bg/change_color", ChangeColorOptions.from_form({"color": "navy", "format": "png"}), {"color": "navy",
                                                                                                     "format": "png"}),
    ]:
        rendered = Job(runtime, options, DOG).run()
        assert rendered.images[IMAGE] == post(client, endpoint, DOG, **fields).data, endpoint
    v2 = Job(runtime, ProcessOptions.from_form({"effects": EFFECTS2}), DOG).run()
    body = post(client, "/api/v2/process", DOG, effects=EFFECTS2).get_json()
    assert {k: base64.b64encode(v).decode() for k, v in v2.images.items()} == body["images"]
    assert (v2.width, v2.height) == (body["width"], body["height"])
    # options built in code, as a CLI builds them: what the form would leave to the endpoint is filled in
    built = Job(runtime, ProcessOptions(effects=["dither", "8bit"], use_cache=False), DOG).run()
    assert built.images == v2.images


def stage_count(stage: str) -> float:
    return REGISTRY.get_sample_value("bgremove_stage_duration_seconds_count", {"stage": stage}) or 0.0


def test_one_timing_source_for_server_timing_metadata_and_metrics(client):
    stages = ["cache", "decode", "segment", "matte", "review", "compose", "dither", "encode", "8bit"]  # in the order first entered
    before = {s: stage_count(s) for s in stages}
    resp = post(client, "/api/v2/process", DOG, effects=EFFECTS2, use_cache="false")
    timings = resp.get_json()["metadata"]["timings_ms"]
    header = dict(part.split(";dur=") for part in resp.headers["Server-Timing"].split(", "))
    assert list(timings) == list(header) == stages
    assert all(abs(float(header[s]) - timings[s]) <= 0.051 for s in stages)  # the same figures, rounded once
    # each stage observed by the metrics each time it ran: encode once per image (two effects),
    # cache once for the output and once for the mask, compose for each of the job's two steps (its
    # layout's bounds, the cut-out) and then once per image (its framing); the response adds them up
    assert {s: stage_count(s) - before[s] for s in stages} == {**dict.fromkeys(stages, 1.0), "encode": 2.0,
                                                               "cache": 2.0, "compose": 4.0}


def test_a_process_result_is_cached_as_its_encoded_images(make_app, tmp_path):
    """/api/v2/process stores the images themselves (MessagePack), not base64 JSON, and a hit serves them."""
    client = make_app(cache_backend="local", cache_dir=tmp_path / "cache").test_client()
    first = post(client, "/api/v2/process", DOG, effects=EFFECTS2)
    first.close()
    with diskcache.Cache(str(tmp_path / "cache")) as raw:
        payloads = [entry.unpack(raw[key]).payload for key in raw]
    stored = [p for p in payloads if not p.startswith(b"\x89PNG")]  # the other entry is the mask
    assert len(stored) == 1
    images = {name: base64.b64decode(data) for name, data in first.get_json()["images"].items()}
    assert msgspec.msgpack.decode(stored[0], type=Rendered).images == images
    assert len(stored[0]) < sum(len(b64) for b64 in first.get_json()["images"].values())  # smaller than base64
    hit = post(client, "/api/v2/process", DOG, effects=EFFECTS2)
    assert hit.headers["X-Cache"] == "HIT" and hit.get_json()["images"] == first.get_json()["images"]


def test_pipeline_errors_carry_no_http_status_and_map_in_one_table():
    classes = [c for _, c in inspect.getmembers(pipeline_errors, inspect.isclass)
               if issubclass(c, pipeline_errors.ServiceError)]
    assert len(classes) >= 10
    source = inspect.getsource(pipeline_errors)
    assert "flask" not in source and "werkzeug" not in source and "status =" not in source
    for cls in classes:
        assert not hasattr(cls, "status"), cls
    args = {pipeline_errors.BadOption: ("field", "bad"), pipeline_errors.Overloaded: ("busy", 3)}
    for cls in classes:
        if cls in (pipeline_errors.ServiceError, pipeline_errors.FileError, pipeline_errors.UrlError):
            continue
        assert cls in STATUSES, cls
        assert 400 <= status_of(cls(*args.get(cls, ("message",)))) < 600


def test_health_says_model_loaded_only_once_the_model_ran(make_app, tmp_path):
    """A worker that has only served cache hits is serving (200), but its model has not run."""
    shared = {"cache_backend": "local", "cache_dir": tmp_path / "cache", "warmup": False}
    first = make_app(**shared).test_client()
    assert first.get("/api/bg/health").status_code == 503
    post(first, "/api/bg/remove", DOG).close()
    assert first.get("/api/bg/health").get_json()["model_loaded"] is True
    other = make_app(**shared).test_client()  # another worker on the same cache
    hit = post(other, "/api/bg/remove", DOG)
    assert hit.headers["X-Cache"] == "HIT"
    health = other.get("/api/bg/health")
    assert health.status_code == 200 and health.get_json() | {"memory_mb": 0} == {
        "status": "healthy", "model_loaded": False, "memory_mb": 0}
    assert other.get("/api/bg/status").get_json()["memory"]["model_loaded"] is False


@pytest.mark.parametrize("options", [RemoveOptions, ChangeColorOptions, ProcessOptions])
def test_the_form_schema_is_the_declaration(options):
    """/openapi.json's form fields are the options' declared fields, with the declared ranges."""
    schema = options.form_schema()
    assert list(schema) == list(options.field_names())
    assert schema["quality"]["minimum"] == 1 and schema["quality"]["maximum"] == 100
    assert schema["use_cache"] == {"description": "read and write the result cache", "type": "boolean", "default": True}


def test_the_pipeline_and_its_runtime_import_without_flask():
    """A CLI or a batch worker runs jobs without a web app: importing the pipeline loads no Flask."""
    probe = ("import sys, app.pipeline, app.pipeline.runtime, app.pipeline.run; "
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('flask', 'werkzeug')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
