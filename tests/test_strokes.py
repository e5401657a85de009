"""Correction strokes (``keep_mask``, ``remove_mask``; app/pipeline/correct.py): a person paints over
what must stay or go, and the cut-out is corrected over the region each stroke touches.

The strokes below are written as a person would paint them on the flawed AM-2k photos (px of the
photo as uploaded), each over the flaw ``make quality`` shows: the ghost beside the impala's chin
and the neck it left grey, the grass in front of the rabbit, the halo beside the leopard's
whiskers, the shadow under the alpaca's mouth and the hole in its nose, the smudge between the
wildebeest's horns, the snow the dog's ear fur hangs over (am2k-11: the model keeps it grey, the
truth has it clear between the strands). Each photo goes through the real pipeline (the session's model, the default
edge matting, the request's options) with and without them, scored against its true matte.

The llama (am2k-02, SAD 77) is apart: a glow of partial alpha all around a light animal on a
dark grey field, and fur wisps between its ears. GrabCut's colour models cannot separate them, so
its strokes grow through the pixels of their own colours the model was unsure of, and the matting
re-solves the edge twice (the second time on the band of the edge the first found), and the dark
field near a stroke that the model was sure of: 78 -> 32 with two strokes along the glow, 78 -> 24.6
with one remove stroke around the head (down into the gap between the ears and beside the right
cheek) and one keep stroke over the fleece at the bottom right.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image, ImageDraw

from app.pipeline import Job
from app.pipeline.errors import BadOption
from app.pipeline.correct import REACH
from app.pipeline.options import ChangeColorOptions, ProcessOptions, RemoveOptions, Strokes
from app.pipeline.runtime import build_runtime
from app.quality import metrics
from app.quality.score import load_truth, score
from tests.conftest import DATA, open_response, post

AM2K = DATA / "quality" / "am2k"


def lines(width, *polylines):
    return json.dumps({"width": width, "lines": [list(map(list, line)) for line in polylines]})


# photo -> the fields a person sends: one or two strokes each
STROKES = {
    "am2k-04": {"remove_mask": lines(40, [(880, 860), (900, 960), (880, 1070)]),  # the ghost under the chin
                "keep_mask": lines(40, [(100, 1060), (400, 1000)])},  # the neck left grey
    "am2k-05": {"keep_mask": lines(50, [(960, 1050), (1100, 1045), (1300, 1040), (1400, 1045), (1460, 1055)])},
    "am2k-08": {"remove_mask": lines(40, [(610, 480), (600, 600), (630, 700), (640, 850), (700, 940), (760, 1000),
                                          (880, 1060)])},
    "am2k-12": {"remove_mask": lines(40, [(400, 790), (550, 830), (700, 900), (820, 980), (900, 1060)]),
                "keep_mask": lines(40, [(545, 600), (590, 600)])},  # the nose
    "am2k-11": {"remove_mask": lines(30, [(1345, 860), (1340, 960), (1335, 1075)])},  # the snow under the ear
    "am2k-13": {"remove_mask": lines(30, [(120, 235), (200, 245), (290, 235), (360, 200), (390, 150)])},
}


@pytest.fixture(scope="module")
def runtime(settings, segmenter):
    return build_runtime(settings.replace(warmup=False, edge_matting="band"), segmenter)


def alpha_of(runtime, data: bytes, **fields) -> np.ndarray:
    options = RemoveOptions.from_form({"only_mask": "true", "use_cache": "false", **fields})
    rendered = Job(runtime, options, data).run()
    return np.asarray(Image.open(io.BytesIO(rendered.images["image"])).convert("L"))


LLAMA = {"remove_mask": lines(30, [(180, 900), (190, 600), (200, 420), (230, 300), (290, 170), (370, 100),
                                   (440, 150), (480, 240), (530, 330)],  # up the left, over the ear, between the ears
                               [(560, 250), (600, 120), (700, 100), (800, 200), (830, 380), (850, 600),
                                (870, 820)])}  # over the right ear and down the right


def test_strokes_where_the_colour_models_fail_grow_through_their_own_colours(runtime, am2k_served):
    """On the grey llama GrabCut's regions would turn most of the animal: the strokes grow instead
    through the neighbouring pixels of their own colours that the model was unsure of, and the glow
    around the fur goes (most of the error), the animal stays."""
    path = AM2K / "am2k-02.jpg"
    truth = load_truth(path)
    before = am2k_served["am2k-02"].alpha  # as served without strokes
    after = alpha_of(runtime, path.read_bytes(), **LLAMA)
    sad_before, sad_after = (score(a, metrics.Truth(truth))["sad"] for a in (before, after))
    print(f"am2k-02: SAD {sad_before:.1f} -> {sad_after:.1f}")
    assert sad_after < 0.6 * sad_before, (sad_before, sad_after)
    background = truth == 0
    assert (after[background] >= 32).mean() < 0.5 * (before[background] >= 32).mean()  # the glow: half of it gone
    subject = truth >= 250
    assert (after[subject] >= 128).mean() > 0.99


# one remove stroke around the head (down into the gap between the ears, beside the right cheek) and
# one keep stroke over the fleece the model dropped at the bottom right
LLAMA_AROUND = {"remove_mask": lines(30, [(180, 900), (190, 600), (200, 420), (230, 300), (290, 170), (370, 100),
                                          (440, 150), (480, 240), (525, 385), (560, 250), (600, 120), (700, 100),
                                          (790, 200), (815, 380), (810, 500), (750, 590), (830, 680), (870, 820)]),
                "keep_mask": lines(40, [(1070, 1420), (1020, 1500), (980, 1610)])}


def test_a_stroke_that_fell_back_reopens_the_sure_field_of_its_colours(runtime, am2k_served):
    """The model is sure of the dark field between the llama's ears: the band matting alone never
    reaches it, and the stroke's growth stops at it. Near a stroke that fell back, the sure pixels
    in the stroke's own colours are re-solved too (correct.REOPEN): the field goes (a fifth of it
    stayed opaque before: 0.21), the light fur beside it and the dark insides of the ears stay. The
    matting's second solve, on the band of the edge the first found (correct.FALLBACK_SOLVES), takes
    the cut-out under the issue's 25 (27.4 with one solve, 33.0 without the reopening; fp32)."""
    path = AM2K / "am2k-02.jpg"
    truth = load_truth(path)
    after = alpha_of(runtime, path.read_bytes(), **LLAMA_AROUND)
    before, sad = (score(a, metrics.Truth(truth))["sad"] for a in (am2k_served["am2k-02"].alpha, after))
    print(f"am2k-02, one stroke around the head and one keep stroke: SAD {before:.1f} -> {sad:.1f}")
    assert sad < 25, (before, sad)
    between = (slice(250, 420), slice(420, 620))
    field = truth[between] < 64
    assert (after[between][field] >= 128).mean() < 0.1
    assert (after[truth >= 250] >= 128).mean() > 0.99
    for ear in ((slice(200, 380), slice(300, 360)), (slice(220, 380), slice(650, 720))):  # their dark insides
        inside = truth[ear] >= 250
        assert (after[ear][inside] >= 128).mean() > 0.99


