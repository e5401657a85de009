"""Decoding edge cases: every input kind the API promises, and every way an upload can be bad."""

import io
import os
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image, ImageCms

from app.pipeline.errors import ImageTooComplex, ImageTooLarge, InvalidImage, UnsupportedImage
from app.pipeline.imaging import MAX_JPEG_SCANS, decode_cost_bytes, decode_image, encode_image, jpeg_scans
from tests import hostile
from tests.conftest import encode, photo, png_bytes


def decode(data, max_dimension=1024, max_pixels=4096 * 4096):
    return decode_image(data, max_dimension=max_dimension, max_pixels=max_pixels)


def gradient(w=64, h=48) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.uint8)[None, :].repeat(h, 0)
    y = np.linspace(0, 255, h, dtype=np.uint8)[:, None].repeat(w, 1)
    return Image.fromarray(np.dstack([x, y, 255 - x]), "RGB")


def test_jpeg_photo():
    img = decode(photo("animal-1.jpg").read_bytes())
    assert img.rgb.shape == (667, 1000, 3) and img.rgb.dtype == np.uint8
    assert img.alpha is None and img.source_format == "JPEG"


def test_opaque_rgba_png_has_no_alpha():
    img = decode(photo("plants-1.jpg").read_bytes())  # an opaque RGBA PNG with a .jpg name
    assert img.source_format == "PNG" and img.alpha is None
    assert img.size == (682, 1024)  # 987x1481 scaled to fit 1024 (682.5 rounds down)


def test_rgba_transparency_is_kept():
    rgba = np.zeros((40, 60, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[10:30, 20:40, 3] = 255
    img = decode(png_bytes(Image.fromarray(rgba, "RGBA")))
    assert img.alpha is not None and img.alpha[0, 0] == 0 and img.alpha[20, 30] == 255


def test_palette_and_palette_transparency():
    p = gradient().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    img = decode(png_bytes(p))
    assert img.rgb.shape == (48, 64, 3) and img.alpha is None
    assert len(np.unique(img.rgb.reshape(-1, 3), axis=0)) <= 16
    p.info["transparency"] = 0
    img = decode(png_bytes(p, transparency=0))
    assert img.alpha is not None and set(np.unique(img.alpha)) <= {0, 255} and img.alpha.min() == 0


@pytest.mark.parametrize("mode", ["L", "LA", "1"])
def test_greyscale_modes(mode):
    img = decode(png_bytes(gradient().convert(mode)))
    assert img.rgb.shape == (48, 64, 3)
    assert np.array_equal(img.rgb[..., 0], img.rgb[..., 1])


def test_sixteen_bit_greyscale_is_scaled_not_clipped():
    values = np.linspace(0, 65535, 64, dtype=np.uint16)[None, :].repeat(8, 0)
    data = png_bytes(Image.frombytes("I;16", (64, 8), values.astype("<u2").tobytes()))
    img = decode(data)
    row = img.rgb[0, :, 0]
    assert row[0] == 0 and row[-1] == 255
    assert 120 <= row[32] <= 135  # mid-grey stays mid-grey (clipping would give 255)


def test_cmyk_jpeg():
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red in CMYK
    img = decode(encode(cmyk, "JPEG", quality=95))
    r, g, b = img.rgb[16, 16]
    assert r > 200 and g < 60 and b < 60


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF", "WEBP"])
def test_other_formats(fmt):
    img = decode(encode(gradient(), fmt))
    assert img.rgb.shape == (48, 64, 3) and img.source_format == fmt


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "TIFF"])
def test_animated_or_multipage_uses_first_frame(fmt):
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, fmt, save_all=True, append_images=frames[1:], **({"lossless": True} if fmt == "WEBP" else {}))
    img = decode(buf.getvalue())
    r, g, b = (int(v) for v in img.rgb[8, 8])
    assert r > 200 and g < 50 and b < 50


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img = decode(encode(gradient(64, 48), "JPEG", exif=exif))
    assert img.size == (48, 64)


