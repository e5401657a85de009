"""Decoding uploads into arrays and encoding results, with every check before the pixels.

Pure functions of bytes and arrays; no Flask here.
"""

from __future__ import annotations

import io
import math
import re
import struct
import zipfile
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from app.pipeline.errors import ImageTooComplex, ImageTooLarge, InvalidImage, ServiceError, UnsupportedImage

# Pillow format -> file extensions a client may use for it.
SUPPORTED_FORMATS: dict[str, tuple[str, ...]] = {
    "JPEG": ("jpg", "jpeg"),
    "MPO": (),  # multi-picture JPEG from phone cameras; reads as its first picture
    "PNG": ("png",),
    "WEBP": ("webp",),
    "GIF": ("gif",),
    "BMP": ("bmp",),
    "TIFF": ("tif", "tiff"),
}
_OPENERS = [f for f in SUPPORTED_FORMATS if f != "MPO"]  # Pillow's JPEG opener returns MPO files
ALLOWED_EXTENSIONS = sorted(ext for exts in SUPPORTED_FORMATS.values() for ext in exts)

OUTPUT_FORMATS = {
    # name: (Pillow format, MIME type, file extension)
    "png": ("PNG", "image/png", "png"),
    "webp": ("WEBP", "image/webp", "webp"),
    "jpeg": ("JPEG", "image/jpeg", "jpg"),
    "zip": ("ZIP", "application/zip", "zip"),  # remove.bg's: color.jpg and alpha.png (:func:`encode_image`)
}

Image.init()  # import every Pillow plugin at boot, not during the first requests

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_RGB_PROFILE_MODES = {"RGB", "RGBA", "RGBX", "P", "PA"}  # an ICC profile of these describes RGB pixels


@dataclass(frozen=True)
class DecodedImage:
    rgb: np.ndarray  # HxWx3 uint8, orientation applied, fitted into the size limit
    alpha: np.ndarray | None  # HxW uint8 if the input had any transparency
    source_format: str  # e.g. "JPEG"
    icc_profile: bytes | None  # kept so that output colours match the input's
    source_size: tuple[int, int]  # the upload's own (W, H), orientation applied: what a client's px refer to

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]


