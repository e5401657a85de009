"""The request pipeline, one plain function per step: decode -> segment -> compose -> effects -> encode.

No Flask here: blueprints translate HTTP to these calls and back.
"""

from __future__ import annotations

import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
from PIL import Image

import effects
from app.pipeline import compose
from app.ops import memory
from app.web.errors import ClientGone, Overloaded
from app.pipeline.gate import InferenceGate
from app.pipeline.imaging import DecodedImage, decode_image, encode_image
from app.pipeline.options import ProcessOptions
from adapters import Segmenter
from config import Settings

__all__ = ["Budget", "peer_closed", "decode", "slot", "subject_alpha", "encode", "process", "Processed"]


@dataclass(frozen=True)
class Budget:
    """What one request may still spend: time until ``deadline`` (monotonic), and only while
    its client is there (``client_gone()``). :meth:`check` runs between the CPU-bound steps:
    a request past its deadline stops with 503 ``timeout``, one whose client left stops
    with :class:`ClientGone`, so that nobody's abandoned work holds the slot."""

    deadline: float
    client_gone: Callable[[], bool] = lambda: False

    def remaining_s(self) -> float:
        return self.deadline - time.monotonic()

    def check(self) -> None:
        if self.client_gone():
            raise ClientGone("the client closed the connection; the work was dropped")
        if self.remaining_s() <= 0:
            raise Overloaded("server busy: the request ran past its deadline; retry later", 2, code="timeout")


UNLIMITED = Budget(float("inf"))  # work outside a request (benchmarks, tools)


def peer_closed(sock: socket.socket | None) -> Callable[[], bool]:
    """Whether the peer on ``sock`` has closed its side: a zero-byte peek. The request has been
    read by then, so readable data can only be a pipelined next request (still there)."""
    if sock is None:
        return lambda: False

    def closed() -> bool:
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            return True

    return closed


def decode(data: bytes, settings: Settings) -> DecodedImage:
    return decode_image(data, max_dimension=settings.max_dimension, max_pixels=settings.max_input_pixels,
                        max_decode_bytes=int(settings.max_decode_mb * 2**20))


@contextmanager
def slot(gate: InferenceGate, budget: Budget) -> Iterator[None]:
    """``with slot(gate, budget):`` holds one inference slot, waiting for it until the budget's
    deadline, and giving up its place in the queue if the client leaves.

    A request holds it from decoding to encoding, not only around inference: those steps hold
    the full-size arrays, so the slots bound the worker's memory as well as the model's use
    (a queued request holds only its upload's bytes). When the work is done, the memory it
    freed goes back to the OS (:func:`app.ops.memory.trim`)."""
    with gate.slot(timeout_s=budget.remaining_s(), cancelled=budget.client_gone):
        try:
            yield
        finally:
            memory.trim()


def subject_alpha(image: DecodedImage, segmenter: Segmenter) -> np.ndarray:
    """The subject's alpha (HxW uint8): the model's mask within the input's own transparency
    (call it holding a slot)."""
    rgb = image.rgb
    if image.alpha is not None:  # the model sees transparent areas as white, not as their hidden colours
        rgb = np.asarray(compose.over_color(image.rgb, image.alpha, (255, 255, 255)))
    return compose.combine_alpha(segmenter.mask(rgb), image.alpha)


def encode(img: Image.Image, fmt: str, quality: int, image: DecodedImage, settings: Settings) -> bytes:
    return encode_image(
        img, fmt, quality=quality, png_compress_level=settings.png_compress_level, icc_profile=image.icc_profile
    )


@dataclass
class Processed:
    images: dict[str, bytes]  # effect name -> encoded image, in request order
    width: int
    height: int
    timings_ms: dict[str, float] = field(default_factory=dict)


MaskSource = Callable[[DecodedImage], np.ndarray]  # e.g. subject_alpha on the model, or the cached mask


def process(image: DecodedImage, opts: ProcessOptions, mask_of: MaskSource, settings: Settings,
            budget: Budget = UNLIMITED) -> Processed:
    """Cut the subject out (unless ``remove_background`` is off), render each effect on it, encode each.

    ``mask_of(image)`` gives the subject's alpha (the model through :func:`subject_alpha`,
    or the result cache's copy of it). Call it holding a slot (:func:`slot`). Effects act
    on the subject; the background colour (if any) is laid under each result. ``budget`` is
    checked before each effect.
    """
    timings: dict[str, float] = {}
    background = opts.effective_background
    if opts.remove_background:
        with _timed(timings, "segment"):
            alpha = mask_of(image)
    else:
        alpha = image.alpha if image.alpha is not None else np.full(image.rgb.shape[:2], 255, np.uint8)
    rgb = compose.refine_foreground(image.rgb, alpha) if opts.refine_foreground else image.rgb
    subject = compose.cutout_array(rgb, alpha)
    del alpha
    images: dict[str, bytes] = {}
    encoding = 0.0
    for name, params in opts.effects:
        budget.check()
        with _timed(timings, name):
            result = effects.apply(name, subject, params)
        started = time.perf_counter()
        images[name] = encode_image(
            compose.on_background(result, background), opts.format, quality=opts.quality,
            png_compress_level=settings.png_compress_level,
        )  # no ICC profile: effect colours (palettes, neutral greys) are sRGB
        encoding += time.perf_counter() - started
        del result
    timings["encode"] = round(encoding * 1000, 1)
    return Processed(images, image.size[0], image.size[1], timings)


class _timed:
    """``with _timed(timings, key):`` records the block's wall time in ms."""

    def __init__(self, timings: dict[str, float], key: str):
        self.timings, self.key = timings, key

    def __enter__(self):
        self.started = time.perf_counter()

    def __exit__(self, *exc):
        self.timings[self.key] = round((time.perf_counter() - self.started) * 1000, 1)
