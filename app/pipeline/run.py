"""The orchestrator: one request's way from its upload and typed options to its encoded images.

Every way in (the REST endpoints, and later the remove.bg names, URLs, the CLI) runs a
:class:`Job`; there is no second pipeline. :meth:`Job.run` reads top to bottom:

    output cache → slot → decode → mask (cache, else segment) → compose → effects → encode → store

Plain inputs (the runtime, typed options, the upload's bytes, a budget), a plain result
(:class:`Rendered`: named encoded images and their size). No Flask.
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import msgspec
import numpy as np
from PIL import Image

import effects
from app.ops import tuning
from app.pipeline import compose
from app.pipeline.budget import UNLIMITED, Budget
from app.pipeline.cache import CacheUse, upload_digest
from app.pipeline.confidence import mask_confidence, mask_warnings
from app.pipeline.errors import BadOption, MissingFile
from app.pipeline.gate import InferenceGate
from app.pipeline.imaging import DecodedImage, decode_image, encodable_megapixels, encode_image, fitted_size
from app.pipeline.layout import Box, lay_out, plan, subject_box
from app.pipeline.matte import matte
from app.pipeline.options import NO_LAYOUT, PRESETS, STROKE_FIELDS, TRANSPARENT, WHITE, Layout, Options, Size
from app.pipeline.timing import Timings
from adapters import Segmenter
from config import Settings

if TYPE_CHECKING:
    from app.pipeline.runtime import Runtime

IMAGE = "image"  # the one image of a /api/bg result
MODEL_VIEW_SIDE = 1024  # a transparent upload is shown to the model over white at most MODEL_VIEW_SIDE² px


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
    # why a person should look at it (app/pipeline/confidence.py: mask_warnings); empty: it looks clean;
    # None: not looked for (EDGE_MATTING=off, or the background kept)
    mask_warnings: tuple[str, ...] | None = None
    # the upload's own (width, height) when it was worked smaller (MAX_DIMENSION, MAX_WORK_PIXELS,
    # max_megapixels); None: worked at its own size
    scaled_from: tuple[int, int] | None = None
    # each image: whether the subject was enlarged past its own pixels (X-Upscaled)
    upscaled: dict[str, bool] = {}
    # each effect's parameters as applied, sizes left to the effect ("auto") in px (v2's metadata.params)
    params: dict[str, dict[str, Any]] = {}


class Job:
    """One request's work: ``Job(runtime, options, upload, budget).run()``. Its use of the result
    cache (statuses, writes to make after the response) and its timings stay readable when the
    run fails: a mask computed before a timeout is still worth keeping."""

    def __init__(self, runtime: "Runtime", options: Options, upload: bytes, budget: Budget = UNLIMITED,
                 background: bytes | None = None, masks: Mapping[str, bytes] | None = None):
        """``background``: the image laid under the subject with ``background=image`` (its own upload);
        ``masks``: correction strokes sent as images (``keep_mask``, ``remove_mask``: white = painted)."""
        self.runtime, self.options, self.upload, self.budget = runtime, options, upload, budget
        self.background = background
        self.masks = dict(masks or {})
        self.cache: CacheUse = runtime.cache_use(upload, options)
        self.timings = Timings(runtime.observe_stage)

    def run(self) -> Rendered:
        runtime, options, budget, timings, cache = self.runtime, self.options, self.budget, self.timings, self.cache
        if not self.upload:
            raise MissingFile("file: the uploaded file is empty")
        settings = runtime.settings
        # what the request left to the endpoint filled in (options built in code, not from a form, too)
        options = self.options = bounded(encodable(options.completed(), settings), settings.max_output_pixels,
                                         self.background)
        key = options.cache_fields()
        if self.background is not None:
            key["background_file"] = upload_digest(self.background)
        for name, data in sorted(self.masks.items()):
            key[name] = upload_digest(data)
        # one computation per output: a request for an output another is computing waits for it
        # (within its deadline) and is handed the result; the flight ends with the job
        with cache:
            with timings.stage("cache"):
                rendered = _stored(cache.output(options.KIND, key, budget.remaining_s(), budget.client_gone))
            if rendered is not None:
                return rendered
            with slot(runtime.gate, budget):
                budget.check()
                with timings.stage("decode"):
                    image = decode(self.upload, settings, max_megapixels=options.max_megapixels)
                    backdrop = None if self.background is None else decode(self.background, settings, "background_file")
                    strokes = strokes_of(options, self.masks, image, settings)
                budget.check()
                alpha = _alpha(runtime, image, options, cache, timings, strokes)
                with timings.stage("review") if _segments(options) else nullcontext():
                    confidence = mask_confidence(alpha) if _segments(options) else None
                    # the reasons read a matted mask: their thresholds were set on one (app/pipeline/confidence.py)
                    warnings = mask_warnings(image.rgb, alpha) \
                        if _segments(options) and settings.edge_matting == "band" else None
                scaled_from = image.source_size if image.size != image.source_size else None
                work = Render(image, alpha, options, settings, timings, backdrop)
                del image, alpha, backdrop
                rendered = msgspec.structs.replace(render(work, budget), mask_confidence=confidence,
                                                   mask_warnings=warnings,
                                                   scaled_from=scaled_from)
                del work
            cache.keep_output(msgspec.msgpack.encode(rendered))
        return rendered


@contextmanager
def slot(gate: InferenceGate, budget: Budget) -> Iterator[None]:
    """``with slot(gate, budget):`` holds one inference slot, waiting for it until the budget's
    deadline, and giving up its place in the queue if the client leaves.

    A request holds it from decoding to encoding, not only around inference: those steps hold
    the full-size arrays, so the slots bound the worker's memory as well as the model's use
    (a queued request holds only its upload's bytes). When the work is done, the memory it
    freed goes back to the OS (:func:`app.ops.tuning.trim`)."""
    with gate.slot(timeout_s=budget.remaining_s(), cancelled=budget.client_gone):
        try:
            yield
        finally:
            tuning.trim()


def decode(data: bytes, settings: Settings, field: str = "file", max_megapixels: float | None = None) -> DecodedImage:
    """``data`` decoded with every check, at most ``MAX_WORK_PIXELS`` (and ``max_megapixels``, a
    request's own cap); errors name ``field`` (the upload's form field)."""
    work = settings.max_work_pixels if max_megapixels is None else min(settings.max_work_pixels, max_megapixels * 1e6)
    return decode_image(data, max_dimension=settings.max_dimension, max_pixels=settings.max_input_pixels,
                        max_decode_bytes=int(settings.max_decode_mb * 2**20), work_pixels=work, field=field)


def encodable(options: Options, settings: Settings) -> Options:
    """The options with ``max_megapixels`` lowered to what the output format's encoder can write
    within ``MAX_ENCODE_MB`` (WebP with alpha, HEIC with alpha, AVIF: :data:`ENCODER_BYTES_PER_PIXEL`):
    the photo is then worked at that size, and the answer says from what size (X-Scaled-From)."""
    alpha = not (_only_mask(options) or options.layout.opaque)
    cap = encodable_megapixels(getattr(options, "format", ""), alpha, settings.max_encode_mb * 2**20)
    if cap is None or options.max_megapixels is not None and options.max_megapixels <= cap:
        return options
    return msgspec.structs.replace(options, max_megapixels=cap)


def bounded(options: Options, max_pixels: int, background: bytes | None) -> Options:
    """The options, checked against what the layout may ask for before any work: an explicit size over
    ``MAX_OUTPUT_PIXELS`` is refused, a preset's is scaled down to fit, and any over ``max_megapixels``
    too (aspect kept); an image background needs its upload."""
    layout = options.layout
    if (layout.background[0] == "image") != (background is not None):
        raise BadOption("background_file" if background is None else "background",
                        "background=image takes its image in the upload field background_file" if background is None
                        else "a background_file was sent: say background=image (or leave background out)")
    kind, width, height = layout.size
    cap = max_pixels if options.max_megapixels is None else min(max_pixels, options.max_megapixels * 1e6)
    if kind != "px" or width * height <= cap:
        return options
    if cap == max_pixels and (layout.preset is None or PRESETS[layout.preset].get("size") != str(layout.size)):
        raise BadOption("size", f"{width}x{height} is more than the {max_pixels:,} pixels an output may have here "
                                "(MAX_OUTPUT_PIXELS)")
    size = Size(("px", *fitted_size((width, height), cap)))
    return msgspec.structs.replace(options, layout=msgspec.structs.replace(layout, size=size))


def subject_alpha(image: DecodedImage, segmenter: Segmenter, edge_matting: str = "off",
                  timings: Timings | None = None) -> np.ndarray:
    """The subject's alpha (HxW uint8): the model's mask (the ``segment`` stage of ``timings``), its
    uncertain band re-solved by matting (``edge_matting="band"``, the ``matte`` stage:
    app/pipeline/matte.py), within the input's own transparency. The model's map is brought up to
    the photo along its edges (the guided upscaling) with ``"off"``, plainly (Lanczos, as rembg does)
    with ``"band"`` and ``"plain"``."""
    rgb, view = image.rgb, None
    if image.alpha is not None:  # the model sees transparent areas as white, not as their hidden colours:
        # a view of at most MODEL_VIEW_SIDE² px over white (the model works at 320-1024 px), the mask
        # brought up along the photo's own edges (no full-size second copy of a 12 MP photo)
        small, colours, alpha = fitted_size(image.size, MODEL_VIEW_SIDE ** 2), image.rgb, image.alpha
        if small != image.size:
            colours = np.asarray(Image.fromarray(colours, "RGB").resize(small, Image.Resampling.BOX))
            alpha = np.asarray(Image.fromarray(alpha, "L").resize(small, Image.Resampling.BOX))
        view = compose.over_color_array(colours, alpha, (255, 255, 255))
    with timings.stage("segment") if timings else nullcontext():
        # with the matting, the map is brought up plainly: the matting re-solves the edge the guided
        # upscaling would follow (mean SAD 26.8 against 26.9, at 0.2 s less a 1.6 MP photo: docs/quality.md)
        mask = segmenter.mask(rgb if view is None else view, guide=None if view is None else rgb,
                              follow_edges=edge_matting == "off")
    if edge_matting == "band":
        with timings.stage("matte") if timings else nullcontext():
            mask = matte(rgb, mask)
    return compose.combine_alpha(mask, image.alpha)


def _segments(options: Options) -> bool:
    """Whether the result's alpha is the model's mask (not the image's own, the background kept)."""
    return getattr(options, "remove_background", True)


def strokes_of(options: Options, masks: Mapping[str, bytes], image: DecodedImage,
               settings: Settings) -> dict[str, np.ndarray]:
    """The correction strokes (``keep_mask``, ``remove_mask``) painted at the image's working size
    (HxW bool each): JSON lines from the options, or mask images (each the upload's size)."""
    sent = [name for name in STROKE_FIELDS if getattr(options, name) is not None or name in masks]
    if not sent:
        return {}
    if not _segments(options):
        raise BadOption(sent[0], "strokes correct the cut-out's mask: they need remove_background=true")
    from app.pipeline import correct  # OpenCV (+26 MB) only in a process that is sent strokes

    painted = {}
    for name in STROKE_FIELDS:
        lines = getattr(options, name)
        if lines is not None:
            painted[name] = correct.rasterize(lines, image.size, image.source_size)
        elif name in masks:
            mask = decode(masks[name], settings, name)
            if _aspect(mask.source_size) != _aspect(image.source_size) or \
                    abs(mask.source_size[0] / image.source_size[0] - 1) > 0.01:
                raise BadOption(name, "the mask image must have the upload's size, {}x{} (it is {}x{})".format(
                    *image.source_size, *mask.source_size))
            painted[name] = correct.painted(mask, image.size)
    return painted


def _aspect(size: tuple[int, int]) -> float:
    return round(size[0] / size[1], 2)


def _alpha(runtime: "Runtime", image: DecodedImage, options: Options, cache: CacheUse,
           timings: Timings, strokes: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """The subject's alpha: the stored mask, else the model's, cut to the region of interest and
    corrected by the strokes; the image's own alpha (or opaque) when the background stays."""
    if not _segments(options):
        alpha = image.alpha if image.alpha is not None else np.full(image.rgb.shape[:2], 255, np.uint8)
    else:
        with timings.stage("cache"):
            alpha = cache.stored_mask(image.size)
        if alpha is None:
            alpha = subject_alpha(image, runtime.segmenter, runtime.settings.edge_matting, timings)
            runtime.activity.model_ran()
            cache.keep_mask(alpha)  # the model's mask, not cut to a region: the next request may ask another
    if options.roi is not None:
        alpha = within(alpha, options.roi.pixels(image.size, image.source_size))
    if strokes:
        from app.pipeline import correct

        with timings.stage("correct"):
            alpha = correct.correct(image.rgb, alpha, strokes.get("keep_mask"), strokes.get("remove_mask"))
    return alpha


def within(alpha: np.ndarray, region: tuple[int, int, int, int]) -> np.ndarray:
    """``alpha`` inside ``region`` (x1, y1, x2, y2 in its pixels), 0 (background) outside."""
    x1, y1, x2, y2 = region
    out = np.zeros_like(alpha)
    out[y1:y2, x1:x2] = alpha[y1:y2, x1:x2]
    return out


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


# -- the render: an ordered list of steps over one context -----------------------------------


@dataclasses.dataclass
class Render:
    """What the steps share: the decoded photo and its alpha, what the request asked for, and what
    the steps have made so far. Each step reads and writes it; :func:`render` runs them in order,
    with the budget checked between them."""

    image: DecodedImage  # its rgb is let go (None) once the subject is cut out, unless a layout draws the photo
    alpha: np.ndarray | None  # let go once the subject is cut out
    options: Options
    settings: Settings
    timings: Timings
    backdrop: DecodedImage | None = None  # background=image's own upload, decoded
    layout: Layout = NO_LAYOUT  # the request's layout, as this result applies it (:func:`_layout`)
    subject: np.ndarray | None = None  # the cut-out, HxWx4 uint8, each output's starting point
    # the output being made: its name, its effect (None: the cut-out itself), its pixels, its subject box
    name: str = IMAGE
    effect: tuple[str, dict[str, Any]] | None = None
    picture: Any = None  # an RGBA array, then the finished Pillow image
    box: Box | None = None
    images: dict[str, bytes] = dataclasses.field(default_factory=dict)
    boxes: dict[str, tuple[int, int, int, int] | None] = dataclasses.field(default_factory=dict)
    upscaled: dict[str, bool] = dataclasses.field(default_factory=dict)
    params: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    size: tuple[int, int] = (0, 0)


def _layout(r: Render) -> None:
    """The layout this result applies: a mask is framed like the subject, without backgrounds,
    shadows or outlines; a framed layout's canvas is bounded before any pixel work."""
    r.layout = r.options.layout
    if _only_mask(r.options):
        r.layout = msgspec.structs.replace(r.layout, background=TRANSPARENT, shadow="none", outline=0)
    if r.layout.needs_lay_out:
        check_canvas(r.image.size, r.alpha, r.layout, r.settings.max_output_pixels)


def _cut_out(r: Render) -> None:
    """The subject, HxWx4: the photo's colours (refined at soft edges where asked, and always over a
    new picture, where they must not carry the old background, or for zip, whose colours are read
    apart from their alpha) with the alpha. Zip keeps the refined colours under alpha 0 too where
    nothing frames them (the layout stage takes those pixels zeroed)."""
    background, zipped = r.layout.background[0], r.options.format == "zip"
    refine = not _only_mask(r.options) and (getattr(r.options, "refine_foreground", False)
                                             or background in ("blur", "image") or zipped)
    rgb = compose.refine_foreground(r.image.rgb, r.alpha) if refine else r.image.rgb
    r.subject = np.dstack((rgb, r.alpha)) if zipped and not r.layout.needs_lay_out \
        else compose.cutout_array(rgb, r.alpha)
    del rgb
    # the subject carries the alpha now; the photo is drawn again only by a layout (a blurred or
    # kept background): at 12 MP these are 12 and 36 MB the effects and the encoder can use
    r.alpha = None
    if not r.layout.needs_lay_out:
        r.image = dataclasses.replace(r.image, rgb=None)


def _apply_effect(r: Render) -> None:
    """The output's effect on the subject (none: the subject itself)."""
    if r.effect is None:
        r.picture = r.subject
        return
    name, params = r.effect
    with r.timings.stage(name):
        effect = effects.get(name)
        params = effect.concrete(r.subject, params)  # sizes left to the effect, in px for this picture
        r.params[name] = effect.public(params)
        r.picture = effect.apply(r.subject, params)


def _frame(r: Render) -> None:
    """The output's canvas: the layout (framing, background, shadow, outline) when it frames, else
    the picture kept transparent or over its plain colour; a mask keeps the alpha alone."""
    rgba, layout = r.picture, r.layout
    placed = None  # the subject's (source, placed) sizes, when the layout resamples it
    if layout.needs_lay_out:
        laid = lay_out(rgba, layout, photo=r.image.rgb, background_image=None if r.backdrop is None else r.backdrop.rgb)
        img, r.box = Image.fromarray(laid.image, "RGBA"), laid.foreground
        source, subject = laid.plan.source, laid.plan.subject
        placed = ((source.width, source.height), (subject.width, subject.height))
        if r.options.format == "jpeg" and not _only_mask(r.options):  # no transparency: over white
            img = Image.alpha_composite(Image.new("RGBA", img.size, WHITE + (255,)), img)
        if layout.opaque:
            img = img.convert("RGB")
    else:
        r.box = subject_box(rgba[..., 3])
        img = compose.on_background(rgba, layout.background.opaque_color)
    cap = r.options.max_megapixels
    if cap is not None and img.width * img.height > cap * 1e6:  # margins or a shadow grew the canvas past it
        size = fitted_size(img.size, cap * 1e6)
        sx, sy = size[0] / img.width, size[1] / img.height
        img = img.resize(size, Image.LANCZOS)  # Pillow resamples RGBA premultiplied
        if r.box is not None:
            r.box = Box(round(r.box.left * sx), round(r.box.top * sy), max(1, round(r.box.width * sx)),
                        max(1, round(r.box.height * sy)))
        if placed is not None:
            placed = (placed[0], (placed[1][0] * sx, placed[1][1] * sy))
    r.upscaled[r.name] = placed is not None and (placed[1][0] > placed[0][0] + 0.5 or placed[1][1] > placed[0][1] + 0.5)
    r.picture = img.getchannel("A") if _only_mask(r.options) else img


def _encode(r: Render) -> None:
    """The output encoded; the photo's ICC profile kept on the cut-out (an effect's colours are sRGB)."""
    img, box = r.picture, r.box
    icc = r.image.icc_profile if r.effect is None else None
    r.images[r.name] = encode_image(img, r.options.format, quality=r.options.quality,
                                    png_compress_level=r.settings.png_compress_level, icc_profile=icc)
    r.boxes[r.name] = None if box is None else (box.left, box.top, box.width, box.height)
    r.size = img.size
    r.picture = r.box = None


# Once per job, then once per output (the cut-out, or each effect in request order), in this order.
# Each step runs in its timing stage (an effect in its own); the budget is checked before each.
PREPARE: tuple[tuple[str, Callable[[Render], None]], ...] = (("compose", _layout), ("compose", _cut_out))
EACH_OUTPUT: tuple[tuple[str | None, Callable[[Render], None]], ...] = (
    (None, _apply_effect), ("compose", _frame), ("encode", _encode))


def render(r: Render, budget: Budget) -> Rendered:
    """Run the steps over ``r``: the job's once, then each output's; one output's pixels at a time."""
    for stage, step in PREPARE:
        budget.check()
        with r.timings.stage(stage):
            step(r)
    for r.name, r.effect in _outputs(r.options):
        for stage, step in EACH_OUTPUT:
            budget.check()
            if stage is None:
                step(r)
            else:
                with r.timings.stage(stage):
                    step(r)
    return Rendered(r.images, *r.size, r.boxes, upscaled=r.upscaled, params=r.params)


def _outputs(options: Options) -> list[tuple[str, tuple[str, dict[str, Any]] | None]]:
    """The images a result has: each effect's, named after it (v2), else the cut-out (``image``)."""
    effect_params = getattr(options, "effect_params", None)
    if not effect_params:
        return [(IMAGE, None)]
    return [(name, (name, params)) for name, params in effect_params.items()]


def _only_mask(options: Options) -> bool:
    return getattr(options, "only_mask", False)