def decode_image(data: bytes, *, max_dimension: int, max_pixels: int, max_decode_bytes: int | None = None,
                 field: str = "file") -> DecodedImage:
    """Bytes of an upload -> :class:`DecodedImage`, or a :class:`ServiceError` saying what is wrong.

    The cost is judged before a pixel is decoded, from the file's structure:
    - dimensions from the header; JPEGs larger than needed are decoded at a reduced DCT scale
      (``draft``), and ``max_pixels`` bounds what is actually decoded;
    - a JPEG with several scans (progressive, or sequential non-interleaved) makes libjpeg hold
      the whole image's coefficients, whatever the draft scale: it is judged by its full size,
      and its scans are counted (each one is a pass over every block) and capped at
      ``MAX_JPEG_SCANS``, as libjpeg's ``-maxscans`` does;
    - a TIFF's first directory is read before Pillow opens the file, which builds a tile for
      each strip (:func:`check_tiff_structure`); an RLE BMP's runs, which Pillow decodes in
      Python, are capped at ``MAX_BMP_RLE_BYTES``;
    - the blocks that Pillow reads one by one in Python to reach the first frame are counted
      first, and capped: a JPEG's marker segments and padding (:func:`jpeg_structure`), a PNG's
      chunks (:func:`png_chunks`), a GIF's extension blocks (:func:`gif_blocks`). The other
      frames of an animation or multi-page file cost nothing: only the first is read;
    - ``max_decode_bytes`` bounds the memory decoding takes (:func:`decode_cost_bytes`): the
      decoded pixels in their own mode and the copies the decoder and the scaling make.
    Errors name ``field``, the form field the bytes came in (``file``, ``background_file``).
    Once decoded, the image is scaled to fit in its own mode, before any conversion or
    rotation, so that no second full-size copy is made (a high-bit-depth or RGBA image is
    several times its file's size); then it is rotated and converted at the working size.
    """
    if data[:4] in _TIFF_HEADERS:
        check_tiff_structure(data, max_pixels, field)
    scans, steps = jpeg_structure(data) if data[:3] == _JPEG_SIGNATURE else (0, 0)
    if steps > MAX_JPEG_STEPS:
        raise ImageTooComplex(f"{field}: the JPEG has more than {MAX_JPEG_STEPS:,} markers (segments, or padding between "
                              "them); a real one has a few dozen, a few hundred with a large ICC profile", field=field)
    if data[:8] == _PNG_SIGNATURE and png_chunks(data) > MAX_PNG_CHUNKS:
        raise ImageTooComplex(f"{field}: the PNG has more than {MAX_PNG_CHUNKS:,} chunks before its first frame ends "
                              "(a real one has a few, or a few thousand small IDAT chunks)", field=field)
    if data[:6] in (b"GIF87a", b"GIF89a") and gif_blocks(data) > MAX_GIF_BLOCKS:
        raise ImageTooComplex(f"{field}: the GIF has more than {MAX_GIF_BLOCKS:,} blocks before its first image "
                              "(extensions, their sub-blocks, stray bytes); a real one has a few dozen", field=field)
    img = _open(data, field)
    try:
        width, height = img.size
        if width < 1 or height < 1:
            raise InvalidImage(f"{field}: the image declares an impossible size {width}x{height}", field=field)
        multi_scan = False
        if img.format in ("JPEG", "MPO"):
            if scans > MAX_JPEG_SCANS:
                raise ImageTooComplex(
                    f"{field}: the JPEG has more than {MAX_JPEG_SCANS} scans, the most decoded here "
                    "(a normal progressive JPEG has about 10)", field=field
                )
            # no scan found where Pillow found a JPEG: an odd file, judged as the costly kind
            multi_scan = scans != 1 or bool(img.info.get("progressive") or img.info.get("progression"))
            if multi_scan and width * height > max_pixels:
                raise ImageTooLarge(
                    f"{field}: the progressive JPEG is {width}x{height} pixels; at most {max_pixels:,} pixels "
                    "can be decoded from a progressive (multi-scan) JPEG, which is decoded at full size", field=field
                )
            if max(width, height) > max_dimension:
                img.draft(None, (max_dimension, max_dimension))
        if img.format == "BMP" and img.info.get("compression") in (1, 2):  # RLE8, RLE4
            rle_bytes = len(data) - img.tile[0].offset
            if rle_bytes > MAX_BMP_RLE_BYTES:
                raise ImageTooComplex(
                    f"{field}: the BMP has {rle_bytes / 2**20:.1f} MB of run-length data; at most "
                    f"{MAX_BMP_RLE_BYTES / 2**20:.0f} MB of it is decoded here (send it as a PNG)", field=field
                )
        decoded = img.size[0] * img.size[1]
        if decoded > max_pixels:
            raise ImageTooLarge(
                f"{field}: the image is {width}x{height} pixels; at most {max_pixels:,} pixels can be decoded "
                f"(the longest side is scaled to {max_dimension} anyway)", field=field
            )
        cost = decode_cost_bytes(img, (width, height), multi_scan=multi_scan)
        if max_decode_bytes is not None and cost > max_decode_bytes:
            raise ImageTooLarge(
                f"{field}: decoding this {width}x{height} {img.format} ({img.mode}) would take {cost / 2**20:.0f} MB; "
                f"at most {max_decode_bytes / 2**20:.0f} MB are allowed here (send it smaller, or as a JPEG)", field=field
            )
        fmt = img.format or "unknown"
        icc = img.info.get("icc_profile") if img.mode in _RGB_PROFILE_MODES else None
        img.load()  # first frame of an animation or multi-page file
        top = _full_scale(img)  # of a high-bit-depth image, judged at full size (scaling rings past it)
        fitted = _fit(_resizable(img, top), max_dimension)
        oriented = _apply_orientation(fitted)
        source = (height, width) if oriented.size != fitted.size else (width, height)  # turned a quarter
        pixels = _to_rgb_or_rgba(oriented, top)
        rgb = np.asarray(pixels.convert("RGB"))
        alpha = np.asarray(pixels.getchannel("A")) if pixels.mode == "RGBA" else None
    except ServiceError:
        raise
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"{field}: the image declares too many pixels", field=field) from None
    except Exception:  # Pillow raises OSError, SyntaxError, ValueError... on broken files
        raise InvalidImage(f"{field}: the image data is truncated or corrupt", field=field) from None
    finally:
        img.close()
    return DecodedImage(rgb, alpha, fmt, valid_icc_profile(icc), source)


