"""The orchestrator: one request's way from its upload and typed options to its encoded images.

Every way in (the REST endpoints, and later the remove.bg names, URLs, the CLI) runs a
:class:`Job`; there is no second pipeline. :meth:`Job.run` reads top to bottom:

    output cache → slot → decode → mask (cache, else segment) → compose → effects → encode → store

Plain inputs (the service, typed options, the upload's bytes, a budget), a plain result
(:class:`Rendered`: named encoded images and their size). No Flask.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

import msgspec
import numpy as np
from PIL import Image

import effects
from app.ops import process
from app.pipeline import compose
from app.pipeline.budget import UNLIMITED, Budget
from app.pipeline.cache import CacheUse, upload_digest
from app.pipeline.confidence import mask_confidence
from app.pipeline.errors import BadOption, MissingFile
from app.pipeline.gate import InferenceGate
from app.pipeline.imaging import DecodedImage, decode_image, encode_image
from app.pipeline.layout import Box, lay_out, plan, subject_box
from app.pipeline.options import (
    PRESETS, TRANSPARENT, WHITE, ChangeColorOptions, Layout, Options, ProcessOptions, RemoveOptions, Size,
)
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
    # each image's subject box (left, top, width, height; None: no subject), measured on the output
    foreground: dict[str, tuple[int, int, int, int] | None] = {}
    # how far the model's mask can be trusted, 0-1 (app/pipeline/confidence.py); None: no mask was made
    mask_confidence: float | None = None


class Job:
    """One request's work: ``Job(service, options, upload, budget).run()``. Its use of the result
    cache (statuses, writes to make after the response) and its timings stay readable when the
    run fails: a mask computed before a timeout is still worth keeping."""

    def __init__(self, service: "Service", options: Options, upload: bytes, budget: Budget = UNLIMITED,
                 background: bytes | None = None):
        """``background``: the image laid under the subject with ``background=image`` (its own upload)."""
        self.service, self.options, self.upload, self.budget = service, options, upload, budget
        self.background = background
        self.cache: CacheUse = service.cache_use(upload, options)
        self.timings = Timings(service.observe_stage)

    def run(self) -> Rendered:
        service, options, budget, timings, cache = self.service, self.options, self.budget, self.timings, self.cache
        if not self.upload:
            raise MissingFile("file: the uploaded file is empty")
        options = self.options = bounded(options, service.settings.max_output_pixels, self.background)
        key = options.cache_fields()
        if self.background is not None:
            key["background_file"] = upload_digest(self.background)
        with timings.stage("cache"):
            rendered = _stored(cache.output(options.KIND, key))
        if rendered is not None:
            return rendered
        with slot(service.gate, budget):
            budget.check()
            with timings.stage("decode"):
                image = decode(self.upload, service.settings)
                backdrop = None if self.background is None else decode(self.background, service.settings, "background_file")
            budget.check()
            alpha = _alpha(service, image, options, cache, timings)
            confidence = mask_confidence(alpha) if _segments(options) else None
            budget.check()
            rendered = _render(image, alpha, options, service.settings, budget, timings, backdrop, confidence)
            del image, alpha, backdrop
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


def decode(data: bytes, settings: Settings, field: str = "file") -> DecodedImage:
    """``data`` decoded with every check; errors name ``field`` (the upload's form field)."""
    return decode_image(data, max_dimension=settings.max_dimension, max_pixels=settings.max_input_pixels,
                        max_decode_bytes=int(settings.max_decode_mb * 2**20), field=field)


def bounded(options: Options, max_pixels: int, background: bytes | None) -> Options:
    """The options, checked against what the layout may ask for before any work: an explicit size over
    ``MAX_OUTPUT_PIXELS`` is refused, a preset's is scaled down to fit; an image background needs its upload."""
    layout = options.layout
    if (layout.background[0] == "image") != (background is not None):
        raise BadOption("background_file" if background is None else "background",
                        "background=image takes its image in the upload field background_file" if background is None
                        else "a background_file was sent: say background=image (or leave background out)")
    kind, width, height = layout.size
    if kind != "px" or width * height <= max_pixels:
        return options
    if layout.preset is None or PRESETS[layout.preset].get("size") != str(layout.size):
        raise BadOption("size", f"{width}x{height} is more than the {max_pixels:,} pixels an output may have here "
                                "(MAX_OUTPUT_PIXELS)")
    shrink = math.sqrt(max_pixels / (width * height))
    size = Size(("px", max(1, int(width * shrink)), max(1, int(height * shrink))))
    return msgspec.structs.replace(options, layout=msgspec.structs.replace(layout, size=size))


def subject_alpha(image: DecodedImage, segmenter: Segmenter) -> np.ndarray:
    """The subject's alpha (HxW uint8): the model's mask within the input's own transparency."""
    rgb = image.rgb
    if image.alpha is not None:  # the model sees transparent areas as white, not as their hidden colours
        rgb = np.asarray(compose.over_color(image.rgb, image.alpha, (255, 255, 255)))
    return compose.combine_alpha(segmenter.mask(rgb), image.alpha)


def _segments(options: Options) -> bool:
    """Whether the result's alpha is the model's mask (not the image's own, the background kept)."""
    return not isinstance(options, ProcessOptions) or options.remove_background


def _alpha(service: "Service", image: DecodedImage, options: Options, cache: CacheUse,
           timings: Timings) -> np.ndarray:
    """The subject's alpha: the stored mask, else the model's; the image's own alpha (or opaque)
    when the background stays."""
    if not _segments(options):
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
            timings: Timings, backdrop: DecodedImage | None = None, confidence: float | None = None) -> Rendered:
    """Compose the subject, apply the effects, lay each result out (``options.layout``), encode each."""
    layout = options.layout
    only_mask = isinstance(options, RemoveOptions) and options.only_mask
    if only_mask:  # a mask is framed like the subject; backgrounds, shadows and outlines are not its business
        layout = msgspec.structs.replace(layout, background=TRANSPARENT, shadow="none", outline=0)
    framed = layout.frames
    images: dict[str, bytes] = {}
    boxes: dict[str, tuple[int, int, int, int] | None] = {}
    size = image.size

    def encode(name: str, img: Image.Image, box: Box | None, icc_profile: bytes | None) -> None:
        nonlocal size
        size = img.size
        boxes[name] = None if box is None else (box.left, box.top, box.width, box.height)
        with timings.stage("encode"):
            images[name] = encode_image(img, options.format, quality=options.quality,
                                        png_compress_level=settings.png_compress_level, icc_profile=icc_profile)

    def laid_out(rgba: np.ndarray) -> tuple[Image.Image, Box | None]:
        laid = lay_out(rgba, layout, photo=image.rgb, background_image=None if backdrop is None else backdrop.rgb)
        img = Image.fromarray(laid.image, "RGBA")
        if options.format == "jpeg":  # no transparency: over white
            img = Image.alpha_composite(Image.new("RGBA", img.size, WHITE + (255,)), img)
        if layout.opaque:
            img = img.convert("RGB")
        return img, laid.foreground

    with timings.stage("compose"):
        if framed:
            check_canvas(image.size, alpha, layout, settings.max_output_pixels)
        box = None if framed else subject_box(alpha)
        if only_mask:
            if framed:
                composed, box = laid_out(compose.cutout_array(image.rgb, alpha))
                composed = composed.getchannel("A")
            else:
                composed = compose.mask_image(alpha)
        else:
            # over a new picture (blurred or another photo), soft edges must not carry the old background
            refine = options.refine_foreground or layout.background[0] in ("blur", "image")
            rgb = compose.refine_foreground(image.rgb, alpha) if refine else image.rgb
            subject = compose.cutout_array(rgb, alpha) if framed or isinstance(options, ProcessOptions) else None
            colour = layout.background.opaque_color
            if subject is None:  # today's paths, byte for byte
                composed = compose.cutout(rgb, alpha) if colour is None else compose.over_color(rgb, alpha, colour)
            elif framed and not isinstance(options, ProcessOptions):
                composed, box = laid_out(subject)
            del rgb
    if not isinstance(options, ProcessOptions):
        budget.check()
        encode(IMAGE, composed, box, image.icc_profile)
        return Rendered(images, *size, boxes, confidence)
    for name, params in options.effect_params.items():
        budget.check()
        with timings.stage(name):
            result = effects.apply(name, subject, params)
        with timings.stage("compose"):
            if framed:
                result, box = laid_out(result)
            else:
                box = subject_box(result[..., 3])
                result = compose.on_background(result, layout.background.opaque_color)
        encode(name, result, box, None)  # no ICC profile: effect colours (palettes, neutral greys) are sRGB
        del result
    return Rendered(images, *size, boxes, confidence)


