"""Small uploads whose cost is in their structure rather than their pixels (issue 26): a TIFF
of 2 million one-row strips (Pillow built a tile for each when it opened the file: 16-37 s
and 700 MB before a 200), a BMP of one-pixel RLE runs (6 s of Pillow's Python decoder), an
icon holding a 12000² PNG (now named by its magic bytes, not opened), and HEIC/AVIF uploads (answered
"not a readable image"). Each is refused quickly through the app; ordinary files of the same
formats still decode."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from app.pipeline.errors import ImageTooComplex
from app.pipeline.imaging import check_tiff_structure, decode_image
from tests import hostile
from tests.conftest import encode, post

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def decode(data: bytes):
    return decode_image(data, max_dimension=1024, max_pixels=4096 * 4096, max_decode_bytes=128 * 2**20)


@pytest.mark.parametrize("name, data, status, code, words", [
    ("strips.tif", hostile.tiff_strip_bomb(), 422, "image_too_complex", "2,090,000 strips"),
    ("runs.bmp", hostile.bmp_rle_bomb(), 422, "image_too_complex", "run-length"),
    ("icon.ico", hostile.ico_png_bomb(), 415, "unsupported_media_type", "ICO"),
    ("photo.heic", hostile.heic_header(), 415, "unsupported_media_type", "HEIC/HEIF images are not supported yet"),
    ("photo.heic", hostile.heic_header(b"mif1", (b"mif1", b"heic")), 415, "unsupported_media_type", "HEIC"),
    ("photo.avif", hostile.heic_header(b"avif", (b"mif1", b"avif")), 415, "unsupported_media_type", "AVIF"),
])
def test_structural_bombs_are_refused_quickly(client, name, data, status, code, words):
    t0 = time.perf_counter()
    resp = post(client, "/api/bg/remove", data, filename=name)
    assert time.perf_counter() - t0 < 1.0
    assert resp.status_code == status, resp.json
    error = resp.json["error"]
    assert error["code"] == code and error["field"] == "file" and words in error["message"], error


def test_tiff_strip_bomb_is_refused_before_pillow_opens_it(tmp_path):
    """In a fresh process: refused in well under a second, the peak RSS hardly moves (Pillow
    took 700 MB building its strip list, and 16-37 s decoding, before a 200)."""
    path = tmp_path / "strips.tif"
    path.write_bytes(hostile.tiff_strip_bomb())
    script = (
        "import resource, sys, time\n"
        "from app.pipeline.imaging import decode_image\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "t0 = time.perf_counter()\n"
        "try:\n"
        "    decode_image(data, max_dimension=1024, max_pixels=4096 * 4096, max_decode_bytes=128 * 2**20)\n"
        "except Exception as e:\n"
        "    print(type(e).__name__)\n"
        "print(time.perf_counter() - t0, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, cwd=ROOT,
                         timeout=120, check=True).stdout.split()
    assert out[0] == "ImageTooComplex", out
    seconds, grown = float(out[1]), int(out[2])
    assert seconds < 1.0 and grown < 100 * 2**20, f"{seconds:.2f} s, +{grown / 2**20:.0f} MB"


def test_tiff_tables_and_pixels_are_judged_from_the_directory():
    big_endian = encode(Image.new("L", (64, 64), 9), "TIFF")
    check_tiff_structure(big_endian, 64 * 64)  # at the limit: fine
    with pytest.raises(Exception) as err:
        check_tiff_structure(big_endian, 64 * 63)
    assert err.value.code == "image_too_large" and "64x64" in err.value.message
    with pytest.raises(ImageTooComplex):
        check_tiff_structure(hostile.tiff_strip_bomb(70_000), 4096 * 4096)
    check_tiff_structure(hostile.tiff_strip_bomb(60_000), 4096 * 4096)  # under the table bound


def test_ordinary_files_of_these_formats_still_decode():
    y, x = np.indices((300, 200))
    img = Image.fromarray(np.dstack([x, y, x ^ y]).astype(np.uint8), "RGB")
    strips = encode(img, "TIFF", compression="tiff_lzw", strip_size=4096)  # strips of 6 rows
    with Image.open(io.BytesIO(strips)) as opened:
        assert len(opened.tag_v2[273]) > 10  # StripOffsets
    assert decode(strips).size == (200, 300)
    frames = [Image.new("P", (64, 48), i) for i in range(4)]
    for f in frames:
        f.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 756)
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    decoded = decode(gif)
    assert decoded.size == (64, 48) and decoded.source_format == "GIF"
    rle = decode(hostile.bmp_rle(256))
    assert rle.size == (256, 256) and rle.source_format == "BMP"
    assert rle.rgb[0, 0, 0] != rle.rgb[0, 255, 0]  # both runs of the row decoded
