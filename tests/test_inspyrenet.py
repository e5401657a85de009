"""The GPU tier's adapter, on CPU: InSPyReNet (Swin-B) with random weights in the official layout.

Real checkpoints cannot be had here, so the tests build the authors' network
(transparent-background) with a fixed seed, save its state dict as a .pth file and
serve that: the layout is the official one (checked against tests/data/spec), the
numbers are random. 192x192 (the layout does not depend on the size: the `fast` checkpoint
is 384, the default 1024) keeps CPU runs short: ~1 s a forward pass on two cores, against ~8 s at 384.
"""

from __future__ import annotations

import io
import json
import resource
import threading

import numpy as np
import psutil
import pytest
import requests
import torch
from PIL import Image

from adapters import ModelLoadError, inspyrenet, load_segmenter
from adapters.batching import MicroBatcher
from app.ops import tuning
from tests.serverkit import fixture_images, post_image, running_server
from config import Settings
from tests.conftest import DATA

SPEC = DATA / "spec" / "inspyrenet_swinb_state_dict.json"
SIZE = 192


@pytest.fixture(scope="module")
def reference_net():
    """The authors' network as their Remover builds it (static mode), seeded random weights."""
    torch.manual_seed(1234)
    return inspyrenet.build_network((SIZE, SIZE)).eval()