@pytest.mark.parametrize("name", sorted(STROKES))
def test_one_or_two_strokes_fix_a_flawed_cut_out(runtime, am2k_served, name):
    path = AM2K / f"{name}.jpg"
    truth = am2k_served[name].truth
    before = score(am2k_served[name].alpha, truth)["sad"]  # as served without strokes
    after = score(alpha_of(runtime, path.read_bytes(), **STROKES[name]), truth)["sad"]
    print(f"{name}: SAD {before:.1f} -> {after:.1f}")
    assert after < 25 and after < 0.85 * before, (before, after)


def test_a_stroke_over_a_ghost_removes_the_whole_ghost(runtime):
    """One 40 px stroke through the ghost under the impala's chin clears the ghost around it, not
    only under the brush: what goes was background in truth, and the rest of the cut-out stays."""
    path = AM2K / "am2k-04.jpg"
    data, truth = path.read_bytes(), load_truth(path)
    stroke = STROKES["am2k-04"]["remove_mask"]
    before, after = alpha_of(runtime, data), alpha_of(runtime, data, remove_mask=stroke)
    brush = _painted(stroke, truth.shape)
    ghost = (before >= 128) & (truth < 128)
    ghost[:800] = False  # the ghost under the chin (the rest of the photo's errors are edges)
    ghost[:, :800] = False
    assert (ghost & brush).sum() < 0.4 * ghost.sum()  # the brush covers a part of it...
    assert (after[ghost] < 128).mean() > 0.8  # ...and most of it is gone
    cleared = (before >= 128) & (after < 128) & ~brush
    assert (truth[cleared] < 128).mean() > 0.9  # what went was background
    # the subject stays, and nothing changes beyond the stroke's reach
    subject = truth >= 250
    assert (after[subject] >= 128).mean() >= (before[subject] >= 128).mean() - 0.002
    changed = np.abs(after.astype(int) - before) > 1
    ys, xs = np.nonzero(brush)
    reach = REACH * max(truth.shape) * 1.05  # (measured on the grid: a few px of rounding)
    rows, cols = np.ogrid[:truth.shape[0], :truth.shape[1]]
    far = np.hypot(cols - xs.mean(), rows - ys.mean()) > reach + np.hypot(np.ptp(xs), np.ptp(ys)) / 2
    assert changed.any() and not changed[far].any()


