"""ONNX_RUNTIME=openvino: the same adapter and pipeline on OpenVINO instead of onnxruntime
(adapters/onnx.py: OpenVinoSession), ONNX_RUNTIME=auto's choice where the CPU has VNNI. Its
masks against onnxruntime's on the 13 AM-2k photos (the fp32 model, and the int8 build with the
edge matting), its runs from several threads at once, the compiling in a child process, the
activations handed back between runs, and the real server running on it.

OpenVINO runs in fp32 (INFERENCE_PRECISION_HINT f32) but for the int8 build's quantized
convolutions, which it runs in int8."""

from __future__ import annotations

import io
import os
import statistics
import threading
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests
from PIL import Image

from adapters import ModelLoadError, load_segmenter
from adapters.int8 import cpu_has_vnni
from adapters.onnx import OpenVinoSession
from app.ops import tuning
from app.pipeline.matte import matte
from app.pipeline.cache.keys import fingerprint
from app.quality.score import score
from config import Settings
from config.settings import onnx_runtime_for_auto
from tests.conftest import photo
from tests.serverkit import running_server


@pytest.fixture(scope="module")
def openvino(settings):
    return load_segmenter(settings.replace(onnx_runtime="openvino"))


def plain(segmenter, rgb):
    return segmenter.mask(rgb, follow_edges=False)  # the map resized: the network's own difference


def test_its_masks_are_onnxruntimes_within_a_few_levels_and_score_within_five_percent(openvino, am2k_served):
    """Issue 32's bound for a faster computation: mean SAD at most 5 % above onnxruntime's fp32
    (the fp32 model, in fp32: within a level of onnxruntime's masks)."""
    diffs, crossed, sads, reference = [], [], [], []
    for served in am2k_served.values():
        ours = plain(openvino, served.rgb)
        diffs.append(float(np.abs(ours.astype(int) - served.mask.astype(int)).mean()))
        crossed.append(float(((ours >= 128) != (served.mask >= 128)).mean()))
        sads.append(score(ours, served.truth)["sad"])
        reference.append(score(served.mask, served.truth)["sad"])
    print(f"openvino ({openvino.runtime()['precision']}): mean |diff| {statistics.mean(diffs):.2f} levels, "
          f"{statistics.mean(crossed):.3%} across 128, SAD {statistics.mean(sads):.2f} against {statistics.mean(reference):.2f}")
    assert statistics.mean(diffs) < 4 and max(crossed) < 0.02
    assert statistics.mean(sads) <= 1.05 * statistics.mean(reference)


def test_the_int8_build_on_openvino_cuts_out_as_well_as_on_onnxruntime(settings, am2k_served):
    """What auto runs where the CPU has VNNI: the int8 build on OpenVINO, against the same file on
    onnxruntime, each mask through the edge matting as served: mean SAD within 5 % (on an Intel
    Xeon with AMX: 26.50 against 26.79, with bf16 for the rest it was 29.19)."""
    int8 = settings.replace(onnx_precision="int8")
    ov, ort = load_segmenter(int8.replace(onnx_runtime="openvino")), load_segmenter(int8)
    assert ov.runtime()["engine"].startswith("openvino") and ort.runtime()["engine"].startswith("onnxruntime")
    assert ov.info.model_id == ort.info.model_id == "u2netp.int8" and ov.runtime()["precision"] == "int8"
    sads, reference, diffs = [], [], []
    for served in am2k_served.values():
        ours, theirs = plain(ov, served.rgb), plain(ort, served.rgb)
        diffs.append(float(np.abs(ours.astype(int) - theirs.astype(int)).mean()))
        sads.append(score(matte(served.rgb, ours), served.truth)["sad"])
        reference.append(score(matte(served.rgb, theirs), served.truth)["sad"])
    print(f"int8 build: OpenVINO SAD {statistics.mean(sads):.2f} against onnxruntime's {statistics.mean(reference):.2f}, "
          f"masks {statistics.mean(diffs):.2f} levels apart")
    assert statistics.mean(diffs) < 4
    assert statistics.mean(sads) <= 1.05 * statistics.mean(reference)


def test_auto_runs_openvino_exactly_where_the_cpu_has_vnni():
    expected = "openvino" if cpu_has_vnni() else "onnxruntime"
    assert onnx_runtime_for_auto()[0] == expected
    assert Settings.from_env({"ONNX_RUNTIME": "auto"}).onnx_runtime == expected
    assert Settings(onnx_runtime="auto").onnx_runtime == expected
    assert Settings.from_env({}).onnx_runtime == "onnxruntime"  # the default (see config/settings.py)
    if expected == "openvino":
        seg = load_segmenter(Settings.from_env({"ONNX_RUNTIME": "auto", "CACHE_BACKEND": "none"}))
        runtime = seg.runtime()
        assert runtime["precision"] == "int8" and "auto: this CPU has VNNI" in runtime["precision_reason"]


def _mapped_mb(marker: str, pid: int | str = "self") -> float:
    """Resident MB of the mappings whose file path holds ``marker``."""
    total, inside = 0, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if not fields[0].endswith(":"):  # a mapping's header line
            inside = len(fields) >= 6 and marker in fields[5]
        elif fields[0] == "Rss:" and inside:
            total += int(fields[1])
    return total / 1024


def test_the_compiling_is_done_by_a_child_process():
    """The service's process imports the compiled network: the ONNX reader never loads in it."""
    before = "libopenvino_onnx_frontend" in Path("/proc/self/maps").read_text()
    session = OpenVinoSession(Path(Settings().model_path), 1)
    assert session.get_inputs()[0].shape == [1, 3, 320, 320]
    assert before or "libopenvino_onnx_frontend" not in Path("/proc/self/maps").read_text()


