"""ONNX_PRECISION: which u2netp the 512 MB tier serves (adapters/onnx.py), fp32 or the int8 build
that `make setup` makes beside it (adapters/quantize.py; its boot self-check: adapters/int8.py),
and what each choice says about itself."""

from __future__ import annotations

import shutil

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from adapters import int8, load_segmenter, quantize
from adapters.base import ModelLoadError
from adapters.onnx import int8_path
from app.web.factory import create_app
from app.pipeline.cache.keys import fingerprint
from config import ConfigError, Settings
from tests.conftest import ROOT, iou, photo, post

FP32 = ROOT / "models" / "u2netp.onnx"
INT8 = int8_path(FP32)


def settings_for(precision: str, model: str | None = None) -> Settings:
    # onnxruntime: its precision's choice (OpenVINO's, ONNX_RUNTIME=auto's choice on VNNI: tests/test_openvino.py)
    env = {"ONNX_PRECISION": precision, "CACHE_BACKEND": "none", "INFERENCE_THREADS": "1", "ONNX_RUNTIME": "onnxruntime"}
    return Settings.from_env({**env, **({"MODEL_PATH": model} if model else {})})


def test_make_setup_built_the_int8_model_beside_the_fp32_one():
    assert INT8 == ROOT / "models" / "u2netp.int8.onnx"
    assert INT8.is_file(), "run `make setup`: it builds the int8 model"
    from adapters.modelfile import file_digest
    assert file_digest(INT8) == quantize.INT8_SHA256


def test_fp32_serves_model_path():
    seg = load_segmenter(settings_for("fp32"))
    assert seg.info.file_sha256 == quantize.SOURCE_SHA256 and seg.runtime()["precision"] == "fp32"


def test_int8_serves_the_int8_build_and_keeps_the_masks():
    q, f = load_segmenter(settings_for("int8")), load_segmenter(settings_for("fp32"))
    assert q.runtime()["precision"] == "int8" and q.info.file_sha256 == quantize.INT8_SHA256
    assert q.info.model_id == "u2netp.int8"
    for name in ("animal-1.jpg", "animal-2.jpg"):
        rgb = np.asarray(Image.open(photo(name)).convert("RGB"))
        assert iou(q.mask(rgb) >= 128, f.mask(rgb) >= 128) > 0.97


def test_auto_takes_int8_exactly_where_the_cpu_has_vnni():
    seg = load_segmenter(settings_for("auto"))
    expected = "int8" if int8.cpu_has_vnni() else "fp32"
    assert seg.runtime()["precision"] == expected, seg.runtime()["precision_reason"]


def test_without_an_int8_build_int8_fails_the_boot_and_auto_serves_fp32(tmp_path):
    alone = tmp_path / "u2netp.onnx"
    shutil.copyfile(FP32, alone)
    with pytest.raises(ModelLoadError, match="ONNX_PRECISION=int8: no int8 model"):
        load_segmenter(settings_for("int8", str(alone)))
    seg = load_segmenter(settings_for("auto", str(alone)))
    assert seg.runtime()["precision"] == "fp32"
    assert "no int8 build" in seg.runtime()["precision_reason"] or "VNNI" in seg.runtime()["precision_reason"]


def test_a_broken_int8_build_fails_its_self_check(tmp_path):
    # the int8 file with its largest weight tensor zeroed: still a loadable model, wrong maps
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(INT8))
    biggest = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    biggest.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(biggest)), biggest.name))
    shutil.copyfile(FP32, tmp_path / "u2netp.onnx")
    onnx.save(model, str(tmp_path / "u2netp.int8.onnx"))
    with pytest.raises(ModelLoadError, match="failed its self-check"):
        load_segmenter(settings_for("int8", str(tmp_path / "u2netp.onnx")))
    if int8.cpu_has_vnni():  # auto would have taken it: it falls back instead
        seg = load_segmenter(settings_for("auto", str(tmp_path / "u2netp.onnx")))
        assert seg.runtime() == {"precision": "fp32", "precision_reason": "auto: u2netp.int8.onnx failed its self-check",
                                 "engine": f"onnxruntime {ort.__version__}"}


def test_a_corrupt_int8_file_fails_the_boot_by_name(tmp_path):
    shutil.copyfile(FP32, tmp_path / "u2netp.onnx")
    (tmp_path / "u2netp.int8.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="ONNX_PRECISION=int8"):
        load_segmenter(settings_for("int8", str(tmp_path / "u2netp.onnx")))


def test_an_unknown_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="ONNX_PRECISION"):
        Settings.from_env({"ONNX_PRECISION": "int4"})


def test_the_precision_is_part_of_the_cache_key_and_of_status():
    s32, s8 = settings_for("fp32"), settings_for("int8")
    f32, f8 = load_segmenter(s32), load_segmenter(s8)
    assert fingerprint(f32.info, s32) != fingerprint(f8.info, s8)  # an int8 mask is never served as fp32's
    client = create_app(s8, segmenter=f8).test_client()
    runtime = client.get("/api/bg/status").get_json()["runtime"]
    assert runtime["precision"] == "int8" and "self-check" in runtime["precision_reason"]
    resp = post(client, "/api/bg/remove", photo("animal-1.jpg").read_bytes())
    assert resp.status_code == 200 and float(resp.headers["X-Mask-Confidence"]) > 0.5


def test_the_service_never_imports_onnx():
    import subprocess
    import sys

    code = ("import sys; from adapters import load_segmenter; from config import Settings; "
            "load_segmenter(Settings.from_env({'ONNX_PRECISION': 'int8'})); print('onnx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stderr
