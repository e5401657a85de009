"""The compiled kernels (effects/_kernels.c) called directly with hostile arrays: every bad call raises.

The kernels take their sizes from the arrays themselves (shape, dtype, contiguity), never
from separate width/height arguments, and check them before touching a pixel. Each
kernel's crafted calls run in a child interpreter, so that a kernel that reads or writes
out of bounds shows up as a failed test (the child's crash, naming the call it was
running) instead of taking pytest down with it.

The first case of each kernel is the old signature, with a width and height whose product
wraps around: ``w*h*4`` modulo 2**64 matched a tiny buffer, and the loops (or the row
buffers, allocated with the same wrapped products) then ran over ``w`` columns. That
segfaulted diffuse, tone_sums, film_print and luma; it must now be refused outright.
"""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from effects import _kernels, blackwhite, pixels

ROOT = Path(__file__).resolve().parent.parent

# Names every case can use: a valid set of arguments for each kernel, and ways to spoil them.
SETUP = """
import numpy as np
from effects import _kernels as k, blackwhite, pixels

H, W = 6, 5
rgba = np.arange(H * W * 4, dtype=np.uint8).reshape(H, W, 4)
shares = np.ascontiguousarray(pixels.share_tables(blackwhite.TRI_X_WEIGHTS))
tone = blackwhite.tone_table(1.0, 1.0)
gauss = blackwhite.GAUSSIAN_BYTES
amp = blackwhite.grain_amplitude(tone, 0.5)
one, zero = np.ones((2, 2), np.float32), np.zeros((2, 2), np.float32)
levels = np.full((H, W), 100.0, np.float32)
indices = np.zeros((H, W), np.uint8)
colours = np.array([[1, 2, 3], [4, 5, 6]], np.uint8)


def out_rgba(shape=(H, W, 4), dtype=np.uint8):
    return np.zeros(shape, dtype)


def out_plane(shape=(H, W), dtype=np.float32):
    return np.zeros(shape, dtype)


def ro(a):
    a = np.array(a)
    a.setflags(write=False)
    return a


def strided(a):
    # the same values, every other element of a twice-as-wide array: not C-contiguous
    wide = np.repeat(a, 2, axis=a.ndim - 1) if a.ndim > 1 else np.repeat(a, 2)
    return wide[..., ::2]


def huge(shape, dtype=np.uint8):
    # a zero-stride view claiming an enormous shape over a few bytes of memory
    return np.broadcast_to(np.zeros(1, dtype), shape)


def sums(shape=(2, 2), dtype=np.float64):
    return np.zeros(shape, dtype)


def bw(**bad):
    args = dict(rgba=rgba, shares=shares, tone=tone, gauss=gauss, amp=amp, k1=one, k2=zero, seed=7, out=out_rgba())
    args.update(bad)
    return k.film_print(*args.values())


def ts(**bad):
    args = dict(rgba=rgba, shares=shares, tone=tone, sums=sums(), squares=sums())
    args.update(bad)
    return k.tone_sums(*args.values())


def lu(**bad):
    args = dict(rgba=rgba, wr=0.2126, wg=0.7152, wb=0.0722, out=out_plane())
    args.update(bad)
    return k.luma(*args.values())


def pa(**bad):
    args = dict(indices=indices, colours=colours, rgba=rgba, out=out_rgba())
    args.update(bad)
    return k.paint(*args.values())


def di(values=levels):
    return k.diffuse(values, 127.5, True)
"""

# The child: evaluates each (label, expression, exception, words) read from stdin, and prints a JSON line per case.
CHILD = SETUP + """
import json, sys
for label, expr, exc, words in json.load(sys.stdin):
    print(json.dumps({"start": label}), flush=True)
    try:
        eval(expr)
    except Exception as e:
        result = {"label": label, "raised": type(e).__name__, "message": str(e)}
    else:
        result = {"label": label, "raised": None}
    print(json.dumps(result), flush=True)
"""

T, V = "TypeError", "ValueError"

