"""POST /api/v2/process and GET /api/v2/effects, through Flask's test client on the real model."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import photo, post
from tests.test_api import assert_json_error

ANIMAL = photo("animal-2.jpg").read_bytes()  # 610x700
ALL = ["blackwhite", "dither", "popart", "8bit"]


def process(client, data=ANIMAL, **fields):
    for key in ("effects", "effect_params"):
        if key in fields and not isinstance(fields[key], str):
            fields[key] = json.dumps(fields[key])
    return post(client, "/api/v2/process", data, **fields)


def image_of(body, name) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(body["images"][name])))
    img.load()
    return img


def test_all_effects_in_one_request(client):
    resp = process(client, effects=ALL, effect_params={"dither": {"dot_spacing": 2}, "blackwhite": {"preset": "vintage"}})
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    body = resp.get_json()
    assert list(body["images"]) == ALL
    assert body["format"] == "png" and (body["width"], body["height"]) == (610, 700)
    meta = body["metadata"]
    assert set(meta["timings_ms"]) == {"cache", "decode", "segment", "matte", "review", "compose", *ALL, "encode"}
    assert all(v >= 0 for v in meta["timings_ms"].values())
    assert meta["adapter"] == "onnx" and meta["model"] == "u2netp"
    assert meta["params"]["dither"]["dot_spacing"] == 2 and meta["params"]["dither"]["ink"] == "#000000"
    assert meta["params"]["blackwhite"]["preset"] == "vintage" and meta["params"]["blackwhite"]["grain_strength"] == 0.15
    assert meta["upscaled"] == {name: False for name in ALL} and meta["scaled_from"] is None
    for name in ALL:
        img = image_of(body, name)
        assert img.format == "PNG" and img.mode == "RGBA" and img.size == (610, 700)
    # the background was removed: the corners are transparent, the subject is not
    alpha = np.asarray(image_of(body, "blackwhite"))[..., 3]
    assert alpha[0, 0] == 0 and alpha[350, 305] > 240


def test_same_request_same_bytes(client):
    a = process(client, effects=["blackwhite"]).get_json()["images"]["blackwhite"]
    b = process(client, effects=["blackwhite"]).get_json()["images"]["blackwhite"]
    c = process(client, effects=["blackwhite"], effect_params={"blackwhite": {"seed": 9}}).get_json()["images"]["blackwhite"]
    assert a == b and a != c


def test_effects_act_on_the_cut_out_with_the_same_alpha_as_remove(client):
    removed = Image.open(io.BytesIO(post(client, "/api/bg/remove", ANIMAL).data))
    body = process(client, effects=["dither"]).get_json()  # 8bit's alpha is blocky by design
    for name in ("dither",):
        assert np.array_equal(np.asarray(image_of(body, name))[..., 3], np.asarray(removed)[..., 3])


def test_keep_background_and_colour_background(client):
    body = process(client, effects=["popart"], remove_background="false").get_json()
    assert "segment" not in body["metadata"]["timings_ms"] and body["metadata"]["remove_background"] is False
    assert np.asarray(image_of(body, "popart"))[..., 3].min() == 255
    body = process(client, effects=["dither"], background="#ff0000", format="webp", quality="100").get_json()
    img = image_of(body, "dither")
    assert img.format == "WEBP" and img.mode == "RGB"
    assert img.getpixel((0, 0)) == (255, 0, 0)  # the background colour, laid under the effect


def test_jpeg_output_is_flattened_over_white(client):
    body = process(client, effects=["8bit"], format="jpg", quality="95").get_json()
    img = image_of(body, "8bit")
    assert body["format"] == "jpeg" and img.format == "JPEG" and img.mode == "RGB"
    assert min(img.getpixel((0, 0))) > 245


def test_effects_catalogue(client):
    resp = client.get("/api/v2/effects")
    assert resp.status_code == 200
    body = resp.get_json()
    assert [e["name"] for e in body["effects"]] == ALL and body["max_effects_per_request"] == 4
    for effect in body["effects"]:
        assert effect["description"] and effect["parameters"]
        for p in effect["parameters"]:
            assert {"name", "type", "default", "description"} <= set(p)


@pytest.mark.parametrize(
    "fields,field",
    [
        ({}, "effects"),
        ({"effects": "blackwhite"}, "effects"),  # not JSON
        ({"effects": "[\"blackwhite\""}, "effects"),  # malformed JSON
        ({"effects": {"blackwhite": 1}}, "effects"),  # not an array
        ({"effects": []}, "effects"),
        ({"effects": ALL + ["blackwhite"]}, "effects"),  # five
        ({"effects": ["sepia"]}, "effects"),
        ({"effects": [3]}, "effects"),
        ({"effects": ["dither", "dither"]}, "effects"),
        ({"effects": ["dither"], "effect_params": "{dot_spacing: 2}"}, "effect_params"),
        ({"effects": ["dither"], "effect_params": "[1]"}, "effect_params"),
        ({"effects": ["dither"], "effect_params": "{\"a\": NaN}"}, "effect_params"),
        ({"effects": ["dither"], "effect_params": "[" * 100000}, "effect_params"),
        ({"effects": ["dither"], "effect_params": {"popart": {}}}, "effect_params.popart"),
        ({"effects": ["dither"], "effect_params": {"dither": {"dot_spacing": 0}}}, "effect_params.dither.dot_spacing"),
        ({"effects": ["dither"], "effect_params": {"dither": {"dot_spacing": "3"}}}, "effect_params.dither.dot_spacing"),
        ({"effects": ["dither"], "effect_params": {"dither": {"ink": "blurple"}}}, "effect_params.dither.ink"),
        ({"effects": ["dither"], "effect_params": {"dither": {"sparkle": 1}}}, "effect_params.dither.sparkle"),
        ({"effects": ["dither"], "effect_params": {"dither": 5}}, "effect_params.dither"),
        ({"effects": ["blackwhite"], "effect_params": {"blackwhite": {"preset": "sepia"}}}, "effect_params.blackwhite.preset"),
        ({"effects": ["blackwhite"], "effect_params": {"blackwhite": {"grain_strength": 1.5}}}, "effect_params.blackwhite.grain_strength"),
        ({"effects": ["popart"], "effect_params": {"popart": {"layout": "diagonal"}}}, "effect_params.popart.layout"),
        ({"effects": ["8bit"], "effect_params": {"8bit": {"palette": "c64"}}}, "effect_params.8bit.palette"),
        ({"effects": ["8bit"], "effect_params": {"8bit": {"dithering": "yes"}}}, "effect_params.8bit.dithering"),
        ({"effects": ["8bit"], "remove_background": "maybe"}, "remove_background"),
        ({"effects": ["8bit"], "background": "blurple"}, "background"),
        ({"effects": ["8bit"], "format": "gif"}, "format"),
        ({"effects": ["8bit"], "quality": "0"}, "quality"),
    ],
)
def test_bad_options_name_the_field(client, fields, field):
    assert_json_error(process(client, **fields), 400, "invalid_option", field)


def test_options_are_checked_before_any_pixel_work(client):
    """A bad parameter with a broken file: the parameter is reported, the file never decoded."""
    resp = process(client, b"not an image", effects=["dither"], effect_params={"dither": {"threshold": 999}})
    assert_json_error(resp, 400, "invalid_option", "effect_params.dither.threshold")


def test_bad_files(client):
    assert_json_error(process(client, None, effects=["dither"]), 400, "missing_file")
    assert_json_error(process(client, b"", effects=["dither"]), 400, "missing_file")
    assert_json_error(process(client, b"GIF89a garbage", effects=["dither"]), 400, "invalid_image")
    assert_json_error(process(client, ANIMAL[: len(ANIMAL) // 3], effects=["dither"]), 400, "invalid_image")


def test_processing_is_shed_under_load_like_removal(make_app):
    app = make_app(max_queue=0)
    state = app.extensions["bgremove"]
    with state.gate.slot(timeout_s=1):  # the only slot is busy
        resp = process(app.test_client(), effects=["dither"], remove_background="false")
    assert_json_error(resp, 503, "overloaded")
    assert int(resp.headers["Retry-After"]) >= 1


def test_refine_foreground_changes_only_soft_edge_colours(client):
    plain = process(client, effects=["blackwhite"], effect_params={"blackwhite": {"grain_strength": 0}}).get_json()
    refined = process(client, effects=["blackwhite"], effect_params={"blackwhite": {"grain_strength": 0}},
                      refine_foreground="true").get_json()
    assert refined["metadata"]["refine_foreground"] is True and plain["metadata"]["refine_foreground"] is False
    a, b = (np.asarray(image_of(body, "blackwhite")) for body in (plain, refined))
    assert np.array_equal(a[..., 3], b[..., 3]) and not np.array_equal(a, b)
    assert_json_error(process(client, effects=["8bit"], refine_foreground="2"), 400, field="refine_foreground")


def test_the_image_itself_on_request(client):
    """response=image, or Accept: image/*, with one effect: the image as the image endpoints send it,
    the same bytes the JSON carries; JSON stays the default (Accept: */*) for existing clients."""
    as_json = process(client, effects='["8bit"]')
    expected = base64.b64decode(as_json.get_json()["images"]["8bit"])
    by_field = process(client, effects='["8bit"]', response="image")
    by_accept = client.post("/api/v2/process", data={"file": (io.BytesIO(ANIMAL), "cat.jpg"), "effects": '["8bit"]'},
                            content_type="multipart/form-data", headers={"Accept": "image/png"})
    for resp in (by_field, by_accept):
        assert resp.status_code == 200 and resp.mimetype == "image/png", resp.data[:200]
        assert resp.data == expected
        img = Image.open(io.BytesIO(resp.data))
        assert (resp.headers["X-Width"], resp.headers["X-Height"]) == (str(img.width), str(img.height))
        assert "X-Foreground-Width" in resp.headers
    assert 'filename=8bit_' in by_accept.headers["Content-Disposition"]
    anything = client.post("/api/v2/process", data={"file": (io.BytesIO(ANIMAL), "c.jpg"), "effects": '["8bit"]'},
                           content_type="multipart/form-data", headers={"Accept": "*/*"})
    assert anything.mimetype == "application/json"


def test_an_image_response_takes_one_effect(client):
    resp = process(client, effects='["8bit", "dither"]', response="image")
    assert_json_error(resp, 400, "invalid_option")
    assert resp.get_json()["error"]["field"] == "response"


def test_metadata_says_when_the_photo_was_worked_smaller_or_the_subject_enlarged(client):
    """The image endpoints' X-Scaled-From and X-Upscaled, in the JSON: max_megapixels scales the
    photo down; a 2000 px square preset over a smaller subject with max_upscale 2 enlarges it."""
    body = process(client, effects=["8bit"], max_megapixels="0.1").get_json()
    assert body["metadata"]["scaled_from"] == "610x700" and body["width"] * body["height"] <= 100_000
    body = process(client, effects=["8bit", "popart"], preset="square-white", max_upscale="2").get_json()
    assert body["metadata"]["upscaled"] == {"8bit": True, "popart": True} and body["metadata"]["scaled_from"] is None
