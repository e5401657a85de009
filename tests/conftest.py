"""Shared fixtures: the real model (loaded once), apps built on it, the photos of tests/data."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from adapters import load_segmenter
from app.web.factory import create_app
from config import Settings

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"  # in the repository: see its README.md for sources and licences
FIXTURES = DATA / "fixtures"
IMAGES = sorted((FIXTURES / "images").glob("*.jpg"))
REFERENCE = FIXTURES / "reference" / "u2netp"


# The slowest test files (seconds each, measured one at a time on 2 cores), run first: `make test`
# hands out whole files to two processes (pytest-xdist, --dist loadfile), and with the long ones
# started first the short ones fill in at the end instead of one process waiting on a long file.
SLOWEST_FIRST = ("test_server", "test_page", "test_int8", "test_inspyrenet", "test_cli", "test_removebg_hostile",
                 "test_strokes", "test_hostile_inputs", "test_edge", "test_cache_gcs", "test_confidence", "test_api",
                 "test_imaging", "test_cache")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))  # stable: each file's own order kept


def pytest_sessionstart(session):
    # The conformance fixtures are part of every clone: missing means failed, not skipped.
    assert len(IMAGES) >= 8 and REFERENCE.is_dir(), f"test fixtures missing under {FIXTURES}"
    assert (ROOT / "models" / "u2netp.onnx").is_file(), "default model missing: run `make setup`"


@pytest.fixture(scope="session")
def settings() -> Settings:
    # The result cache is off here: these tests are about the pipeline; tests/test_cache*.py turn it on.
    # fp32: the conformance tests compare with rembg's u2netp masks and the replay with recordings
    # of the fp32 model; the int8 build is tested in tests/test_int8.py and tests/test_precision.py
    # onnxruntime: the runtime rembg runs (servers started in subprocesses run the defaults,
    # ONNX_PRECISION=auto and ONNX_RUNTIME=auto: OpenVINO where the CPU has VNNI).
    return Settings.from_env({"CACHE_BACKEND": "none", "ONNX_PRECISION": "fp32", "ONNX_RUNTIME": "onnxruntime"})


@pytest.fixture(scope="session")
def segmenter(settings):
    return load_segmenter(settings)


class Served:
    """One AM-2k photo as a default request serves it (tests/data/quality/am2k): the decoded
    photo, the model's mask brought up plainly (before the edge matting), the served alpha (after
    it), and the true matte (app.quality.metrics.Truth)."""

    def __init__(self, image, prediction: np.ndarray, mask: np.ndarray, alpha: np.ndarray, truth):
        self.image, self.prediction, self.mask, self.alpha, self.truth = image, prediction, mask, alpha, truth

    @property
    def rgb(self) -> np.ndarray:
        return self.image.rgb


@pytest.fixture(scope="session")
def am2k_served(segmenter) -> dict[str, Served]:
    """The 13 AM-2k photos segmented once for the tests of the matting, the review signal, the
    strokes and the upscaling (the session's model, fp32): ``subject_alpha(..., "band")`` in its two
    steps, and the model's own map (``prediction``, at its input size) the mask was brought up from."""
    from app.pipeline import compose
    from app.pipeline.imaging import decode_image
    from app.pipeline.matte import matte
    from app.quality import metrics
    from app.quality.score import load_truth

    out = {}
    for path in sorted((DATA / "quality" / "am2k").glob("am2k-*.jpg")):
        image = decode_image(path.read_bytes(), max_dimension=4096, max_pixels=4096 * 4096)
        prediction = segmenter.infer(segmenter.preprocess(image.rgb))
        mask = segmenter.postprocess(prediction, *image.rgb.shape[:2])  # segmenter.mask(follow_edges=False)
        mask.flags.writeable = False
        alpha = compose.combine_alpha(matte(image.rgb, mask.copy()), image.alpha)
        alpha.flags.writeable = False
        out[path.stem] = Served(image, prediction, mask, alpha, metrics.Truth(load_truth(path)))
    return out


@pytest.fixture(scope="session")
def make_app(settings, segmenter):
    """Build an app on the session's real model, with settings overridden per test."""

    def build(**overrides):
        return create_app(settings.replace(**overrides), segmenter=segmenter)

    return build


@pytest.fixture()
def app(make_app):
    """A fresh app per test (its counters, gate and cache state start at zero); the model is shared."""
    return make_app()


@pytest.fixture()
def client(app):
    return app.test_client()


def wait_for(condition, timeout_s: float = 10.0, what: str = "the condition") -> None:
    """Poll ``condition()`` until it is true; fail the test after ``timeout_s`` (never spin forever)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {what}"
        time.sleep(0.005)


def photo(name: str) -> Path:
    return FIXTURES / "images" / name


def png_bytes(img: Image.Image, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **save)
    return buf.getvalue()


def encode(img: Image.Image, fmt: str, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def post(client, endpoint: str, data: bytes | None, filename: str = "photo.jpg", **fields):
    form = dict(fields)
    if data is not None:
        form["file"] = (io.BytesIO(data), filename)
    return client.post(endpoint, data=form, content_type="multipart/form-data")


def open_response(resp) -> Image.Image:
    img = Image.open(io.BytesIO(resp.data))
    img.load()
    return img


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a >= 128, b >= 128
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
