"""The edge matting (app/pipeline/matte.py, EDGE_MATTING=band): the matting Laplacian it applies
without building it, the cut-outs it makes on the real animals of the quality set, what it keeps,
its memory on a 12 MP photo, and inputs with nothing to solve."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from PIL import Image

from app.pipeline import matte as M
from app.quality.score import score


def levin_laplacian(colours: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Levin, Lischinski & Weiss (2008), eq. 12, built entry by entry over the windows lying wholly
    inside the image: L_ij = sum over windows k holding i and j of
    delta_ij - (1 + (I_i - mu_k)^T (Sigma_k + eps/|w| U)^-1 (I_j - mu_k)) / |w|."""
    h, w, _ = colours.shape
    n = (2 * radius + 1) ** 2
    laplacian = np.zeros((h * w, h * w))
    for y in range(radius, h - radius):
        for x in range(radius, w - radius):
            rows, cols = np.mgrid[y - radius:y + radius + 1, x - radius:x + radius + 1]
            index = (rows * w + cols).ravel()
            window = colours[rows, cols].reshape(-1, 3).astype(np.float64)
            mu = window.mean(0)
            sigma = np.cov(window.T, bias=True) + eps / n * np.eye(3)
            centred = window - mu
            block = np.eye(n) - (1 + centred @ np.linalg.inv(sigma) @ centred.T) / n
            laplacian[np.ix_(index, index)] += block
    return laplacian


