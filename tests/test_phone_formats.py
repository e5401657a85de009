"""Phone photo formats (issue 28): HEIC/HEIF through pillow-heif (libheif) and AVIF through
Pillow's own reader (libavif), decoded with the same checks as every other upload, and offered
as outputs. Every file here is made at test time by the libraries themselves from a fixture photo."""

from __future__ import annotations

import io
import math
import struct

import numpy as np
import pytest
from PIL import Image

from app.pipeline.errors import ImageTooComplex, ImageTooLarge, InvalidImage
from app.pipeline.imaging import (MAX_HEIF_BOXES, OUTPUT_FORMATS, decode_image, encodable_megapixels, encode_image,
                                   heif_primary_size)
from tests.conftest import encode, iou, open_response, photo, post

PIL_FORMAT = {"heic": "HEIF", "avif": "AVIF"}
FAST = {"HEIF": {"enc_params": {"preset": "ultrafast"}}, "AVIF": {"speed": 10}}  # test files, made quickly


def decode(data: bytes, max_dimension: int = 1024):
    return decode_image(data, max_dimension=max_dimension, max_pixels=4096 * 4096, max_decode_bytes=128 * 2**20)


@pytest.fixture(scope="module")
def source() -> Image.Image:
    """The tiger, 480x320: small enough to encode in well under a second."""
    return Image.open(photo("animal-1.jpg")).convert("RGB").resize((480, 320), Image.Resampling.LANCZOS)


def made(img: Image.Image, ext: str, **save) -> bytes:
    fmt = PIL_FORMAT[ext]
    return encode(img, fmt, **{"quality": 90, **FAST[fmt], **save})


def mean_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean())


def with_alpha(img: Image.Image) -> Image.Image:
    rgba = img.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(img.size))  # transparent at the top, opaque at the bottom
    return rgba


def declaring(data: bytes, width: int, height: int) -> bytes:
    """``data`` with its (only) ``ispe`` property saying ``width`` x ``height``."""
    edited = bytearray(data)
    at = edited.find(b"ispe")
    assert at > 0 and edited.find(b"ispe", at + 1) < 0
    struct.pack_into(">II", edited, at + 8, width, height)
    return bytes(edited)


@pytest.mark.parametrize("ext", ["heic", "avif"])
def test_decodes_with_the_right_size_and_colours(source, ext):
    img = decode(made(source, ext))
    assert img.source_format == PIL_FORMAT[ext] and img.size == (480, 320) and img.alpha is None
    assert mean_diff(img.rgb, source) < 3


def test_heic_with_a_generic_major_brand_is_read():
    """A HEIC whose ``ftyp`` names ``mif1`` first is offered to Pillow's AVIF reader too (it accepts
    that brand): it must still reach libheif."""
    data = made(Image.open(photo("coffee.jpg")).convert("RGB"), "heic")
    assert data[8:12] == b"heic"
    assert decode(data[:8] + b"mif1" + data[12:]).source_format == "HEIF"


def test_tiled_heic_is_read_at_its_grid_size(source):
    """An iPhone stores its photos as a grid of 512 px tiles: the primary image is the grid."""
    data = made(source, "heic", tile_size=128)
    assert data.count(b"grid") >= 1 and heif_primary_size(data) == (480, 320)
    img = decode(data)
    assert img.size == (480, 320) and mean_diff(img.rgb, source) < 3


@pytest.mark.parametrize("ext", ["heic", "avif"])
def test_orientation_is_applied_once(source, ext):
    """Saved with EXIF orientation 6, the libraries write an ``irot`` transform: the photo must come
    out turned a quarter once, as a browser shows it, not twice (upside down) nor not at all."""
    exif = Image.Exif()
    exif[274] = 6
    upright = source.transpose(Image.Transpose.ROTATE_270)  # what orientation 6 asks for
    img = decode(made(source, ext, exif=exif.tobytes()))
    assert img.size == (320, 480) and img.source_size == (320, 480)
    assert mean_diff(img.rgb, upright) < 3
    assert mean_diff(img.rgb, upright.transpose(Image.Transpose.ROTATE_180)) > 20


