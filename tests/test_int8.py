"""The int8 u2netp (adapters/int8.py): a deterministic, hash-checked build that keeps the masks."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from adapters import int8
from adapters.modelfile import file_digest
from tests.conftest import ROOT, photo

FP32 = ROOT / "models" / "u2netp.onnx"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The int8 model built by the command line, in a fresh process (the build checks its hash)."""
    dest = tmp_path_factory.mktemp("int8") / "u2netp.int8.onnx"
    subprocess.run(
        [sys.executable, "-m", "adapters.int8", "build", str(FP32), str(dest)],
        cwd=ROOT, check=True, capture_output=True, timeout=300,
    )
    return dest


def test_build_matches_the_committed_hash(built):
    assert int8.INT8_SHA256 and file_digest(built) == int8.INT8_SHA256


def test_build_is_deterministic_across_processes(built):
    # A second build, in this process (another hash seed, another interpreter state): same bytes.
    blob = int8.serialize(int8.build_model(FP32))
    assert hashlib.sha256(blob).hexdigest() == int8.INT8_SHA256 == file_digest(built)


def test_build_is_skipped_when_the_output_is_already_right(built):
    before = built.stat().st_mtime_ns
    t0 = time.perf_counter()
    assert int8.build(FP32, built) == built
    assert time.perf_counter() - t0 < 1.0 and built.stat().st_mtime_ns == before


def test_build_refuses_a_source_that_is_not_u2netp(tmp_path):
    other = tmp_path / "other.onnx"
    other.write_bytes(FP32.read_bytes() + b"\0")
    with pytest.raises(RuntimeError, match="sha256"):
        int8.build(other, tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()


def test_build_refuses_other_calibration_photos(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "girl-1.jpg").write_bytes(photo("girl-1.jpg").read_bytes())  # a subset: another calibration
    with pytest.raises(RuntimeError, match="calibration photos"):
        int8.build(FP32, tmp_path / "out.onnx", calibration_dir=photos)
    assert not (tmp_path / "out.onnx").exists()


def test_build_refuses_a_result_with_another_hash(tmp_path, monkeypatch):
    # Stands for a different onnxruntime or other calibration photos: the file is not written.
    monkeypatch.setattr(int8, "INT8_SHA256", "0" * 64)
    dest = tmp_path / "out.onnx"
    with pytest.raises(RuntimeError, match="expected 0000"):
        int8.build(FP32, dest)
    assert not dest.exists()


def test_the_fp32_islands_are_in_the_built_graph(built):
    model = onnx.load(str(built))
    nodes = {n.name: n for n in model.graph.node}
    for name in int8.FP32_NODES:
        assert name in nodes, name  # the recipe names nodes that exist
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    quantized_inputs = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    int8_convs = [c for c in convs if c.input[1] in quantized_inputs]
    assert len(int8_convs) == len(convs) - sum(1 for n in int8.FP32_NODES if n.startswith("Conv_"))


@pytest.mark.parametrize("name", ["animal-1.jpg", "girl-1.jpg"])
def test_int8_masks_agree_with_fp32(built, name):
    rgb = int8.load_rgb(photo(name))
    mad, iou = int8.agreement(int8.mask_of(built, rgb), int8.mask_of(FP32, rgb))
    assert iou > 0.97 and mad < 2.0, (mad, iou)


def test_self_check_reference_is_the_fp32_models_map():
    # The stored reference is the fp32 model's own map of the test card (to uint16 rounding).
    assert int8.self_check_figures(FP32)["block_mad"] < 5e-5


def test_self_check_passes_for_the_built_model(built):
    t0 = time.perf_counter()
    assert int8.self_check(built)  # against the stored reference: one int8 run
    assert time.perf_counter() - t0 < 3.0  # < 1 s on an idle core; headroom for a busy CI machine
    assert int8.self_check(built, FP32)  # and against the fp32 model, live
    f = int8.self_check_figures(built, FP32)
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
    assert not int8.self_check(broken)
    assert not int8.self_check(broken, FP32)


def test_self_check_fails_for_random_weights(tmp_path):
    model = onnx.load(str(FP32))
    rng = np.random.default_rng(0)
    for t in model.graph.initializer:
        w = numpy_helper.to_array(t)
        if w.dtype == np.float32 and w.ndim == 4:
            t.CopyFrom(numpy_helper.from_array(rng.normal(0, w.std() + 1e-6, w.shape).astype(np.float32), t.name))
    broken = tmp_path / "random.onnx"
    onnx.save(model, str(broken))
    assert not int8.self_check(broken)
    assert not int8.self_check(broken, FP32)


def test_self_check_fails_for_a_file_that_is_not_a_model(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    assert not int8.self_check(junk)
    assert not int8.self_check(junk, FP32)


def test_cpu_has_vnni_reads_the_cpu_flags():
    got = int8.cpu_has_vnni()
    assert isinstance(got, bool)
    if sys.platform.startswith("linux"):
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
        assert got == ("avx512_vnni" in flags or "avx_vnni" in flags)
