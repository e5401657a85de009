"""Every endpoint and every bad input, through Flask's test client on the real model."""

import io
import threading

import numpy as np
import pytest
from PIL import Image

from tests.conftest import encode, open_response, photo, post, png_bytes, wait_for
from tests.test_imaging import bomb_png

ANIMAL = photo("animal-2.jpg").read_bytes()  # 610x700


def assert_json_error(resp, status, code=None, field=None):
    assert resp.status_code == status, resp.data[:300]
    assert resp.mimetype == "application/json"
    body = resp.get_json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]) <= {"code", "message", "field"}
    if code:
        assert body["error"]["code"] == code
    if field:
        assert body["error"]["message"].startswith(field + ":")
        assert body["error"]["field"] == field.split(":")[0]
    assert "Traceback" not in resp.get_data(as_text=True)
    return body["error"]


# --- success paths -----------------------------------------------------------------------

def test_remove_returns_rgba_png_of_input_size(client):
    resp = post(client, "/api/bg/remove", ANIMAL, filename="my dog.jpg")
    assert resp.status_code == 200 and resp.mimetype == "image/png"
    assert resp.headers["Content-Disposition"] == "inline; filename=nobg_my_dog.png"
    img = open_response(resp)
    assert img.format == "PNG" and img.mode == "RGBA" and img.size == (610, 700)
    alpha = np.asarray(img.getchannel("A"))
    assert alpha.min() == 0 and alpha.max() == 255  # background cut, subject kept
    rgb = np.asarray(img.convert("RGB"))
    src = np.asarray(Image.open(io.BytesIO(ANIMAL)).convert("RGB"))
    opaque = alpha == 255
    assert np.array_equal(rgb[opaque], src[opaque])  # subject colours untouched


def test_remove_webp_and_mask(client):
    resp = post(client, "/api/bg/remove", ANIMAL, format="webp")
    assert resp.status_code == 200 and resp.mimetype == "image/webp"
    img = open_response(resp)
    assert img.format == "WEBP" and img.mode == "RGBA" and img.size == (610, 700)

    resp = post(client, "/api/bg/remove", ANIMAL, only_mask="true")
    assert resp.status_code == 200 and resp.headers["Content-Disposition"] == "inline; filename=mask_photo.png"
    mask = open_response(resp)
    assert mask.mode == "L" and mask.size == (610, 700)
    cut = open_response(post(client, "/api/bg/remove", ANIMAL))
    assert np.array_equal(np.asarray(mask), np.asarray(cut.getchannel("A")))


@pytest.mark.parametrize("endpoint, fields", [
    ("/api/bg/remove", {"format": "png"}),
    ("/api/bg/change_color", {"format": "png", "color": "white"}),
])
def test_refine_foreground_option_on_both_tiers(client, endpoint, fields):
    """Same mask, opaque pixels unchanged, edge colours re-estimated; a bad value names the field."""
    plain = np.asarray(open_response(post(client, endpoint, ANIMAL, **fields)).convert("RGBA"))
    refined_resp = post(client, endpoint, ANIMAL, refine_foreground="true", **fields)
    assert refined_resp.status_code == 200
    refined = np.asarray(open_response(refined_resp).convert("RGBA"))
    assert plain.shape == refined.shape and not np.array_equal(plain, refined)
    cut = np.asarray(open_response(post(client, "/api/bg/remove", ANIMAL)))
    opaque = cut[..., 3] == 255
    assert np.array_equal(plain[opaque], refined[opaque])
    assert_json_error(post(client, endpoint, ANIMAL, refine_foreground="sometimes", **fields), 400, field="refine_foreground")


def test_change_color_defaults_to_white_jpeg(client):
    resp = post(client, "/api/bg/change_color", ANIMAL)
    assert resp.status_code == 200 and resp.mimetype == "image/jpeg"
    assert resp.headers["Content-Disposition"] == "inline; filename=nobg_photo.jpg"
    img = open_response(resp)
    assert img.format == "JPEG" and img.mode == "RGB" and img.size == (610, 700)


@pytest.mark.parametrize("color, rgb", [("#00FF00", (0, 255, 0)), ("00FF00", (0, 255, 0)), ("#0F0", (0, 255, 0)),
                                        ("255,0,0", (255, 0, 0)), ("navy", (0, 0, 128))])
def test_change_color_paints_the_background(client, color, rgb):
    resp = post(client, "/api/bg/change_color", ANIMAL, color=color, format="png")
    assert resp.status_code == 200
    img = np.asarray(open_response(resp).convert("RGB")).astype(int)
    mask = np.asarray(open_response(post(client, "/api/bg/remove", ANIMAL, only_mask="1")))
    background = img[mask == 0]
    assert len(background) > 1000
    assert np.abs(background - rgb).max() == 0