# (label, expression, the exception it must raise, words its message must contain)
CASES = {
    "diffuse": [
        ("old signature, wrapping width*height", "k.diffuse(np.zeros(4, np.float32), 2**62 + 1, 4, 127.5, False)", T, []),
        ("float64 values", "di(levels.astype(np.float64))", T, ["values", "float32"]),
        ("uint8 values", "di(levels.astype(np.uint8))", T, ["values", "float32"]),
        ("bytes", "di(bytes(4 * H * W))", T, ["values", "float32"]),
        ("not an array", "di([[1.0, 2.0]])", T, ["values"]),
        ("1-D values", "di(levels.ravel())", V, ["values", "dimensions"]),
        ("3-D values", "di(levels[None])", V, ["values", "dimensions"]),
        ("non-contiguous values", "di(strided(levels))", V, ["values", "C-contiguous"]),
        ("transposed values", "di(levels.T)", V, ["values", "C-contiguous"]),
        ("huge zero-stride values", "di(huge((2**31, 2**29), np.float32))", V, ["values", "C-contiguous"]),
        ("empty values", "di(np.zeros((0, W), np.float32))", V, ["values", "empty"]),
        ("empty rows", "di(np.zeros((H, 0), np.float32))", V, ["values", "empty"]),
    ],
    "tone_sums": [
        ("old signature, wrapping width*height",
         "k.tone_sums(np.zeros(32, np.uint8), 2**61 + 1, 8, shares, tone, 1, 1, np.zeros(1), np.zeros(1))", T, []),
        ("flat rgba", "ts(rgba=rgba.ravel())", V, ["rgba", "dimensions"]),
        ("RGB, not RGBA", "ts(rgba=rgba[..., :3].copy())", V, ["rgba", "channels"]),
        ("uint16 rgba", "ts(rgba=rgba.astype(np.uint16))", T, ["rgba", "uint8"]),
        ("non-contiguous rgba", "ts(rgba=rgba[:, ::2])", V, ["rgba", "C-contiguous"]),
        ("huge zero-stride rgba", "ts(rgba=huge((2**30, 2**30, 4)))", V, ["rgba", "C-contiguous"]),
        ("empty rgba", "ts(rgba=np.zeros((0, W, 4), np.uint8))", V, ["rgba", "empty"]),
        ("shares 3x255", "ts(shares=shares[:, :255].copy())", V, ["shares", "3 x 256"]),
        ("shares 2x256", "ts(shares=shares[:2].copy())", V, ["shares", "3 x 256"]),
        ("shares uint8", "ts(shares=shares.astype(np.uint8))", T, ["shares", "uint16"]),
        ("shares int32", "ts(shares=shares.astype(np.int32))", T, ["shares", "uint16"]),
        ("shares transposed", "ts(shares=shares.T)", V, ["shares", "C-contiguous"]),
        ("tone too short", "ts(tone=tone[:100].copy())", V, ["tone"]),
        ("tone float64", "ts(tone=tone.astype(np.float64))", T, ["tone", "float32"]),
        ("tone 2-D", "ts(tone=tone[None])", V, ["tone", "dimensions"]),
        ("sums larger than the image", "ts(sums=sums((H + 1, 1)), squares=sums((H + 1, 1)))", V, ["no larger"]),
        ("sums wider than the image", "ts(sums=sums((1, W + 1)), squares=sums((1, W + 1)))", V, ["no larger"]),
        ("sums and squares differ", "ts(squares=sums((2, 3)))", V, ["squares", "sums"]),
        ("sums flat", "ts(sums=sums((4,)), squares=sums((4,)))", V, ["sums", "dimensions"]),
        ("sums float32", "ts(sums=sums(dtype=np.float32))", T, ["sums", "float64"]),
        ("sums read-only", "ts(sums=ro(sums()))", T, ["sums", "writable"]),
        ("squares bytes", "ts(squares=bytes(32))", T, ["squares", "writable"]),
        ("squares non-contiguous", "ts(squares=strided(sums()))", V, ["squares", "C-contiguous"]),
    ],
    "film_print": [
        ("old signature, wrapping width*height",
         "k.film_print(np.zeros(16, np.uint8), 2**62 + 1, 4, shares, tone, gauss, None, one[:1, :1].copy(), zero[:1, :1].copy(), 1, 1, 0,"
         " np.zeros(16, np.uint8))", T, []),
        ("flat rgba", "bw(rgba=rgba.ravel(), out=out_rgba((H * W * 4,)))", V, ["rgba", "dimensions"]),
        ("non-contiguous rgba", "bw(rgba=rgba[::2])", V, ["rgba", "C-contiguous"]),
        ("huge zero-stride rgba", "bw(rgba=huge((2**30, 2**30, 4)))", V, ["rgba", "C-contiguous"]),
        ("float32 rgba", "bw(rgba=rgba.astype(np.float32))", T, ["rgba", "uint8"]),
        ("tone too short", "bw(tone=tone[:100].copy(), amp=None)", V, ["tone"]),
        ("gauss 255 long", "bw(gauss=gauss[:255].copy())", V, ["gauss", "256"]),
        ("gauss float64", "bw(gauss=gauss.astype(np.float64))", T, ["gauss", "float32"]),
        ("gauss non-contiguous", "bw(gauss=strided(gauss))", V, ["gauss", "C-contiguous"]),
        ("amplitude short", "bw(amp=amp[:-1].copy())", V, ["amplitude"]),
        ("amplitude float64", "bw(amp=amp.astype(np.float64))", T, ["amplitude", "float32"]),
        ("amplitude non-contiguous", "bw(amp=strided(amp))", V, ["amplitude", "C-contiguous"]),
        ("amplitude not an array", "bw(amp=1.0)", T, ["amplitude"]),
        ("k1 and k2 differ", "bw(k2=np.zeros((2, 3), np.float32))", V, ["k1", "k2"]),
        ("k1 flat", "bw(k1=one.ravel(), k2=zero.ravel())", V, ["k1", "dimensions"]),
        ("k1 float64", "bw(k1=one.astype(np.float64))", T, ["k1", "float32"]),
        ("k2 non-contiguous", "bw(k2=strided(zero))", V, ["k2", "C-contiguous"]),
        ("k1 empty", "bw(k1=np.ones((0, 2), np.float32))", V, ["k1", "empty"]),
        ("out RGB", "bw(out=out_rgba((H, W, 3)))", V, ["out", "channels"]),
        ("out too small", "bw(out=out_rgba((H - 1, W, 4)))", V, ["out", "rgba"]),
        ("out too large", "bw(out=out_rgba((H, W + 1, 4)))", V, ["out", "rgba"]),
        ("out flat", "bw(out=out_rgba((H * W * 4,)))", V, ["out", "dimensions"]),
        ("out read-only", "bw(out=ro(out_rgba()))", T, ["out", "writable"]),
        ("out bytes", "bw(out=bytes(H * W * 4))", T, ["out", "writable"]),
        ("out non-contiguous", "bw(out=strided(out_rgba()))", V, ["out", "C-contiguous"]),
        ("out uint16", "bw(out=out_rgba(dtype=np.uint16))", T, ["out", "uint8"]),
    ],
    "luma": [
        ("old signature, wrapping width*height",
         "k.luma(np.zeros(16, np.uint8), 2**62 + 4, 1, 0.2, 0.7, 0.1, np.zeros(4, np.float32))", T, []),
        ("flat rgba", "lu(rgba=rgba.ravel())", V, ["rgba", "dimensions"]),
        ("RGB, not RGBA", "lu(rgba=rgba[..., :3].copy())", V, ["rgba", "channels"]),
        ("uint16 rgba", "lu(rgba=rgba.astype(np.uint16))", T, ["rgba", "uint8"]),
        ("bool rgba", "lu(rgba=rgba.astype(bool))", T, ["rgba", "uint8"]),
        ("non-contiguous rgba", "lu(rgba=rgba[:, ::-1])", V, ["rgba", "C-contiguous"]),
        ("huge zero-stride rgba", "lu(rgba=huge((2**30, 2**30, 4)))", V, ["rgba", "C-contiguous"]),
        ("huge zero-stride out", "lu(out=huge((2**30, 2**30), np.float32))", T, ["out", "writable"]),
        ("out too small", "lu(out=out_plane((H, W - 1)))", V, ["out", "rgba"]),
        ("out too large", "lu(out=out_plane((H + 1, W)))", V, ["out", "rgba"]),
        ("out flat", "lu(out=out_plane((H * W,)))", V, ["out", "dimensions"]),
        ("out float64", "lu(out=out_plane(dtype=np.float64))", T, ["out", "float32"]),
        ("out uint8 of the same byte size", "lu(out=out_plane((H, 4 * W), np.uint8))", T, ["out", "float32"]),
        ("out read-only", "lu(out=ro(out_plane()))", T, ["out", "writable"]),
        ("out non-contiguous", "lu(out=strided(out_plane()))", V, ["out", "C-contiguous"]),
        ("out a list", "lu(out=[0.0] * (H * W))", T, ["out"]),
    ],
    "paint": [
        # (paint's old checks wrapped the same way as its loop, so this one was refused, not a crash; now it is a TypeError)
        ("old signature, wrapping width*height",
         "k.paint(np.zeros(4, np.uint8), 2**62 + 1, 4, colours, np.zeros(16, np.uint8), np.zeros(16, np.uint8))", T, []),
        ("flat indices", "pa(indices=indices.ravel())", V, ["indices", "dimensions"]),
        ("uint16 indices", "pa(indices=indices.astype(np.uint16))", T, ["indices", "uint8"]),
        ("bool indices", "pa(indices=indices.astype(bool))", T, ["indices", "uint8"]),
        ("non-contiguous indices", "pa(indices=strided(indices))", V, ["indices", "C-contiguous"]),
        ("huge zero-stride indices", "pa(indices=huge((2**31, 2**31)))", V, ["indices", "C-contiguous"]),
        ("indices smaller than rgba", "pa(indices=indices[1:].copy())", V, ["rgba", "indices"]),
        ("index past the colours", "pa(indices=np.full((H, W), 2, np.uint8))", V, ["colour"]),
        ("colours RGBA", "pa(colours=np.zeros((2, 4), np.uint8))", V, ["colours"]),
        ("257 colours", "pa(colours=np.zeros((257, 3), np.uint8))", V, ["colours"]),
        ("no colours", "pa(colours=np.zeros((0, 3), np.uint8))", V, ["colours", "empty"]),
        ("flat colours", "pa(colours=colours.ravel())", V, ["colours", "dimensions"]),
        ("colours float32", "pa(colours=colours.astype(np.float32))", T, ["colours", "uint8"]),
        ("rgba RGB", "pa(rgba=rgba[..., :3].copy())", V, ["rgba", "channels"]),
        ("rgba non-contiguous", "pa(rgba=rgba[::-1])", V, ["rgba", "C-contiguous"]),
        ("out smaller", "pa(out=out_rgba((H, W - 1, 4)))", V, ["out", "indices"]),
        ("out read-only", "pa(out=ro(out_rgba()))", T, ["out", "writable"]),
        ("out bytes", "pa(out=bytes(H * W * 4))", T, ["out", "writable"]),
        ("out non-contiguous", "pa(out=strided(out_rgba()))", V, ["out", "C-contiguous"]),
    ],
}

