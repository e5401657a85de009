"""Small uploads whose cost is in their structure rather than their pixels (issue 26): a TIFF
of 2 million one-row strips (Pillow built a tile for each when it opened the file: 16-37 s
and 700 MB before a 200), a BMP of one-pixel RLE runs (6 s of Pillow's Python decoder), an
icon holding a 12000² PNG (now named by its magic bytes, not opened), and HEIC/AVIF headers with no
image (400, corrupt); JPEG, PNG and GIF files of millions of tiny blocks before their first
frame, which Pillow reads one by one in Python (up to 8 s and 356 MB). Each is refused quickly
through the app; ordinary files of the same formats still decode.

Animations and multi-page files of 50,000 frames (GIF, APNG, WebP, TIFF; an MPO's 4,092
entries) cost nothing more: only the first frame is read. Tests pin that, so that a Pillow
upgrade that starts walking the frames is caught (Pillow's TIFF ``n_frames`` takes 20 s on
50,000 pages: nothing here may ask for it)."""

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
from app.pipeline.imaging import (MAX_GIF_BLOCKS, MAX_JPEG_STEPS, MAX_PNG_CHUNKS, check_tiff_structure, decode_image,
                                  gif_blocks, jpeg_structure, png_chunks)
from tests import hostile
from tests.conftest import encode, post

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def decode(data: bytes):
    return decode_image(data, max_dimension=1024, max_pixels=4096 * 4096, max_decode_bytes=128 * 2**20)


@pytest.mark.parametrize("name, data, status, code, words", [
    ("strips.tif", hostile.tiff_strip_bomb(), 422, "image_too_complex", "2,090,000 strips"),
    ("runs.bmp", hostile.bmp_rle_bomb(), 422, "image_too_complex", "run-length"),
    ("icon.ico", hostile.ico_png_bomb(), 415, "unsupported_media_type", "ICO"),
    ("photo.heic", hostile.heic_header(), 400, "invalid_image", "HEIC/AVIF image is truncated or corrupt"),
    ("photo.heic", hostile.heic_header(b"mif1", (b"mif1", b"heic")), 400, "invalid_image", "HEIC/AVIF"),
    ("photo.avif", hostile.heic_header(b"avif", (b"mif1", b"avif")), 400, "invalid_image", "HEIC/AVIF"),
    ("segments.jpg", hostile.jpeg_marker_bomb(), 422, "image_too_complex", "more than 10,000 markers"),
    ("padding.jpg", hostile.jpeg_marker_bomb(8_300_000, b"\xff"), 422, "image_too_complex", "10,000 markers"),
    ("chunks.png", hostile.png_chunk_bomb(), 422, "image_too_complex", "more than 32,768 chunks"),
    ("idat.png", hostile.png_chunk_bomb(kind=b"IDAT"), 422, "image_too_complex", "32,768 chunks"),
    ("comment.gif", hostile.gif_block_bomb(), 422, "image_too_complex", "more than 65,536 blocks"),
    ("extensions.gif", hostile.gif_block_bomb(2_790_000, "extensions"), 422, "image_too_complex", "65,536 blocks"),
    ("stray.gif", hostile.gif_block_bomb(8_300_000, "stray"), 422, "image_too_complex", "65,536 blocks"),
])
def test_structural_bombs_are_refused_quickly(client, name, data, status, code, words):
    t0 = time.perf_counter()
    resp = post(client, "/api/bg/remove", data, filename=name)
    assert time.perf_counter() - t0 < 1.0
    assert resp.status_code == status, resp.json
    error = resp.json["error"]
    assert error["code"] == code and error["field"] == "file" and words in error["message"], error


def decode_in_fresh_process(tmp_path, data: bytes) -> tuple[str, float, int]:
    """Decode ``data`` with the 512 MB tier's limits in a new interpreter: (the outcome, seconds,
    the peak memory beyond what the process held before, in bytes: the kernel's high-water mark,
    reset first, so that what importing left behind hides nothing)."""
    path = tmp_path / "upload.bin"
    path.write_bytes(data)
    script = (
        "import sys, time\n"
        "from app.pipeline.imaging import decode_image\n"
        "def status(key):\n"
        "    return next(int(line.split()[1]) for line in open('/proc/self/status') if line.startswith(key))\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        "before = status('VmRSS:')\n"
        "t0 = time.perf_counter()\n"
        "try:\n"
        "    decode_image(data, max_dimension=1024, max_pixels=4096 * 4096, max_decode_bytes=128 * 2**20)\n"
        "    print('decoded')\n"
        "except Exception as e:\n"
        "    print(type(e).__name__)\n"
        "print(time.perf_counter() - t0, (status('VmHWM:') - before) * 1024)\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, cwd=ROOT,
                         timeout=120, check=True).stdout.split()
    return out[0], float(out[1]), int(out[2])


@pytest.mark.parametrize("data", [
    pytest.param(hostile.tiff_strip_bomb(), id="tiff-2090000-strips"),  # 700 MB and 16-37 s
    pytest.param(hostile.jpeg_marker_bomb(), id="jpeg-2090000-segments"),  # 5.3 s, 273 MB
    pytest.param(hostile.jpeg_marker_bomb(8_300_000, b"\xff"), id="jpeg-8300000-fill-bytes"),  # 8 s
    pytest.param(hostile.png_chunk_bomb(), id="png-690000-chunks"),  # 3.5 s, 79 MB
    pytest.param(hostile.png_chunk_bomb(kind=b"IDAT"), id="png-690000-idat"),  # 2.9 s
    pytest.param(hostile.gif_block_bomb(), id="gif-4190000-sub-blocks"),  # 1.8 s, 356 MB
    pytest.param(hostile.gif_block_bomb(8_300_000, "stray"), id="gif-8300000-stray-bytes"),  # 1.2 s
])
def test_structural_bombs_are_refused_before_pillow_reads_them(tmp_path, data):
    """In a fresh process: refused in well under a second, the peak RSS hardly moves (the
    comments give what decoding them took before, on 2 Xeon cores)."""
    outcome, seconds, grown = decode_in_fresh_process(tmp_path, data)
    assert outcome == "ImageTooComplex", outcome
    assert seconds < 1.0 and grown < 100 * 2**20, f"{seconds:.2f} s, +{grown / 2**20:.0f} MB"


