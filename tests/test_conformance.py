"""Our ONNX adapter reproduces rembg's u2netp masks (tests/data/fixtures/reference/u2netp)."""

import numpy as np
import pytest
from PIL import Image

from app import pipeline
from tests.conftest import IMAGES, REFERENCE, iou


@pytest.mark.parametrize("path", IMAGES, ids=lambda p: p.name)
def test_mask_matches_rembg_reference(path, segmenter, settings):
    image = pipeline.decode(path.read_bytes(), settings)
    mask = segmenter.mask(image.rgb)
    assert mask.shape == image.rgb.shape[:2] and mask.dtype == np.uint8
    reference = Image.open(REFERENCE / f"{path.stem}.u2netp.png").convert("L")
    if reference.size != image.size:  # auto-resized input: compare at our size
        reference = reference.resize(image.size, Image.Resampling.LANCZOS)
    score = iou(mask, np.asarray(reference))
    assert score >= 0.97, f"{path.name}: IoU {score:.4f}"


def test_model_metadata(segmenter):
    info = segmenter.info
    assert (info.name, info.model_id, info.input_size, info.device) == ("onnx", "u2netp", (320, 320), "cpu")
    assert info.parameters == 1_125_485  # u2netp's published size: 1.13 M
    assert info.file_sha256 == "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8"


def test_mask_has_input_size_for_odd_shapes(segmenter):
    rng = np.random.default_rng(0)
    for h, w in ((1, 1), (7, 1000), (333, 17)):
        assert segmenter.mask(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).shape == (h, w)
