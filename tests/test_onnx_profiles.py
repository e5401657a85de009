"""Model profiles: inferred from the graph's input shape, and applied as the family expects.

Tiny synthetic graphs (built with the onnx package) stand in for u2net/isnet-family files:
their output is the channel mean of the normalised input, so the mask shows exactly
what preprocessing did.
"""

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from adapters import ModelLoadError, load_segmenter
from tests.conftest import ROOT

MODEL = ROOT / "models" / "u2netp.onnx"


def channel_mean_graph(path, side, with_weights=0):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, side, side])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, side, side])
    nodes = [helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=1)]
    inits = [helper.make_tensor("axes", TensorProto.INT64, [1], [1])]
    if with_weights:
        inits.append(helper.make_tensor("w", TensorProto.FLOAT, [with_weights], [0.0] * with_weights))
    nodes.append(helper.make_node("Identity", ["m"], ["y"]))
    model = helper.make_model(helper.make_graph(nodes, "mean", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, path)
    return path


def split_image(h=200, w=300):
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[:, w // 2:] = 255
    return rgb


def test_isnet_profile_inferred_from_1024_input(tmp_path, settings):
    seg = load_segmenter(settings.replace(model_path=channel_mean_graph(tmp_path / "isnet-like.onnx", 1024, 10)))
    assert seg.profile.name == "isnet" and seg.info.input_size == (1024, 1024)
    assert seg.info.model_id == "isnet-like" and seg.info.parameters == 1 + 10
    # (x/max - 0.5) / 1.0: black -> -0.5, white -> 0.5; min-max normalised -> 0 and 255
    mask = seg.mask(split_image())
    assert mask.shape == (200, 300)
    assert mask[:, :140].max() == 0 and mask[:, 160:].min() == 255


def test_u2net_profile_inferred_from_320_input(tmp_path, settings):
    seg = load_segmenter(settings.replace(model_path=channel_mean_graph(tmp_path / "u.onnx", 320)))
    assert seg.profile.name == "u2net" and seg.info.input_size == (320, 320)
    # ImageNet statistics weigh channels differently: a pure red and a pure blue half differ
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[:, :32, 0] = 255
    rgb[:, 32:, 2] = 255
    tensor = seg.preprocess(rgb)
    assert tensor.shape == (1, 3, 320, 320) and tensor.dtype == np.float32
    assert np.isclose(tensor[0, 0, 0, 0], (1 - 0.485) / 0.229, atol=1e-5)
    assert np.isclose(tensor[0, 2, 0, 0], (0 - 0.406) / 0.225, atol=1e-5)


def test_unknown_input_size_needs_a_profile(tmp_path, settings):
    path = channel_mean_graph(tmp_path / "odd.onnx", 512)
    with pytest.raises(ModelLoadError) as err:
        load_segmenter(settings.replace(model_path=path))
    assert str(err.value).startswith("MODEL_PROFILE:")


def test_explicit_profile_must_fit_the_graph(tmp_path, settings):
    path = channel_mean_graph(tmp_path / "isnet-like.onnx", 1024)
    with pytest.raises(ModelLoadError) as err:
        load_segmenter(settings.replace(model_path=path, model_profile="u2net"))
    assert str(err.value).startswith("MODEL_PROFILE:") and "1024" in str(err.value)
    assert load_segmenter(settings.replace(model_path=path, model_profile="isnet")).profile.name == "isnet"


def test_the_malloc_policy_is_set_at_boot_not_by_the_adapter(tmp_path, settings, monkeypatch):
    """app.ops.tuning.configure makes large blocks mmaps and caps the malloc arenas, once for the
    process, in every memory mode (in fast the arena keeps the activations, the policy keeps the
    rest from fragmenting the heap), and raises the mmap threshold to 1 MiB once the model has
    loaded (app.ops.tuning.after_boot); loading the model sets nothing; the GPU tier sets nothing."""
    from types import SimpleNamespace

    from app.ops import tuning

    calls = []
    monkeypatch.setattr(tuning, "_libc", SimpleNamespace(mallopt=lambda *args: calls.append(args)))
    load_segmenter(settings.replace(model_path=channel_mean_graph(tmp_path / "u.onnx", 320)))
    assert calls == []
    for mode in ("lean", "balanced", "fast"):
        tuning.configure(settings.replace(onnx_memory_mode=mode))
        assert calls == [(tuning.M_MMAP_THRESHOLD, 128 * 1024), (tuning.M_ARENA_MAX, 2)]
        calls.clear()
        tuning.after_boot(settings.replace(onnx_memory_mode=mode))  # serving: blocks under 1 MiB from the heap
        assert calls == [(tuning.M_MMAP_THRESHOLD, 1 << 20)]
        calls.clear()
    assert not tuning.wants_malloc_tunables(settings.replace(segmenter="inspyrenet"))
    tuning.after_boot(settings.replace(segmenter="inspyrenet"))
    assert calls == []


FAULTS_PER_RUN = r"""
import json, resource, sys
import numpy as np
from app.ops import tuning
from config import Settings
from adapters.onnx import load
settings = Settings.from_env({"MODEL_PATH": sys.argv[1], "ONNX_MEMORY_MODE": sys.argv[2], "ONNX_PRECISION": "fp32"})
tuning.configure(settings)
segmenter = load(settings)
photo = np.random.default_rng(0).integers(0, 256, (320, 320, 3), dtype=np.uint8)
for _ in range(2):
    segmenter.mask(photo)
tuning.after_boot(settings)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
segmenter.mask(photo)
print(json.dumps({"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def test_fast_keeps_a_runs_activations_in_one_arena(tmp_path):
    """``fast``: the process's shared arena (adapters.onnx._shared_arena) keeps the activations
    between runs, so a warm run faults in (almost) no memory; ``lean`` gives them back after each
    run and faults them in again. The real u2netp, in a process of its own under the server's
    malloc policy (the arena is registered once per process)."""
    faults = {}
    for mode in ("lean", "fast"):
        out = subprocess.run([sys.executable, "-c", FAULTS_PER_RUN, str(MODEL), mode], capture_output=True,
                             text=True, timeout=300, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert out.returncode == 0, out.stderr[-2000:]
        faults[mode] = json.loads(out.stdout.strip().splitlines()[-1])["faults"]
    print(faults)
    assert faults["fast"] < faults["lean"] / 5, faults