@pytest.mark.parametrize("data, limit_mb", [
    pytest.param(hostile.gif_animation(), 50, id="gif-50000-frames"),
    pytest.param(hostile.apng_animation(), 50, id="apng-50000-frames"),
    pytest.param(hostile.webp_animation(150_000), 50, id="webp-150000-frames"),  # 27 MB: libwebp's frame index
    pytest.param(hostile.mpo_entries(), 50, id="mpo-4092-entries"),
    pytest.param(hostile.tiff_pages(), 50, id="tiff-50000-pages"),
    pytest.param(hostile.tiff_pages(deflate=True), 50, id="tiff-50000-pages-libtiff"),
    # the canvas, not the frames: a 4096² screen costs what any 4096² GIF costs (84-100 MB),
    # within the decode budget that max_decode_bytes gives it
    pytest.param(hostile.gif_animation(50_000, (4096, 4096)), 128, id="gif-50000-frames-4096-screen"),
])
def test_many_frames_cost_only_the_first(tmp_path, data, limit_mb):
    """50,000 frames (or pages, or MP entries) decode in a fresh process as fast as one: Pillow
    reads only the first frame. Measured: 1-50 ms, under 30 MB beyond the file."""
    outcome, seconds, grown = decode_in_fresh_process(tmp_path, data)
    assert outcome == "decoded", outcome
    assert seconds < 1.0 and grown < limit_mb * 2**20, f"{seconds:.2f} s, +{grown / 2**20:.0f} MB"


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


def _frames(mode: str, count: int, size: tuple[int, int] = (64, 48)) -> list[Image.Image]:
    """``count`` frames of distinct flat colours (a writer merges identical ones)."""
    return [Image.new(mode, size, (i % 256, (7 * i) % 256, 200)) for i in range(count)]


@pytest.mark.parametrize("fmt, count, save", [
    ("GIF", 200, {"duration": 40, "loop": 0}),
    ("PNG", 20, {"duration": 40}),  # APNG
    ("WEBP", 30, {"duration": 40, "lossless": True}),
    ("TIFF", 3, {}),
])
def test_animations_and_multi_page_files_decode_their_first_frame(fmt, count, save):
    frames = _frames("RGB", count)
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], **save)
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.n_frames == count
    decoded = decode(data)
    assert decoded.size == (64, 48) and decoded.source_format == fmt
    assert np.abs(decoded.rgb.astype(int) - (0, 0, 200)).max() <= 2  # the first frame's colour


def test_large_real_metadata_is_within_the_block_bounds():
    """What real files hold before their first frame, near the bounds: a JPEG of a few hundred
    segments (a large ICC profile in 255 APP2 chunks, extended XMP), a PNG written one IDAT
    chunk per row, a GIF with a 200 KB comment in 255-byte sub-blocks."""
    jpeg = hostile.jpeg_marker_bomb(1_000)
    assert jpeg_structure(jpeg) == (1, 1_009) and decode(jpeg).size == (64, 48)
    noise = np.random.default_rng(0).integers(0, 256, (4000, 16, 3), dtype=np.uint8)
    png = encode(Image.fromarray(noise, "RGB"), "PNG")  # incompressible: ~49 bytes a row
    per_row = hostile.png_rechunked(png, 49)
    assert 1_000 < png_chunks(per_row) <= MAX_PNG_CHUNKS
    assert np.array_equal(decode(per_row).rgb, decode(png).rgb)
    gif = encode(_frames("RGB", 1)[0].convert("P"), "GIF", comment=b"x" * 200_000)
    assert 780 < gif_blocks(gif) <= MAX_GIF_BLOCKS and decode(gif).size == (64, 48)


def test_block_counts_follow_pillows_reading_of_the_first_frame():
    """Only what Pillow reads for the first frame is counted: an APNG's other frames are not (it
    stops at the second frame's fcTL), a plain PNG's chunks after the image are (it reads to
    IEND); each count stops one past its bound."""
    assert png_chunks(hostile.apng_animation()) == 5  # IHDR, acTL, fcTL, IDAT, fcTL
    not_animated = hostile.apng_animation(3).replace(b"acTL", b"zcTL")  # unknown now (Pillow would fail its CRC)
    assert png_chunks(not_animated) == 9  # every chunk: IHDR, zcTL, 3 fcTL, IDAT, 2 fdAT, IEND
    assert png_chunks(hostile.png_chunk_bomb(kind=b"IDAT")) == MAX_PNG_CHUNKS + 1
    assert gif_blocks(hostile.gif_animation()) == 7  # loop and frame control: 2 extensions, 5 sub-blocks (2 ends)
    assert gif_blocks(hostile.gif_block_bomb()) == MAX_GIF_BLOCKS + 1
    assert jpeg_structure(hostile.jpeg_marker_bomb())[1] == MAX_JPEG_STEPS + 1
    assert jpeg_structure(hostile.jpeg_marker_bomb(700_000, b"\x00"))[1] > MAX_JPEG_STEPS  # junk: a step per 64 bytes
