"""remove.bg's API on this server (/v1.0/removebg, /v1.0/account): each of remove.bg's parameters
mapped onto our declared options, its bodies (multipart, urlencoded, JSON), its sources (file,
base64, URL), its response (image or JSON, its headers) and its errors' shape, on the real model.
Image URLs on our own endpoints too. The real npm client: tests/test_removebg_client.py."""

import base64
import io
import json
import zipfile

import numpy as np
import pytest
from PIL import Image

from app.pipeline.options import RemoveOptions, fields
from app.web.removebg import PARAMS, to_options
from tests.conftest import open_response, photo, post
from tests.origin import origin

DOG = photo("animal-1.jpg").read_bytes()
CAT = photo("animal-2.jpg").read_bytes() if photo("animal-2.jpg").is_file() else DOG
ROUTE = "/v1.0/removebg"


def rbg(client, data=None, headers=None, **params):
    """A multipart remove.bg request with ``image_file`` (unless ``data`` is None) and ``params``."""
    form = {k: v for k, v in params.items()}
    if data is not None:
        form["image_file"] = (io.BytesIO(data), "dog.jpg")
    return client.post(ROUTE, data=form, content_type="multipart/form-data", headers=headers or {})


def error_of(resp) -> dict:
    body = resp.get_json()
    assert set(body) == {"errors"} and len(body["errors"]) == 1, body
    error = body["errors"][0]
    assert set(error) == {"title", "code", "detail"} and error["title"] and error["detail"], error
    return error


@pytest.fixture()
def allow_private(make_app):
    return make_app(url_fetch_allow_private=True).test_client()


# -- the mapping: every name onto the public walk ----------------------------------------------


def test_every_parameter_maps_onto_fields_the_options_declare():
    declared = {f.name for f in fields(RemoveOptions)}
    for param in PARAMS:
        assert set(param.ours) <= declared, (param.name, param.ours)
        assert param.doc
    # the names that mean other things in remove.bg than in our form are never passed through as ours
    assert to_options({"size": "preview"}).layout.size[0] == "original"  # size is megapixels there
    assert to_options({"size": "preview"}).max_megapixels == 0.25
    assert to_options({"format": "jpg"}).format == "jpeg"


@pytest.mark.parametrize("size, megapixels", [
    ("preview", 0.25), ("small", 0.25), ("regular", 0.25), ("medium", 1.5), ("hd", 4.0),
    ("full", None), ("4k", None), ("auto", None), ("50MP", None)])
def test_size_is_a_megapixel_cap(size, megapixels):
    assert to_options({"size": size}).max_megapixels == megapixels


def test_the_default_size_is_preview_as_remove_bg():
    assert to_options({}).max_megapixels == 0.25


@pytest.mark.parametrize("params, field", [
    ({"size": "huge"}, "size"), ({"type": "dog"}, "type"), ({"type_level": "9"}, "type_level"),
    ({"format": "gif"}, "format"), ({"roi": "1 2 3"}, "roi"), ({"crop": "maybe"}, "crop"),
    ({"crop": "true", "crop_margin": "51%"}, "crop_margin"), ({"crop": "true", "crop_margin": "501px"}, "crop_margin"),
    ({"crop_margin": "1 2 3"}, "crop_margin"), ({"scale": "5%"}, "scale"), ({"scale": "big"}, "scale"),
    ({"position": "middle"}, "position"), ({"channels": "rgb"}, "channels"), ({"bg_color": "notacolour"}, "bg_color"),
    ({"add_shadow": "perhaps"}, "add_shadow"), ({"shadow_type": "long"}, "shadow_type"),
    ({"shadow_opacity": "101"}, "shadow_opacity"), ({"semitransparency": "half"}, "semitransparency"),
])
def test_a_bad_value_names_remove_bgs_parameter(client, params, field):
    resp = rbg(client, DOG, **params)
    assert resp.status_code == 400
    error = error_of(resp)
    assert error["code"] == "invalid_parameters" and error["detail"].startswith(f"{field}:"), error


