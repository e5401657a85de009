"""Hostile clients and hostile images, shared by the hardening tests and `make loadtest`.

Clients: connections that send one byte and wait, that announce a body and send five
bytes of it, that drip their headers a byte at a time, and honest phones uploading
slowly. Images: small files that are expensive to decode (a progressive JPEG whose scans
repeat thousands of times, millions of tiny blocks before a first frame) or large once
decoded (lossless WebP, tall PNG, 16-bit PNG, float TIFF, a huge progressive JPEG), and
animations or multi-page files of 50,000 frames.
"""

from __future__ import annotations

import io
import socket
import struct
import threading
import time
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

# -- clients ---------------------------------------------------------------------------------

SLOW_KINDS = ("one_byte", "short_body", "drip_headers")


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


@contextmanager
def slow_connections(port: int, count: int, kinds: tuple[str, ...] = SLOW_KINDS) -> Iterator[list[socket.socket]]:
    """``count`` connections that never finish their request, spread over ``kinds``; the
    dripping ones get one more header byte per second from a thread while the block runs."""
    socks: list[tuple[str, socket.socket]] = []
    drip_text = b"GET /api/bg/health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4000
    for i in range(count):
        kind = kinds[i % len(kinds)]
        s = _connect(port)
        if kind == "one_byte":
            s.sendall(b"P")
        elif kind == "short_body":
            s.sendall(b"POST /api/bg/remove HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                      b"Content-Type: multipart/form-data; boundary=b\r\n\r\nhello")
        else:
            s.sendall(drip_text[:1])
        socks.append((kind, s))
    stop = threading.Event()

    def drip() -> None:
        sent = 1
        while not stop.wait(1.0) and sent < len(drip_text):
            for kind, s in socks:
                if kind == "drip_headers":
                    try:
                        s.sendall(drip_text[sent:sent + 1])
                    except OSError:
                        pass
            sent += 1

    thread = threading.Thread(target=drip, daemon=True)
    thread.start()
    try:
        yield [s for _, s in socks]
    finally:
        stop.set()
        thread.join()
        for _, s in socks:
            s.close()


def multipart(fields: dict[str, str], file_name: str, data: bytes, boundary: str = "hostile-boundary") -> tuple[bytes, str]:
    """A multipart/form-data body with ``fields`` and one file part; (body, content type)."""
    parts = []
    for key, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
                 f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def read_response(sock: socket.socket, timeout_s: float) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response from ``sock`` (Content-Length framed; or until close)."""
    sock.settimeout(timeout_s)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a response: {buf[:200]!r}")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    length = int(headers.get("content-length", -1))
    while length < 0 or len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return status, headers, body


def raw_request(port: int, request: bytes, timeout_s: float = 10) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` bytes as they are and read the answer."""
    with _connect(port) as s:
        s.sendall(request)
        return read_response(s, timeout_s)


def slow_upload(port: int, path: Path, rate_bytes_s: int, endpoint: str = "/api/bg/remove",
                timeout_s: float = 120) -> tuple[int, dict[str, str], bytes]:
    """An honest phone on a slow link: the whole upload, sent at ``rate_bytes_s``."""
    body, ctype = multipart({}, path.name, path.read_bytes())
    head = (f"POST {endpoint} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    chunk = max(1, rate_bytes_s // 10)
    with _connect(port) as s:
        s.sendall(head)
        for start in range(0, len(body), chunk):
            s.sendall(body[start:start + chunk])
            time.sleep(0.1)
        return read_response(s, timeout_s)


# -- images ----------------------------------------------------------------------------------

def _encode(img: Image.Image, fmt: str, **save) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def _segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of every JPEG segment up to EOI; a scan runs to the next marker."""
    out, pos = [], 2
    while pos < len(data) - 1:
        assert data[pos] == 0xFF, pos
        marker = data[pos + 1]
        if marker == 0xD9:
            out.append((marker, pos, pos + 2))
            break
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        end = pos + 2 + length
        if marker == 0xDA:  # entropy-coded data follows, up to a marker that is not a stuffed 0xFF00 or RSTn
            while not (data[end] == 0xFF and data[end + 1] not in (0x00, *range(0xD0, 0xD8))):
                end += 1
        out.append((marker, pos, end))
        pos = end
    return out


def scan_bomb_jpeg(side: int = 2048, repeats: int = 2000) -> bytes:
    """A valid progressive JPEG whose last AC scan is repeated ``repeats`` times: small (a flat
    image's scans are a few bytes), and each repeat costs the decoder a pass over every block."""
    data = _encode(Image.new("RGB", (side, side), (90, 140, 60)), "JPEG", quality=90, progressive=True)
    segments = _segments(data)
    scans = [(s, e) for m, s, e in segments if m == 0xDA]
    start, end = scans[-1]
    eoi = segments[-1][1]
    return data[:eoi] + data[start:end] * repeats + data[eoi:]


def huge_progressive_jpeg(side: int = 13000, subsampling: int = 0) -> bytes:
    """A flat ``side``² progressive JPEG (4:4:4 by default): a couple of MB, ~1 GB of coefficients."""
    return _encode(Image.new("RGB", (side, side), (120, 160, 200)), "JPEG", quality=50, progressive=True,
                   subsampling=subsampling)


def lossless_webp_rgba(side: int = 4096) -> bytes:
    img = Image.new("RGBA", (side, side), (200, 100, 50, 255))
    img.paste((10, 20, 30, 0), (0, 0, side // 2, side // 2))
    return _encode(img, "WEBP", lossless=True)


def tall_png(width: int = 4, height: int = 4194304) -> bytes:
    return _encode(Image.new("RGB", (width, height), (0, 128, 255)), "PNG", optimize=True)


def png16(side: int = 4096) -> bytes:
    grey = (np.arange(side * side, dtype=np.uint32) % 65536).astype(np.uint16).reshape(side, side)
    return _encode(Image.fromarray(grey), "PNG")


def float_tiff(side: int = 4096) -> bytes:
    return _encode(Image.fromarray(np.full((side, side), 0.5, np.float32), "F"), "TIFF", compression="tiff_deflate")


def palette_png(side: int = 4096, transparent: bool = False) -> bytes:
    img = Image.new("P", (side, side), 1)
    img.putpalette([0, 0, 0, 250, 120, 30] + [0] * 762)
    img.paste(0, (0, 0, side // 2, side // 2))
    return _encode(img, "PNG", **({"transparency": 0} if transparent else {}))


def keyed_png16(side: int = 4096) -> bytes:
    grey = np.full((side, side), 40000, np.uint16)
    grey[: side // 2, : side // 2] = 7
    return _encode(Image.fromarray(grey), "PNG", transparency=7)


def rgba_png(side: int = 4096) -> bytes:
    img = Image.new("RGBA", (side, side), (30, 90, 200, 255))
    img.paste((0, 0, 0, 0), (0, 0, side // 2, side // 2))
    return _encode(img, "PNG")


def memory_bombs() -> dict[str, bytes]:
    """Small uploads that are large once decoded, each within today's pixel limit."""
    return {
        "lossless_webp_4096_rgba.webp": lossless_webp_rgba(),
        "tall_4x4194304.png": tall_png(),
        "png16_4096.png": png16(),
        "float_4096.tif": float_tiff(),
        "palette_4096.png": palette_png(),
        "palette_transparent_4096.png": palette_png(transparent=True),
        "png16_keyed_4096.png": keyed_png16(),
        "rgba_4096.png": rgba_png(),
    }


def tiff_strip_bomb(height: int = 2_090_000) -> bytes:
    """An 8-bit grey TIFF 1 pixel wide in one-row strips (the held-out probe's file, 8.4 MB): every
    strip points at the same pixel; its offsets and byte counts are the whole file."""
    tags = [(256, 3, 1, 1), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
            (273, 3, height, 0), (277, 3, 1, 1), (278, 3, 1, 1), (279, 3, height, 0)]
    pixel = 8 + 2 + 12 * len(tags) + 4
    offsets = pixel + 2
    counts = offsets + 2 * height
    ifd = b"".join(struct.pack("<HHI", tag, kind, count) + (
        struct.pack("<I", offsets if tag == 273 else counts) if count > 2 else
        struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)) for tag, kind, count, value in tags)
    head = b"II*\x00" + struct.pack("<IH", 8, len(tags)) + ifd + b"\x00" * 4 + b"\x00\x00"
    return head + struct.pack("<H", pixel) * height + struct.pack("<H", 1) * height


def bmp_rle_bomb(side: int = 2046) -> bytes:
    """An 8-bit RLE BMP made of runs of one pixel: 2 bytes of file per pixel (8 MB at 2046², under the 8 MiB upload limit),
    each run a step of Pillow's Python decoder."""
    runs = (b"\x01\x07\x01\x09" * (side // 2) + b"\x00\x00") * side + b"\x00\x01"
    return _bmp_rle(side, side, runs)


def _bmp_rle(width: int, height: int, runs: bytes) -> bytes:
    palette = b"".join(bytes((i, i, i, 0)) for i in range(256))
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(runs), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(runs), 0, 0, offset) + info + palette + runs


def bmp_rle(side: int = 256) -> bytes:
    """A modest RLE BMP as a drawing program writes one: rows of long runs."""
    rows = b"".join((bytes((side // 2, y % 256, side - side // 2, 255 - y % 256)) + b"\x00\x00") for y in range(side))
    return _bmp_rle(side, side, rows + b"\x00\x01")


def heic_header(brand: bytes = b"heic", compatible: tuple[bytes, ...] = (b"mif1", b"heic")) -> bytes:
    """The start of an ISO-BMFF image (``ftyp`` and an empty ``meta``): a HEIC/AVIF with no image in it: corrupt."""
    ftyp = brand + b"\x00\x00\x00\x00" + b"".join(compatible)
    return struct.pack(">I", 8 + len(ftyp)) + b"ftyp" + ftyp + struct.pack(">I", 12) + b"meta" + b"\x00" * 4


def ico_png_bomb(side: int = 12000) -> bytes:
    """An icon whose one entry is a ``side``² greyscale PNG (a 140 KB file): Pillow's icon reader
    decodes it when it opens the file."""
    png = _encode(Image.new("L", (side, side)), "PNG")
    return struct.pack("<HHHBBBBHHII", 0, 1, 1, 0, 0, 0, 0, 1, 32, len(png), 22) + png


# -- animations and multi-page files: many frames, or a tiny frame on a large canvas ---------

def gif_animation(frames: int = 50_000, screen: tuple[int, int] = (1, 1)) -> bytes:
    """A looping GIF of ``frames`` 1x1 frames on a ``screen`` logical screen, written by hand
    (Pillow's writer merges identical frames): 23 bytes a frame, 1.1 MB for 50,000."""
    lzw = b"\x02\x02\x44\x01\x00"  # minimum code size 2; clear, index 0, end; no more blocks
    frame = (b"\x21\xf9\x04\x04\x02\x00\x00\x00"  # graphic control: keep, 20 ms
             + b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + lzw)
    head = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\x00\x00\x00\xff\x80\x00"
    loop = b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
    return head + loop + frame * frames + b"\x3b"


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def apng_animation(frames: int = 50_000, screen: tuple[int, int] = (1, 1)) -> bytes:
    """An APNG of ``frames`` frames (acTL counts them all, each an fcTL and an IDAT or fdAT);
    the first frame is the ``screen``-sized default image, the others 1x1: 3.3 MB for 50,000."""
    width, height = screen
    first = zlib.compress((b"\x00" + b"\x00\x80\xff" * width) * height)
    pixel = zlib.compress(b"\x00\xff\x80\x00")
    out = [b"\x89PNG\r\n\x1a\n", _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)),
           _png_chunk(b"acTL", struct.pack(">II", frames, 0))]
    seq = 0
    for i in range(frames):
        size = screen if i == 0 else (1, 1)
        out.append(_png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", seq, *size, 0, 0, 2, 100, 0, 0)))
        seq += 1
        if i == 0:
            out.append(_png_chunk(b"IDAT", first))
        else:
            out.append(_png_chunk(b"fdAT", struct.pack(">I", seq) + pixel))
            seq += 1
    out.append(_png_chunk(b"IEND", b""))
    return b"".join(out)


def webp_animation(frames: int = 50_000, screen: tuple[int, int] = (1, 1)) -> bytes:
    """An animated WebP of ``frames`` 1x1 lossless frames on a ``screen`` canvas, muxed by hand
    (libwebp's encoder merges identical frames): 46 bytes a frame, 2.3 MB for 50,000."""
    still = _encode(Image.new("RGBA", (1, 1), (255, 128, 0, 255)), "WEBP", lossless=True)
    bitstream = still[12:]  # the VP8L chunk, padded
    anmf = b"ANMF" + struct.pack("<I", 16 + len(bitstream)) + b"\x00" * 6 + b"\x00" * 6 + \
        (20).to_bytes(3, "little") + b"\x00" + bitstream
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x12\x00\x00\x00" + \
        (screen[0] - 1).to_bytes(3, "little") + (screen[1] - 1).to_bytes(3, "little")
    anim = b"ANIM" + struct.pack("<I", 6) + b"\x00\x00\x00\x00\x00\x00"
    body = b"WEBP" + vp8x + anim + anmf * frames
    return b"RIFF" + struct.pack("<I", len(body)) + body


def mpo_entries(entries: int = 4092) -> bytes:
    """A 64x48 JPEG whose MP index (APP2 ``MPF``) lists ``entries`` pictures, the most one
    65,535-byte segment holds; every entry points at the first picture."""
    jpeg = _encode(Image.new("RGB", (64, 48), (90, 140, 60)), "JPEG", quality=90)
    table = struct.pack("<IIIHH", 0x20030000, len(jpeg), 0, 0, 0) * entries
    ifd_start = 8
    data_offset = ifd_start + 2 + 3 * 12 + 4
    ifd = struct.pack("<H", 3) + struct.pack("<HHI4s", 0xB000, 7, 4, b"0100") + \
        struct.pack("<HHII", 0xB001, 4, 1, entries) + struct.pack("<HHII", 0xB002, 7, len(table), data_offset) + \
        b"\x00" * 4
    mpf = b"MPF\x00" + b"II*\x00" + struct.pack("<I", ifd_start) + ifd + table
    return jpeg[:2] + b"\xff\xe2" + struct.pack(">H", 2 + len(mpf)) + mpf + jpeg[2:]


def tiff_pages(pages: int = 50_000, deflate: bool = False) -> bytes:
    """A TIFF of ``pages`` chained directories, each a 1x1 grey page (every strip the same
    pixel, raw for Pillow's own decoder or ``deflate`` for libtiff's): 114 bytes a page, 5.7 MB
    for 50,000."""
    entries = 9
    size = 2 + 12 * entries + 4
    pixel = 8 + size * pages
    strip = zlib.compress(b"\x80") if deflate else b"\x80"
    out = [b"II*\x00" + struct.pack("<I", 8)]
    for page in range(pages):
        following = 8 + size * (page + 1) if page + 1 < pages else 0
        tags = [(256, 3, 1, 1), (257, 3, 1, 1), (258, 3, 1, 8), (259, 3, 1, 8 if deflate else 1), (262, 3, 1, 1),
                (273, 4, 1, pixel), (277, 3, 1, 1), (278, 3, 1, 1), (279, 4, 1, len(strip))]
        out.append(struct.pack("<H", entries) + b"".join(
            struct.pack("<HHI", tag, kind, count) + (struct.pack("<HH", value, 0) if kind == 3 else
                                                     struct.pack("<I", value)) for tag, kind, count, value in tags)
            + struct.pack("<I", following))
    out.append(strip)
    return b"".join(out)


# -- many small blocks before the first frame: Pillow reads each in Python -------------------

def jpeg_marker_bomb(count: int = 2_090_000, filler: bytes = b"\xff\xee\x00\x02") -> bytes:
    """A 64x48 JPEG with ``filler`` repeated ``count`` times after its first segment: empty APP14
    segments by default (4 bytes each, 8 MB), or 0xFF fill bytes, or junk bytes."""
    jpeg = _encode(Image.new("RGB", (64, 48), (90, 140, 60)), "JPEG", quality=90)
    first = 4 + int.from_bytes(jpeg[4:6], "big")  # SOI and APP0
    return jpeg[:first] + filler * count + jpeg[first:]


def png_chunk_bomb(count: int = 690_000, kind: bytes = b"zzZz") -> bytes:
    """A 64x48 PNG with ``count`` empty chunks of ``kind`` (12 bytes each, 8 MB): before the image
    data, or after its first chunk for IDAT."""
    png = _encode(Image.new("RGB", (64, 48), (90, 140, 60)), "PNG")
    at = png.index(b"IDAT") - 4
    if kind == b"IDAT":
        at += 12 + int.from_bytes(png[at:at + 4], "big")
    return png[:at] + _png_chunk(kind, b"") * count + png[at:]


def png_rechunked(png: bytes, size: int) -> bytes:
    """``png`` with its image data split in IDAT chunks of ``size`` bytes (as some writers do)."""
    chunks, pos, idat = [], 8, b""
    while pos < len(png):
        length = int.from_bytes(png[pos:pos + 4], "big")
        kind, body = png[pos + 4:pos + 8], png[pos + 8:pos + 8 + length]
        if kind == b"IDAT":
            idat += body
        else:
            if idat:
                chunks += [_png_chunk(b"IDAT", idat[i:i + size]) for i in range(0, len(idat), size)]
                idat = b""
            chunks.append(_png_chunk(kind, body))
        pos += 12 + length
    return png[:8] + b"".join(chunks)


def gif_block_bomb(count: int = 4_190_000, kind: str = "sub-blocks") -> bytes:
    """A one-pixel GIF with ``count`` blocks before its image (8 MB): a comment of one-byte
    ``sub-blocks``, ``extensions`` (empty comments, 3 bytes each) or ``stray`` bytes."""
    one = gif_animation(1)
    at = 13 + 6 + 19  # header, colour table, loop extension
    blocks = {"sub-blocks": b"\x21\xfe" + b"\x01x" * count + b"\x00",
              "extensions": b"\x21\xfe\x00" * count, "stray": b"\x00" * count}[kind]
    return one[:at] + blocks + one[at:]