def test_change_color_quality_changes_size(client):
    small = post(client, "/api/bg/change_color", ANIMAL, quality="5")
    large = post(client, "/api/bg/change_color", ANIMAL, quality="100")
    assert small.status_code == large.status_code == 200
    assert len(small.data) * 2 < len(large.data)


def test_large_input_scaled_to_max_dimension(make_app):
    client = make_app(max_dimension=300).test_client()
    img = open_response(post(client, "/api/bg/remove", ANIMAL))
    assert img.size == (261, 300)


def test_rgba_input_keeps_its_transparency(client):
    src = Image.open(io.BytesIO(ANIMAL)).convert("RGBA")
    src.putalpha(Image.new("L", src.size, 0).resize(src.size))
    arr = np.asarray(src).copy()
    arr[:, 305:, 3] = 255  # right half visible, left half transparent
    resp = post(client, "/api/bg/remove", png_bytes(Image.fromarray(arr, "RGBA")), filename="x.png")
    alpha = np.asarray(open_response(resp).getchannel("A"))
    assert alpha[:, :300].max() == 0 and alpha[:, 310:].max() == 255


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "BMP", "TIFF", "WEBP"])
def test_other_input_formats(client, fmt):
    src = Image.open(io.BytesIO(ANIMAL)).convert("RGB")
    resp = post(client, "/api/bg/remove", encode(src, fmt), filename=f"a.{fmt.lower()}")
    assert resp.status_code == 200 and open_response(resp).size == (610, 700)


def test_health_status_and_index(client):
    health = client.get("/api/bg/health")
    assert health.status_code == 200
    body = health.get_json()
    assert body["status"] == "healthy" and body["model_loaded"] is True and 10 < body["memory_mb"] < 2000

    served_before = client.get("/api/bg/status").get_json()["requests_served"]
    post(client, "/api/bg/remove", ANIMAL)
    status = client.get("/api/bg/status").get_json()
    assert status["status"] == "ready" and status["adapter"] == "onnx" and status["model"] == "u2netp"
    assert status["memory"]["model_loaded"] is True and status["memory"]["rss_mb"] > 10
    assert status["max_file_size_mb"] == 8 and status["max_dimension"] == 4096
    assert {"jpg", "png", "webp", "gif", "bmp", "tiff"} <= set(status["allowed_extensions"])
    assert status["uptime_s"] >= 0 and status["requests_served"] == served_before + 1

    index = client.get("/")
    assert index.status_code == 200 and index.mimetype == "text/plain"
    for path in ("/api/bg/remove", "/api/bg/change_color", "/api/bg/health", "/api/bg/status"):
        assert path in index.get_data(as_text=True)


def test_health_is_503_until_the_model_has_run(make_app):
    client = make_app(warmup=False).test_client()
    resp = client.get("/api/bg/health")
    assert resp.status_code == 503 and resp.get_json()["model_loaded"] is False
    assert post(client, "/api/bg/remove", ANIMAL).status_code == 200
    assert client.get("/api/bg/health").status_code == 200


# --- bad input ------------------------------------------------------------------------------

def test_no_file(client):
    assert_json_error(post(client, "/api/bg/remove", None), 400, "missing_file", "file")
    assert_json_error(client.post("/api/bg/remove"), 400, "missing_file", "file")
    assert_json_error(client.post("/api/bg/remove", data=ANIMAL, content_type="image/jpeg"), 400, "missing_file")


def test_empty_file(client):
    assert_json_error(post(client, "/api/bg/remove", b""), 400, "missing_file", "file")


