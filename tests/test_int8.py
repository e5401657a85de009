"""The int8 u2netp: a deterministic, hash-checked offline build (adapters/quantize.py) that keeps
the masks, from the committed photos or the user's own, and its boot-time self-check (adapters/int8.py)."""

from __future__ import annotations

import ast
import hashlib
import shutil
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from adapters import int8, load_segmenter, quantize
from adapters.modelfile import file_digest
from config import Settings
from tests.conftest import DATA, ROOT, photo

FP32 = ROOT / "models" / "u2netp.onnx"


def seg(model):
    return quantize.segmenter(model)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The int8 model built by the command line, in a fresh process (the build checks its hash)."""
    dest = tmp_path_factory.mktemp("int8") / "u2netp.int8.onnx"
    subprocess.run(
        [sys.executable, "-m", "adapters.quantize", "build", str(FP32), str(dest)],
        cwd=ROOT, check=True, capture_output=True, timeout=300,
    )
    return dest


def test_build_matches_the_committed_hash(built):
    assert quantize.INT8_SHA256 and file_digest(built) == quantize.INT8_SHA256


def test_build_is_deterministic_across_processes(built):
    # A second build, in this process (another hash seed, another interpreter state): same bytes.
    blob = quantize.serialize(quantize.build_model(FP32))
    assert hashlib.sha256(blob).hexdigest() == quantize.INT8_SHA256 == file_digest(built)


def test_build_is_skipped_when_the_output_is_already_right(built):
    before = built.stat().st_mtime_ns
    t0 = time.perf_counter()
    assert quantize.build(FP32, built) == built
    assert time.perf_counter() - t0 < 1.0 and built.stat().st_mtime_ns == before


def test_build_refuses_a_source_that_is_not_u2netp(tmp_path):
    other = tmp_path / "other.onnx"
    other.write_bytes(FP32.read_bytes() + b"\0")
    with pytest.raises(RuntimeError, match="sha256"):
        quantize.build(other, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_the_pinned_photos_are_in_the_repository():
    # a fresh clone builds the pinned model: the calibration photos are committed, digest-checked
    assert quantize.CALIBRATION_DIR == DATA / "fixtures" / "images"
    assert quantize.calibration_digest(quantize.calibration_photos()) == quantize.CALIBRATION_SHA256


def test_build_from_other_photos_warns_and_passes_the_self_check(tmp_path, built):
    """`make int8 CALIBRATION=DIR`: not refused; a WARNING, a file with another hash, marked as
    such, which the boot self-check accepts; `make model` keeps it, the pinned build replaces it."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("am2k-01.jpg", "am2k-02.jpg", "am2k-03.jpg"):
        shutil.copyfile(DATA / "quality" / "am2k" / name, photos / name)
    dest = tmp_path / "u2netp.int8.onnx"

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "adapters.quantize", "build", str(FP32), str(dest), *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)

    out = cli("--calibration-dir", str(photos))
    assert out.returncode == 0, out.stderr
    warning = next(line for line in out.stderr.splitlines() if line.startswith("WARNING"))
    assert "not the pinned set" in warning and "INT8_SHA256" in warning and "make quality" in warning
    assert "passes the boot self-check" in out.stderr
    assert file_digest(dest) != quantize.INT8_SHA256 and quantize.custom_calibration(dest).endswith(" 3")
    assert quantize.self_checked(dest) and quantize.self_checked(dest, FP32)
    shutil.copyfile(FP32, tmp_path / "u2netp.onnx")  # the service serves it, after its own self-check
    env = {"ONNX_PRECISION": "int8", "MODEL_PATH": str(tmp_path / "u2netp.onnx"), "CACHE_BACKEND": "none"}
    served = load_segmenter(Settings.from_env(env))
    assert served.runtime()["precision"] == "int8" and served.info.file_sha256 == file_digest(dest)
    kept = cli("--keep-custom")  # `make model`: a build from the user's photos stays
    assert kept.returncode == 0 and "kept" in kept.stderr and quantize.custom_calibration(dest)
    assert cli().returncode == 0  # `make int8` with the default photos: the pinned build again
    assert file_digest(dest) == quantize.INT8_SHA256 == file_digest(built) and not quantize.custom_calibration(dest)