def test_the_operator_is_the_matting_laplacian():
    """Away from the border (where our windows are reflected and the reference's are left out), the
    box-filter product is L p / |w| with L built entry by entry."""
    rng = np.random.default_rng(7)
    colours = rng.random((14, 16, 3)).astype(np.float32)
    p = rng.random((14, 16)).astype(np.float32)
    radius = 1
    expected = (levin_laplacian(colours, radius, M.EPS) @ p.ravel().astype(np.float64)).reshape(p.shape) / 9
    got = M._Laplacian(colours, radius).times(p, np.empty_like(p))
    inner = (slice(2 * radius, -2 * radius),) * 2
    np.testing.assert_allclose(got[inner], expected[inner], rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize("shape", [(14, 16), (1, 1), (2, 3), (5, 1), (1, 7), (120, 97), (263, 266)])
@pytest.mark.parametrize("radius", [1, 2])
@pytest.mark.parametrize("grey", [False, True])
def test_the_compiled_steps_are_numpy_s_bit_for_bit(shape, radius, grey):
    """app/pipeline/_matte.c against its definitions in numpy (_setup_numpy, _times_numpy), for the
    radii the matting uses, shapes smaller than a window among them, colour and grey photos (whose
    colour covariance is singular but for ε): the same float32 operations in the same order."""
    rng = np.random.default_rng(sum(shape) + radius)
    colours = rng.random((*shape, 3)).astype(np.float32)
    if grey:
        colours[...] = colours[..., :1]
    laplacian = M._Laplacian(colours, radius)
    means, inverse = laplacian._setup_numpy()
    for compiled, reference in zip(laplacian.means + laplacian.inverse, means + inverse):
        assert np.array_equal(compiled, reference)
    p = rng.random(shape).astype(np.float32)
    compiled = laplacian.times(p, np.full(shape, np.nan, np.float32))
    assert np.array_equal(compiled, laplacian._times_numpy(p, np.empty(shape, np.float32)))


def test_the_compiled_product_with_wider_windows_is_the_same_product():
    """From 7 px windows numpy sums by doubling (morphology.BoxMean): another order of the additions,
    the same product within float32's rounding."""
    rng = np.random.default_rng(5)
    laplacian = M._Laplacian(rng.random((40, 50, 3)).astype(np.float32), 3)
    p = rng.random((40, 50)).astype(np.float32)
    np.testing.assert_allclose(laplacian.times(p, np.empty_like(p)), laplacian._times_numpy(p, np.empty_like(p)),
                               rtol=1e-4, atol=1e-4)


def test_the_compiled_product_refuses_buffers_of_the_wrong_size():
    from app.pipeline import _matte

    h, w, r = 6, 5, 1
    plane = np.zeros((h, w), np.float32)
    planes = {"colours": np.zeros((3, h, w), np.float32), "means": np.zeros((3, h, w), np.float32),
              "inverse": np.zeros((6, h, w), np.float32)}
    work = np.zeros(_matte.work_floats(h, w, r), np.float32)
    _matte.laplacian_times(h, w, r, plane, *planes.values(), np.zeros_like(plane), work)
    with pytest.raises(ValueError, match="inverse"):
        _matte.laplacian_times(h, w, r, plane, planes["colours"], planes["means"], planes["colours"], plane.copy(), work)
    with pytest.raises(ValueError, match="work"):
        _matte.laplacian_times(h, w, r, plane, *planes.values(), plane.copy(), work[:-1])
    with pytest.raises(ValueError, match="p holds"):
        _matte.laplacian_times(h + 1, w, r, plane, *planes.values(), plane.copy(), work)
    with pytest.raises(TypeError):  # a read-only output
        _matte.laplacian_times(h, w, r, plane, *planes.values(), bytes(plane.nbytes), work)
    with pytest.raises(ValueError, match="out of range"):
        _matte.work_floats(0, w, r)
    with pytest.raises(ValueError, match="out of range"):
        _matte.laplacian_times(h, w, -1, plane, *planes.values(), plane.copy(), work)
    _matte.laplacian_setup(h, w, r, M.EPS, *planes.values(), work)
    with pytest.raises(ValueError, match="means"):
        _matte.laplacian_setup(h, w, r, M.EPS, planes["colours"], plane.copy(), planes["inverse"], work)
    with pytest.raises(TypeError):  # read-only statistics
        _matte.laplacian_setup(h, w, r, M.EPS, planes["colours"], bytes(planes["means"].nbytes), planes["inverse"], work)


def test_the_solve_lowers_the_energy_and_keeps_the_known_pixels():
    rng = np.random.default_rng(3)
    colours = rng.random((40, 50, 3)).astype(np.float32)
    alpha = (rng.random((40, 50)) * 255).astype(np.uint8)
    trimap = np.full((40, 50), M.UNKNOWN, np.uint8)
    trimap[:, :10], trimap[:, -10:] = 0, 255
    laplacian = M._Laplacian(colours, 1)

    def energy(a: np.ndarray) -> float:
        return float(np.vdot(a, laplacian.times(a.astype(np.float32), np.empty_like(a, np.float32))))

    start = alpha / np.float32(255)
    start[:, :10], start[:, -10:] = 0, 1
    solved = M._solve((colours * 255).astype(np.uint8), alpha, trimap, 1, 40)  # the trimap at its grid
    assert energy(solved) < 0.5 * energy(start)
    assert (solved[:, :10] == 0).all() and (solved[:, -10:] == 1).all()


@pytest.fixture(scope="module")
def served(am2k_served):
    """Each AM-2k photo with the model's mask before the edge matting (as a request brings it up:
    plainly), and its truth."""
    return {name: (s.rgb, s.mask, s.truth) for name, s in am2k_served.items()}


def test_matting_beats_rembg_s_alpha_matting_on_the_animals(served):
    """Mean SAD on the 13 AM-2k animals under 30 (rembg's alpha matting on the same model: 30.6,
    `make quality`), better than the mask it starts from on most photos."""
    before, after = [], []
    for rgb, alpha, truth in served.values():
        before.append(score(alpha, truth)["sad"])
        after.append(score(M.matte(rgb, alpha.copy()), truth)["sad"])
    print(f"mean SAD {np.mean(before):.2f} -> {np.mean(after):.2f}")
    assert np.mean(after) < 30 and np.mean(after) < 0.8 * np.mean(before)
    assert sum(a < b for a, b in zip(after, before)) >= 11


@pytest.mark.parametrize("shape", [(1, 1), (7, 300), (300, 7), (301, 517), (1620, 1080)])
def test_the_trimap_is_the_eroded_sure_regions(shape):
    """Sure subject: alpha above SURE_SUBJECT over the whole square around the pixel; sure
    background: below SURE_BACKGROUND over it; outside the photo counts as background (OpenCV's
    erosion and dilation, its anchor, a constant 0 border), whatever the strips."""
    import cv2

    rng = np.random.default_rng(sum(shape))
    alpha = np.asarray(Image.fromarray((rng.random((max(1, shape[0] // 40), max(1, shape[1] // 40))) * 500 - 120)
                                       .clip(0, 255).astype(np.uint8)).resize(shape[::-1], Image.Resampling.BILINEAR))
    side = max(1, round(M.ERODE * max(shape)))
    kernel, border = np.ones((side, side), np.uint8), {"borderType": cv2.BORDER_CONSTANT, "borderValue": 0}
    subject = cv2.erode((alpha > M.SURE_SUBJECT).view(np.uint8), kernel, **border).astype(bool)
    maybe = cv2.dilate((alpha >= M.SURE_BACKGROUND).view(np.uint8), kernel, **border).astype(bool)
    expected = np.where(subject, 255, np.where(maybe, M.UNKNOWN, 0))
    trimap = M._trimap(alpha)
    assert trimap.dtype == np.uint8 and np.array_equal(trimap, expected)
    if min(shape) >= 300:  # the test could fail: all three labels are there
        assert set(np.unique(trimap)) == {0, M.UNKNOWN, 255}


def test_the_sure_parts_stay_and_only_the_band_changes(served):
    rgb, alpha, _ = served["am2k-10"]
    out = M.matte(rgb, alpha.copy())
    trimap = M._trimap(alpha)
    assert (out[trimap == 255] == 255).all() and (out[trimap == 0] == 0).all()
    assert (trimap == 255).sum() > 0.9 * (alpha > M.SURE_SUBJECT).sum() - 0.1 * alpha.size  # eroded, not emptied
    moved = np.abs(out.astype(int) - alpha)
    assert moved[trimap != M.UNKNOWN].max() <= 4  # the sure parts only snapped to 0 and 255
    assert (moved[trimap == M.UNKNOWN] > 8).mean() > 0.2  # the band re-solved


def test_a_12_megapixel_photo_is_solved_on_bounded_grids(served):
    """The solve's grids are capped: on a 12 MP photo the matting holds about 45 MB at its peak
    (numpy's allocations, traced), the full-size arrays being 8-bit."""
    rgb, alpha, _ = served["am2k-08"]
    big_rgb = np.asarray(Image.fromarray(rgb).resize((4032, 3024), Image.Resampling.BICUBIC))
    big_alpha = np.asarray(Image.fromarray(alpha).resize((4032, 3024), Image.Resampling.BICUBIC))
    tracemalloc.start()
    try:
        out = M.matte(big_rgb, big_alpha)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    print(f"12 MP: traced peak {peak / 2**20:.1f} MB")
    assert out.shape == big_alpha.shape and peak < 60 * 2**20


@pytest.mark.parametrize("shape, fill", [((1, 1), 128), ((3, 500), 128), ((500, 2), 200), ((64, 64), 0),
                                         ((64, 64), 255), ((80, 60), 128)])
def test_inputs_with_little_or_nothing_to_solve(shape, fill):
    rgb = np.full((*shape, 3), 90, np.uint8)  # flat grey: every window's variance is zero
    alpha = np.full(shape, fill, np.uint8)
    out = M.matte(rgb, alpha.copy())
    assert out.shape == shape and out.dtype == np.uint8
    # sure (0, 255) or not, a constant alpha is the energy's minimum (L·1 = 0): nothing moves, even
    # where the windows' covariance is the regularisation alone (float32 statistics: no NaN, no drift)
    assert (out == fill).all()


@pytest.mark.parametrize("edge_matting", ["band", "off", "plain"])
def test_each_edge_setting_serves_its_own_edge(make_app, segmenter, am2k_served, edge_matting):
    """EDGE_MATTING: ``band`` matting over the plainly resized map (and the review's warnings), ``off``
    the map brought up along the photo's edges, ``plain`` the map resized as rembg resizes it (the
    fastest: neither step), each said in Server-Timing."""
    from tests.conftest import DATA, open_response, post

    data = (DATA / "quality" / "am2k" / "am2k-03.jpg").read_bytes()  # over 1024 px: the guided upscaling's
    resp = post(make_app(edge_matting=edge_matting).test_client(), "/api/bg/remove", data, only_mask="true")
    assert resp.status_code == 200
    served = np.asarray(open_response(resp).convert("L"))
    photo = am2k_served["am2k-03"]  # the model's map, its plain resize and its matting, computed once
    guided = segmenter.postprocess(photo.prediction, *photo.mask.shape, guide=photo.rgb)
    expected = {"band": photo.alpha, "off": guided, "plain": photo.mask}[edge_matting]
    assert np.array_equal(served, expected)
    assert ("matte;dur=" in resp.headers["Server-Timing"]) == (edge_matting == "band")
    assert ("X-Mask-Warnings" in resp.headers) == (edge_matting == "band")
    if edge_matting != "plain":
        assert not np.array_equal(served, photo.mask)