def test_a_file_openvino_cannot_read_is_a_load_error_naming_it(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(ModelLoadError, match="broken.onnx is not a model OpenVINO can load"):
        OpenVinoSession(bad, 1)


def test_its_activations_are_handed_back_between_runs_unless_kept(am2k_served):
    """``release`` (lean): after a run the network's buffers go back; ``fast`` keeps them."""
    session = OpenVinoSession(Path(Settings().model_path), 1, release=True)
    feeds = {session.get_inputs()[0].name: np.random.default_rng(0).random((1, 3, 320, 320), np.float32)}
    out = [session.get_outputs()[0].name]
    first = session.run(out, feeds)[0]
    released = psutil.Process().memory_info().rss
    session.release = False
    kept = session.run(out, feeds)[0]
    held = psutil.Process().memory_info().rss
    assert np.array_equal(first, kept)
    assert held - released > 30 * 2**20, (held - released) / 2**20


def _mapped_elsewhere(marker: str) -> bool:
    """Whether any process (this one included) maps a file whose path holds ``marker``."""
    for proc in psutil.process_iter():
        try:
            if marker in Path(f"/proc/{proc.pid}/maps").read_text():
                return True
        except OSError:
            continue
    return False


def test_the_model_runtimes_load_time_pages_are_handed_back():
    """app.ops.tuning.page_out_model_runtime, in a fresh process as a worker does it at boot: every
    read-only mapping of OpenVINO's libraries is advised, a run after it gives the same mask, and
    where no other process maps those libraries (the kernel leaves shared pages: not so under a
    test run that loaded OpenVINO elsewhere) their resident pages drop."""
    script = """
import sys, numpy as np
sys.path.insert(0, {root!r})
from tests.test_openvino import _mapped_mb
from adapters import load_segmenter
from app.ops import tuning
from config import Settings
settings = Settings.from_env({{"ONNX_RUNTIME": "openvino", "CACHE_BACKEND": "none"}})
segmenter = load_segmenter(settings)
rgb = np.random.default_rng(1).integers(0, 256, (200, 300, 3), dtype=np.uint8)
first = segmenter.mask(rgb)
before = _mapped_mb("/openvino/")
advised = tuning.page_out_model_runtime(settings)
again = segmenter.mask(rgb)
print(before, _mapped_mb("/openvino/"), advised, bool((first == again).all()))
"""
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parent.parent)
    alone = not _mapped_elsewhere("libopenvino_intel_cpu_plugin")
    out = subprocess.run([sys.executable, "-c", script.format(root=root)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "GLIBC_TUNABLES": tuning.MALLOC_TUNABLES})
    assert out.returncode == 0, out.stderr[-2000:]
    before, after, advised, same = out.stdout.split()[-4:]
    print(f"OpenVINO's libraries: {float(before):.1f} MB resident, {float(after):.1f} after a run "
          f"({int(advised) / 2**20:.0f} MB advised; {'no' if alone else 'another'} process mapped them)")
    assert int(advised) > 20 * 2**20 and same == "True"
    if alone:
        assert float(before) - float(after) > 10


def test_runs_from_several_threads_at_once_give_each_its_own_mask(openvino, am2k_served):
    """Each run takes an infer request of its own from the pool: four threads at once, two photos
    each, get exactly the masks those photos get one at a time."""
    photos = [am2k_served[name].rgb for name in sorted(am2k_served)[:4]]
    alone = [plain(openvino, rgb) for rgb in photos]
    results: dict[tuple[int, int], np.ndarray] = {}
    start = threading.Barrier(4)

    def work(i):
        start.wait()
        for k in range(2):
            j = (i + k) % len(photos)
            results[(i, k)] = plain(openvino, photos[j])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (i, k), mask in results.items():
        assert np.array_equal(mask, alone[(i + k) % len(photos)])


def test_it_reports_itself_and_keys_the_cache_apart(openvino, settings, segmenter):
    runtime = openvino.runtime()
    assert runtime["engine"].startswith("openvino ") and runtime["precision"] in ("bf16", "fp32")
    assert "ONNX_RUNTIME=openvino" in runtime["precision_reason"]
    assert openvino.info.model_id == "u2netp"  # MODEL_PATH itself, never the int8 build
    ours = fingerprint(openvino.info, settings.replace(onnx_runtime="openvino"))
    assert ours != fingerprint(segmenter.info, settings) and ours["onnx_runtime"] == "openvino"


def test_an_unknown_runtime_is_a_config_error():
    from config import ConfigError

    with pytest.raises(ConfigError, match="ONNX_RUNTIME"):
        Settings.from_env({"ONNX_RUNTIME": "tensorrt"})


def test_the_server_runs_on_openvino():
    with running_server({"ONNX_RUNTIME": "openvino"}, boot_timeout_s=180) as server:
        status = requests.get(server.url + "/api/bg/status", timeout=10).json()
        assert status["runtime"]["engine"].startswith("openvino")
        resp = requests.post(server.url + "/api/bg/remove", files={"file": ("animal-1.jpg", photo("animal-1.jpg").read_bytes())},
                             timeout=60)
        assert resp.status_code == 200, resp.text
        out = Image.open(io.BytesIO(resp.content))
        alpha = np.asarray(out.getchannel("A"))
        assert out.mode == "RGBA" and 0.05 < (alpha >= 128).mean() < 0.95
        # the worker never loaded onnxruntime (adapters/onnx.py imports it on first use: ~19 MB)
        worker = psutil.Process(server.process.pid).children()[0]
        maps = Path(f"/proc/{worker.pid}/maps").read_text()
        assert "openvino" in maps and "onnxruntime" not in maps
        assert "libopenvino_onnx_frontend" not in maps  # compiled by a child process