@pytest.mark.parametrize("ext", ["heic", "avif"])
def test_alpha_is_kept(source, ext):
    rgba = with_alpha(source)
    img = decode(made(rgba, ext))
    assert img.alpha is not None and img.alpha[0].max() < 10 and img.alpha[-1].min() > 245
    assert mean_diff(img.alpha, rgba.getchannel("A")) < 2


@pytest.mark.parametrize("ext", ["heic", "avif"])
def test_header_bomb_is_refused_before_decoding(source, ext):
    """60000x60000 in the ``ispe`` box of a real file: refused from the header (a decoder would
    call the file corrupt: its coded picture is 480x320)."""
    data = declaring(made(source, ext), 60000, 60000)
    assert heif_primary_size(data) == (60000, 60000)
    with pytest.raises(ImageTooLarge, match="60000x60000 pixels"):
        decode(data)


@pytest.mark.parametrize("ext, side", [("heic", 3000), ("avif", 4000)])
def test_decoding_memory_is_judged_at_the_declared_size(source, ext, side):
    """Under max_pixels, but decoding the whole declared picture would take more than the budget."""
    with pytest.raises(ImageTooLarge, match="would take"):
        decode_image(declaring(made(source, ext), side, side), max_dimension=1024, max_pixels=4096 * 4096,
                     max_decode_bytes=64 * 2**20)


def test_avif_picture_larger_than_declared_is_refused(source):
    """libavif would let dav1d decode the AV1 picture whatever size ``ispe`` says (up to 16384²,
    400 MB and more for a file of a few KB): the sequence header is checked against it."""
    data = declaring(made(source, "avif"), 48, 32)
    with pytest.raises(InvalidImage, match="480x320, larger than"):
        decode(data)


def test_too_many_boxes_are_refused():
    data = made(Image.open(photo("coffee.jpg")).convert("RGB"), "heic")
    ftyp = int.from_bytes(data[:4], "big")
    padded = data[:ftyp] + struct.pack(">I4s", 8, b"free") * (MAX_HEIF_BOXES + 1) + data[ftyp:]
    with pytest.raises(ImageTooComplex, match="boxes"):
        decode(padded)


@pytest.mark.parametrize("ext", ["heic", "avif"])
@pytest.mark.parametrize("keep", [0.02, 0.5, 0.99])
def test_truncated_file_is_invalid(source, ext, keep):
    data = made(source, ext)
    with pytest.raises(InvalidImage):
        decode(data[:int(len(data) * keep)])


@pytest.mark.parametrize("ext", ["heic", "avif"])
def test_encode_round_trips(source, ext):
    assert OUTPUT_FORMATS[ext][1:] == (f"image/{ext}", ext)
    rgba = with_alpha(source)
    best = encode_image(rgba, ext, quality=90, png_compress_level=6)
    worst = encode_image(rgba, ext, quality=20, png_compress_level=6)
    assert len(worst) < len(best) / 2  # quality is honoured
    img = decode(best)
    assert img.source_format == PIL_FORMAT[ext] and img.size == (480, 320)
    opaque = img.alpha > 240
    assert mean_diff(img.rgb[opaque], np.asarray(source)[opaque]) < 3
    assert mean_diff(img.alpha, rgba.getchannel("A")) < 2
    assert decode(encode_image(source, ext, quality=90, png_compress_level=6)).alpha is None


def test_opaque_heic_is_written_in_tiles():
    """As an iPhone writes it (x265 holds one 512 px tile, not the picture); seamless when read."""
    tiger = Image.open(photo("animal-1.jpg")).convert("RGB")
    data = encode_image(tiger, "heic", quality=90, png_compress_level=6)
    assert b"grid" in data[:4096] and heif_primary_size(data) == (1000, 667)
    img = decode(data)
    assert img.size == (1000, 667) and mean_diff(img.rgb, tiger) < 3
    seam = np.asarray(tiger, np.int16)[:, 508:516] - img.rgb[:, 508:516]  # across the first tile edge
    assert np.abs(seam).mean() < 3


