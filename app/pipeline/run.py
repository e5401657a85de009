"""The orchestrator: one request's way from its upload and typed options to its encoded images.

Every way in (the REST endpoints, and later the remove.bg names, URLs, the CLI) runs a
:class:`Job`; there is no second pipeline. :meth:`Job.run` reads top to bottom:

    output cache → slot → decode → mask (cache, else segment) → compose → effects → encode → store

Plain inputs (the service, typed options, the upload's bytes, a budget), a plain result
(:class:`Rendered`: named encoded images and their size). No Flask.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

import msgspec
import numpy as np
from PIL import Image

import effects
from app.ops import process
from app.pipeline import compose
from app.pipeline.budget import UNLIMITED, Budget
from app.pipeline.cache import CacheUse
from app.pipeline.errors import MissingFile
from app.pipeline.gate import InferenceGate
from app.pipeline.imaging import DecodedImage, decode_image, encode_image
from app.pipeline.options import ChangeColorOptions, Options, ProcessOptions, RemoveOptions
from app.pipeline.timing import Timings
from adapters import Segmenter
from config import Settings

if TYPE_CHECKING:
    from app.service import Service

IMAGE = "image"  # the one image of a /api/bg result


class Rendered(msgspec.Struct, frozen=True):
    """The encoded images (name -> bytes, in request order) and the size they were made at;
    stored as is (MessagePack) in the result cache."""

    images: dict[str, bytes]
    width: int
    height: int


class Job:
    """One request's work: ``Job(service, options, upload, budget).run()``. Its use of the result
    cache (statuses, writes to make after the response) and its timings stay readable when the
    run fails: a mask computed before a timeout is still worth keeping."""

    def __init__(self, service: "Service", options: Options, upload: bytes, budget: Budget = UNLIMITED):
        self.service, self.options, self.upload, self.budget = service, options, upload, budget
        self.cache: CacheUse = service.cache_use(upload, options)
        self.timings = Timings(service.observe_stage)

    def run(self) -> Rendered:
        service, options, budget, timings, cache = self.service, self.options, self.budget, self.timings, self.cache
        if not self.upload:
            raise MissingFile("file: the uploaded file is empty")
        with timings.stage("cache"):
            rendered = _stored(cache.output(options.KIND, options.cache_fields()))
        if rendered is not None:
            return rendered
        with slot(service.gate, budget):
            budget.check()
            with timings.stage("decode"):
                image = decode(self.upload, service.settings)
            budget.check()
            alpha = _alpha(service, image, options, cache, timings)
            budget.check()
            rendered = _render(image, alpha, options, service.settings, budget, timings)
            del image, alpha
        cache.keep_output(msgspec.msgpack.encode(rendered))
        return rendered


@contextmanager
def slot(gate: InferenceGate, budget: Budget) -> Iterator[None]:
    """``with slot(gate, budget):`` holds one inference slot, waiting for it until the budget's
    deadline, and giving up its place in the queue if the client leaves.

    A request holds it from decoding to encoding, not only around inference: those steps hold
    the full-size arrays, so the slots bound the worker's memory as well as the model's use
    (a queued request holds only its upload's bytes). When the work is done, the memory it
    freed goes back to the OS (:func:`app.ops.process.trim`)."""
    with gate.slot(timeout_s=budget.remaining_s(), cancelled=budget.client_gone):
        try:
            yield
        finally:
            process.trim()


def decode(data: bytes, settings: Settings) -> DecodedImage:
    return decode_image(data, max_dimension=settings.max_dimension, max_pixels=settings.max_input_pixels,
                        max_decode_bytes=int(settings.max_decode_mb * 2**20))


def subject_alpha(image: DecodedImage, segmenter: Segmenter) -> np.ndarray:
    """The subject's alpha (HxW uint8): the model's mask within the input's own transparency."""
    rgb = image.rgb
    if image.alpha is not None:  # the model sees transparent areas as white, not as their hidden colours
        rgb = np.asarray(compose.over_color(image.rgb, image.alpha, (255, 255, 255)))
    return compose.combine_alpha(segmenter.mask(rgb), image.alpha)


def _alpha(service: "Service", image: DecodedImage, options: Options, cache: CacheUse,
           timings: Timings) -> np.ndarray:
    """The subject's alpha: the stored mask, else the model's; the image's own alpha (or opaque)
    when the background stays."""
    if isinstance(options, ProcessOptions) and not options.remove_background:
        return image.alpha if image.alpha is not None else np.full(image.rgb.shape[:2], 255, np.uint8)
    with timings.stage("cache"):
        alpha = cache.stored_mask(image.size)
    if alpha is None:
        with timings.stage("segment"):
            alpha = subject_alpha(image, service.segmenter)
        service.activity.model_ran()
        cache.keep_mask(alpha)
    return alpha


def _render(image: DecodedImage, alpha: np.ndarray, options: Options, settings: Settings, budget: Budget,
            timings: Timings) -> Rendered:
    """Compose the subject, apply the effects, encode each image."""
    width, height = image.size

    def encode(img: Image.Image, icc_profile: bytes | None) -> bytes:
        with timings.stage("encode"):
            return encode_image(img, options.format, quality=options.quality,
                                png_compress_level=settings.png_compress_level, icc_profile=icc_profile)

    with timings.stage("compose"):
        if isinstance(options, RemoveOptions) and options.only_mask:
            composed = compose.mask_image(alpha)
        else:
            rgb = compose.refine_foreground(image.rgb, alpha) if options.refine_foreground else image.rgb
            if isinstance(options, ChangeColorOptions):
                composed = compose.over_color(rgb, alpha, options.color)
            elif isinstance(options, RemoveOptions):
                composed = compose.cutout(rgb, alpha)
            else:
                subject = compose.cutout_array(rgb, alpha)
            del rgb
    if not isinstance(options, ProcessOptions):
        budget.check()
        return Rendered({IMAGE: encode(composed, image.icc_profile)}, width, height)
    images = {}
    for name, params in options.effect_params.items():
        budget.check()
        with timings.stage(name):
            result = compose.on_background(effects.apply(name, subject, params), options.background)
        images[name] = encode(result, None)  # no ICC profile: effect colours (palettes, neutral greys) are sRGB
        del result
    return Rendered(images, width, height)


def _stored(data: bytes | None) -> Rendered | None:
    """A cached output, or None if there is none (or it is not one: then it is recomputed)."""
    if data is None:
        return None
    try:
        return msgspec.msgpack.decode(data, type=Rendered)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
