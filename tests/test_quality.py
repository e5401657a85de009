"""The quality measure of `make quality` (benchmarks/quality.py runs it): the matting metrics
(app/quality/metrics.py), the scoring of one image and the gate (app/quality/score.py), the table
(app/quality/report.py).

The metrics are checked against values worked out by hand on tiny alphas (the arithmetic is in
the comments), the gradient error against the reference code's own formulation (its 2-D kernel,
scipy's convolve); the gate on real masks: the model's mask of an AM-2k photo, the photo's true
matte and a deliberately broken one.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage as ndi

from app.quality import metrics as M
from app.quality import report as R
from app.quality import score as S
from tests.conftest import DATA

AM2K = DATA / "quality" / "am2k"


def block(rows: slice, cols: slice, size=(4, 4), value=255) -> np.ndarray:
    a = np.zeros(size, np.uint8)
    a[rows, cols] = value
    return a


# truth: a 2x2 square at rows 1-2, cols 1-2; pred: a 3x3 square at rows 1-3, cols 1-3 (touching
# the bottom and right edges of the 4x4 image)
TRUTH = block(slice(1, 3), slice(1, 3))
PRED = block(slice(1, 4), slice(1, 4))


def test_sad_mse_iou_by_hand():
    # pred covers the truth's 4 pixels and 5 more: |diff| = 1 on 5 pixels, 0 elsewhere
    assert M.sad(PRED, TRUTH) == pytest.approx(5 / 1000)  # sum |diff| = 5, /1000
    assert M.mse(PRED, TRUTH) == pytest.approx(5 / 16)  # 5 squared errors of 1 over 16 pixels
    assert M.iou(PRED, TRUTH) == pytest.approx(4 / 9)  # intersection 4 (the truth), union 9 (pred)
    assert M.sad(TRUTH, TRUTH) == 0 and M.mse(TRUTH, TRUTH) == 0 and M.iou(TRUTH, TRUTH) == 1


def test_soft_values_and_the_threshold():
    truth = np.full((2, 2), 255, np.uint8)
    pred = np.array([[128, 127], [255, 0]], np.uint8)
    # |diff| = 127/255 + 128/255 + 0 + 1 = 510/255 = 2
    assert M.sad(pred, truth) == pytest.approx(2 / 1000)
    # ((127/255)^2 + (128/255)^2 + 0 + 1) / 4
    assert M.mse(pred, truth) == pytest.approx(((127 / 255) ** 2 + (128 / 255) ** 2 + 1) / 4)
    # 128 is in the mask (>= 0.5), 127 is not: pred's mask {128, 255} = 2 of the truth's 4
    assert M.iou(pred, truth) == pytest.approx(2 / 4)
    # float alphas are taken as 0..1, the same numbers
    assert M.sad(pred / 255.0, truth / 255.0) == pytest.approx(2 / 1000)
    assert M.iou(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0  # nothing in either: nothing wrong


def test_boundary_by_hand():
    # The truth's 2x2 square: every pixel has a background 4-neighbour, all 4 are boundary.
    assert M.boundary(M.binary(TRUTH)).sum() == 4
    # The 3x3 square: (1,1) (1,2) (1,3) have background above, (2,1) (3,1) background to the left;
    # (2,3) (3,3) (3,2) (2,2) touch the frame or only the square: the frame is not an edge. 5 pixels.
    expected = np.zeros((4, 4), bool)
    expected[1, 1:4] = True
    expected[2:4, 1] = True
    np.testing.assert_array_equal(M.boundary(M.binary(PRED)), expected)
    # a mask filling the image has no boundary at all
    assert not M.boundary(np.ones((5, 5), bool)).any()


def test_boundary_f_by_hand():
    # Within 0 px: a pixel matches only on the other boundary. pred's 5 pixels: (1,1) (1,2) (2,1)
    # are on the truth's, (1,3) (3,1) are not: precision 3/5; the truth's (2,2) is not on pred's:
    # recall 3/4; F = 2 (3/5)(3/4) / (3/5 + 3/4) = 0.9 / 1.35 = 2/3.
    assert M.boundary_precision_recall(PRED, TRUTH, tolerance=0) == pytest.approx((3 / 5, 3 / 4))
    assert M.boundary_f(PRED, TRUTH, tolerance=0) == pytest.approx(2 / 3)
    # Within 1 px: (1,3) is 1 px from (1,2), (3,1) 1 px from (2,1); (2,2) 1 px from (1,2): all match.
    assert M.boundary_precision_recall(PRED, TRUTH, tolerance=1) == (1.0, 1.0)
    assert M.boundary_f(PRED, TRUTH, tolerance=1) == 1.0
    # An empty prediction against a subject: no boundary matched; empty against empty: perfect.
    empty = np.zeros((4, 4), np.uint8)
    assert M.boundary_f(empty, TRUTH) == 0.0
    assert M.boundary_f(empty, empty) == 1.0


def test_boundary_tolerance_is_euclidean_distance():
    """The dilation by a disc is the distance transform's ``<= tolerance``, exactly."""
    rng = np.random.default_rng(7)
    edges = rng.random((41, 57)) > 0.97
    for tol in (1, 2, 3, 5):
        np.testing.assert_array_equal(M.within(edges, tol), ndi.distance_transform_edt(~edges) <= tol)


