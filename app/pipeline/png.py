"""PNG output at the fast compression levels: each row filtered by PNG's ``Up`` filter (numpy),
deflated by ISA-L (``isal``, Intel's Intelligent Storage Acceleration Library), written as a
standard PNG: 8-bit greyscale, RGB or RGBA, an ``iCCP`` chunk when the photo had a colour profile.

Why not Pillow at these levels: Pillow's PNG encoder picks the best of five filters for every row
(half its time) and deflates with zlib. On 22 real cut-outs at level 1 this takes a median 0.13x
Pillow's time (a 1.7 MP cut-out ~10 ms against ~75; ``Up`` on every row costs ~1 ms, ISA-L
deflates 3-4x faster than zlib), for files of the same size at the median (0.94-1.11x;
``benchmarks/bench_png.py``, Intel Xeon, 2026-12-07). Levels 0 and 4-9 stay Pillow's:
whoever asks for them wants the smallest file more than the time.

The rows are read, filtered and deflated in strips of :data:`STRIP_BYTES`, so the writer holds one
strip beside the compressed output, never a second copy of the picture.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from isal import isal_zlib
from PIL import Image

# Pillow's mode -> PNG's colour type and channels
COLOR_TYPES = {"L": (0, 1), "RGB": (2, 3), "RGBA": (6, 4)}
LEVELS = range(1, 4)  # ISA-L's levels; PNG_COMPRESS_LEVEL 1-3 maps to them one for one
STRIP_BYTES = 1 << 18  # 256 KiB: within the caches (12 ms a 1.7 MP cut-out; 1 MiB 12.3, 4 MiB 17.9)
_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_UP = 2  # PNG's filter type: each byte minus the byte above it


def writes(img: Image.Image, level: int) -> bool:
    """This writer encodes ``img`` at ``level`` (else Pillow does)."""
    return img.mode in COLOR_TYPES and level in LEVELS


def encode(img: Image.Image, level: int, icc_profile: bytes | None = None) -> bytes:
    """``img`` (a mode of :data:`COLOR_TYPES`) as PNG bytes, deflated by ISA-L at ``level``; with
    ``icc_profile`` where it is in colour (a profile describes RGB, not a mask's grey)."""
    color_type, channels = COLOR_TYPES[img.mode]
    width, height = img.size
    stride = width * channels
    out = io.BytesIO()
    out.write(_SIGNATURE)
    _chunk(out, b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0))
    if icc_profile and color_type != 0:
        # the profile's name (any, 1-79 Latin-1 bytes), NUL, compression method 0, the zlib stream
        _chunk(out, b"iCCP", b"ICC Profile\0\0" + zlib.compress(icc_profile))
    deflate = isal_zlib.compressobj(level)
    above = np.zeros(stride, np.uint8)
    rows = max(1, STRIP_BYTES // (stride + 1))
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        strip = np.frombuffer(img.crop((0, top, width, bottom)).tobytes(), np.uint8).reshape(bottom - top, stride)
        filtered = np.empty((bottom - top, stride + 1), np.uint8)
        filtered[:, 0] = _UP
        np.subtract(strip[0], above, out=filtered[0, 1:])
        np.subtract(strip[1:], strip[:-1], out=filtered[1:, 1:])
        above = strip[-1]
        _chunk(out, b"IDAT", deflate.compress(filtered))  # one IDAT a strip: the stream split anywhere
    _chunk(out, b"IDAT", deflate.flush())
    _chunk(out, b"IEND", b"")
    return out.getvalue()


def _chunk(out: io.BytesIO, kind: bytes, data: bytes) -> None:
    if not data and kind == b"IDAT":  # a strip the deflater kept whole in its window: nothing to write yet
        return
    out.write(struct.pack(">I", len(data)) + kind)
    out.write(data)
    out.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind))))