def test_large_image_is_scaled_to_fit():
    big = gradient(3000, 1500)
    img = decode(encode(big, "JPEG"), max_dimension=1024)
    assert img.size == (1024, 512)
    img = decode(encode(big, "PNG"), max_dimension=700)
    assert img.size == (700, 350)


def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_icc_profile_is_kept(fmt):
    profile = srgb_profile()
    img = decode(encode(gradient(), fmt, icc_profile=profile))
    assert img.icc_profile == profile


@pytest.mark.parametrize("profile", [b"\x00" * 128, os.urandom(6 * 2**20), None])
def test_broken_or_oversized_icc_profile_is_dropped(profile):
    """A garbage profile (6 MB in a JPEG was copied into every output) is not kept; a real one
    padded past the size bound neither."""
    profile = profile if profile is not None else srgb_profile() + b"\x00" * (2**20)
    img = decode(encode(gradient(), "JPEG", icc_profile=profile))
    assert img.icc_profile is None
    out = encode_image(Image.fromarray(img.rgb), "png", quality=90, png_compress_level=1, icc_profile=img.icc_profile)
    assert len(out) < 100_000 and "icc_profile" not in Image.open(io.BytesIO(out)).info


def test_empty_bytes_are_not_an_image():
    """The pipeline refuses an empty upload before it is decoded (missing_file, tests/test_api.py);
    decoding alone says what empty bytes are."""
    with pytest.raises(InvalidImage):
        decode(b"")


@pytest.mark.parametrize("data", [b"hello, not an image", b"\x00" * 1000, bytes(range(256)) * 40, b"<svg xmlns='x'/>"])
def test_not_an_image(data):
    with pytest.raises(InvalidImage):
        decode(data)


@pytest.mark.parametrize("fmt", ["ICO", "PPM", "TGA"])
def test_known_but_unsupported_format(fmt):
    with pytest.raises(UnsupportedImage) as err:
        decode(encode(gradient(32, 32), fmt))
    assert fmt in err.value.message


