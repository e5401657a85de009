"""Model profiles: inferred from the graph's input shape, and applied as the family expects.

Tiny synthetic graphs (built with the onnx package) stand in for u2net/isnet-family files:
their output is the channel mean of the normalised input, so the mask shows exactly
what preprocessing did.
"""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from adapters import ModelLoadError, load_segmenter


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
    """Lean and balanced run without onnxruntime's arena: app.ops.tuning.configure makes large blocks
    mmaps and caps the malloc arenas, once for the process, and raises the mmap threshold to 1 MiB
once the model has loaded (app.ops.tuning.after_boot); loading the model sets nothing."""
    from types import SimpleNamespace

    from app.ops import tuning

    calls = []
    monkeypatch.setattr(tuning, "_libc", SimpleNamespace(mallopt=lambda *args: calls.append(args)))
    load_segmenter(settings.replace(model_path=channel_mean_graph(tmp_path / "u.onnx", 320)))
    tuning.configure(settings.replace(onnx_memory_mode="fast"))
    assert calls == []
    for mode in ("lean", "balanced"):
        tuning.configure(settings.replace(onnx_memory_mode=mode))
        assert calls == [(tuning.M_MMAP_THRESHOLD, 128 * 1024), (tuning.M_ARENA_MAX, 2)]
        calls.clear()
        tuning.after_boot(settings.replace(onnx_memory_mode=mode))  # serving: blocks under 1 MiB from the heap
        assert calls == [(tuning.M_MMAP_THRESHOLD, 1 << 20)]
        calls.clear()
    tuning.after_boot(settings.replace(onnx_memory_mode="fast"))
    assert calls == []
