"""The layout stage through the endpoints: the declared fields, presets, the size bound, the
headers, a background upload and the cache keys (the pixels themselves: tests/test_layout.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from app.pipeline.layout import subject_box
from app.pipeline.options import PRESETS, ChangeColorOptions, ProcessOptions, RemoveOptions
from tests.conftest import photo, post

DOG = photo("animal-1.jpg").read_bytes()
PLANTS = photo("plants-1.jpg").read_bytes()


def small(data: bytes, width: int = 240) -> bytes:
    img = Image.open(io.BytesIO(data)).convert("RGB")
    img = img.resize((width, round(img.height * width / img.width)), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=92)
    return buf.getvalue()


SMALL = small(DOG)


def image_of(resp) -> Image.Image:
    assert resp.status_code == 200, resp.get_json()
    return Image.open(io.BytesIO(resp.data))


def foreground(resp) -> tuple[int, int, int, int]:
    h = resp.headers
    return (int(h["X-Foreground-Left"]), int(h["X-Foreground-Top"]), int(h["X-Foreground-Width"]),
            int(h["X-Foreground-Height"]))


@pytest.mark.parametrize("fields", [
    {},
    {"crop": "true", "padding": "10%"},
    {"size": "400x300", "position": "left"},
    {"preset": "sticker"},
    {"size": "320x320", "scale": "60%", "max_upscale": "3", "shadow": "drop", "background": "#204080"},
])
def test_headers_give_the_output_size_and_the_subject_box_measured_on_it(client, fields):
    resp = post(client, "/api/bg/remove", SMALL, **fields)
    img = image_of(resp)
    assert (int(resp.headers["X-Width"]), int(resp.headers["X-Height"])) == img.size
    if img.mode == "RGBA" and fields.get("shadow") is None and "outline" not in PRESETS.get(fields.get("preset"), {}):
        box = subject_box(np.asarray(img.getchannel("A")))
        assert foreground(resp) == (box.left, box.top, box.width, box.height)
    else:  # shadows and outlines add alpha outside the subject: the box is inside the output
        left, top, width, height = foreground(resp)
        assert 0 <= left and 0 <= top and left + width <= img.width and top + height <= img.height


def test_crop_and_padding_frame_the_subject(client):
    plain = post(client, "/api/bg/remove", SMALL)
    _, _, width, height = foreground(plain)
    framed = post(client, "/api/bg/remove", SMALL, crop="true", padding="12px 20px")
    img = image_of(framed)
    assert img.size == (width + 40, height + 24)
    assert foreground(framed) == (20, 12, width, height)


def test_a_fixed_size_centres_the_subject_and_keeps_its_aspect(client):
    plain = post(client, "/api/bg/remove", SMALL)
    _, _, width, height = foreground(plain)
    resp = post(client, "/api/bg/change_color", SMALL, size="500x500", scale="80%", max_upscale="4", format="png")
    img = image_of(resp)
    left, top, w, h = foreground(resp)
    assert img.size == (500, 500) and img.mode == "RGB"
    assert abs(max(w, h) - 400) <= 1 and abs(w / h - width / height) < 0.02
    assert abs(left + w / 2 - 250) <= 1 and abs(top + h / 2 - 250) <= 1


def test_presets_resolve_and_explicit_fields_override_them(client):
    preset = RemoveOptions.from_form({"preset": "square-white"}).layout
    written = RemoveOptions.from_form(PRESETS["square-white"]).layout
    assert preset.size == written.size and preset.background == written.background and preset.scale == 0.85
    overridden = RemoveOptions.from_form({"preset": "square-white", "size": "300x300", "background": "black"}).layout
    assert overridden.size == ("px", 300, 300) and overridden.background == ("color", 0, 0, 0, 255)
    assert overridden.crop is True  # the preset's other fields stay
    img = image_of(post(client, "/api/bg/remove", SMALL, preset="square-white", size="300x300"))
    assert img.size == (300, 300) and img.mode == "RGB" and img.getpixel((0, 0)) == (255, 255, 255)
    listed = client.get("/api/v2/layouts").get_json()
    assert listed["presets"] == PRESETS and set(listed["fields"]) >= {"crop", "padding", "size", "shadow", "outline"}


def test_output_size_is_bounded_before_any_work(make_app):
    client = make_app(max_output_pixels=200 * 200).test_client()
    refused = post(client, "/api/bg/remove", SMALL, size="300x300")
    assert refused.status_code == 400 and refused.get_json()["error"]["field"] == "size"
    grown = post(client, "/api/bg/remove", SMALL, scale="10%")  # the canvas a layout grows to is bounded too
    assert grown.status_code == 400 and grown.get_json()["error"]["field"] == "scale"
    scaled = post(client, "/api/bg/remove", SMALL, preset="square-transparent")  # 2000x2000: scaled down to fit
    assert image_of(scaled).size == (200, 200)


def test_a_background_image_lies_under_the_subject(client):
    resp = client.post("/api/bg/remove", data={"file": (io.BytesIO(SMALL), "dog.jpg"),
                                               "background_file": (io.BytesIO(small(PLANTS, 300)), "plants.jpg")},
                       content_type="multipart/form-data")
    img = image_of(resp)
    cutout = image_of(post(client, "/api/bg/remove", SMALL))
    assert img.mode == "RGB" and img.size == cutout.size  # cover: the whole canvas
    alpha = np.asarray(cutout.getchannel("A"))
    out, sub = np.asarray(img).astype(int), np.asarray(cutout.convert("RGB")).astype(int)
    assert np.abs(out[alpha == 255] - sub[alpha == 255]).max() <= 1  # the subject on top, unchanged
    assert np.abs(out[alpha == 0] - sub[alpha == 0]).mean() > 20  # the plants under it
    missing = post(client, "/api/bg/remove", SMALL, background="image")
    assert missing.status_code == 400 and missing.get_json()["error"]["field"] == "background_file"
    broken = client.post("/api/bg/remove", data={"file": (io.BytesIO(SMALL), "dog.jpg"),
                                                 "background_file": (io.BytesIO(b"not an image"), "x.jpg")},
                         content_type="multipart/form-data")
    assert broken.status_code == 400 and broken.get_json()["error"]["field"] == "background_file"
    assert broken.get_json()["error"]["message"].startswith("background_file: not a readable image")


def test_change_color_keeps_color_as_the_background_unless_background_says_otherwise(client):
    red = image_of(post(client, "/api/bg/change_color", SMALL, color="red", crop="true", padding="10px"))
    assert red.getpixel((0, 0))[0] > 240 and red.getpixel((0, 0))[1:] < (16, 16)
    blurred = image_of(post(client, "/api/bg/change_color", SMALL, color="red", background="blur", format="png"))
    assert blurred.getpixel((0, 0))[0] < 240  # the photo's blurred background, not red
    sticker = image_of(post(client, "/api/bg/change_color", SMALL, preset="sticker", format="png"))
    assert sticker.mode == "RGBA" and sticker.getpixel((0, 0))[3] == 0  # the preset's transparency is kept


def test_an_upload_field_sent_as_text_is_refused(client):
    resp = post(client, "/api/bg/remove", SMALL, background_file="plants.jpg")
    assert resp.status_code == 400 and resp.get_json()["error"]["field"] == "background_file"


def test_cross_origin_clients_may_read_the_layout_headers(make_app):
    client = make_app(cors_origins=("https://shop.example",)).test_client()
    resp = client.post("/api/bg/remove", data={"file": (io.BytesIO(SMALL), "dog.jpg")},
                       headers={"Origin": "https://shop.example"}, content_type="multipart/form-data")
    exposed = resp.headers["Access-Control-Expose-Headers"]
    assert all(h in exposed for h in ("X-Width", "X-Height", "X-Foreground-Top", "X-Foreground-Height"))


@pytest.mark.parametrize("cls, a, b", [
    (RemoveOptions, {"size": "2000x2000"}, {"size": "2000 X 2000"}),
    (RemoveOptions, {"preset": "sticker"}, PRESETS["sticker"]),
    (RemoveOptions, {"padding": "10px"}, {"padding": "10 10px 10px 10"}),
    (ChangeColorOptions, {"color": "#ff0000"}, {"background": "red"}),
    (ProcessOptions, {"effects": '["dither"]', "shadow": "drop"}, {"effects": '["dither"]', "shadow": "DROP"}),
])
def test_equivalent_layouts_share_a_cache_key(cls, a, b):
    assert cls.from_form(a).cache_fields() == cls.from_form(b).cache_fields()


@pytest.mark.parametrize("a, b", [
    ({}, {"crop": "true"}),
    ({"size": "2000x2000"}, {"size": "2000x1999"}),
    ({"shadow": "drop"}, {"shadow": "contact"}),
    ({"outline": "4"}, {"outline": "4", "outline_color": "black"}),
    ({"background": "#ff000080"}, {"background": "#ff0000"}),
])
def test_different_layouts_have_different_cache_keys(a, b):
    assert RemoveOptions.from_form(a).cache_fields() != RemoveOptions.from_form(b).cache_fields()


@pytest.mark.parametrize("field, value", [
    ("padding", "1 2 3"), ("padding", "-5px"), ("size", "0x10"), ("size", "big"), ("position", "middle"),
    ("scale", "5%"), ("scale", "150%"), ("max_upscale", "0"), ("background", "sky"), ("blur_radius", "0"),
    ("background_fit", "stretch"), ("shadow", "soft"), ("shadow_color", "nope"), ("shadow_opacity", "1.5"),
    ("shadow_blur", "-1"), ("shadow_offset", "10"), ("outline", "501"), ("outline_color", "#12"), ("preset", "huge"),
])
def test_every_bad_layout_value_is_a_400_naming_its_field(client, field, value):
    resp = post(client, "/api/bg/remove", SMALL, **{field: value})
    body = resp.get_json()
    assert resp.status_code == 400 and body["error"]["field"] == field and body["error"]["message"].startswith(field)