def reference_gradient_magnitude(alpha: np.ndarray, sigma: float = 1.4) -> np.ndarray:
    """The DIM / GCA evaluation code's ``gaussgradient``: a 2-D kernel G(i) G'(j), L2-normalised,
    scipy's convolve with mode 'nearest'."""
    half = math.ceil(sigma * math.sqrt(-2 * math.log(math.sqrt(2 * math.pi) * sigma * 1e-2)))
    g = lambda x: math.exp(-x * x / (2 * sigma * sigma)) / (sigma * math.sqrt(2 * math.pi))  # noqa: E731
    hx = np.array([[g(i - half) * (-(j - half) * g(j - half) / sigma**2) for j in range(2 * half + 1)]
                   for i in range(2 * half + 1)])
    hx /= np.sqrt((hx**2).sum())
    gx = ndi.convolve(alpha, hx, mode="nearest")
    gy = ndi.convolve(alpha, hx.T, mode="nearest")
    return np.sqrt(gx**2 + gy**2)


def test_grad_matches_the_reference_formulation():
    rng = np.random.default_rng(3)
    pred, truth = (rng.integers(0, 256, (33, 47)).astype(np.uint8) for _ in range(2))
    assert M.gauss_gradient_kernels(1.4)[0].size == 9  # halfsize 4 at sigma 1.4, as the reference
    ref = reference_gradient_magnitude(pred / 255.0)
    np.testing.assert_allclose(M.gradient_magnitude(pred), ref, atol=1e-12)
    expected = np.sum((ref - reference_gradient_magnitude(truth / 255.0)) ** 2) / 1000
    assert M.grad(pred, truth) == pytest.approx(expected, rel=1e-9)


