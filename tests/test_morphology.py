"""The numpy operators of the edge matting and the review warnings (app/pipeline/morphology.py) give
OpenCV's answers, and a default request never loads OpenCV (its 24-37 MB per worker are what kept
the matting off the 512 MB tier's default)."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest

from app.pipeline.morphology import BoxMean, box_mean, dilate, erode, region_areas


@pytest.mark.parametrize("shape", [(1, 1), (2, 9), (3, 3), (5, 7), (240, 317)])
@pytest.mark.parametrize("radius", [1, 2, 3, 4, 15, 16])
def test_box_mean_is_opencvs_with_reflected_borders(shape, radius):
    values = np.random.default_rng(sum(shape) + radius).random(shape, np.float32)
    expected = cv2.boxFilter(values, -1, (2 * radius + 1,) * 2, normalize=True, borderType=cv2.BORDER_REFLECT)
    assert np.abs(box_mean(values, radius) - expected).max() < 1e-6
    out = np.empty_like(values)  # the operator reused, as the matting's conjugate gradients do
    box = BoxMean(shape, radius)
    for _ in range(2):
        assert box(values, out) is out
        assert np.abs(out - expected).max() < 1e-6


@pytest.mark.parametrize("size", [1, 2, 3, 7, 10, 25])
@pytest.mark.parametrize("border", [False, True])
def test_erosion_and_dilation_are_opencvs_squares(size, border):
    rng = np.random.default_rng(size)
    dense, sparse = rng.random((600, 530)) > 0.2, rng.random((600, 530)) > 0.995  # 600 rows: three strips
    kernel = np.ones((size, size), np.uint8)
    opts = {"borderType": cv2.BORDER_CONSTANT, "borderValue": int(border)}
    assert np.array_equal(erode(dense, size, border), cv2.erode(dense.view(np.uint8), kernel, **opts).astype(bool))
    assert np.array_equal(dilate(sparse, size, border), cv2.dilate(sparse.view(np.uint8), kernel, **opts).astype(bool))


@pytest.mark.parametrize("density", [0.3, 0.45, 0.6, 0.8])
def test_region_areas_are_opencvs_8_connected_components(density):
    mask = np.random.default_rng(int(density * 10)).random((200, 300)) < density
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8)
    assert count > 2
    assert np.array_equal(region_areas(mask), np.sort(stats[1:, cv2.CC_STAT_AREA])[::-1])
    assert region_areas(np.zeros((4, 4), bool)).size == 0


def test_a_default_request_does_not_load_opencv(tmp_path):
    """The default settings (edge matting on, the warnings sent) run the whole pipeline on a photo
    without importing cv2; correction strokes do import it (GrabCut)."""
    script = """
import io, sys
from adapters import load_segmenter
from app.pipeline import Job
from app.pipeline.options import RemoveOptions
from app.pipeline.runtime import build_runtime
from config import Settings
from tests.serverkit import fixture_images
settings = Settings.from_env({"CACHE_BACKEND": "none", "WARMUP": "false", "LOG_LEVEL": "warning"})
assert settings.edge_matting == "band"
runtime = build_runtime(settings, load_segmenter(settings))
data = fixture_images()[0].read_bytes()
rendered = Job(runtime, RemoveOptions.from_form({"use_cache": "false"}), data).run()
assert rendered.mask_warnings is not None, rendered
print("cv2" in sys.modules)
Job(runtime, RemoveOptions.from_form({"use_cache": "false", "remove_mask": '{"width": 9, "lines": [[[1, 1]]]}'}),
    data).run()
print("cv2" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["False", "True"]