@pytest.mark.parametrize("data", [b"not an image at all", ANIMAL[: len(ANIMAL) // 2], b"GIF89a" + b"\x00" * 20])
def test_not_an_image_or_truncated(client, data):
    assert_json_error(post(client, "/api/bg/change_color", data), 400, "invalid_image", "file")


def test_unsupported_format(client):
    ico = encode(Image.new("RGB", (32, 32)), "ICO")
    assert_json_error(post(client, "/api/bg/remove", ico, filename="a.ico"), 415, "unsupported_media_type", "file")


def test_file_over_limit_is_413(make_app):
    client = make_app(max_file_size_mb=0.01).test_client()  # 10 KiB
    assert_json_error(post(client, "/api/bg/remove", ANIMAL), 413, "file_too_large")


def test_decompression_bomb(client):
    err = assert_json_error(post(client, "/api/bg/remove", bomb_png(30000, 30000), filename="bomb.png"), 422)
    assert err["code"] == "image_too_large"


@pytest.mark.parametrize(
    "endpoint, field, value",
    [
        ("/api/bg/change_color", "color", "reddish"),
        ("/api/bg/change_color", "color", "300,0,0"),
        ("/api/bg/change_color", "format", "gif"),
        ("/api/bg/change_color", "quality", "0"),
        ("/api/bg/change_color", "quality", "high"),
        ("/api/bg/remove", "format", "gif"),
        ("/api/bg/remove", "only_mask", "perhaps"),
    ],
)
def test_bad_option_names_the_field(client, endpoint, field, value):
    assert_json_error(post(client, endpoint, ANIMAL, **{field: value}), 400, "invalid_option", field)


def test_unknown_route_and_method_are_json(client):
    assert_json_error(client.get("/api/bg/nothing"), 404, "not_found")
    err = assert_json_error(client.get("/api/bg/remove"), 405)
    assert err["code"] == "method_not_allowed"


def test_overloaded_sheds_with_retry_after(make_app):
    app = make_app(max_queue=0)
    state = app.extensions["bgremove"]
    client = app.test_client()
    with state.gate.slot(timeout_s=1):  # the one inference slot is busy
        resp = post(client, "/api/bg/remove", ANIMAL)
    assert_json_error(resp, 503, "overloaded")
    assert int(resp.headers["Retry-After"]) >= 1
    assert post(client, "/api/bg/remove", ANIMAL).status_code == 200  # and serves again


def test_queued_request_times_out_with_503(make_app):
    app = make_app(max_queue=2, request_timeout_s=0.3)
    state = app.extensions["bgremove"]
    client = app.test_client()
    with state.gate.slot(timeout_s=1):
        resp = post(client, "/api/bg/remove", ANIMAL)
    assert_json_error(resp, 503, "timeout")
    assert "Retry-After" in resp.headers


def test_queue_admits_up_to_its_bound(make_app):
    app = make_app(max_queue=2)
    gate = app.extensions["bgremove"].gate
    client = app.test_client()
    results = []
    release = threading.Event()

    def hold():
        with gate.slot(timeout_s=5):
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    wait_for(lambda: gate.active == 1, what="the holder's slot")
    waiters = [threading.Thread(target=lambda: results.append(post(app.test_client(), "/api/bg/remove", ANIMAL).status_code))
               for _ in range(2)]
    for t in waiters:
        t.start()
    wait_for(lambda: gate.waiting == 2, what="two waiters")
    shed = post(client, "/api/bg/remove", ANIMAL)  # a third waiter is over the bound
    release.set()
    for t in (holder, *waiters):
        t.join()
    assert shed.status_code == 503
    assert results == [200, 200]


@pytest.mark.parametrize("endpoint, fields, files, unknown", [
    ("/api/bg/remove", {"crop_margin": "10%"}, {}, "crop_margin"),
    ("/api/bg/change_color", {"bg_color": "red"}, {}, "bg_color"),
    ("/api/bg/remove", {}, {"bg_image": ("bg.jpg", b"\xff\xd8 not needed")}, "bg_image"),
    ("/remove-background", {"type": "auto"}, {}, "type"),
    ("/api/v2/process", {"effects": '["dither"]', "effect": "dither"}, {}, "effect"),
])
def test_unknown_fields_are_refused_by_name(client, endpoint, fields, files, unknown):
    """A field the endpoint does not take is a 400 naming it (it used to be ignored with a 200,
    which misleads anyone migrating from another API); the message lists what the endpoint takes."""
    form = {**fields, "file": (io.BytesIO(ANIMAL), "photo.jpg"), **{k: (io.BytesIO(v), n) for k, (n, v) in files.items()}}
    resp = client.post(endpoint, data=form, content_type="multipart/form-data")
    error = assert_json_error(resp, 400, field=unknown)
    assert "unknown field" in error["message"] and "takes" in error["message"]


def test_every_documented_field_is_accepted(client):
    """The other side: each endpoint's own fields (its options class's declared fields) never count as unknown."""
    from app.pipeline.options import ChangeColorOptions, ProcessOptions, RemoveBackgroundOptions, RemoveOptions

    valid = {"format": "png", "only_mask": "false", "quality": "90", "refine_foreground": "false", "color": "white",
             "output_format": "png", "effects": '["8bit"]', "effect_params": "{}", "remove_background": "true",
             "background": "transparent", "use_cache": "true", "preset": "sticker", "crop": "true", "padding": "5%",
             "size": "subject", "position": "center", "scale": "90%", "max_upscale": "1", "blur_radius": "20",
             "background_fit": "cover", "shadow": "drop", "shadow_color": "black", "shadow_opacity": "0.4",
             "shadow_blur": "12", "shadow_offset": "8,8", "outline": "4", "outline_color": "white",
             "max_megapixels": "2", "roi": "0% 0% 100% 100%", "response": "json",
             "keep_mask": "[[[300, 400]]]", "remove_mask": '{"width": 8, "lines": [[[1, 1], [20, 20]]]}'}
    for endpoint, options in (("/api/bg/remove", RemoveOptions), ("/api/bg/change_color", ChangeColorOptions),
                              ("/remove-background", RemoveBackgroundOptions), ("/api/v2/process", ProcessOptions)):
        fields = {name: valid[name] for name in options.field_names()}
        assert post(client, endpoint, ANIMAL, **fields).status_code == 200, endpoint
