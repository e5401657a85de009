"""Decoding uploads into arrays and encoding results, with every check before the pixels.

Pure functions of bytes and arrays; no Flask here.
"""

from __future__ import annotations

import io
import math
import re
import struct
import zipfile
from dataclasses import dataclass

import numpy as np
import pillow_heif
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from app.pipeline import png
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
    "AVIF": ("avif",),  # Pillow's own reader (libavif, dav1d); before HEIF: both accept the ``mif1`` brand
    "HEIF": ("heic", "heif"),  # the iPhone's default, through pillow-heif (libheif, libde265)
}
_OPENERS = [f for f in SUPPORTED_FORMATS if f != "MPO"]  # Pillow's JPEG opener returns MPO files
ALLOWED_EXTENSIONS = sorted(ext for exts in SUPPORTED_FORMATS.values() for ext in exts)

OUTPUT_FORMATS = {
    # name: (Pillow format, MIME type, file extension)
    "png": ("PNG", "image/png", "png"),
    "webp": ("WEBP", "image/webp", "webp"),
    "jpeg": ("JPEG", "image/jpeg", "jpg"),
    "heic": ("HEIF", "image/heic", "heic"),
    "avif": ("AVIF", "image/avif", "avif"),
    "zip": ("ZIP", "application/zip", "zip"),  # remove.bg's: color.jpg and alpha.png (:func:`encode_image`)
}

Image.init()  # import every Pillow plugin at boot, not during the first requests
# The primary image only: no thumbnail (``draft`` could pick one), no depth map or auxiliary image read.
pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)

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
                 work_pixels: float | None = None, field: str = "file") -> DecodedImage:
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
    - a HEIC's or AVIF's size is read from its container before a library opens it, and each
      AV1 picture's from its sequence header (:func:`heif_primary_size`);
    - ``max_decode_bytes`` bounds the memory decoding takes (:func:`decode_cost_bytes`): the
      decoded pixels in their own mode and the copies the decoder and the scaling make.
    Errors name ``field``, the form field the bytes came in (``file``, ``background_file``).
    Once decoded, an image larger than ``max_dimension`` on its longest side or ``work_pixels``
    in all is scaled down a strip of rows at a time, each strip converted to 8-bit RGB(A) and
    resampled straight into the arrays (:func:`_scaled_arrays`), then turned upright: no
    full-size converted, premultiplied or half-resampled copy is made beside the decoded pixels
    (a 4096² RGBA PNG scaled whole took 240 MB). One that fits is turned upright in place and
    converted once.
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
    declared = heif_primary_size(data, field) if data[4:8] == b"ftyp" else None
    if declared and declared[0] * declared[1] > max_pixels:
        raise ImageTooLarge(f"{field}: the image is {declared[0]}x{declared[1]} pixels; at most {max_pixels:,} pixels "
                            f"can be decoded (the longest side is scaled to {max_dimension} anyway)", field=field)
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
        # a HEIC/AVIF is decoded at the size its container declares (judged above): a crop shows less of it
        full = declared if declared and img.format in _ISOBMFF_FORMATS else (width, height)
        cost = decode_cost_bytes(img, full, multi_scan=multi_scan)
        if max_decode_bytes is not None and cost > max_decode_bytes:
            raise ImageTooLarge(
                f"{field}: decoding this {width}x{height} {img.format} ({img.mode}) would take {cost / 2**20:.0f} MB; "
                f"at most {max_decode_bytes / 2**20:.0f} MB are allowed here (send it smaller, or as a JPEG)", field=field
            )
        fmt = img.format or "unknown"
        icc = img.info.get("icc_profile") if img.mode in _RGB_PROFILE_MODES else None
        img.load()  # first frame of an animation or multi-page file
        top = _full_scale(img)  # of a high-bit-depth image, judged at full size (scaling rings past it)
        size = _work_size(img.size, max_dimension, work_pixels)
        if size != img.size:  # scaled in strips straight into the arrays: no full-size converted copy
            turn = _orientation(img)
            rgb, alpha = _scaled_arrays(img, size, top)
            img.close()
            rgb, alpha = _oriented(rgb, turn), None if alpha is None else _oriented(alpha, turn)
            source = (height, width) if turn in _QUARTER_TURNS else (width, height)
        else:
            before = img.size
            oriented = _apply_orientation(img)
            source = (height, width) if oriented.size != before else (width, height)  # turned a quarter
            rgb, alpha = _arrays(_to_rgb_or_rgba(oriented, top))
    except ServiceError:
        raise
    except Image.DecompressionBombError:
        raise ImageTooLarge(f"{field}: the image declares too many pixels", field=field) from None
    except Exception:  # Pillow raises OSError, SyntaxError, ValueError... on broken files
        raise InvalidImage(f"{field}: the image data is truncated or corrupt", field=field) from None
    finally:
        img.close()
    return DecodedImage(rgb, alpha, fmt, valid_icc_profile(icc), source)


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
# The boxes and item entries walked in a HEIC/AVIF's header to find its primary image's size
# (:func:`heif_primary_size`): a 48-tile iPhone photo has about a hundred items and a few hundred boxes.
MAX_HEIF_BOXES = 1 << 14
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
    - HEIC and AVIF, decoded whole at the size their container declares (``full_size``; no
      reduced-scale decoding): the decoder's planes and the interleaved copy Pillow's image is
      filled from, 4 bytes a pixel through libheif, 6 through libavif (whose frame Pillow copies
      once more); measured peaks for a 12 MP photo: 7.7 and 9.0 bytes a pixel in all;
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
    if img.format in _ISOBMFF_FORMATS:
        pixels = full_size[0] * full_size[1]
        cost = pixels * (per_pixel + (4 if img.format == "HEIF" else 6))
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