def test_the_boot_check_does_not_import_the_build():
    """adapters.int8 (the boot check) imports no other adapters module, so adapters.onnx can import
    it without a cycle; the service's adapter pulls in neither the build nor the onnx package."""
    tree = ast.parse((ROOT / "adapters" / "int8.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not {m for m in imported if m and m.startswith("adapters")} and "onnx" not in imported
    code = "import sys, adapters.onnx; print(sorted(m for m in ('adapters.quantize', 'onnx') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_build_refuses_a_result_with_another_hash(tmp_path, monkeypatch):
    # Stands for a different onnxruntime (the pinned photos, another result): the file is not written.
    monkeypatch.setattr(quantize, "INT8_SHA256", "0" * 64)
    dest = tmp_path / "out.onnx"
    with pytest.raises(RuntimeError, match="expected 0000"):
        quantize.build(FP32, dest)
    assert not dest.exists()


def test_the_fp32_islands_are_in_the_built_graph(built):
    model = onnx.load(str(built))
    nodes = {n.name: n for n in model.graph.node}
    for name in quantize.FP32_NODES:
        assert name in nodes, name  # the recipe names nodes that exist
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    quantized_inputs = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    int8_convs = [c for c in convs if c.input[1] in quantized_inputs]
    assert len(int8_convs) == len(convs) - sum(1 for n in quantize.FP32_NODES if n.startswith("Conv_"))


@pytest.mark.parametrize("name", ["animal-1.jpg", "girl-1.jpg"])
def test_int8_masks_agree_with_fp32(built, name):
    rgb = quantize.load_rgb(photo(name))
    mad, iou = int8.agreement(quantize.mask_of(built, rgb), quantize.mask_of(FP32, rgb))
    assert iou > 0.97 and mad < 2.0, (mad, iou)


def test_self_check_reference_is_the_fp32_models_map():
    # The stored reference is the fp32 model's own map of the test card (to uint16 rounding).
    assert int8.self_check_figures(seg(FP32))["block_mad"] < 5e-5


def test_self_check_passes_for_the_built_model(built):
    t0 = time.perf_counter()
    assert int8.self_check(seg(built))  # against the stored reference: one int8 run
    assert time.perf_counter() - t0 < 3.0  # < 1 s on an idle core; headroom for a busy CI machine
    assert int8.self_check(seg(built), seg(FP32))  # and against the fp32 model, live
    f = int8.self_check_figures(seg(built), seg(FP32))
    assert f["block_mad"] < 0.0004 and f["raw_mad"] < 0.0006 and f["iou"] > 0.995, f


def test_self_check_fails_for_a_zeroed_weight(built, tmp_path):
    # The int8 weights of one Conv (the largest, at full resolution) zeroed: still a valid model.
    model = onnx.load(str(built))
    target = next(
        t for t in model.graph.initializer
        if t.name.endswith("_quantized") and t.data_type == onnx.TensorProto.INT8 and numpy_helper.to_array(t).size == 64 * 128 * 9
    )
    target.CopyFrom(numpy_helper.from_array(np.zeros_like(numpy_helper.to_array(target)), target.name))
    broken = tmp_path / "zeroed.onnx"
    onnx.save(model, str(broken))
    assert not quantize.self_checked(broken)
    assert not quantize.self_checked(broken, FP32)


def test_self_check_fails_for_random_weights(tmp_path):
    model = onnx.load(str(FP32))
    rng = np.random.default_rng(0)
    for t in model.graph.initializer:
        w = numpy_helper.to_array(t)
        if w.dtype == np.float32 and w.ndim == 4:
            t.CopyFrom(numpy_helper.from_array(rng.normal(0, w.std() + 1e-6, w.shape).astype(np.float32), t.name))
    broken = tmp_path / "random.onnx"
    onnx.save(model, str(broken))
    assert not quantize.self_checked(broken)
    assert not quantize.self_checked(broken, FP32)


def test_self_check_fails_for_a_file_that_is_not_a_model(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    assert not quantize.self_checked(junk)
    assert not quantize.self_checked(junk, FP32)


def test_cpu_has_vnni_reads_the_cpu_flags():
    got = int8.cpu_has_vnni()
    assert isinstance(got, bool)
    if sys.platform.startswith("linux"):
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
        assert got == ("avx512_vnni" in flags or "avx_vnni" in flags)