@pytest.mark.parametrize("params, expected", [
    ({"crop": "true"}, {"crop": True}),
    ({"crop": "true", "crop_margin": "10%"}, {"padding": ((10.0, "%"),) * 4}),
    ({"crop": "true", "crop_margin": "30px 10px"}, {"padding": ((30.0, "px"), (10.0, "px")) * 2}),
    ({"crop_margin": "30px"}, {"padding": ((0.0, "px"),) * 4}),  # only with crop, as remove.bg
    # remove.bg keeps the photo's canvas and scales the subject in it (our size=photo)
    ({"scale": "80%"}, {"scale": 0.8, "size": ("photo", 0, 0), "max_upscale": 8.0}),
    ({"scale": "original"}, {"scale": None, "size": ("original", 0, 0)}),
    ({"crop": "true", "scale": "80%"}, {"scale": 0.8, "size": ("original", 0, 0), "max_upscale": 1.0}),
    ({"position": "center"}, {"position": (0.5, 0.5), "size": ("photo", 0, 0)}),
    ({"position": "30%"}, {"position": (0.3, 0.3)}),
    ({"position": "0% 100%"}, {"position": (0.0, 1.0)}),
    ({"bg_color": "81d4fa"}, {"background": ("color", 0x81, 0xD4, 0xFA, 255)}),
    ({"bg_color": "fff"}, {"background": ("color", 255, 255, 255, 255)}),
    ({"bg_color": "81d4fa77"}, {"background": ("color", 0x81, 0xD4, 0xFA, 0x77)}),
    ({"bg_color": "green"}, {"background": ("color", 0, 128, 0, 255)}),
    ({"add_shadow": "true"}, {"shadow": "contact"}), ({"shadow_type": "drop"}, {"shadow": "drop"}),
    ({"shadow_type": "car", "shadow_opacity": "40"}, {"shadow": "contact", "shadow_opacity": 0.4}),
])
def test_layout_parameters_map_onto_our_layout(params, expected):
    layout = to_options(params).layout
    for name, value in expected.items():
        got = getattr(layout, name)
        assert (tuple(got) if isinstance(got, tuple) else got) == value, (name, got)


def test_format_auto_is_png_with_transparency_else_jpeg():
    assert to_options({}).format == "png"
    assert to_options({"bg_color": "red"}).format == "jpeg"
    assert to_options({"bg_color": "ff000080"}).format == "png"  # a translucent colour keeps transparency
    assert to_options({"channels": "alpha", "bg_color": "red"}).format == "png"
    assert to_options({"format": "webp", "bg_color": "red"}).format == "webp"


def test_channels_alpha_is_the_mask():
    assert to_options({"channels": "alpha"}).only_mask and not to_options({"channels": "rgba"}).only_mask


# -- requests on the real model ----------------------------------------------------------------


def test_a_file_at_the_default_size_with_remove_bgs_headers(client):
    resp = rbg(client, DOG)
    assert resp.status_code == 200, resp.get_json()
    img = open_response(resp)
    assert resp.mimetype == "image/png" and img.mode == "RGBA"
    assert img.width * img.height <= 250_000 and img.width * img.height > 200_000
    assert (resp.headers["X-Width"], resp.headers["X-Height"]) == (str(img.width), str(img.height))
    assert resp.headers["X-Credits-Charged"] == "0" and resp.headers["X-Type"] == "other"
    left, top = int(resp.headers["X-Foreground-Left"]), int(resp.headers["X-Foreground-Top"])
    width, height = int(resp.headers["X-Foreground-Width"]), int(resp.headers["X-Foreground-Height"])
    alpha = np.asarray(img.getchannel("A"))
    ys, xs = np.nonzero(alpha >= 8)
    assert (left, top, width, height) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)


def test_type_is_echoed_as_x_type_never_classified(client):
    assert rbg(client, DOG, type="animal").headers["X-Type"] == "animal"
    assert rbg(client, DOG, type="auto").headers["X-Type"] == "other"
    b64 = base64.b64encode(DOG).decode()
    assert client.post(ROUTE, json={"image_file_b64": b64, "type": "product"}).headers["X-Type"] == "product"