def check_canvas(image_size: tuple[int, int], alpha: np.ndarray, layout: Layout, max_pixels: int) -> None:
    """A layout whose canvas would exceed ``MAX_OUTPUT_PIXELS`` (a small ``scale``, a large padding)
    is a 400 before any pixel is laid out."""
    width, height = image_size
    box = subject_box(alpha) or Box(0, 0, width, height)
    canvas = plan(image_size, box, layout).canvas
    if canvas[0] * canvas[1] > max_pixels:  # name the cause: the framing, else the outline, else the shadow
        bare = plan(image_size, box, msgspec.structs.replace(layout, shadow="none", outline=0)).canvas
        if bare[0] * bare[1] > max_pixels:
            field = "scale" if layout.scale is not None else "padding"
        elif layout.outline and plan(image_size, box, msgspec.structs.replace(layout, shadow="none")).canvas != bare:
            field = "outline"
        else:
            field = "shadow_blur"
        raise BadOption(field, f"the output would be {canvas[0]}x{canvas[1]}, more than the {max_pixels:,} "
                               "pixels an output may have here (MAX_OUTPUT_PIXELS)")


def _stored(data: bytes | None) -> Rendered | None:
    """A cached output, or None if there is none (or it is not one: then it is recomputed)."""
    if data is None:
        return None
    try:
        return msgspec.msgpack.decode(data, type=Rendered)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