@pytest.mark.parametrize("name", ["animal-1.jpg", "plants-1.jpg"])
def test_truncated_file(name):
    data = photo(name).read_bytes()
    with pytest.raises(InvalidImage):
        decode(data[: len(data) // 3])


def test_corrupt_header():
    data = bytearray(png_bytes(gradient()))
    data[20:30] = b"\xff" * 10  # inside IHDR
    with pytest.raises((InvalidImage, UnsupportedImage)):
        decode(bytes(data))


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header declaring ``width``x``height`` with a tiny compressed body."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 4096)) + chunk(b"IEND", b"")


@pytest.mark.parametrize("size", [(30000, 30000), (20000, 1000)])
def test_decompression_bomb_refused_before_decoding(size):
    data = bomb_png(*size)
    assert len(data) < 1000
    t0 = time.perf_counter()
    with pytest.raises(ImageTooLarge):
        decode(data)
    assert time.perf_counter() - t0 < 1.0  # refused from the header, nothing decoded (generous bound)


def test_large_jpeg_is_decoded_at_reduced_scale():
    # 6000x4000 = 24 MP declared, over 16.7 MP, but a JPEG decodes at 1/4 scale for a 1024 target.
    data = encode(gradient(6000, 4000), "JPEG", quality=50)
    img = decode(data, max_dimension=1024, max_pixels=4096 * 4096)
    assert img.size == (1024, 683)


def test_refine_foreground_recovers_the_subject_colour_at_soft_edges():
    """A known composite I = aF + (1-a)B: the estimate is closer to F than I is, and opaque pixels are untouched."""
    from app.pipeline import compose
    h, w = 300, 400
    yy, xx = np.mgrid[0:h, 0:w]
    fg = np.dstack([200 + 40 * np.sin(xx / 7), 90 + 30 * np.cos(yy / 5), 40 + 0 * xx]).clip(0, 255)
    bg = np.dstack([20 + 0 * xx, 200 + 0 * xx, 60 + 0 * xx]).astype(float)  # a green screen
    a = np.clip((150 - np.hypot(yy - 150, xx - 200)) / 40 + 0.5, 0, 1)
    rgb = (a[..., None] * fg + (1 - a[..., None]) * bg + 0.5).astype(np.uint8)
    alpha = (a * 255 + 0.5).astype(np.uint8)
    refined = compose.refine_foreground(rgb, alpha)
    band = (a > 0.1) & (a < 0.9)
    before = np.abs(rgb[band] - fg[band]).mean()
    after = np.abs(refined[band].astype(float) - fg[band]).mean()
    assert after < 0.6 * before, (before, after)
    assert refined[band][:, 1].mean() < rgb[band][:, 1].mean() - 20  # the green spill is gone
    assert np.array_equal(refined[alpha == 255], rgb[alpha == 255])


def test_sixteen_bit_greyscale_keeps_its_transparency_key():
    """A tRNS colour key on a 16-bit greyscale PNG: every keyed pixel transparent, no other."""
    rng = np.random.default_rng(3)
    grey = rng.integers(0, 65535, (60, 80), dtype=np.uint16)
    grey[grey == 4242] = 4243
    keyed = rng.random((60, 80)) < 0.3
    grey[keyed] = 4242
    img = decode(png_bytes(Image.fromarray(grey), transparency=4242))
    assert img.alpha is not None
    assert np.array_equal(img.alpha == 0, keyed) and (img.alpha[~keyed] == 255).all()


def test_jpeg_scans_are_counted_from_the_markers():
    for progressive, expected in ((False, 1), (True, 10)):  # libjpeg's default progression: 10 scans for YCbCr
        assert jpeg_scans(encode(gradient(), "JPEG", progressive=progressive)) == expected
    # an EXIF thumbnail's own scans are inside APP1 and not counted
    exif = Image.Exif()
    thumb = encode(gradient(16, 12), "JPEG", progressive=True)
    data = encode(gradient(), "JPEG", exif=exif.tobytes() + thumb)
    assert jpeg_scans(data) == 1
    assert jpeg_scans(hostile.scan_bomb_jpeg(256, 500)) == MAX_JPEG_SCANS + 1  # counting stops past the cap


def test_junk_between_segments_does_not_hide_scans():
    """libjpeg skips bytes that are not a marker and decodes on: so does the count. A zero byte
    before the first scan used to stop it at 0, which let the scan bomb and huge progressive
    JPEGs through."""
    for data in (encode(gradient(), "JPEG", progressive=True), hostile.scan_bomb_jpeg(256, 500)):
        first_scan = data.find(b"\xff\xda")
        tampered = data[:first_scan] + b"\x00junk\x01" + data[first_scan:]
        assert jpeg_scans(tampered) == jpeg_scans(data)
    with pytest.raises(ImageTooComplex):
        decode(tampered)
    big = hostile.huge_progressive_jpeg(6000)
    first_scan = big.find(b"\xff\xda")
    with pytest.raises(ImageTooLarge):
        decode(big[:first_scan] + b"\x00" + big[first_scan:], max_pixels=4096 * 4096)


def test_long_sixteen_bit_image_is_scaled():
    """16-bit greyscale scaled down more than 3x (Pillow's reduce() has no such mode)."""
    tall = np.zeros((16384, 8), np.uint16)
    tall[:, :4] = 60000
    assert decode(png_bytes(Image.fromarray(tall))).size == (1, 1024)


def test_progressive_scan_bomb_is_refused_before_decoding():
    """A valid 4096² progressive JPEG with one AC scan repeated 2,000 times: refused from its markers."""
    data = hostile.scan_bomb_jpeg(4096, 2000)
    assert len(data) < 500_000
    t0 = time.perf_counter()
    with pytest.raises(ImageTooComplex) as err:
        decode(data)
    assert time.perf_counter() - t0 < 1.0  # generous bound: decoding it takes ~20 s
    assert err.value.code == "image_too_complex" and "scans" in err.value.message
    # a normal progressive photo is served
    assert decode(encode(gradient(640, 480), "JPEG", progressive=True)).size == (640, 480)


def test_progressive_jpeg_is_judged_by_its_full_size():
    """libjpeg holds a multi-scan JPEG's coefficients at full size whatever the draft scale:
    13000² progressive is refused (a baseline one of that size decodes at 1/8)."""
    with pytest.raises(ImageTooLarge) as err:
        decode(hostile.huge_progressive_jpeg(13000))
    assert "progressive" in err.value.message
    baseline = encode(Image.new("RGB", (13000, 6000), (10, 200, 30)), "JPEG", quality=50)
    assert decode(baseline).size == (1024, 473)


def test_decode_cost_is_budgeted_by_decoded_size():
    """A 716-byte lossless 4096² WebP decodes to three 64 MB copies: over a 128 MB budget it is a 422
    naming the cost; the same pixels as a PNG fit."""
    webp = hostile.lossless_webp_rgba(4096)
    assert len(webp) < 2000
    with pytest.raises(ImageTooLarge) as err:
        decode_image(webp, max_dimension=1024, max_pixels=4096 * 4096, max_decode_bytes=128 * 2**20)
    assert "MB" in err.value.message
    small = hostile.lossless_webp_rgba(2048)
    assert decode_image(small, max_dimension=1024, max_pixels=4096 * 4096, max_decode_bytes=128 * 2**20).size == (1024, 1024)
    refused = []
    for name, data in hostile.memory_bombs().items():
        with Image.open(io.BytesIO(data)) as img:
            cost = decode_cost_bytes(img, img.size)
        if cost <= 128 * 2**20:
            decoded = decode_image(data, max_dimension=1024, max_pixels=4096 * 4096, max_decode_bytes=128 * 2**20)
            assert max(decoded.size) == 1024, name
        else:
            with pytest.raises(ImageTooLarge):
                decode_image(data, max_dimension=1024, max_pixels=4096 * 4096, max_decode_bytes=128 * 2**20)
            refused.append(name)
    assert "lossless_webp_4096_rgba.webp" in refused and len(refused) < len(hostile.memory_bombs())


@pytest.mark.parametrize("name", sorted(hostile.memory_bombs()))
def test_memory_bombs_decode_within_their_budget(name, tmp_path):
    """Decoding each accepted memory bomb raises the process's peak RSS by no more than its
    computed cost (+16 MB): scaling happens in the image's own mode, without full-size copies."""
    import subprocess
    import sys

    path = tmp_path / name
    path.write_bytes(hostile.memory_bombs()[name])
    script = (
        "import resource, sys\n"
        "from PIL import Image\n"
        "from app.pipeline.imaging import decode_image, decode_cost_bytes\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "img = Image.open(sys.argv[1]); cost = decode_cost_bytes(img, img.size); img.close()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "decode_image(data, max_dimension=1024, max_pixels=4096 * 4096)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024, cost)\n"
    )
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}  # the 512 MB tier's malloc policy
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, env=env,
                         cwd=os.path.dirname(os.path.dirname(__file__)), check=True).stdout.split()
    grown, cost = int(out[0]), int(out[1])
    assert grown <= cost + 16 * 2**20, f"{name}: +{grown / 2**20:.0f} MB for a cost of {cost / 2**20:.0f} MB"


@pytest.mark.parametrize("mode, white", [("F", 1.0), ("I;16", 65535)])
def test_high_bit_depth_scale_is_judged_before_scaling(mode, white):
    """A large float image in [0, 1] (or 16-bit) with hard edges: Lanczos rings past the white
    value when it is scaled to fit, which must not change what counts as white (the image
    would turn black if 1.0 were judged from the scaled pixels)."""
    blocks = (np.indices((2048, 2048)).sum(axis=0) // 16 % 2).astype(np.float32) * white
    img = Image.fromarray(blocks if mode == "F" else blocks.astype(np.uint16))
    data = encode(img, "TIFF") if mode == "F" else png_bytes(img)
    decoded = decode(data, max_dimension=1024)
    assert decoded.size == (1024, 1024)
    assert 110 < decoded.rgb.mean() < 145