VALID = {
    "diffuse": "di()",
    "tone_sums": "ts()",
    "film_print": "(bw(), bw(amp=None))",
    "luma": "lu()",
    "paint": "pa()",
}


def run_cases(cases: list[tuple[str, str, str, list[str]]], root: Path = ROOT) -> tuple[subprocess.CompletedProcess, dict]:
    child = subprocess.run([sys.executable, "-c", CHILD], input=json.dumps(cases), cwd=root, capture_output=True,
                           text=True, timeout=120)
    lines = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
    return child, {r["label"]: r for r in lines if "label" in r}


@pytest.mark.parametrize("kernel", sorted(CASES))
def test_hostile_arrays_are_refused_with_an_exception_not_a_crash(kernel):
    cases = [("valid call", VALID[kernel], None, [])] + CASES[kernel]
    child, results = run_cases(cases)
    if child.returncode != 0:
        started = [json.loads(line)["start"] for line in child.stdout.splitlines() if '"start"' in line]
        pytest.fail(f"the child died (exit {child.returncode}) during {started[-1] if started else '?'!r}:\n"
                    f"{child.stderr[-2000:]}")
    assert results["valid call"]["raised"] is None, results["valid call"]
    problems = []
    for label, _expr, exc, words in CASES[kernel]:
        r = results[label]
        if r["raised"] != exc:
            problems.append(f"{label}: expected {exc}, got {r['raised'] or 'no exception'} {r.get('message', '')!r}")
        elif not all(w in r["message"] for w in words):
            problems.append(f"{label}: message {r['message']!r} does not mention {words}")
    assert not problems, "\n".join(problems)