def test_heic_upload_is_cut_out_like_its_jpeg(client):
    """An iPhone photo through the real app: a PNG cut-out, the same as the JPEG's."""
    tiger = Image.open(photo("animal-1.jpg")).convert("RGB")
    resp = post(client, "/api/bg/remove", made(tiger, "heic"), filename="IMG_0001.HEIC")
    assert resp.status_code == 200, resp.json
    assert resp.mimetype == "image/png"
    cutout = open_response(resp)
    assert cutout.mode == "RGBA" and cutout.size == tiger.size
    from_jpeg = open_response(post(client, "/api/bg/remove", photo("animal-1.jpg").read_bytes()))
    assert iou(np.asarray(cutout.getchannel("A")), np.asarray(from_jpeg.getchannel("A"))) > 0.97


@pytest.mark.parametrize("data, status, code", [
    (lambda src: declaring(made(src, "heic"), 60000, 60000), 422, "image_too_large"),
    (lambda src: made(src, "heic")[:5000], 400, "invalid_image"),
    (lambda src: made(src, "avif")[:5000], 400, "invalid_image"),
])
def test_bad_uploads_through_the_app(client, source, data, status, code):
    resp = post(client, "/api/bg/remove", data(source), filename="photo.heic")
    assert resp.status_code == status, resp.json
    assert resp.json["error"]["code"] == code and resp.json["error"]["field"] == "file"


@pytest.mark.parametrize("endpoint, fields", [
    ("/api/bg/remove", {"format": "heic"}), ("/api/bg/remove", {"format": "heif"}),
    ("/api/bg/remove", {"format": "avif"}), ("/api/bg/change_color", {"format": "avif", "color": "#ff0000"}),
    ("/api/v2/process", {"format": "heic", "effects": '["8bit"]', "response": "image"}),
])
def test_heic_and_avif_are_offered_as_outputs(client, endpoint, fields):
    """Every image endpoint writes HEIC (``heif`` its alias) and AVIF: the right Content-Type and
    file name, read back at the output's size, transparent where the cut-out is and opaque over a colour."""
    resp = post(client, endpoint, photo("animal-1.jpg").read_bytes(), **fields)
    assert resp.status_code == 200, resp.json
    ext = "avif" if fields["format"] == "avif" else "heic"
    assert resp.mimetype == f"image/{ext}" and f".{ext}" in resp.headers["Content-Disposition"]
    img = decode(resp.data, max_dimension=4096)
    assert img.source_format == PIL_FORMAT[ext] and img.size == (int(resp.headers["X-Width"]), int(resp.headers["X-Height"]))
    assert (img.alpha is None) == (endpoint == "/api/bg/change_color")
    if img.alpha is not None:
        assert img.alpha.min() < 16 and img.alpha.max() > 240
    assert "X-Scaled-From" not in resp.headers  # 0.67 MP: far under the encoders' caps


@pytest.mark.parametrize("fmt, alpha, per_pixel", [("webp", True, 24.0), ("webp", False, 7.0), ("heic", True, 41.0),
                                                   ("avif", True, 30.0), ("avif", False, 27.0), ("heic", False, None),
                                                   ("png", True, None), ("jpeg", False, None)])
def test_the_encoders_caps_follow_their_memory(fmt, alpha, per_pixel):
    cap = encodable_megapixels(fmt, alpha, 128 * 2**20)
    assert cap == (None if per_pixel is None else math.floor(128 * 2**20 / per_pixel / 1e4) / 100)


def test_a_transparent_output_over_the_encoders_cap_is_worked_smaller_and_says_so(make_app):
    """With MAX_ENCODE_MB 8, a WebP cut-out with alpha may have 0.34 MP: the 1000x667 photo is worked at
    713x476 and the answer names its size; PNG, which streams, and WebP over a colour are not scaled."""
    client = make_app(max_encode_mb=8).test_client()
    data = photo("animal-1.jpg").read_bytes()
    resp = post(client, "/api/bg/remove", data, format="webp")
    assert resp.status_code == 200 and resp.headers["X-Scaled-From"] == "1000x667"
    assert Image.open(io.BytesIO(resp.data)).size == (713, 476) and 713 * 476 <= 0.34e6
    for fields in ({"format": "png"}, {"format": "webp", "background": "#ffffff"}):
        resp = post(client, "/api/bg/remove", data, **fields)
        assert resp.status_code == 200 and "X-Scaled-From" not in resp.headers
        assert Image.open(io.BytesIO(resp.data)).size == (1000, 667)