def test_the_same_strokes_give_the_same_cut_out_whatever_came_before(runtime):
    """GrabCut's colour models start from k-means on OpenCV's random generator, a state of the
    thread: without a seed the rabbit's SAD was 11.1 or 12.2 after the strokes of other photos."""
    rabbit, impala = (AM2K / f"{name}.jpg" for name in ("am2k-05", "am2k-04"))
    first = alpha_of(runtime, rabbit.read_bytes(), **STROKES["am2k-05"])
    alpha_of(runtime, impala.read_bytes(), **STROKES["am2k-04"])
    assert np.array_equal(alpha_of(runtime, rabbit.read_bytes(), **STROKES["am2k-05"]), first)


def test_a_mask_image_is_the_same_as_its_lines(runtime):
    """The strokes as an image the upload's size (white = painted) correct as the JSON lines do."""
    path = AM2K / "am2k-13.jpg"
    data, truth = path.read_bytes(), load_truth(path)
    stroke = STROKES["am2k-13"]["remove_mask"]
    painted = Image.fromarray(_painted(stroke, truth.shape).astype(np.uint8) * 255)
    buf = io.BytesIO()
    painted.save(buf, "PNG")
    by_lines = alpha_of(runtime, data, remove_mask=stroke)
    options = RemoveOptions.from_form({"only_mask": "true", "use_cache": "false"})
    rendered = Job(runtime, options, data, masks={"remove_mask": buf.getvalue()}).run()
    by_image = np.asarray(Image.open(io.BytesIO(rendered.images["image"])).convert("L"))
    assert np.abs(by_image.astype(int) - by_lines).mean() < 0.5
    assert score(by_image, metrics.Truth(truth))["sad"] < 20


def _painted(stroke: str, shape) -> np.ndarray:
    from app.pipeline.correct import rasterize

    return rasterize(Strokes.from_text(stroke), shape[::-1], shape[::-1])


def test_strokes_scale_with_a_photo_worked_smaller(runtime):
    """Stroke coordinates are px of the upload as sent: a photo worked at a quarter of its pixels is
    corrected in the same place."""
    path = AM2K / "am2k-13.jpg"
    truth = load_truth(path)
    small = alpha_of(runtime, path.read_bytes(), max_megapixels="0.4", **STROKES["am2k-13"])
    assert small.shape != truth.shape
    full = np.asarray(Image.fromarray(small).resize(truth.shape[::-1], Image.Resampling.LANCZOS))
    assert score(full, metrics.Truth(truth))["sad"] < 25


@pytest.mark.parametrize("endpoint, fields", [
    ("/api/bg/remove", {}),
    ("/api/bg/change_color", {"color": "#00ff00", "format": "png"}),
    ("/api/v2/process", {"effects": '["blackwhite"]', "response": "image"}),
    ("/remove-background", {}),  # the original service's route: a front for /api/bg/remove
])
def test_every_image_endpoint_takes_strokes(make_app, endpoint, fields):
    client = make_app(edge_matting="band").test_client()
    path = AM2K / "am2k-04.jpg"
    plain = post(client, endpoint, path.read_bytes(), **fields)
    fixed = post(client, endpoint, path.read_bytes(), **fields, **STROKES["am2k-04"])
    assert plain.status_code == fixed.status_code == 200, fixed.data[:300]
    assert "correct;dur=" in fixed.headers["Server-Timing"] and "correct;dur=" not in plain.headers["Server-Timing"]
    ghost = (slice(900, 1060), slice(860, 980))  # under the impala's chin: background in truth
    before, after = (np.asarray(open_response(r).convert("RGBA")) for r in (plain, fixed))
    if endpoint == "/api/bg/change_color":  # the ghost was the photo's colours over green; now it is green
        green = np.array([0, 255, 0])
        assert np.abs(after[ghost][..., :3].astype(int) - green).sum(-1).mean() < \
            np.abs(before[ghost][..., :3].astype(int) - green).sum(-1).mean() / 3
    else:
        assert after[ghost][..., 3].mean() < before[ghost][..., 3].mean() / 3