def test_json_body_with_base64_and_json_answer(client):
    b64 = "data:image/jpeg;base64," + base64.b64encode(DOG).decode()
    resp = client.post(ROUTE, json={"image_file_b64": b64, "size": "medium", "crop": True},
                       headers={"Accept": "application/json"})
    assert resp.status_code == 200, resp.get_json()
    data = resp.get_json()["data"]
    img = Image.open(io.BytesIO(base64.b64decode(data["result_b64"])))
    assert img.mode == "RGBA" and img.size == (int(resp.headers["X-Width"]), int(resp.headers["X-Height"]))
    # cropped: the image is the subject's box
    assert (data["foreground_left"], data["foreground_top"]) == (0, 0)
    assert (data["foreground_width"], data["foreground_height"]) == img.size


def test_urlencoded_body_with_base64(client):
    resp = client.post(ROUTE, data={"image_file_b64": base64.b64encode(DOG).decode(), "format": "jpg"},
                       content_type="application/x-www-form-urlencoded")
    assert resp.status_code == 200, resp.get_json()
    img = open_response(resp)
    assert resp.mimetype == "image/jpeg" and img.mode == "RGB"
    assert min(img.getpixel((0, 0))) >= 245  # JPEG without a background: over white


def test_the_old_json_alias_answers_the_same(client):
    a, b = rbg(client, DOG, size="preview"), client.post(
        "/v1.0/removebg.json", data={"image_file": (io.BytesIO(DOG), "d.jpg"), "size": "preview"},
        content_type="multipart/form-data")
    assert a.status_code == b.status_code == 200 and a.data == b.data


def test_bg_color_gives_an_opaque_jpeg_of_that_colour(client):
    resp = rbg(client, DOG, bg_color="81d4fa", size="preview")
    img = open_response(resp)
    assert resp.mimetype == "image/jpeg" and img.mode == "RGB"
    assert np.abs(np.array(img.getpixel((2, 2))) - (0x81, 0xD4, 0xFA)).max() <= 6


def test_zip_holds_color_and_alpha_that_recompose_to_the_png(client):
    png = open_response(rbg(client, DOG, size="preview", format="png"))
    resp = rbg(client, DOG, size="preview", format="zip")
    assert resp.status_code == 200 and resp.mimetype == "application/zip"
    with zipfile.ZipFile(io.BytesIO(resp.data)) as z:
        assert sorted(z.namelist()) == ["alpha.png", "color.jpg"]
        color = Image.open(io.BytesIO(z.read("color.jpg")))
        alpha = Image.open(io.BytesIO(z.read("alpha.png")))
    assert color.mode == "RGB" and alpha.mode == "L" and color.size == alpha.size == png.size
    assert np.array_equal(np.asarray(alpha), np.asarray(png.getchannel("A")))


def test_channels_alpha_returns_the_mask(client):
    img = open_response(rbg(client, DOG, channels="alpha"))
    assert img.mode == "L"


def test_roi_outside_the_subject_is_unknown_foreground(client):
    resp = rbg(client, DOG, roi="0px 0px 3px 3px")
    assert resp.status_code == 400 and error_of(resp)["code"] == "unknown_foreground"