def capped(image: DecodedImage, max_pixels: float) -> DecodedImage:
    """``image`` scaled down to at most ``max_pixels`` pixels (aspect kept), as :func:`_fit` scales;
    its alpha with it (premultiplied resampling), its ICC profile and source size kept."""
    size = fitted_size(image.size, max_pixels)
    if size == image.size:
        return image
    mode = "RGB" if image.alpha is None else "RGBA"
    pixels = image.rgb if image.alpha is None else np.dstack((image.rgb, image.alpha))
    small = np.asarray(Image.fromarray(pixels, mode).resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0))
    return replace(image, rgb=np.ascontiguousarray(small[..., :3]),
                   alpha=None if image.alpha is None else np.ascontiguousarray(small[..., 3]))


def fitted_size(size: tuple[int, int], max_pixels: float) -> tuple[int, int]:
    """``size`` scaled down (aspect kept, sides floored, at least 1 px) to at most ``max_pixels`` pixels."""
    width, height = size
    if width * height <= max_pixels:
        return size
    shrink = math.sqrt(max_pixels / (width * height))
    w, h = max(1, int(width * shrink)), max(1, int(height * shrink))
    h = min(h, max(1, int(max_pixels // w)))  # a side held at 1 px: the other takes what is left
    return min(w, max(1, int(max_pixels // h))), h


# A legitimate progressive JPEG has about 10 scans (libjpeg's default script), rarely more than 20.
MAX_JPEG_SCANS = 100
# Real ICC profiles are a few KB, up to a few hundred KB for detailed printer profiles.
MAX_ICC_BYTES = 1 << 20
# Pillow decodes RLE BMPs in Python, a step for every 2 bytes (~1.3 µs): 1 MB of runs is
# under a second, and far more than a real RLE image (they compress, or would be sent raw) has.
MAX_BMP_RLE_BYTES = 1 << 20
# Pillow's TIFF reader makes a Python tile descriptor for every strip or tile when it opens
# the file (~350 bytes, and ~8 µs of decoding, each): 2 million one-row strips took 730 MB
# and 16 s. A 8192-row image in one-row strips, planar RGBA, has 32,768; no other table of
# numbers in a real first directory (colour map, transfer function) is longer.
MAX_TIFF_TABLE = 1 << 16
# Pillow reads a JPEG's markers up to the first scan one step of Python at a time (~1.5 µs
# and a list entry of ~130 bytes each); so does :func:`jpeg_structure`, up to the last scan:
# 2 million empty segments in 8 MB took 5.3 s and 273 MB, 8 million 0xFF fill bytes 5-8 s (8 MB
# of other junk, 0.6-0.9 s). A real file has a few dozen segments; an ICC profile split in 255
# chunks, or extended XMP, a few hundred.
MAX_JPEG_STEPS = 10_000
# Pillow reads a PNG's chunks in Python (~5 µs each), up to IEND or an APNG's second frame:
# 690,000 empty chunks in 8 MB took 3.5 s and 79 MB, as many empty IDAT chunks 1.9-2.9 s. Writers
# split the image data in 8-64 KB chunks, a few in one per row: a 16,384-row image, 16,384.
MAX_PNG_CHUNKS = 1 << 15
# Pillow reads a GIF's blocks before the first image in Python, a step for each extension,
# sub-block (keeping a comment's in a list, ~85 bytes each) or stray byte: 4 million comment
# sub-blocks in 8 MB took 1.4-1.8 s and 356 MB. A real file has a loop extension, a comment, an
# XMP or ICC block: tens, a few thousand for a large profile's 255-byte sub-blocks.
MAX_GIF_BLOCKS = 1 << 16
_JPEG_SIGNATURE = b"\xff\xd8\xff"  # what Pillow's JPEG (and MPO) reader accepts
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_GIF_BLOCK = re.compile(rb"[!,;]")  # an extension, an image, the trailer: the bytes Pillow does not skip
_TIFF_HEADERS = (b"MM\x00\x2a", b"II\x2a\x00", b"MM\x2a\x00", b"II\x00\x2a", b"MM\x00\x2b", b"II\x2b\x00")
_TIFF_NUMBERS = {3, 4, 5, 8, 9, 10, 11, 12, 16, 17, 18}  # SHORT, LONG, RATIONAL... the types read as tuples
_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")  # in entropy-coded data: a marker, not a stuffed byte or RSTn


def decode_cost_bytes(img: Image.Image, full_size: tuple[int, int], multi_scan: bool = False) -> int:
    """The memory that decoding ``img`` (opened, not loaded; after ``draft``) and scaling it takes.

    - the pixels in their own mode (Pillow keeps 1 byte a pixel for 1/L/P, 2 for 16-bit
      greyscale, 4 for everything else, two-band modes included);
    - WebP: libwebp's canvas and the frame's bytes besides the image (Pillow decodes through
      the animation API): three times the pixels;
    - the conversion :func:`_resizable` makes before scaling: palette to RGB(A) and 1-bit to L
      (4 and 1 bytes a pixel), a colour key to RGBA (4), or on 16-bit greyscale to LA through
      numpy (the samples, the grey and alpha planes, the LA image: 8);
    - the premultiplied copy that smooth scaling of an image with alpha makes (4);
    - a multi-scan JPEG: libjpeg's whole-image coefficient buffer, 2 bytes per coefficient of
      each component at the file's full size, whatever the draft scale.
    """
    width, height = img.size
    pixels = width * height
    mode = img.mode
    per_pixel = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    cost = pixels * per_pixel
    if img.format == "WEBP":
        cost *= 3
    keyed = "transparency" in img.info and mode not in _ALPHA_MODES
    high_bit_depth = mode.startswith("I;16") or mode in ("I", "F")
    converted = {"P": 4, "PA": 4, "1": 1}.get(mode, 0)
    if keyed:
        converted = 8 if high_bit_depth else 4
    cost += pixels * converted
    if mode in _ALPHA_MODES or mode == "PA" or keyed:
        cost += pixels * 4
    if multi_scan:
        layers = getattr(img, "layer", None) or [("", 1, 1, 0)] * len(img.getbands())
        h_max = max(h for _, h, _, _ in layers) or 1
        v_max = max(v for _, _, v, _ in layers) or 1
        full_w, full_h = full_size
        blocks = sum(math.ceil(full_w * h / h_max / 8) * math.ceil(full_h * v / v_max / 8) for _, h, v, _ in layers)
        cost += blocks * 64 * 2
    return cost


def jpeg_scans(data: bytes, stop_after: int = MAX_JPEG_SCANS + 1) -> int:
    """The number of scans (SOS markers) of the first image in a JPEG, counting up to ``stop_after``."""
    return jpeg_structure(data, stop_after)[0]


def jpeg_structure(data: bytes, stop_after: int = MAX_JPEG_SCANS + 1) -> tuple[int, int]:
    """The scans (SOS markers) of the first image in a JPEG, counting up to ``stop_after``, and the
    steps taken to find them (segments, fill bytes, 64 bytes of junk), up to ``MAX_JPEG_STEPS + 1``.

    Walks the markers as libjpeg reads them: a segment is skipped by its length (so thumbnails
    inside EXIF are not counted), a scan's entropy-coded data up to the next real marker, and
    bytes that are not a marker up to the next 0xFF (libjpeg warns and decodes on). Stops at EOI.
    A file can make this count more than libjpeg would decode, never fewer.
    """
    scans, steps, pos, end = 0, 0, 2, len(data)
    while pos + 4 <= end and scans < stop_after and steps <= MAX_JPEG_STEPS:
        steps += 1
        if data[pos] != 0xFF:  # junk between segments: libjpeg skips to the next 0xFF, and so do we
            start, pos = pos, data.find(b"\xff", pos)
            if pos < 0:
                break
            steps += (pos - start) // 64  # Pillow steps over each byte (~60 ns): a step per 64
            continue
        marker = data[pos + 1]
        if marker in (0xFF, 0x00):  # a fill byte, or 0xFF00 outside a scan: skip on
            pos += 1
            continue
        if marker == 0xD9:  # EOI
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # no length
            pos += 2
            continue
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker == 0xDA:
            scans += 1
            found = _MARKER.search(data, pos)
            if found is None:
                break
            pos = found.start()
    return scans, steps


def png_chunks(data: bytes, stop_after: int = MAX_PNG_CHUNKS + 1) -> int:
    """The chunks Pillow reads for a PNG's first frame, counting up to ``stop_after``: to IEND, or
    in an animated PNG (one valid ``acTL`` before the image data, as Pillow judges it) to the
    ``fcTL`` after the image data, where the second frame starts. Lengths are trusted as Pillow
    trusts them; the walk ends where the data does."""
    chunks, pos, end, frames, image_data = 0, 8, len(data), None, False
    while pos + 8 <= end and chunks < stop_after:
        length, kind = struct.unpack_from(">I4s", data, pos)
        chunks += 1
        if kind == b"IEND" or (kind == b"fcTL" and image_data and frames is not None and frames > 1):
            break
        if kind == b"acTL" and not image_data:  # a second acTL cancels the first, as in Pillow
            count = int.from_bytes(data[pos + 8:pos + 12], "big")
            frames = None if frames is not None else count if 0 < count <= 0x80000000 else None
        image_data = image_data or kind == b"IDAT"
        pos += 12 + length
    return chunks


def gif_blocks(data: bytes, stop_after: int = MAX_GIF_BLOCKS + 1) -> int:
    """The steps Pillow takes in a GIF before its first image, counting up to ``stop_after``: each
    extension and each of its sub-blocks, and each stray byte (Pillow skips them one at a time)."""
    flags = data[10] if len(data) > 12 else 0
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    steps, end = 0, len(data)
    while pos < end and steps < stop_after:
        window = min(end, pos + stop_after - steps)  # stray bytes beyond it are past the count anyway
        found = _GIF_BLOCK.search(data, pos, window)
        if found is None or found.group() != b"!":
            steps += (found.start() if found else window) - pos
            break
        steps += found.start() - pos + 1
        pos = found.start() + 2  # "!" and the label
        while pos < end and steps < stop_after:
            size = data[pos]
            pos += 1 + size
            steps += 1
            if size == 0:
                break
    return steps


def check_tiff_structure(data: bytes, max_pixels: int, field: str = "file") -> None:
    """Refuse a TIFF from its first directory (the only one decoded), before Pillow reads it:
    more than ``max_pixels`` pixels, or a table (strip or tile offsets, any list of numbers)
    longer than ``MAX_TIFF_TABLE``. Reads the header and the directory's entries, nothing else,
    the way Pillow does (byte order from the first two bytes, BigTIFF from version 43); a
    directory it cannot read is left for Pillow to refuse."""
    endian = "<" if data[:2] == b"II" else ">"
    big = data[2] == 43
    try:
        if big:
            (pos,) = struct.unpack_from(endian + "Q", data, 8)
            (entries,) = struct.unpack_from(endian + "Q", data, pos)
            layout, start, size = endian + "HHQ8s", pos + 8, 20
        else:
            (pos,) = struct.unpack_from(endian + "L", data, 4)
            (entries,) = struct.unpack_from(endian + "H", data, pos)
            layout, start, size = endian + "HHL4s", pos + 2, 12
    except struct.error:
        return
    entries = min(entries, (len(data) - start) // size)
    if entries > MAX_TIFF_TABLE:
        raise ImageTooComplex(f"{field}: the TIFF's directory has {entries:,} entries; a real one has a few dozen",
                              field=field)
    dims: dict[int, int] = {}
    for tag, kind, count, value in struct.iter_unpack(layout, data[start:start + entries * size]):
        if kind in _TIFF_NUMBERS and count > MAX_TIFF_TABLE:
            what = {273: "strips", 324: "tiles"}.get(tag, f"values in tag {tag}")
            raise ImageTooComplex(
                f"{field}: the TIFF has {count:,} {what}; at most {MAX_TIFF_TABLE:,} are read here "
                "(save it with larger strips, e.g. as one compressed strip, or send a PNG)", field=field
            )
        if tag in (256, 257) and kind in (3, 4, 16) and count == 1 and tag not in dims:
            dims[tag] = int.from_bytes(value[:{3: 2, 4: 4, 16: 8}[kind]], "little" if endian == "<" else "big")
    width, height = dims.get(256, 0), dims.get(257, 0)
    if width * height > max_pixels:
        raise ImageTooLarge(f"{field}: the image is {width}x{height} pixels; at most {max_pixels:,} pixels can be "
                            "decoded", field=field)


def valid_icc_profile(icc: bytes | None) -> bytes | None:
    """The input's ICC profile if it is a real RGB profile of sane size, else None (dropped:
    a broken or oversized profile must not be copied into every output)."""
    if not icc or len(icc) > MAX_ICC_BYTES:
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if profile.profile.xcolor_space.strip() != "RGB":
            return None
    except Exception:  # noqa: BLE001 - littlecms refuses it: not a profile
        return None
    return icc


def _open(data: bytes, field: str) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=_OPENERS)
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"{field}: the image declares too many pixels", field=field) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        pass
    # Not one of ours: is it an image at all? (header parsing only, nothing is decoded)
    brands = _ftyp_brands(data)
    if brands & {b"avif", b"avis"}:
        raise UnsupportedImage(f"{field}: AVIF images are not supported yet; send one of "
                               f"{', '.join(ALLOWED_EXTENSIONS)}", field=field)
    if brands & _HEIF_BRANDS:
        raise UnsupportedImage(f"{field}: HEIC/HEIF images are not supported yet; send one of "
                               f"{', '.join(ALLOWED_EXTENSIONS)}", field=field)
    kind = next((f for f in _BY_MAGIC if Image.OPEN[f][1](data[:16])), None)
    if kind is None:
        try:
            with Image.open(io.BytesIO(data), formats=[f for f in Image.ID if f not in _BY_MAGIC]) as other:
                kind = other.format
        except Exception:
            kind = None
    if kind:
        raise UnsupportedImage(
            f"{field}: {kind} images are not supported; send one of {', '.join(ALLOWED_EXTENSIONS)}", field=field
        )
    raise InvalidImage(f"{field}: not a readable image; send one of {', '.join(ALLOWED_EXTENSIONS)}", field=field)


# Formats whose Pillow reader decodes pixels or walks every entry when it opens a file (an
# icon's largest image, an icon set's or Photoshop file's every resource): named by their
# magic bytes, never opened. (CUR's magic is also a TGA's first bytes: it stays opened.)
_BY_MAGIC = ("ICO", "ICNS", "PSD", "FLI", "DCX")
_HEIF_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}


def _ftyp_brands(data: bytes) -> set[bytes]:
    """The brands of an ISO-BMFF file's ``ftyp`` box (major and compatible: a phone's HEIC says
    ``heic``, an AVIF ``avif``, either may say only ``mif1`` first); empty for other files."""
    if data[4:8] != b"ftyp":
        return set()
    box = data[8:min(int.from_bytes(data[:4], "big"), 256)]
    return {box[i:i + 4] for i in range(0, len(box) - 3, 4) if i != 4}  # 4: the minor version


def _apply_orientation(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not cost the user the image
        return img


def _resizable(img: Image.Image, top: float) -> Image.Image:
    """``img`` in a mode that can be scaled smoothly without losing what it shows: palette and
    1-bit images (Pillow resizes those by nearest neighbour) and colour-keyed transparency
    (``tRNS``: blending would break the key) become RGB(A)/LA first; other modes stay as they are."""
    keyed = "transparency" in img.info and img.mode not in _ALPHA_MODES
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        return _high_bit_depth_to_l(img, top) if keyed else img
    if keyed or img.mode == "PA":
        return img.convert("RGBA")
    if img.mode in ("P", "1"):
        return img.convert("RGB" if img.mode == "P" else "L")
    return img


def _to_rgb_or_rgba(img: Image.Image, top: float) -> Image.Image:
    """RGB, or RGBA when the image has any transparency at all (``top``: see :func:`_full_scale`)."""
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        img = _high_bit_depth_to_l(img, top)
    if img.mode not in _ALPHA_MODES and "transparency" not in img.info:
        return img.convert("RGB")
    rgba = img if img.mode == "RGBA" else img.convert("RGBA")
    return rgba.convert("RGB") if rgba.getchannel("A").getextrema() == (255, 255) else rgba


def _full_scale(img: Image.Image) -> float:
    """The value that is white in a 16- or 32-bit greyscale image: 65535 for 16-bit (or 32-bit
    values above 255), 1.0 for floats within [0, 1], else 255 (0 for 8-bit modes: unused)."""
    if not (img.mode.startswith("I;16") or img.mode in ("I", "F")):
        return 0.0
    hi = float(img.getextrema()[1])
    if img.mode == "F":
        return 1.0 if hi <= 1.0 else 255.0
    return 65535.0 if img.mode.startswith("I;16") or hi > 255 else 255.0


def _high_bit_depth_to_l(img: Image.Image, top: float) -> Image.Image:
    """16-bit (or 32-bit) greyscale -> 8-bit, by scaling ``top`` to 255 rather than clipping; a
    ``tRNS`` colour key becomes an alpha channel (LA)."""
    key = img.info.get("transparency")
    arr = np.asarray(img)
    grey = np.empty(arr.shape, np.uint8)
    for row in range(0, arr.shape[0], 256):  # in strips: no full-size float copy
        strip = arr[row:row + 256].astype(np.float32)
        grey[row:row + 256] = np.clip(strip * np.float32(255.0 / top) + np.float32(0.5), 0, 255)
    out = Image.fromarray(grey, "L")
    if isinstance(key, (int, float)) and not isinstance(key, bool):
        alpha = Image.fromarray(np.where(arr == key, np.uint8(0), np.uint8(255)), "L")
        out = Image.merge("LA", (out, alpha))
    return out


def _fit(img: Image.Image, max_dimension: int) -> Image.Image:
    """Scale down so the longest side is at most ``max_dimension``, in the image's own mode
    (RGBA is resampled premultiplied). Far larger images are first reduced by an integer
    factor (``reducing_gap``), which needs no full-size intermediate."""
    width, height = img.size
    longest = max(width, height)
    if longest <= max_dimension:
        return img
    scale = max_dimension / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # Pillow's reduce() has no 16-bit greyscale: those are resampled directly (still no full-size copy)
    gap = None if img.mode.startswith("I;16") else 3.0
    return img.resize(size, Image.Resampling.LANCZOS, reducing_gap=gap)


def encode_image(
    img: Image.Image, fmt: str, *, quality: int, png_compress_level: int, icc_profile: bytes | None = None
) -> bytes:
    """Encode ``img`` as ``fmt`` (png | webp | jpeg | zip). WebP at quality 100 is lossless."""
    if fmt == "zip":
        return _zip(img, quality=quality, png_compress_level=png_compress_level, icc_profile=icc_profile)
    pil_format = OUTPUT_FORMATS[fmt][0]
    options: dict[str, object] = {}
    if icc_profile and img.mode in ("RGB", "RGBA"):
        options["icc_profile"] = icc_profile
    if pil_format == "PNG":
        options["compress_level"] = png_compress_level
    elif pil_format == "WEBP":
        options.update(quality=quality, lossless=quality >= 100, method=4)
    else:
        if img.mode not in ("RGB", "L"):
            img = img.convert("RGB")
        options.update(quality=quality)
    buf = io.BytesIO()
    img.save(buf, pil_format, **options)
    return buf.getvalue()


def _zip(img: Image.Image, *, quality: int, png_compress_level: int, icc_profile: bytes | None) -> bytes:
    """remove.bg's ZIP: ``color.jpg`` (the RGB as it is, hidden colours under alpha 0 included) and
    ``alpha.png`` (the alpha, opaque where ``img`` has none), the same size; stored, not deflated (both
    are compressed already), with a fixed date so that the same image gives the same bytes."""
    alpha = img.getchannel("A") if img.mode == "RGBA" else Image.new("L", img.size, 255)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as archive:
        for name, part, fmt in (("color.jpg", img.convert("RGB"), "jpeg"), ("alpha.png", alpha, "png")):
            entry = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            entry.external_attr = 0o644 << 16
            archive.writestr(entry, encode_image(part, fmt, quality=quality, png_compress_level=png_compress_level,
                                                 icc_profile=icc_profile))
    return buf.getvalue()
