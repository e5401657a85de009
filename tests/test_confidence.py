"""The mask confidence (app/pipeline/confidence.py): its behaviour on constructed masks, and
X-Mask-Confidence / metadata.mask_confidence on real requests. Its ranking of real cut-outs by
their error is measured by `make quality` (benchmarks/quality.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings as hsettings, strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image, ImageDraw, ImageFilter

from app.pipeline.confidence import FULL_FRAME, mask_confidence
from tests.conftest import photo, post
from tests.test_layout_api import SMALL, small


def disc(size: int = 400, radius: int = 120, blur: float = 0.0) -> np.ndarray:
    img = Image.new("L", (size, size), 0)
    ImageDraw.Draw(img).ellipse((size / 2 - radius, size / 2 - radius, size / 2 + radius, size / 2 + radius), fill=255)
    if blur:
        img = img.filter(ImageFilter.GaussianBlur(blur))
    return np.asarray(img)


def test_a_crisp_disc_scores_higher_than_the_same_disc_blurred_and_more_blur_scores_less():
    scores = [mask_confidence(disc(blur=b)) for b in (0, 1, 2, 4, 8)]
    assert scores[0] > 0.95  # decided everywhere
    assert all(a > b for a, b in zip(scores, scores[1:])), scores
    assert scores[-1] < 0.3


def test_a_half_believed_region_lowers_the_confidence():
    crisp = disc()
    doubtful = crisp.copy()
    doubtful[20:120, 20:380] = np.maximum(doubtful[20:120, 20:380], 128)  # a band the model half takes for subject
    assert mask_confidence(doubtful) < mask_confidence(crisp) - 0.2


def test_no_subject_and_the_whole_frame_are_not_cut_outs():
    assert mask_confidence(np.zeros((64, 64), np.uint8)) == 0.0
    assert mask_confidence(np.full((64, 64), 7, np.uint8)) == 0.0  # under the subject threshold: nothing found
    assert mask_confidence(np.full((64, 64), 255, np.uint8)) == 0.0
    almost = np.full((100, 100), 255, np.uint8)
    almost[:, : round(100 * (1 - FULL_FRAME)) + 1] = 0  # a little less than the full frame: a real cut-out
    assert mask_confidence(almost) == 1.0


def test_the_subject_size_in_the_frame_does_not_change_it():
    subject = disc(400, 120, blur=3)
    framed = np.zeros((1600, 1600), np.uint8)
    framed[600:1000, 600:1000] = subject  # the same subject, a sixteenth of the frame
    assert abs(mask_confidence(framed) - mask_confidence(subject)) < 0.01


@hsettings(max_examples=60, deadline=None)
@given(arrays(np.uint8, st.tuples(st.integers(1, 40), st.integers(1, 40))))
def test_always_in_range(alpha):
    c = mask_confidence(alpha)
    assert 0.0 <= c <= 1.0


def test_refuses_what_is_not_an_8_bit_mask():
    with pytest.raises(ValueError):
        mask_confidence(np.zeros((8, 8), np.float32))
    with pytest.raises(ValueError):
        mask_confidence(np.zeros((8, 8, 3), np.uint8))


@pytest.mark.parametrize("endpoint, fields", [
    ("/api/bg/remove", {}),
    ("/api/bg/remove", {"only_mask": "true"}),
    ("/api/bg/change_color", {"color": "white"}),
    ("/api/bg/remove", {"preset": "sticker"}),
])
def test_image_endpoints_send_the_confidence_of_their_mask(client, endpoint, fields):
    resp = post(client, endpoint, SMALL, **fields)
    assert resp.status_code == 200, resp.get_json()
    value = float(resp.headers["X-Mask-Confidence"])
    assert 0.0 <= value <= 1.0
    assert value > 0.5  # a dog on a plain floor: a confident cut-out


def test_the_header_is_the_confidence_of_the_mask_returned(client):
    mask = post(client, "/api/bg/remove", SMALL, only_mask="true")
    alpha = np.asarray(Image.open(io.BytesIO(mask.data)).convert("L"))
    assert float(mask.headers["X-Mask-Confidence"]) == pytest.approx(mask_confidence(alpha), abs=0.0015)


def test_a_doubtful_photo_scores_lower_than_a_clear_one(client):
    clear = float(post(client, "/api/bg/remove", SMALL).headers["X-Mask-Confidence"])
    busy = post(client, "/api/bg/remove", small(photo("plants-1.jpg").read_bytes()))  # no single subject
    assert float(busy.headers["X-Mask-Confidence"]) < clear


def test_v2_puts_it_in_the_metadata_and_null_when_the_background_stays(client):
    removed = post(client, "/api/v2/process", SMALL, effects='["8bit"]').get_json()
    assert 0.5 < removed["metadata"]["mask_confidence"] <= 1.0
    kept = post(client, "/api/v2/process", SMALL, effects='["8bit"]', remove_background="false").get_json()
    assert kept["metadata"]["mask_confidence"] is None


def test_a_cached_result_keeps_its_confidence(make_app, tmp_path):
    client = make_app(cache_backend="local", cache_dir=tmp_path / "cache").test_client()
    first = post(client, "/api/bg/remove", SMALL, crop="true")
    first.close()  # as a server does once it is sent: the cache writes then
    again = post(client, "/api/bg/remove", SMALL, crop="true")
    assert again.headers["X-Cache"] == "HIT"
    assert again.headers["X-Mask-Confidence"] == first.headers["X-Mask-Confidence"]