@pytest.fixture(scope="module")
def checkpoint(reference_net, tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "inspyrenet_random.pth"
    torch.save(reference_net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def cpu_settings(checkpoint):
    return Settings.from_env({"SEGMENTER": "inspyrenet", "MODEL_PATH": str(checkpoint), "TARGET_SIZE": str(SIZE),
                              "DEVICE": "cpu", "MAX_BATCH": "4", "BATCH_WINDOW_MS": "50"})


@pytest.fixture(scope="module")
def segmenter(cpu_settings):
    tuning.configure(cpu_settings)  # as create_app does at boot: torch's threads on CPU
    return load_segmenter(cpu_settings)


def photo_rgb(index: int, side: int = 320) -> np.ndarray:
    img = Image.open(fixture_images()[index]).convert("RGB")
    img.thumbnail((side, side))
    return np.asarray(img)


# ---------------------------------------------------------------- 1. the network, exactly the official one


def test_network_layout_is_the_official_checkpoint_layout(reference_net):
    spec = json.loads(SPEC.read_text())
    layout = {key: list(value.shape) for key, value in reference_net.state_dict().items()}
    assert layout == spec
    assert len(layout) == 1625
    assert sum(v.numel() for v in reference_net.state_dict().values()) == pytest.approx(91.2e6, rel=0.001)  # spec README


def test_load_model_reproduces_the_reference_output(reference_net, segmenter):
    model = inspyrenet.load_model(reference_net.state_dict(), base_size=(SIZE, SIZE))
    assert not model.training
    photo = segmenter.preprocess(photo_rgb(0))  # a real photo, preprocessed as the reference does
    noise = torch.randn(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        ours = model(torch.cat([photo, noise]))
        refs = [reference_net(photo), reference_net(noise)]  # the reference, one image per call like its Remover
    assert ours.shape == (2, 1, SIZE, SIZE)
    for i, ref in enumerate(refs):
        assert torch.allclose(ours[i:i + 1], ref, atol=1e-4, rtol=0), float((ours[i:i + 1] - ref).abs().max())
    assert float(ours[0].min()) == 0.0 and float(ours[0].max()) == pytest.approx(1.0, abs=1e-6)


def test_preprocessing_matches_the_reference_transform(segmenter):
    """Resize bilinear to the base size, /255, ImageNet mean and std, NCHW float32 (transparent_background.utils)."""
    from transparent_background.utils import normalize, static_resize, tonumpy, totensor

    rgb = photo_rgb(1)
    img = Image.fromarray(rgb)
    expected = totensor()(normalize(mean=list(inspyrenet.MEAN), std=list(inspyrenet.STD))(
        tonumpy()(static_resize([SIZE, SIZE])(img))))
    assert torch.allclose(segmenter.preprocess(rgb)[0], expected, atol=1e-5)


@pytest.mark.parametrize("damage, named", [
    ("drop", "missing key(s): context3.branch0.conv.weight"),
    ("extra", "unexpected key(s): decoder.extra.weight"),
    ("reshape", "wrong shape: attention0.conv_out1.conv.weight is (1, 2) in the checkpoint"),
    ("not_tensor", "wrong shape: backbone.norm1.weight is a str, not a tensor"),
])
def test_bad_state_dict_is_refused_naming_the_key(reference_net, damage, named):
    state = dict(reference_net.state_dict())
    if damage == "drop":
        del state["context3.branch0.conv.weight"]
    elif damage == "extra":
        state["decoder.extra.weight"] = torch.zeros(3)
    elif damage == "reshape":
        state["attention0.conv_out1.conv.weight"] = torch.zeros(1, 2)
    else:
        state["backbone.norm1.weight"] = "oops"
    with pytest.raises(inspyrenet.CheckpointMismatch) as err:
        inspyrenet.load_model(state, base_size=(SIZE, SIZE))
    assert named in str(err.value)


def test_unreadable_checkpoint_stops_the_boot_naming_the_file(tmp_path):
    bad = tmp_path / "ckpt.pth"
    bad.write_bytes(b"not a checkpoint at all")
    settings = Settings.from_env({"SEGMENTER": "inspyrenet", "MODEL_PATH": str(bad), "DEVICE": "cpu"})
    with pytest.raises(ModelLoadError, match=f"MODEL_PATH: {bad} is not a readable PyTorch checkpoint"):
        load_segmenter(settings)


def test_fp16_without_cuda_is_a_boot_error(checkpoint):
    settings = Settings.from_env({"SEGMENTER": "inspyrenet", "MODEL_PATH": str(checkpoint), "TARGET_SIZE": str(SIZE),
                                  "DEVICE": "cpu", "PRECISION": "fp16", "WARMUP": "0"})
    with pytest.raises(ModelLoadError, match="PRECISION: fp16 needs a CUDA device"):
        load_segmenter(settings)


def test_precision_is_decided_by_the_load(segmenter):
    """On CPU, PRECISION=auto is fp32 without a check; on CUDA the check image decides, and is reported."""
    assert segmenter.fp16 is False and segmenter.precision_check == {}
    assert segmenter.runtime()["precision"] == "fp32" and "fp16_check" not in segmenter.runtime()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the fp16 check runs on CUDA only")
def test_fp16_check_on_cuda_decides_the_precision(checkpoint):
    env = {"SEGMENTER": "inspyrenet", "MODEL_PATH": str(checkpoint), "TARGET_SIZE": str(SIZE), "DEVICE": "cuda",
           "WARMUP": "0"}
    auto = load_segmenter(Settings.from_env(env))
    assert set(auto.precision_check) == {"mean_abs", "max_abs"}
    assert auto.fp16 == (auto.precision_check["mean_abs"] <= inspyrenet.FP16_TOLERANCE)
    assert auto.runtime()["fp16_check"] == auto.precision_check
    fp32 = load_segmenter(Settings.from_env({**env, "PRECISION": "fp32"}))
    assert fp32.fp16 is False and fp32.precision_check == {}
    assert load_segmenter(Settings.from_env({**env, "PRECISION": "fp16"})).fp16 is True


# ---------------------------------------------------------------- 2. serving: the segmenter, batching


def test_segmenter_mask_is_the_reference_pipeline(segmenter, reference_net):
    """Remover.process(type='map') in miniature: reference transform, network, align_corners resize, x255 truncated."""
    from transparent_background.utils import normalize, static_resize, tonumpy, totensor

    rgb = photo_rgb(2)
    x = totensor()(normalize(mean=list(inspyrenet.MEAN), std=list(inspyrenet.STD))(
        tonumpy()(static_resize([SIZE, SIZE])(Image.fromarray(rgb))))).unsqueeze(0)
    with torch.no_grad():
        pred = torch.nn.functional.interpolate(reference_net(x), rgb.shape[:2], mode="bilinear", align_corners=True)
    expected = (pred.numpy().squeeze() * 255).astype(np.uint8)
    ours = segmenter.mask(rgb)
    assert ours.shape == rgb.shape[:2] and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - expected).max() <= 1
    assert segmenter.info.name == "inspyrenet" and segmenter.info.input_size == (SIZE, SIZE)
    assert segmenter.runtime()["device"] == "cpu" and segmenter.runtime()["gpu_memory_allocated_gb"] is None


def test_concurrent_requests_are_batched_and_each_gets_its_own_mask(segmenter):
    images = [photo_rgb(i, side=200 + 40 * i) for i in range(4)]
    alone = [segmenter.mask(rgb) for rgb in images]
    before = segmenter.batcher.stats.as_dict()
    results: list[np.ndarray | None] = [None] * len(images)
    start = threading.Barrier(len(images))

    def client(i: int) -> None:
        start.wait()
        results[i] = segmenter.mask(images[i])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(images))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = segmenter.batcher.stats.as_dict()
    assert after["largest_batch"] > 1, after  # stacked into one forward pass
    assert after["batches"] - before["batches"] < len(images)
    for mine, single in zip(results, alone):
        assert mine is not None and mine.shape == single.shape
        assert np.abs(mine.astype(int) - single).max() <= 1  # its own image's mask, not a neighbour's


class _Recorder:
    def __init__(self, fail_on=None, explode=False):
        self.sizes: list[int] = []
        self.fail_on, self.explode = fail_on, explode

    def __call__(self, items):
        self.sizes.append(len(items))
        if self.explode:
            raise RuntimeError("the whole batch failed")
        return [ValueError(f"bad item {x}") if x == self.fail_on else x * 10 for x in items]


def _together(batcher, items, prepare_s=0.0):
    """Callers that announce together, prepare for ``prepare_s``, then submit; (results, errors) by item."""
    out, errors = {}, {}
    start = threading.Barrier(len(items))

    def client(x):
        start.wait()
        try:
            with batcher.announce() as submit:
                threading.Event().wait(prepare_s)
                out[x] = submit(x)
        except Exception as exc:  # noqa: BLE001
            errors[x] = exc

    threads = [threading.Thread(target=client, args=(x,)) for x in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return out, errors


def test_batcher_gives_each_request_its_own_result_and_its_own_error():
    run = _Recorder(fail_on=3)
    out, errors = _together(MicroBatcher(run, max_batch=8, window_s=2.0), [1, 2, 3, 4, 5], prepare_s=0.05)
    assert out == {1: 10, 2: 20, 4: 40, 5: 50}
    assert list(errors) == [3] and str(errors[3]) == "bad item 3"
    assert max(run.sizes) > 1 and sum(run.sizes) == 5


def test_batcher_respects_max_batch_and_fails_a_whole_batch_only_when_the_batch_fails():
    run = _Recorder()
    out, _ = _together(MicroBatcher(run, max_batch=2, window_s=2.0), list(range(6)), prepare_s=0.05)
    assert out == {x: x * 10 for x in range(6)} and max(run.sizes) <= 2
    _, errors = _together(MicroBatcher(_Recorder(explode=True), max_batch=4, window_s=0.5), [1, 2, 3])
    assert sorted(errors) == [1, 2, 3] and all("whole batch failed" in str(e) for e in errors.values())


def test_batcher_does_not_hold_a_lone_request_or_wait_for_a_caller_that_failed():
    batcher = MicroBatcher(_Recorder(), max_batch=4, window_s=60.0)  # a window no test could sit out
    done = threading.Event()

    def failing_then_lone():
        with pytest.raises(OSError):
            with batcher.announce():
                raise OSError("decode failed before submit")
        with batcher.announce() as submit:  # as the adapter's mask() submits
            assert submit(7) == 70
        done.set()

    threading.Thread(target=failing_then_lone, daemon=True).start()
    assert done.wait(20), "a lone request waited for the batching window"


# ---------------------------------------------------------------- 2 and 3. over HTTP, on real gunicorn


@pytest.fixture(scope="module")
def gpu_tier_server(checkpoint, tmp_path_factory):
    env = {"SEGMENTER": "inspyrenet", "MODEL_PATH": str(checkpoint), "TARGET_SIZE": str(SIZE), "DEVICE": "cpu",
           "BATCH_WINDOW_MS": "50", "INFERENCE_THREADS": "2"}
    with running_server(env, boot_timeout_s=180, log_dir=tmp_path_factory.mktemp("logs")) as srv:
        yield srv


def test_remove_over_http_returns_the_models_cutout(gpu_tier_server, segmenter):
    path = fixture_images()[3]
    resp = post_image(gpu_tier_server.url, path)
    assert resp.status_code == 200 and resp.headers["Content-Type"] == "image/png"
    out = Image.open(io.BytesIO(resp.content))
    src = Image.open(path)
    assert out.mode == "RGBA" and out.size == src.size
    expected = segmenter.mask(np.asarray(src.convert("RGB")))
    assert np.abs(np.asarray(out)[..., 3].astype(int) - expected).max() <= 1
    health = requests.get(gpu_tier_server.url + "/api/bg/health", timeout=5).json()
    assert health["device"] == "cpu" and "gpu_memory_allocated_gb" in health
    status = requests.get(gpu_tier_server.url + "/api/bg/status", timeout=5).json()
    assert status["adapter"] == "inspyrenet" and status["model_info"]["input_size"] == [SIZE, SIZE]
    assert status["runtime"]["batching"]["max_batch"] == 4 and status["inference"]["max_concurrent"] == 4


def test_concurrent_http_requests_each_get_their_own_answer(gpu_tier_server):
    paths = fixture_images()[:4]
    alone = {p.name: np.asarray(Image.open(io.BytesIO(post_image(gpu_tier_server.url, p).content)))[..., 3] for p in paths}
    answers: dict[str, np.ndarray] = {}
    start = threading.Barrier(len(paths))

    def client(p):
        start.wait()
        answers[p.name] = np.asarray(Image.open(io.BytesIO(post_image(gpu_tier_server.url, p).content)))[..., 3]

    threads = [threading.Thread(target=client, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in paths:
        assert np.abs(answers[p.name].astype(int) - alone[p.name]).max() <= 1
    batching = requests.get(gpu_tier_server.url + "/api/bg/status", timeout=5).json()["runtime"]["batching"]
    assert batching["largest_batch"] > 1, batching


def test_refine_foreground_keeps_the_mask_and_moves_edge_colours(gpu_tier_server):
    path = fixture_images()[0]
    plain = np.asarray(Image.open(io.BytesIO(post_image(gpu_tier_server.url, path).content)))
    refined = np.asarray(Image.open(io.BytesIO(post_image(gpu_tier_server.url, path, data={"refine_foreground": "true"}).content)))
    assert np.array_equal(plain[..., 3], refined[..., 3])
    opaque = plain[..., 3] == 255
    assert np.array_equal(plain[opaque], refined[opaque])
    soft = (plain[..., 3] > 0) & (plain[..., 3] < 255)
    assert soft.any()  # the random-weight network's map has soft edges, so refinement has work to do
    assert not np.array_equal(plain[soft][:, :3], refined[soft][:, :3])
    bad = post_image(gpu_tier_server.url, path, data={"refine_foreground": "maybe"})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "refine_foreground"


@pytest.fixture
def fresh_gpu_tier_server(checkpoint, tmp_path_factory):
    """A server of its own: a worker that has served one image, not the batches of the tests above
    (after those, glibc serves a forward pass at this size from memory it already holds). Its mmap
    threshold is fixed (glibc's own tunable), so that a large block freed goes back to the OS and
    the next forward pass maps it again: glibc's dynamic threshold would otherwise keep it after
    one image on some CPUs (an Intel Xeon with AMX here), and the capped pass would not fail."""
    env = {"SEGMENTER": "inspyrenet", "MODEL_PATH": str(checkpoint), "TARGET_SIZE": str(SIZE), "DEVICE": "cpu",
           "BATCH_WINDOW_MS": "50", "INFERENCE_THREADS": "2",
           "GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"}
    with running_server(env, boot_timeout_s=180, log_dir=tmp_path_factory.mktemp("logs")) as srv:
        yield srv


def test_out_of_memory_answers_503_and_the_worker_survives(fresh_gpu_tier_server):
    """A real allocation failure inside the forward pass: the worker's address space is capped
    (RLIMIT_AS) just above what it uses, so PyTorch's allocator fails as on a full GPU."""
    gpu_tier_server = fresh_gpu_tier_server
    worker = psutil.Process(gpu_tier_server.process.pid).children()[0]
    assert post_image(gpu_tier_server.url, fixture_images()[1]).status_code == 200  # threads exist, buffers warm
    soft, hard = resource.prlimit(worker.pid, resource.RLIMIT_AS)
    resource.prlimit(worker.pid, resource.RLIMIT_AS, (worker.memory_info().vms + 16 * 2**20, hard))
    try:
        resp = post_image(gpu_tier_server.url, fixture_images()[1])
    finally:
        resource.prlimit(worker.pid, resource.RLIMIT_AS, (soft, hard))
    assert resp.status_code == 503, resp.text
    assert resp.json()["error"]["code"] == "model_busy" and int(resp.headers["Retry-After"]) >= 1
    again = post_image(gpu_tier_server.url, fixture_images()[1])
    assert again.status_code == 200
    assert psutil.Process(gpu_tier_server.process.pid).children()[0].pid == worker.pid