def heif_primary_size(data: bytes, field: str = "file") -> tuple[int, int] | None:
    """The (W, H) of a HEIC or AVIF file's primary image as its container declares it, before any
    decoder reads it: the primary item (``pitm``)'s ``ispe`` property, turned by its ``irot``. That
    is what the decoder allocates (for a tiled HEIC, the grid's size); the size the opener reports
    can be smaller (a ``clap`` crop). None when the boxes cannot be followed (the decoder will
    refuse the file). More than ``MAX_HEIF_BOXES`` boxes and item entries walked: refused.

    libheif checks that an HEVC picture is no larger than its item's ``ispe`` before decoding it;
    libavif lets dav1d decode an AV1 picture of any size up to 16384² (400 MB and more) whatever
    ``ispe`` says: so each AV1 item's sequence header is read here too, and a picture larger than
    its item declares is refused as corrupt."""
    steps = [0]
    try:
        meta = _first(_boxes(data, 0, len(data), steps, field), b"meta")
        if meta is None:
            return None
        inside = _boxes(data, meta[0] + 4, meta[1], steps, field)  # a full box: version and flags first
        pitm, iprp = _first(inside, b"pitm"), _first(inside, b"iprp")
        if pitm is None or iprp is None:
            return None
        properties = _boxes(data, *iprp, steps, field)
        ipco, ipma = _first(properties, b"ipco"), _first(properties, b"ipma")
        if ipco is None or ipma is None:
            return None
        listed = _boxes(data, *ipco, steps, field)  # numbered from 1
        associations = _associations(data, ipma, steps, field)

        def declared(item: int) -> tuple[dict[bytes, int], tuple[int, int] | None]:
            """The item's properties (type -> payload start; the first of each type) and its ``ispe``."""
            own = {listed[i - 1][0]: listed[i - 1][1] for i in reversed(associations.get(item, ())) if i <= len(listed)}
            return own, (struct.unpack_from(">II", data, own[b"ispe"] + 4) if b"ispe" in own else None)

        for item, start in _av1_items(data, inside, steps, field):
            try:
                coded, (_, size) = _av1_frame_size(memoryview(data)[start:], steps, field), declared(item)
            except ValueError:
                raise InvalidImage(f"{field}: the AVIF's sequence header is cut short: the file is corrupt",
                                   field=field) from None
            if coded and (size is None or coded[0] > size[0] or coded[1] > size[1]):
                raise InvalidImage(f"{field}: the AVIF's picture is {coded[0]}x{coded[1]}, larger than the image its "
                                   "container declares: the file is corrupt", field=field)
        own, size = declared(struct.unpack_from(">H" if data[pitm[0]] == 0 else ">I", data, pitm[0] + 4)[0])
        return (size[1], size[0]) if size and b"irot" in own and data[own[b"irot"]] & 1 else size
    except (struct.error, IndexError):
        return None


