"""ONNX_RUNTIME=openvino: the same adapter and pipeline on OpenVINO instead of onnxruntime
(adapters/onnx.py: OpenVinoSession). Its masks against onnxruntime's fp32 ones on the 13 AM-2k
photos, its runs from several threads at once, and the real server running on it.

OpenVINO picks its own precision: bf16 on a CPU with AMX (masks a few levels off onnxruntime's),
fp32 elsewhere (onnxruntime's masks exactly)."""

from __future__ import annotations

import io
import statistics
import threading
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests
from PIL import Image

from adapters import load_segmenter
from app.pipeline.cache.keys import fingerprint
from app.quality.score import score
from config import Settings
from tests.conftest import photo
from tests.serverkit import running_server


@pytest.fixture(scope="module")
def openvino(settings):
    return load_segmenter(settings.replace(onnx_runtime="openvino"))


def plain(segmenter, rgb):
    return segmenter.mask(rgb, follow_edges=False)  # the map resized: the network's own difference


def test_its_masks_are_onnxruntimes_within_a_few_levels_and_score_within_five_percent(openvino, am2k_served):
    """Issue 32's bound for a faster computation: mean SAD at most 5 % above onnxruntime's fp32
    (bf16 on this Intel Xeon with AMX: 40.07 against 38.49, +4.1 %)."""
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
