"""Smaller faults of issue 12, point 9: the mask's confident interior, Latin-1 part headers,
and each form limit answered with its own cause.

u2netp's output saturates short of 1 inside a subject; rembg's truncation made that 254
everywhere (0.1-1.5% of subject pixels reached 255). Now a confident pixel is 255 and a
confident background pixel 0, checked on every fixture photo with the real model.

werkzeug decodes multipart part headers as strict UTF-8; a raw Latin-1 byte in a filename
(``caf\\xe9.jpg``) raised UnicodeDecodeError, which its form parser swallows and answers with
an empty form (400 missing_file although the file was there). Its limits (form parts,
non-file field size, body size) all raised one 413 that the API called file_too_large.
Raw multipart bodies here, built byte by byte, through the test client and a real gunicorn.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import requests
from PIL import Image
from scipy import ndimage

from app import pipeline
from tests.serverkit import running_server
from tests.conftest import IMAGES, open_response, photo, post

BOUNDARY = b"x-test-boundary-8f2c"
CONTENT_TYPE = "multipart/form-data; boundary=" + BOUNDARY.decode()


def small_photo() -> bytes:
    img = Image.open(photo("animal-2.jpg")).convert("RGB")
    img.thumbnail((160, 160))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


PHOTO = small_photo()


def part(disposition: bytes, body: bytes, content_type: bytes | None = None) -> bytes:
    head = b"--" + BOUNDARY + b"\r\nContent-Disposition: form-data; " + disposition + b"\r\n"
    if content_type:
        head += b"Content-Type: " + content_type + b"\r\n"
    return head + b"\r\n" + body + b"\r\n"


def file_part(filename: bytes, data: bytes = PHOTO) -> bytes:
    return part(b'name="file"; filename="' + filename + b'"', data, b"image/jpeg")


def field(name: bytes, value: bytes) -> bytes:
    return part(b'name="' + name + b'"', value)


def body(*parts: bytes) -> bytes:
    return b"".join(parts) + b"--" + BOUNDARY + b"--\r\n"


def send(client, endpoint: str, raw: bytes):
    return client.post(endpoint, data=raw, content_type=CONTENT_TYPE)


def error_of(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, (resp.status_code, resp.data[:300])
    assert resp.mimetype == "application/json"
    error = resp.get_json()["error"]
    assert error["code"] == code and error["message"], error
    return error


# -- the mask: confident means 255 (or 0) ------------------------------------------------

CONFIDENT = 0.98  # the normalised model output at or above which the model is sure (adapters.onnx.CONFIDENT_MARGIN)
# Lanczos upsampling reaches 3 model pixels around each output pixel, plus one for the mapping's rounding.
REACH = 4


def normalised_prediction(segmenter, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prediction = segmenter.infer(segmenter.preprocess(rgb))
    p = prediction[0, 0]
    return prediction, (p - p.min()) / (p.max() - p.min())


@pytest.mark.parametrize("path", IMAGES, ids=lambda p: p.name)
def test_confident_subject_is_255_and_confident_background_0(path, segmenter, settings):
    image = pipeline.decode(path.read_bytes(), settings)
    prediction, p = normalised_prediction(segmenter, image.rgb)
    side = p.shape[0]
    # at the model's size (no resampling): every confident pixel is exactly 255 or 0
    small = segmenter.postprocess(prediction, side, side)
    assert (small[p >= CONFIDENT] == 255).all() and (small[p <= 1 - CONFIDENT] == 0).all()
    # at the photo's size: wherever the model is confident all around, the mask is 255 (subject) or 0
    height, width = image.rgb.shape[:2]
    mask = segmenter.mask(image.rgb)

    def region(confident: np.ndarray) -> np.ndarray:
        inner = ndimage.binary_erosion(confident, iterations=REACH, border_value=1)
        return np.asarray(Image.fromarray(inner.astype(np.uint8) * 255).resize((width, height), Image.Resampling.NEAREST)) > 0

    interior, outside = region(p >= CONFIDENT), region(p <= 1 - CONFIDENT)
    subject = mask >= 128
    assert interior.sum() >= 0.05 * subject.sum(), "hardly any confident interior: the test would prove nothing"
    assert (mask[interior] == 255).all(), f"{np.mean(mask[interior] == 255):.5f} of the interior is 255, min {mask[interior].min()}"
    assert (mask[outside] == 0).all(), f"{np.mean(mask[outside] == 0):.5f} of the sure background is 0"


def test_clear_subjects_are_mostly_fully_opaque(segmenter, settings):
    """Before: 0.2-1.5% of subject pixels (mask >= 128) were 255. Plants are left out: u2netp is unsure of
    foliage (its interior stays at 0.6-0.97), and a mask must not claim a certainty the model lacks."""
    shares = {}
    for path in IMAGES:
        if path.name == "plants-1.jpg":
            continue
        mask = segmenter.mask(pipeline.decode(path.read_bytes(), settings).rgb)
        shares[path.name] = float(np.mean(mask[mask >= 128] == 255))
    assert min(shares.values()) >= 0.5, shares


def test_cutout_is_opaque_inside_the_subject_with_its_colours_untouched(client):
    resp = post(client, "/api/bg/remove", photo("animal-2.jpg").read_bytes())
    cut = np.asarray(open_response(resp))
    source = np.asarray(Image.open(photo("animal-2.jpg")).convert("RGB"))
    opaque = cut[..., 3] == 255
    assert opaque.sum() >= 0.5 * (cut[..., 3] >= 128).sum()
    assert np.array_equal(cut[..., :3][opaque], source[opaque])


# -- Latin-1 part headers ------------------------------------------------------------------

def test_latin1_filename_is_read_and_the_rest_of_the_form_too(client):
    # the format field after the file proves the whole form was parsed, not only the file
    latin1 = send(client, "/api/bg/remove", body(file_part(b"caf\xe9.jpg"), field(b"format", b"webp")))
    assert latin1.status_code == 200, latin1.data[:300]
    assert latin1.mimetype == "image/webp"
    assert latin1.headers["Content-Disposition"] == "inline; filename=nobg_cafe.webp"
    # the same request with the name in UTF-8 (what browsers send) gives the same image and name
    utf8 = send(client, "/api/bg/remove", body(file_part("café.jpg".encode()), field(b"format", b"webp")))
    assert utf8.status_code == 200 and utf8.headers["Content-Disposition"] == latin1.headers["Content-Disposition"]
    assert np.array_equal(np.asarray(open_response(latin1)), np.asarray(open_response(utf8)))
    assert open_response(latin1).size == Image.open(io.BytesIO(PHOTO)).size


@pytest.mark.parametrize("endpoint, fields", [
    ("/api/bg/change_color", [(b"color", b"navy"), (b"format", b"png")]),
    ("/api/v2/process", [(b"effects", b'["8bit"]')]),
    ("/remove-background", [(b"output_format", b"jpeg")]),
])
def test_latin1_filename_on_every_endpoint(client, endpoint, fields):
    resp = send(client, endpoint, body(*[field(n, v) for n, v in fields], file_part(b"\xe9t\xe9 \xe0 la plage.jpg")))
    assert resp.status_code == 200, resp.data[:300]


def test_latin1_in_a_field_name_and_an_undecodable_value_do_not_lose_the_form(client):
    raw = body(field(b"caf\xe9", b"ignored"), field(b"format", b"png"), file_part(b"photo.jpg"))
    resp = send(client, "/api/bg/remove", raw)
    assert resp.status_code == 400  # the Latin-1 name was read, as Latin-1, and is no field of this endpoint
    assert resp.get_json()["error"]["field"] == "caf\xe9"
    raw = body(field(b"format", b"png"), file_part(b"photo.jpg"),
               field(b"use_cache", b"\xff\xfe"))  # not UTF-8: werkzeug decodes values with "replace"
    resp = send(client, "/api/bg/remove", raw)
    assert resp.status_code == 400  # the value of use_cache is no boolean: the form was read and checked
    assert resp.get_json()["error"]["field"] == "use_cache"


# -- each limit its own cause --------------------------------------------------------------

def test_more_than_32_parts_is_too_many_fields(client):
    for extra, expected in ((31, 200), (32, 413)):  # the file + 31 fields = 32 parts: allowed; 33: refused
        raw = body(file_part(b"photo.jpg"), *[field(b"format", b"png") for _ in range(extra)])  # a known field, repeated
        resp = send(client, "/api/bg/remove", raw)
        assert resp.status_code == expected, (extra, resp.data[:300])
    error = error_of(resp, 413, "too_many_fields")
    assert "32" in error["message"] and "file_too_large" not in error["message"]


def test_a_7_mb_field_with_a_small_photo_is_field_too_large(client):
    big = b"a" * (7 * 2**20)
    for raw in (body(file_part(b"photo.jpg"), field(b"effects", big)),  # after the file
                body(field(b"effects", big), file_part(b"photo.jpg"))):  # and before it
        error = error_of(send(client, "/api/v2/process", raw), 413, "field_too_large")
        assert error["field"] == "effects" and error["message"].startswith("effects:")
        assert "500 KB" in error["message"]
    # a field under the limit is read and judged on its value: 400 naming it
    error = error_of(send(client, "/api/v2/process", body(file_part(b"photo.jpg"), field(b"effects", b"a" * 400_000))),
                     400, "invalid_option")
    assert error["field"] == "effects"


def test_huge_part_headers_are_field_too_large(client):
    padded = b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="x"\r\nX-Pad: ' + b"p" * 700_000 + b"\r\n\r\nv\r\n"
    error_of(send(client, "/api/bg/remove", body(file_part(b"photo.jpg"), padded)), 413, "field_too_large")


def test_a_genuinely_oversized_file_stays_file_too_large(make_app):
    client = make_app(max_file_size_mb=0.25).test_client()
    # the file over MAX_FILE_SIZE_MB but the body within MAX_CONTENT_LENGTH's slack: read_upload's check
    error = error_of(send(client, "/api/bg/remove", body(file_part(b"big.jpg", b"\xff" * (2**18 + 1000)))),
                     413, "file_too_large")
    assert error["field"] == "file"
    # the body over MAX_CONTENT_LENGTH, from its Content-Length, before it is read
    error_of(send(client, "/api/bg/remove", body(file_part(b"big.jpg", b"\xff" * 2**20))), 413, "file_too_large")
    # and a small photo still passes on the same app
    assert post(client, "/api/bg/remove", PHOTO).status_code == 200


# -- the same over real HTTP ---------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with running_server(log_dir=tmp_path_factory.mktemp("uploads")) as srv:
        yield srv


def http_post(server, endpoint: str, raw: bytes) -> requests.Response:
    try:
        return requests.post(server.url + endpoint, data=raw, headers={"Content-Type": CONTENT_TYPE}, timeout=60)
    except requests.ConnectionError as exc:
        pytest.fail(f"the server reset the connection instead of answering: {exc}")


def test_over_http_latin1_filename_and_each_limit(server):
    ok = http_post(server, "/api/bg/remove", body(file_part(b"caf\xe9.jpg"), field(b"format", b"webp")))
    assert ok.status_code == 200 and ok.headers["Content-Type"] == "image/webp"
    assert ok.headers["Content-Disposition"] == "inline; filename=nobg_cafe.webp"
    many = http_post(server, "/api/bg/remove", body(file_part(b"photo.jpg"), *[field(b"f%d" % i, b"1") for i in range(40)]))
    assert many.status_code == 413 and many.json()["error"]["code"] == "too_many_fields"
    big = http_post(server, "/api/v2/process", body(file_part(b"photo.jpg"), field(b"effect_params", b"{" * (7 * 2**20))))
    assert big.status_code == 413 and big.json()["error"]["code"] == "field_too_large"
    assert big.json()["error"]["field"] == "effect_params"
    huge = http_post(server, "/api/bg/remove", body(file_part(b"big.jpg", b"\xff" * (9 * 2**20))))
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "file_too_large"
    # chunked (no Content-Length): werkzeug's MAX_CONTENT_LENGTH limit while reading, still file_too_large
    raw = body(file_part(b"big.jpg", b"\xff" * (9 * 2**20)))
    chunked = requests.post(server.url + "/api/bg/remove", data=(raw[i:i + 2**16] for i in range(0, len(raw), 2**16)),
                            headers={"Content-Type": CONTENT_TYPE}, timeout=60)
    assert chunked.request.headers.get("Transfer-Encoding") == "chunked"
    assert chunked.status_code == 413 and chunked.json()["error"]["code"] == "file_too_large"
    assert "Traceback" not in server.log()
    # the worker still serves
    assert requests.get(server.url + "/api/bg/health", timeout=10).status_code == 200