def test_grad_known_answers():
    yy, xx = np.mgrid[:40, :40]
    soft = np.clip((np.hypot(yy - 20, xx - 20) - 10) * -20 + 128, 0, 200).astype(np.uint8)
    assert M.grad(soft, soft) == 0.0  # identical alphas
    # a constant offset has the same gradients everywhere: the derivative kernel sums to 0
    assert M.grad(soft + 40, soft) == pytest.approx(0.0, abs=1e-20)
    # a vertical step edge moved by 3 px: the gradients are in other places
    step = np.zeros((30, 30), np.uint8)
    step[:, 15:] = 255
    moved = np.zeros((30, 30), np.uint8)
    moved[:, 18:] = 255
    assert M.grad(moved, step) > 0.01
    # the step at half height, in place: half the gradient everywhere on the edge, a quarter of
    # the squared magnitude as error; less than moving the edge, where the gradients miss each other
    assert 0 < M.grad(step // 2, step) < M.grad(moved, step)


def test_gate_by_numbers():
    assert S.gate(41.0, 41.0)[0]
    assert S.gate(40.0, 41.0)[0]
    assert S.gate(41.0 * 1.02, 41.0)[0]  # exactly the allowance
    passed, line = S.gate(41.0 * 1.03, 41.0)
    assert not passed and "FAILED" in line and "1.030" in line


def test_gate_on_masks_synthetic():
    truth = np.zeros((64, 64), np.uint8)
    truth[16:48, 12:52] = 255
    reference = ndi.gaussian_filter(truth.astype(float), 2).round().astype(np.uint8)  # a soft, decent mask
    assert S.gate_masks([truth], [reference], [truth])[0]
    assert not S.gate_masks([255 - truth], [reference], [truth])[0]  # inverted: fails


def test_variant_settings_refused_are_skipped():
    with pytest.raises(S.Skip, match="MODEL_PATH"):
        S.settings_for({"MODEL_PATH": "models/no-such-model.onnx"}, base_env={})
    with pytest.raises(S.Skip, match="ONNX_MEMORY_MODE"):
        S.settings_for({"ONNX_MEMORY_MODE": "reckless"}, base_env={})
    assert S.settings_for({"ONNX_MEMORY_MODE": "fast"}, base_env={}).onnx_memory_mode == "fast"


def test_markdown_section_is_written_between_the_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{R.MARKER_START}\nold table\n{R.MARKER_END}\nafter\n")
    assert R.write_section(readme, "| a | b |\n|---|---:|\n| x | 1 |")
    text = readme.read_text()
    assert "old table" not in text and "| x | 1 |" in text
    assert text.startswith("# Title\n\nbefore\n" + R.MARKER_START + "\n") and text.endswith(R.MARKER_END + "\nafter\n")
    assert R.write_section(readme, "new")  # again: replaced, not appended
    assert readme.read_text().count(R.MARKER_START) == 1 and "| x | 1 |" not in readme.read_text()
    plain = tmp_path / "PLAIN.md"
    plain.write_text("no markers here\n")
    assert not R.write_section(plain, "table") and plain.read_text() == "no markers here\n"


@pytest.fixture(scope="module")
def am2k_sample():
    path = AM2K / "am2k-01.jpg"
    assert path.is_file(), f"quality set missing under {AM2K}"
    return path.read_bytes(), S.load_truth(path)


def test_real_photo_through_our_path(am2k_sample, settings, segmenter):
    data, truth = am2k_sample
    h, w = truth.shape
    ours = S.ours_alpha(data, settings, segmenter, (w, h))
    assert ours.shape == truth.shape and ours.dtype == np.uint8
    good = M.score(ours, truth)
    assert good["iou"] > 0.8 and good["bf"] > 0.5
    # the 1462x1080 photo is worked at its own size (under MAX_DIMENSION and MAX_WORK_PIXELS)
    assert S.ours_alpha(data, settings, segmenter).shape == truth.shape
    # one image scored as `make quality` scores a smaller decode: our mask resized to the truth's
    small_settings = settings.replace(max_dimension=1024)
    decoded = S.ours_alpha(data, small_settings, segmenter)
    assert decoded.shape == (756, 1024)
    assert S.score(decoded, M.Truth(truth)) == M.score(S.ours_alpha(data, small_settings, segmenter, (w, h)), truth)
    # a broken mask: the truth eroded by 25 px; and the mask inverted
    eroded = (ndi.binary_erosion(truth >= 128, iterations=25) * 255).astype(np.uint8)
    for broken in (eroded, 255 - ours):
        bad = M.score(broken, truth)
        assert bad["sad"] > good["sad"] and bad["iou"] < good["iou"] and bad["bf"] < good["bf"]
    # the gate, with our real mask as the reference: the truth passes, the broken masks fail
    assert S.gate_masks([truth], [ours], [truth])[0]
    assert not S.gate_masks([eroded], [ours], [truth])[0]
    assert not S.gate_masks([255 - ours], [ours], [truth])[0]


def test_make_quality_runs_the_gpu_tier_s_row_from_a_checkpoint(tmp_path):
    """`make quality SEGMENTER=inspyrenet MODEL_PATH=...` scores InSPyReNet on the same photos and
    writes its table into the README's GPU section, leaving the CPU tier's table as it is. The real
    checkpoint is not obtainable here: random weights (the adapter's own tests build them) on CPU,
    one photo, so the gate fails (exit 1) and the row is there."""
    import os
    import subprocess
    import sys

    import torch

    from adapters import inspyrenet
    from app.quality.report import GPU_MARKERS, MARKER_END, MARKER_START
    from tests.conftest import ROOT

    torch.manual_seed(1234)
    checkpoint = tmp_path / "random.pth"
    torch.save(inspyrenet.build_network((192, 192)).state_dict(), checkpoint)
    readme = tmp_path / "README.md"
    cpu_table = f"{MARKER_START}\nthe CPU tier's table\n{MARKER_END}\n"
    readme.write_text(f"# x\n{cpu_table}\n{GPU_MARKERS[0]}\nnot measured\n{GPU_MARKERS[1]}\n")
    env = {**os.environ, "SEGMENTER": "inspyrenet", "MODEL_PATH": str(checkpoint), "TARGET_SIZE": "192",
           "DEVICE": "cpu", "LOG_LEVEL": "warning"}
    run = subprocess.run([sys.executable, "benchmarks/quality.py", "--images", "01", "--no-matting", "--variants",
                          "none", "--markdown", str(readme)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]  # random weights: the gate fails
    assert "ours (inspyrenet-swinb-192, fp32, cpu)" in run.stdout and "quality gate FAILED" in run.stdout
    written = readme.read_text()
    assert cpu_table in written and "not measured" not in written
    assert "| mean | ours (inspyrenet-swinb-192, fp32, cpu) |" in written