def test_strokes_are_part_of_the_cache_key(settings, segmenter, tmp_path):
    settings = settings.replace(edge_matting="band")
    """Other strokes, another output; the same strokes, the stored one; the model's mask is shared
    (the strokes correct it after the mask cache)."""
    cached = build_runtime(settings.replace(warmup=False, cache_backend="local", cache_dir=tmp_path), segmenter)
    data = (AM2K / "am2k-13.jpg").read_bytes()
    stroke = STROKES["am2k-13"]["remove_mask"]
    seen = []
    for form in ({}, {"remove_mask": stroke}, {"remove_mask": stroke}, {"keep_mask": stroke}):
        run = Job(cached, RemoveOptions.from_form({"only_mask": "true", **form}), data)
        images = run.run().images
        seen.append((run.cache.headers()["X-Cache"], "segment" in run.timings.ms(), "correct" in run.timings.ms()))
        run.cache.flush()
    assert [hit for hit, _, _ in seen] == ["MISS", "MISS", "HIT", "MISS"], seen
    assert [segmented for _, segmented, _ in seen] == [True, False, False, False]  # one model run
    assert [corrected for _, _, corrected in seen] == [False, True, False, True]
    a = RemoveOptions.from_form({"remove_mask": lines(20, [(1, 2), (3, 4)])}).cache_fields()
    b = RemoveOptions.from_form({"remove_mask": lines(21, [(1, 2), (3, 4)])}).cache_fields()
    c = RemoveOptions.from_form({"keep_mask": lines(20, [(1, 2), (3, 4)])}).cache_fields()
    plain = RemoveOptions.from_form({}).cache_fields()
    assert len({json.dumps(k, sort_keys=True) for k in (a, b, c, plain)}) == 4


@pytest.mark.parametrize("value, says", [
    ("[[1, 2]]", "each line is a non-empty list of [x, y] points"),
    ("[]", "expected a list of lines"),
    ("{\"lines\": [[[1, 2]]], \"width\": 0}", "width: a brush width in px, 1 to 2000"),
    ("{\"lines\": [[[1, 2]]], \"size\": 3}", "expected {\"width\": px, \"lines\": [...]}"),
    ("[[[1, -2]]]", "each 0 to 65535 px"),
    ("[[[1, true]]]", "each line is a non-empty list"),
    ("[[[1, 2]", "malformed JSON"),
    (json.dumps([[[1, 2]]] * 65), "at most 64 lines"),
    (json.dumps([[[1, 2]] * 4097]), "at most 4096 points"),
])
def test_bad_strokes_name_their_field(value, says):
    for field in ("keep_mask", "remove_mask"):
        with pytest.raises(BadOption) as refused:
            RemoveOptions.from_form({field: value})
        assert refused.value.field == field and says in refused.value.message, refused.value.message


def test_strokes_are_read_in_every_form():
    bare = Strokes.from_text("[[[10, 20], [30, 40.5]], [[5, 5]]]")
    assert bare.width == Strokes.DEFAULT_WIDTH and bare.lines == (((10, 20), (30, 40.5)), ((5, 5),))
    assert Strokes.from_text(str(bare)) == bare  # written back as it reads
    for cls in (RemoveOptions, ChangeColorOptions):
        assert cls.from_form({"keep_mask": "[[[1, 2]]]"}).keep_mask == Strokes.from_text("[[[1, 2]]]")
    assert ProcessOptions.from_form({"effects": '["8bit"]', "remove_mask": "[[[1, 2]]]"}).remove_mask is not None


def test_mask_images_through_the_api(client):
    path = AM2K / "am2k-04.jpg"
    data = path.read_bytes()
    size = Image.open(path).size
    mask = Image.new("L", size)
    ImageDraw.Draw(mask).line([(880, 860), (900, 960), (880, 1070)], fill=255, width=40)
    png = io.BytesIO()
    mask.save(png, "PNG")
    ok = post(client, "/api/bg/remove", data, remove_mask=(io.BytesIO(png.getvalue()), "stroke.png"))
    assert ok.status_code == 200 and "correct;dur=" in ok.headers["Server-Timing"]
    assert np.asarray(open_response(ok))[900:1060, 860:980, 3].mean() < 40
    small = io.BytesIO()
    mask.resize((size[0] // 2, size[1] // 3)).save(small, "PNG")
    wrong = post(client, "/api/bg/remove", data, remove_mask=(io.BytesIO(small.getvalue()), "stroke.png"))
    assert wrong.status_code == 400 and wrong.json["error"]["field"] == "remove_mask"
    assert "upload's size, 1620x1080" in wrong.json["error"]["message"]
    both = post(client, "/api/bg/remove", data, remove_mask=[(io.BytesIO(png.getvalue()), "stroke.png"), "[[[1, 2]]]"])
    assert both.status_code == 400 and both.json["error"]["field"] == "remove_mask"
    garbage = post(client, "/api/bg/remove", data, keep_mask=(io.BytesIO(b"not an image"), "k.png"))
    assert garbage.status_code == 400 and garbage.json["error"]["field"] == "keep_mask"


def test_strokes_need_the_cut_out(client):
    """Effects on the whole photo (remove_background=false) have no mask to correct: a 400, not a
    stroke silently ignored."""
    resp = post(client, "/api/v2/process", (AM2K / "am2k-04.jpg").read_bytes(), effects='["8bit"]',
                remove_background="false", remove_mask=STROKES["am2k-04"]["remove_mask"])
    assert resp.status_code == 400 and resp.json["error"]["field"] == "remove_mask"
