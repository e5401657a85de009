"""Fuzzing the upload path of a real gunicorn server with hypothesis, on a bounded budget.

Inputs: fixture photos (small, in every accepted format) truncated, bit-flipped or spliced
with junk; random bytes; PNG, GIF and BMP headers declaring absurd dimensions; wrong
content types and bodies that are not multipart. Every answer must be 200 or a 4xx with
our JSON error body, never a 5xx; afterwards the same worker is still serving, and the
log holds no traceback.
"""

from __future__ import annotations

import io
import struct
import zlib

import pytest
import requests
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from tests.serverkit import fixture_images, surviving_server

ENDPOINTS = [
    ("/api/bg/remove", {}),
    ("/api/bg/change_color", {"color": "teal"}),
    ("/api/v2/process", {"effects": '["8bit"]'}),
    ("/remove-background", {"output_format": "jpeg"}),
]


def _seeds() -> list[bytes]:
    img = Image.open(fixture_images()[0]).convert("RGB")
    img.thumbnail((96, 96))
    out = []
    for fmt, mode in (("JPEG", "RGB"), ("PNG", "RGBA"), ("WEBP", "RGB"), ("GIF", "P"), ("BMP", "RGB"), ("TIFF", "RGB")):
        buf = io.BytesIO()
        img.convert(mode).save(buf, fmt)
        out.append(buf.getvalue())
    return out


SEEDS = _seeds()


def png_header(width: int, height: int) -> bytes:
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def gif_header(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HHBBB", width, height, 0xF7, 0, 0) + b"\x00" * 768 + b",\x00\x00\x00\x00" + \
        struct.pack("<HH", width, height) + b"\x00\x08\x02\x4c\x01\x00;"


def bmp_header(width: int, height: int) -> bytes:
    pixels = b"\x00" * 64
    return b"BM" + struct.pack("<IHHI", 54 + len(pixels), 0, 0, 54) + struct.pack(
        "<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0) + pixels


@st.composite
def mutated(draw) -> bytes:
    seed = draw(st.sampled_from(SEEDS))
    kind = draw(st.sampled_from(["truncate", "flip", "splice", "random", "header", "intact"]))
    if kind == "truncate":
        return seed[: draw(st.integers(0, len(seed) - 1))]
    if kind == "flip":
        data = bytearray(seed)
        for position in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=12)):
            data[position] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    if kind == "splice":
        at = draw(st.integers(0, len(seed)))
        return seed[:at] + draw(st.binary(min_size=1, max_size=256)) + seed[at:]
    if kind == "random":
        return draw(st.binary(min_size=0, max_size=2048))
    if kind == "header":
        make = draw(st.sampled_from([png_header, gif_header, bmp_header]))
        limit = 2**31 - 1 if make is png_header else 2**15 - 1 if make is bmp_header else 2**16 - 1
        return make(draw(st.integers(0, limit)), draw(st.integers(0, limit)))
    return seed


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with surviving_server({"MAX_QUEUE": "16"}, log_dir=tmp_path_factory.mktemp("fuzz")) as srv:
        yield srv


def check(resp: requests.Response) -> None:
    assert resp.status_code < 500, (resp.status_code, resp.text[:300])
    if resp.status_code >= 400:
        body = resp.json()
        assert set(body) == {"error"} and body["error"]["code"] and body["error"]["message"]


FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow], derandomize=True)


@FUZZ
@given(data=mutated(), endpoint=st.sampled_from(ENDPOINTS),
       filename=st.sampled_from(["photo.jpg", "x.png", "noext", "a.exe", "../../etc/passwd", "ü.webp", ""]),
       content_type=st.sampled_from(["image/jpeg", "application/octet-stream", "text/plain", "image/png"]))
def test_uploads_never_cause_a_server_error(server, data, endpoint, filename, content_type):
    path, fields = endpoint
    resp = requests.post(server.url + path, files={"file": (filename, data, content_type)}, data=fields, timeout=60)
    check(resp)
    if resp.status_code == 200:
        assert resp.headers["Content-Type"] in ("image/png", "image/jpeg", "image/webp", "application/json")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          derandomize=True)
@given(body=st.binary(max_size=4096), endpoint=st.sampled_from(ENDPOINTS),
       content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded",
                                     "multipart/form-data", "multipart/form-data; boundary=xyz", "image/jpeg", ""]))
def test_bodies_that_are_not_a_proper_upload(server, body, endpoint, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    resp = requests.post(server.url + endpoint[0], data=body, headers=headers, timeout=60)
    check(resp)
    assert 400 <= resp.status_code < 500