def _boxes(data: bytes, start: int, end: int, steps: list[int], field: str) -> list[tuple[bytes, int, int]]:
    """The ISO-BMFF boxes in ``data[start:end]``: (type, payload start, payload end), each one
    counted in ``steps[0]``."""
    found, pos = [], start
    while pos + 8 <= end:
        _step(steps, field)
        size, kind = struct.unpack_from(">I4s", data, pos)
        head = 16 if size == 1 else 8
        size = int.from_bytes(data[pos + 8:pos + 16], "big") if size == 1 else size or end - pos
        if size < head:
            break
        found.append((kind, pos + head, min(pos + size, end)))
        pos += size
    return found


def _first(boxes: list[tuple[bytes, int, int]], kind: bytes) -> tuple[int, int] | None:
    return next(((start, end) for k, start, end in boxes if k == kind), None)


def _associations(data: bytes, ipma: tuple[int, int], steps: list[int], field: str) -> dict[int, list[int]]:
    """Each item's property indices (1-based, into ``ipco``), as ``ipma`` lists them."""
    version, wide = data[ipma[0]], data[ipma[0] + 3] & 1
    (entries,), pos = struct.unpack_from(">I", data, ipma[0] + 4), ipma[0] + 8
    found: dict[int, list[int]] = {}
    for _ in range(entries):
        _step(steps, field)
        item = struct.unpack_from(">H" if version == 0 else ">I", data, pos)[0]
        pos += 2 if version == 0 else 4
        count, pos = data[pos], pos + 1
        values = struct.unpack_from(">" + ("H" if wide else "B") * count, data, pos)
        found.setdefault(item, [v & (0x7FFF if wide else 0x7F) for v in values if v & (0x7FFF if wide else 0x7F)])
        pos += count * (2 if wide else 1)
    return found


def _av1_items(data: bytes, meta: list[tuple[bytes, int, int]], steps: list[int],
               field: str) -> list[tuple[int, int]]:
    """(item, where its data starts) for each AV1 item (``av01`` in ``iinf``) that ``iloc`` places
    in the file or in ``idat``."""
    iinf, iloc, idat = _first(meta, b"iinf"), _first(meta, b"iloc"), _first(meta, b"idat")
    if iinf is None or iloc is None:
        return []
    av1 = set()
    for kind, start, end in _boxes(data, iinf[0] + (6 if data[iinf[0]] == 0 else 8), iinf[1], steps, field):
        if kind == b"infe" and data[start] >= 2:
            item_type = start + (8 if data[start] == 2 else 10)  # after the item ID and protection index
            if data[item_type:item_type + 4] == b"av01":
                av1.add(struct.unpack_from(">H" if data[start] == 2 else ">I", data, start + 4)[0])
    version, pos = data[iloc[0]], iloc[0] + 4
    offset_size, length_size, base_size = data[pos] >> 4, data[pos] & 15, data[pos + 1] >> 4
    index_size = data[pos + 1] & 15 if version in (1, 2) else 0
    (count,), pos = struct.unpack_from(">H" if version < 2 else ">I", data, pos + 2), pos + (4 if version < 2 else 6)
    found = []
    for _ in range(count):
        _step(steps, field)
        item = struct.unpack_from(">H" if version < 2 else ">I", data, pos)[0]
        pos += 2 if version < 2 else 4
        method = 0
        if version in (1, 2):
            method, pos = struct.unpack_from(">H", data, pos)[0] & 15, pos + 2
        base = int.from_bytes(data[pos + 2:pos + 2 + base_size], "big")  # after the data reference index
        (extents,), pos = struct.unpack_from(">H", data, pos + 2 + base_size), pos + 4 + base_size
        first = base + int.from_bytes(data[pos + index_size:pos + index_size + offset_size], "big")
        pos += extents * (index_size + offset_size + length_size)
        if item in av1 and extents and method in (0, 1) and (method == 0 or idat is not None):
            found.append((item, first if method == 0 else idat[0] + first))
    return found