def test_roi_keeps_only_its_region(client):
    img = open_response(rbg(client, DOG, roi="0% 0% 50% 100%", size="preview"))
    alpha = np.asarray(img.getchannel("A"))
    assert alpha[:, alpha.shape[1] // 2 + 2:].max() == 0 and alpha[:, : alpha.shape[1] // 2].max() > 0


def test_scale_and_position_keep_the_photos_canvas(client):
    plain = open_response(rbg(client, DOG))
    for scale, position in (("50%", "center"), ("90%", "0% 100%"), ("100%", "original")):
        img = open_response(rbg(client, DOG, scale=scale, position=position))
        assert img.size == plain.size  # preview's canvas, the subject scaled in it
        ys, xs = np.nonzero(np.asarray(img.getchannel("A")) >= 8)
        width, height = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
        share = float(scale[:-1]) / 100
        assert max(width / img.width, height / img.height) == pytest.approx(share, abs=0.02)
        if position == "0% 100%":
            assert xs.min() <= 1 and ys.max() >= img.height - 2


def test_margins_never_take_the_output_past_its_size(client):
    resp = rbg(client, DOG, crop="true", crop_margin="50%", add_shadow="true")
    img = open_response(resp)
    assert img.width * img.height <= 250_000
    ys, xs = np.nonzero(np.asarray(img.getchannel("A")) >= 8)
    assert int(resp.headers["X-Foreground-Width"]) <= xs.max() - xs.min() + 1 + 2


def test_semitransparency_and_type_level_are_accepted(client):
    assert rbg(client, DOG, semitransparency="false", type_level="2").status_code == 200


def test_unknown_parameter_is_refused(client):
    resp = rbg(client, DOG, bg_image="x")
    assert resp.status_code == 400 and error_of(resp)["detail"].startswith("bg_image:")


# -- sources -------------------------------------------------------------------------------------


def test_no_source_and_two_sources(client):
    missing = rbg(client, None, size="preview")
    assert missing.status_code == 400 and error_of(missing)["code"] == "missing_source"
    empty = client.post(ROUTE)
    assert empty.status_code == 400 and error_of(empty)["code"] == "missing_source"
    both = rbg(client, DOG, image_url="http://example.com/a.jpg")
    assert both.status_code == 400 and error_of(both)["code"] == "multiple_sources"


def test_image_url_and_background_url_from_a_local_origin(allow_private):
    bg = Image.new("RGB", (64, 48), (200, 30, 40))
    buf = io.BytesIO()
    bg.save(buf, "PNG")
    with origin({"/dog.jpg": (DOG, "image/jpeg"), "/bg.png": (buf.getvalue(), "application/octet-stream")}) as site:
        resp = allow_private.post(ROUTE, json={"image_url": site.url("/dog.jpg"), "bg_image_url": site.url("/bg.png")})
        assert resp.status_code == 200, resp.get_json()
        img = open_response(resp)
        assert resp.mimetype == "image/jpeg"  # the background covers the canvas: auto is JPEG
        assert np.abs(np.array(img.getpixel((1, 1))) - (200, 30, 40)).max() <= 8
        direct = rbg(allow_private, DOG, bg_image_file=(io.BytesIO(buf.getvalue()), "bg.png"))
        assert direct.status_code == 200 and direct.data == resp.data
        assert [path for path, _ in site.requests] == ["/dog.jpg", "/bg.png"]


def test_urls_to_this_network_are_refused_by_default(client):
    with origin({"/dog.jpg": (DOG, "image/jpeg")}) as site:
        resp = client.post(ROUTE, json={"image_url": site.url("/dog.jpg")})
        assert resp.status_code == 400 and error_of(resp)["code"] == "invalid_image_url"
        assert site.requests == []  # never contacted
    resp = client.post(ROUTE, json={"image_url": "file:///etc/passwd"})
    assert resp.status_code == 400 and error_of(resp)["code"] == "invalid_image_url"


def test_a_missing_remote_image_is_failed_image_download(allow_private):
    with origin({}) as site:
        resp = allow_private.post(ROUTE, json={"image_url": site.url("/nothing.jpg")})
    assert resp.status_code == 400 and error_of(resp)["code"] == "failed_image_download"


# -- hostile bodies ----------------------------------------------------------------------------


def test_json_bombs_and_odd_bodies_are_400s(client):
    deep = "[" * 100_000 + "]" * 100_000
    for body in ('{"image_file_b64": ' + deep + "}", deep, "{", '{"size": {"a": 1}}', "null", '"x"', "\x00\xff"):
        resp = client.post(ROUTE, data=body, content_type="application/json")
        assert resp.status_code == 400, (body[:30], resp.status_code)
        error_of(resp)
    resp = client.post(ROUTE, data=b"\x89PNG...", content_type="image/png")
    assert resp.status_code == 400 and error_of(resp)["detail"].startswith("Content-Type")


def test_base64_of_ten_times_the_limit_is_file_too_large(make_app):
    client = make_app(max_file_size_mb=0.5).test_client()
    huge = base64.b64encode(b"\xff" * (5 * 1024 * 1024)).decode()
    for send in (lambda: client.post(ROUTE, json={"image_file_b64": huge}),
                 lambda: client.post(ROUTE, data={"image_file_b64": huge},
                                     content_type="application/x-www-form-urlencoded")):
        resp = send()
        assert resp.status_code == 400 and error_of(resp)["code"] == "file_too_large", resp.get_json()
    just_over = base64.b64encode(b"\xff" * (512 * 1024 + 10)).decode()
    resp = client.post(ROUTE, json={"image_file_b64": just_over})
    assert resp.status_code == 400 and error_of(resp)["code"] == "file_too_large"


def test_bad_base64_and_not_an_image(client):
    bad = client.post(ROUTE, json={"image_file_b64": "not base64!"})
    assert bad.status_code == 400 and error_of(bad)["code"] == "invalid_file"
    text = client.post(ROUTE, json={"image_file_b64": base64.b64encode(b"hello world").decode()})
    assert text.status_code == 400 and error_of(text)["code"] in ("invalid_file", "unknown_format")
    assert error_of(text)["detail"].startswith("image_file_b64:")  # the field sent, not our `file`


# -- keys, limits, account ---------------------------------------------------------------------


def test_api_keys_answer_403_auth_failed(make_app):
    client = make_app(api_keys=("k" * 20,)).test_client()
    for headers in ({}, {"X-Api-Key": "wrong"}):
        resp = rbg(client, DOG, headers=headers)
        assert resp.status_code == 403 and error_of(resp)["code"] == "auth_failed"
        assert "WWW-Authenticate" not in resp.headers
    assert rbg(client, DOG, headers={"X-Api-Key": "k" * 20}).status_code == 200
    assert client.get("/v1.0/account").status_code == 403
    account = client.get("/v1.0/account", headers={"X-Api-Key": "k" * 20})
    credits = account.get_json()["data"]["attributes"]["credits"]
    assert account.status_code == 200 and credits["total"] >= 10**9
    assert account.get_json()["data"]["attributes"]["unlimited"] is True


def test_rate_limit_in_remove_bgs_shape_with_its_headers(make_app):
    client = make_app(rate_limit="1/minute").test_client()
    first = rbg(client, DOG)
    assert first.status_code == 200
    assert first.headers["X-RateLimit-Limit"] == "1" and first.headers["X-RateLimit-Remaining"] == "0"
    assert "X-RateLimit-Reset" in first.headers
    second = rbg(client, DOG)
    assert second.status_code == 429 and error_of(second)["code"] == "rate_limit_exceeded"
    assert int(second.headers["Retry-After"]) > 0 and second.headers["X-RateLimit-Remaining"] == "0"


def test_the_route_is_in_the_openapi_document(client):
    spec = client.get("/openapi.json").get_json()
    op = spec["paths"]["/v1.0/removebg"]["post"]
    props = op["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]
    assert {"image_file", "image_file_b64", "image_url", *(p.name for p in PARAMS)} <= set(props)
    assert "application/json" in op["requestBody"]["content"]


# -- image URLs on our own endpoints ---------------------------------------------------------


def test_our_endpoints_take_image_url_and_background_url(allow_private):
    with origin({"/dog.jpg": (DOG, "image/jpeg")}) as site:
        by_url = allow_private.post("/api/bg/remove", data={"image_url": site.url("/dog.jpg")})
        by_file = post(allow_private, "/api/bg/remove", DOG)
        assert by_url.status_code == 200, by_url.get_json()
        assert by_url.data == by_file.data
        both = allow_private.post("/api/bg/remove", data={"image_url": site.url("/dog.jpg"),
                                                          "file": (io.BytesIO(DOG), "d.jpg")},
                                  content_type="multipart/form-data")
        assert both.status_code == 400 and both.get_json()["error"]["code"] == "multiple_sources"
        v2 = allow_private.post("/api/v2/process", data={"image_url": site.url("/dog.jpg"), "effects": '["8bit"]',
                                                         "background_url": site.url("/dog.jpg")})
        assert v2.status_code == 200, v2.get_json()


def test_our_endpoints_refuse_private_urls_by_default(client):
    resp = client.post("/api/bg/remove", data={"image_url": "http://169.254.169.254/latest/meta-data/"})
    assert resp.status_code == 400
    assert resp.get_json()["error"] == {"code": "invalid_image_url", "field": "image_url",
                                        "message": resp.get_json()["error"]["message"]}