def test_no_kernel_takes_a_width_or_height():
    for name in CASES:
        signature = getattr(_kernels, name).__doc__.split(")")[0]
        assert "width" not in signature and "height" not in signature, signature


def test_kernels_accept_other_exporters_in_native_byte_order_and_refuse_swapped_bytes():
    rgba = np.arange(7 * 3 * 4, dtype=np.uint8).reshape(7, 3, 4)
    out = np.empty((7, 3), np.float32)
    _kernels.luma(rgba, *pixels.BT709, out)
    r, g, b = (rgba[..., c].astype(np.float32) for c in range(3))
    assert np.array_equal(out, r * np.float32(pixels.BT709[0]) + g * np.float32(pixels.BT709[1]) + b * np.float32(pixels.BT709[2]))
    # ctypes arrays spell their formats with an explicit byte order ('<B', '<f' on this machine): still accepted
    c_rgba = (((ctypes.c_uint8 * 4) * 3) * 7).from_buffer_copy(rgba.tobytes())
    c_out = ((ctypes.c_float * 3) * 7)()
    assert memoryview(c_out).format in ("<f", ">f", "f") and memoryview(c_out).shape == (7, 3)
    _kernels.luma(c_rgba, *pixels.BT709, c_out)
    assert np.array_equal(np.frombuffer(c_out, np.float32).reshape(7, 3), out)
    assert _kernels.diffuse(c_out, 100.0, False) == _kernels.diffuse(out, 100.0, False)
    swapped = np.empty((7, 3), np.dtype(np.float32).newbyteorder())
    with pytest.raises(TypeError, match="float32"):
        _kernels.luma(rgba, *pixels.BT709, swapped)


def test_paint_and_film_print_accept_the_largest_palette_and_exact_shapes():
    indices = np.arange(256, dtype=np.uint8).reshape(16, 16)
    colours = np.stack([np.arange(256), 255 - np.arange(256), np.zeros(256)], axis=1).astype(np.uint8)
    rgba = np.full((16, 16, 4), 9, np.uint8)
    out = np.empty_like(rgba)
    _kernels.paint(indices, colours, rgba, out)
    assert np.array_equal(out[..., :3], colours[indices]) and (out[..., 3] == 9).all()
    shares = pixels.share_tables(blackwhite.TRI_X_WEIGHTS)
    table = blackwhite.tone_table(1.0, 1.0)
    k1 = np.ones((16, 16), np.float32)  # as large as the image: allowed
    _kernels.film_print(rgba, shares, table, blackwhite.GAUSSIAN_BYTES, None, k1, np.zeros_like(k1), 0, out)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 3] == 9).all()