def _av1_frame_size(obus: memoryview, steps: list[int], field: str) -> tuple[int, int] | None:
    """The largest frame (W, H) that the AV1 sequence header in the OBUs of ``obus`` allows (after
    any others: padding, metadata), each OBU counted in ``steps[0]``; None if there is none."""
    pos = 0
    while pos < len(obus):
        _step(steps, field)
        header = obus[pos]
        pos += 2 if header & 4 else 1  # the extension byte
        size = len(obus) - pos
        if header & 2:  # a size field, leb128
            size, shift = 0, 0
            while pos < len(obus) and shift < 56:
                size, pos, shift = size | (obus[pos] & 0x7F) << shift, pos + 1, shift + 7
                if not obus[pos - 1] & 0x80:
                    break
        if header >> 3 & 15 == 1:
            return _sequence_header_frame(bytes(obus[pos:pos + min(size, 1024)]))  # a real one: under 400 bytes
        pos += size
    return None


def _sequence_header_frame(payload: bytes) -> tuple[int, int]:
    """``max_frame_width`` and ``max_frame_height`` of an AV1 sequence header (the AV1 spec, 5.5.1);
    ValueError if it ends before them."""
    value, left = int.from_bytes(payload, "big"), len(payload) * 8

    def bits(n: int) -> int:
        nonlocal left
        if n > left:
            raise ValueError("the sequence header ends early")
        left -= n
        return value >> left & ((1 << n) - 1)

    bits(3)  # seq_profile
    bits(1)  # still_picture
    if bits(1):  # reduced_still_picture_header
        bits(5)
    else:
        model, delay_bits = 0, 0
        if bits(1):  # timing_info_present_flag
            bits(64)
            if bits(1):  # equal_picture_interval: num_ticks_per_picture_minus_1, uvlc
                zeros = 0
                while not bits(1) and zeros < 32:
                    zeros += 1
                bits(zeros if zeros < 32 else 0)
            model = bits(1)
            if model:
                delay_bits = bits(5) + 1
                bits(42)
        display_delay = bits(1)
        for _ in range(bits(5) + 1):  # operating points
            bits(12)
            if bits(5) > 7:
                bits(1)
            if model and bits(1):
                bits(2 * delay_bits + 1)
            if display_delay and bits(1):
                bits(4)
    width_bits, height_bits = bits(4) + 1, bits(4) + 1
    return bits(width_bits) + 1, bits(height_bits) + 1


def _step(steps: list[int], field: str) -> None:
    steps[0] += 1
    if steps[0] > MAX_HEIF_BOXES:
        raise ImageTooComplex(f"{field}: the HEIC/AVIF has more than {MAX_HEIF_BOXES:,} boxes and item entries "
                              "before its image; a phone's photo has a few hundred", field=field)


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
    if _ftyp_brands(data) & _ISOBMFF_BRANDS:  # ours, but neither libavif nor libheif could read its structure
        raise InvalidImage(f"{field}: the HEIC/AVIF image is truncated or corrupt", field=field)
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
_ISOBMFF_FORMATS = ("AVIF", "HEIF")
_ISOBMFF_BRANDS = {b"avif", b"avis", b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs",
                   b"mif1", b"msf1"}


def _ftyp_brands(data: bytes) -> set[bytes]:
    """The brands of an ISO-BMFF file's ``ftyp`` box (major and compatible: a phone's HEIC says
    ``heic``, an AVIF ``avif``, either may say only ``mif1`` first); empty for other files."""
    if data[4:8] != b"ftyp":
        return set()
    box = data[8:min(int.from_bytes(data[:4], "big"), 256)]
    return {box[i:i + 4] for i in range(0, len(box) - 3, 4) if i != 4}  # 4: the minor version


def _apply_orientation(img: Image.Image) -> Image.Image:
    """``img`` turned upright by its EXIF orientation, in place (a copy of a 12 MP photo is 48 MB)."""
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except Exception:  # a broken EXIF block must not cost the user the image
        pass
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
        return img if img.mode == "RGB" else img.convert("RGB")
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


def _work_size(size: tuple[int, int], max_dimension: int, work_pixels: float | None) -> tuple[int, int]:
    """The size an image of ``size`` is worked at: its longest side at most ``max_dimension``
    (rounded, as Pillow's thumbnails), then at most ``work_pixels`` pixels (:func:`fitted_size`)."""
    width, height = size
    longest = max(width, height)
    if longest > max_dimension:
        scale = max_dimension / longest
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return size if work_pixels is None else fitted_size(size, work_pixels)


SCALE_STRIP_ROWS = 256  # output rows resampled at a time by :func:`_scaled_arrays`


def _scaled_arrays(img: Image.Image, size: tuple[int, int], top: float) -> tuple[np.ndarray, np.ndarray | None]:
    """``img`` (loaded, any mode) scaled to ``size`` with Lanczos, as RGB and alpha arrays (None:
    opaque throughout). Each strip of output rows is resampled from its source rows plus the
    filter's reach on either side (``box``), converted to 8-bit RGB(A) first (:func:`_resizable`,
    high bit depths by ``top``; alpha premultiplied by Pillow): the same pixels as one whole resize,
    within a strip's memory."""
    width, height = img.size
    out_w, out_h = size
    with_alpha = img.mode in _ALPHA_MODES or "transparency" in img.info
    rgb = np.empty((out_h, out_w, 3), np.uint8)
    alpha = np.empty((out_h, out_w), np.uint8) if with_alpha else None
    sy = height / out_h
    reach = math.ceil(3 * max(1.0, sy)) + 2  # Lanczos' three lobes, in source rows
    for row in range(0, out_h, SCALE_STRIP_ROWS):
        rows = min(SCALE_STRIP_ROWS, out_h - row)
        y0, y1 = row * sy, (row + rows) * sy
        c0, c1 = max(0, math.floor(y0) - reach), min(height, math.ceil(y1) + reach)
        strip = _resizable(img.crop((0, c0, width, c1)), top)
        if strip.mode.startswith("I;16") or strip.mode in ("I", "F"):
            strip = _high_bit_depth_to_l(strip, top)
        strip = strip.convert("RGBA" if with_alpha else "RGB")
        pixels = np.asarray(strip.resize((out_w, rows), Image.Resampling.LANCZOS, box=(0, y0 - c0, width, y1 - c0)))
        rgb[row:row + rows] = pixels[..., :3]
        if alpha is not None:
            alpha[row:row + rows] = pixels[..., 3]
    if alpha is not None and alpha.min() == 255:
        alpha = None
    return rgb, alpha


_TURNS = {  # EXIF orientation -> the array view that turns it upright (as ImageOps.exif_transpose)
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}
_QUARTER_TURNS = (5, 6, 7, 8)


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block must not cost the user the image
        return 1


def _oriented(pixels: np.ndarray, orientation: int) -> np.ndarray:
    turn = _TURNS.get(orientation)
    return pixels if turn is None else np.ascontiguousarray(turn(pixels))


def _arrays(img: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """An RGB or RGBA image as its RGB and alpha arrays (None: RGB), each made once."""
    if img.mode == "RGB":
        return np.asarray(img), None
    both = np.asarray(img)
    img.close()
    return np.ascontiguousarray(both[..., :3]), np.ascontiguousarray(both[..., 3])


def encode_image(
    img: Image.Image, fmt: str, *, quality: int, png_compress_level: int, icc_profile: bytes | None = None
) -> bytes:
    """Encode ``img`` as ``fmt`` (png | webp | jpeg | heic | avif | zip). WebP at quality 100 is
    lossless. HEIC and AVIF keep alpha. Their encoders run at faster settings than their defaults,
    measured on a 1000x667 photo and a 1024x768 cut-out: x265's ``ultrafast`` preset (a quarter of
    the time of ``fast`` and a sixth of the default's, 15% less memory, files 20% larger at the same
    PSNR), libaom's speed 8 (a third of the time of its default 6, files 3% larger). An opaque HEIC
    is written as a grid of 512 px tiles, as an iPhone writes it: x265 then holds one tile, not the
    picture (a 12 MP encode peaked at 71 MB instead of 241); pillow-heif writes an image with alpha
    whole (readers such as Apple's ignore alpha on tiles): 389 MB at 12 MP."""
    if fmt == "zip":
        return _zip(img, quality=quality, png_compress_level=png_compress_level, icc_profile=icc_profile)
    pil_format = OUTPUT_FORMATS[fmt][0]
    if pil_format == "PNG" and png.writes(img, png_compress_level):  # the fast levels: 5x Pillow's speed
        return png.encode(img, png_compress_level, icc_profile)
    options: dict[str, object] = {}
    if icc_profile and img.mode in ("RGB", "RGBA"):
        options["icc_profile"] = icc_profile
    if pil_format == "PNG":
        options["compress_level"] = png_compress_level
    elif pil_format == "WEBP":
        options.update(quality=quality, lossless=quality >= 100, method=4)
    elif pil_format == "HEIF":
        options.update(quality=quality, enc_params={"preset": "ultrafast"}, tile_size=_HEIC_TILE)
    elif pil_format == "AVIF":
        options.update(quality=quality, speed=8)
    else:
        if img.mode not in ("RGB", "L"):
            img = img.convert("RGB")
        options.update(quality=quality)
    buf = io.BytesIO()
    img.save(buf, pil_format, **options)
    return buf.getvalue()


_HEIC_TILE = 512

# What an encoder holds besides the image it writes, in bytes a pixel of that image, by (format,
# with alpha): the most of its peak RSS over 4, 8 and 12 MP cut-outs (benchmarks/encode_memory.py,
# Intel Xeon, 2 cores). Formats not named stream their output (PNG, JPEG: under 10 MB at 12 MP), or,
# for an opaque HEIC, write 512 px tiles (68 MB at 12 MP). Pillow writes WebP through libwebp's
# animation encoder (canvases, and a lossless VP8L alpha plane); libheif and libavif convert the
# whole picture to YUV and more. With MAX_ENCODE_MB 128: WebP with alpha 5.59 MP, HEIC with alpha
# 3.27 MP, AVIF 4.47 MP (4.97 opaque); WebP opaque (7 B/px) is never capped under 16.7 MP.
ENCODER_BYTES_PER_PIXEL: dict[tuple[str, bool], float] = {
    ("webp", True): 24.0, ("webp", False): 7.0, ("heic", True): 41.0, ("avif", True): 30.0, ("avif", False): 27.0,
}


def encodable_megapixels(fmt: str, alpha: bool, budget_bytes: float) -> float | None:
    """The most megapixels an output in ``fmt`` (with ``alpha``) may have for its encoder to stay
    within ``budget_bytes`` (2 decimals, rounded down); None: no limit from the encoder."""
    per_pixel = ENCODER_BYTES_PER_PIXEL.get((fmt, alpha))
    return None if per_pixel is None else math.floor(budget_bytes / per_pixel / 1e4) / 100


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
