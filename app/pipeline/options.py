"""The typed options of each kind of result, one declaration per field.

Each options class is a msgspec ``Struct``. A field's annotation (type, range, description, the
pipeline stage that uses it) and its default are its one declaration. :func:`fields` walks it:
one :class:`OptionField` per form field, and everything else derives from that walk:
- parsing a form of strings (:meth:`Options.from_form`; every way in maps onto these classes):
  booleans in the words of :data:`BOOLEAN_WORDS`, choices in any case (``jpg`` = ``jpeg``), colours in
  every form ``effects.colors`` reads, JSON fields decoded; a missing or blank field is its default;
- validation by msgspec against the declared types and ranges, a bad value being a
  :class:`BadOption` naming the field and saying what the declaration expects;
- the result cache's key (:meth:`Options.cache_fields`: the values that decide the bytes);
- the form's schema in the OpenAPI document (:func:`form_schema`, msgspec's JSON Schema).

Options are immutable: what a request leaves to the endpoint (its background, each effect's
parameters) is filled in by :meth:`Options.completed`, a new instance.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
import typing
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, Mapping

import msgspec
from msgspec import Meta, inspect as mi

import effects
from app.pipeline.errors import BadOption
from effects import ParamError
from config.settings import BOOLEAN_WORDS  # how a boolean is written, in a form as in the environment
from effects.colors import FORMS as COLOR_FORMS, hex_color, parse_color

MAX_EFFECTS = 4
WHITE = (255, 255, 255)
_ALIASES = {"jpg": "jpeg", "heif": "heic"}
_AT_FIELD = re.compile(r"at `\$\.([\w.]+)")  # where a msgspec.ValidationError is


class FormValue(tuple):
    """A value a form writes as text: :meth:`from_text` reads it (``ValueError`` with the message a
    client reads), ``str()`` writes it back. A tuple, so that it is its own cache-key form."""

    __slots__ = ()

    @classmethod
    def from_text(cls, text: str) -> "FormValue":
        raise NotImplementedError


class Color(FormValue):
    """An sRGB colour ``(r, g, b)``, 0-255; in a form, any text :func:`effects.colors.parse_color` reads."""

    @classmethod
    def from_text(cls, text: str) -> "Color":
        return cls(parse_color(text))

    def __str__(self) -> str:
        return hex_color(self)


class Padding(FormValue):
    """The space kept around the subject, CSS order ``(top, right, bottom, left)``, each
    ``(value, "px" | "%")`` (% of the subject box: its height for top/bottom, width for left/right).
    Written as 1, 2 or 4 values, e.g. ``5%``, ``40px 20px``, ``10 5% 10 5%`` (no unit: px)."""

    MAX_PX, MAX_PERCENT = 4096, 100

    @classmethod
    def from_text(cls, text: str) -> "Padding":
        parts = [_length(part, text) for part in re.split(r"[\s,]+", text.strip())]
        if len(parts) not in (1, 2, 4):
            raise ValueError(f"{text[:40]!r}: expected 1, 2 or 4 lengths (top right bottom left), e.g. 5% or 40px 20px")
        top, right, bottom, left = parts * 4 if len(parts) == 1 else parts * 2 if len(parts) == 2 else parts
        return cls((top, right, bottom, left))

    def __str__(self) -> str:
        return " ".join(f"{value:g}{unit}" for value, unit in self)


def _length(part: str, text: str) -> tuple[float, str]:
    found = re.fullmatch(r"(\d+(?:\.\d+)?)(px|%)?", part.lower())
    if not found:
        raise ValueError(f"{text[:40]!r}: each length is a number of px or a %, e.g. 40px or 5%")
    value, unit = float(found.group(1)), found.group(2) or "px"
    if value > (Padding.MAX_PERCENT if unit == "%" else Padding.MAX_PX):
        raise ValueError(f"{text[:40]!r}: at most {Padding.MAX_PX} px or {Padding.MAX_PERCENT}% a side")
    return value, unit


class Size(FormValue):
    """The canvas: ``("original", 0, 0)`` (the input's, grown where the layout needs room),
    ``("photo", 0, 0)`` (the input's size, fixed: the subject is scaled and placed in it as in a WxH
    size), ``("subject", 0, 0)`` (the subject box with its padding) or ``("px", W, H)``; written
    ``original``, ``photo``, ``subject`` or ``WxH``, e.g. ``2000x2000``."""

    @classmethod
    def from_text(cls, text: str) -> "Size":
        word = text.strip().lower()
        if word in ("original", "photo", "subject"):
            return cls((word, 0, 0))
        found = re.fullmatch(r"(\d{1,5})\s*[x\u00d7]\s*(\d{1,5})", word)
        if not found or not all(1 <= int(side) <= 16384 for side in found.groups()):
            raise ValueError(f"{text[:40]!r}: expected original, photo, subject or WxH in px (1-16384 each), "
                             "e.g. 2000x2000")
        return cls(("px", int(found.group(1)), int(found.group(2))))

    def __str__(self) -> str:
        return self[0] if self[0] != "px" else f"{self[1]}x{self[2]}"


class Position(FormValue):
    """Where the subject sits in the free space, ``(x, y)`` as fractions (0, 0) top left to (1, 1)
    bottom right; written ``center``, ``top``, ``bottom``, ``left``, ``right`` or ``X% Y%``."""

    NAMES = {"center": (0.5, 0.5), "top": (0.5, 0.0), "bottom": (0.5, 1.0), "left": (0.0, 0.5), "right": (1.0, 0.5)}

    @classmethod
    def from_text(cls, text: str) -> "Position":
        word = text.strip().lower()
        if word in cls.NAMES:
            return cls(cls.NAMES[word])
        found = re.fullmatch(r"(\d+(?:\.\d+)?)%[\s,]+(\d+(?:\.\d+)?)%", word)
        if not found or not all(float(v) <= 100 for v in found.groups()):
            raise ValueError(f"{text[:40]!r}: expected {', '.join(cls.NAMES)} or 'X% Y%' (0-100 each), e.g. 50% 80%")
        return cls((float(found.group(1)) / 100, float(found.group(2)) / 100))

    def __str__(self) -> str:
        named = {v: k for k, v in self.NAMES.items()}.get(tuple(self))
        return named or f"{self[0] * 100:g}% {self[1] * 100:g}%"


class Offset(FormValue):
    """A shift in px, ``(dx, dy)`` (right and down positive); written ``dx,dy``, e.g. ``10,10``."""

    @classmethod
    def from_text(cls, text: str) -> "Offset":
        found = re.fullmatch(r"(-?\d{1,4})\s*[, ]\s*(-?\d{1,4})", text.strip())
        if not found or not all(abs(int(v)) <= 1000 for v in found.groups()):
            raise ValueError(f"{text[:40]!r}: expected dx,dy in px (-1000 to 1000 each), e.g. 10,10")
        return cls((int(found.group(1)), int(found.group(2))))

    def __str__(self) -> str:
        return f"{self[0]},{self[1]}"


class Background(FormValue):
    """What lies under the subject: ``("transparent",)``, ``("color", r, g, b, a)``, ``("blur",)`` (the
    photo's own background, blurred) or ``("image",)`` (the upload ``background_file``). Written
    ``transparent``, ``blur``, ``image``, or a colour: any form of ``color``, or with alpha ``#RRGGBBAA``."""

    @classmethod
    def from_text(cls, text: str) -> "Background":
        word = text.strip().lower()
        if word in ("transparent", "blur", "image"):
            return cls((word,))
        found = re.fullmatch(r"#?([0-9a-f]{6})([0-9a-f]{2})", word)
        if found:
            return cls(("color", *parse_color(found.group(1)), int(found.group(2), 16)))
        try:
            return cls(("color", *parse_color(text), 255))
        except ValueError as exc:
            raise ValueError(f"{exc}; or transparent, blur, image, #RRGGBBAA") from None

    def __str__(self) -> str:
        if self[0] != "color":
            return self[0]
        return hex_color(self[1:4]) + (f"{self[4]:02x}" if self[4] != 255 else "")

    @property
    def opaque_color(self) -> tuple[int, int, int] | None:
        return tuple(self[1:4]) if self[0] == "color" and self[4] == 255 else None  # type: ignore[return-value]


class Region(FormValue):
    """A rectangle ``(x1, y1, x2, y2)``, each ``(value, "px" | "%")`` (px of the upload as sent; % of its
    width for x, of its height for y); written ``x1 y1 x2 y2`` (spaces or commas; no unit: px), e.g.
    ``0% 0% 100% 100%`` or ``10px 20px 300px 400px``."""

    MAX_PX = 65535  # the largest side a JPEG (or nearly any upload) can have

    @classmethod
    def from_text(cls, text: str) -> "Region":
        parts = re.split(r"[\s,]+", text.strip())
        found = [re.fullmatch(r"(\d{1,5}(?:\.\d{1,6})?)(px|%)?", part.lower()) for part in parts]
        if len(parts) != 4 or not all(found):
            raise ValueError(f"{text[:40]!r}: expected x1 y1 x2 y2, each a number of px or a %, "
                             "e.g. 0% 0% 100% 100% or 10px 20px 300px 400px")
        region = cls((float(f.group(1)), f.group(2) or "px") for f in found)  # type: ignore[union-attr]
        if any(value > (100 if unit == "%" else cls.MAX_PX) for value, unit in region):
            raise ValueError(f"{text[:40]!r}: each coordinate is at most 100% or {cls.MAX_PX} px")
        for low, high in ((region[0], region[2]), (region[1], region[3])):
            if low[1] == high[1] and low[0] >= high[0]:  # mixed units are compared on the image
                raise ValueError(f"{text[:40]!r}: x1 must be less than x2 and y1 less than y2")
        return region

    def __str__(self) -> str:
        return " ".join(f"{value:g}{unit}" for value, unit in self)

    def pixels(self, size: tuple[int, int], source_size: tuple[int, int]) -> tuple[int, int, int, int]:
        """The region on an image of ``size`` made from an upload of ``source_size`` (px scale with it):
        the columns x1..x2 and rows y1..y2 it touches, clipped to the image (empty when outside it)."""
        edges = []
        for (value, unit), side, source in zip(self, size * 2, source_size * 2):
            edges.append(round(value / 100 * side if unit == "%" else value * side / source, 6))
        x1, y1, x2, y2 = edges
        if x1 >= x2 or y1 >= y2:
            raise BadOption("roi", f"{self}: x1 must be less than x2 and y1 less than y2 on this "
                                   f"{source_size[0]}x{source_size[1]} image")
        width, height = size
        return (min(width, max(0, math.floor(x1))), min(height, max(0, math.floor(y1))),
                min(width, max(0, math.ceil(x2))), min(height, max(0, math.ceil(y2))))


class Strokes(FormValue):
    """Correction strokes painted over the photo: ``(width, line, line, ...)``, each line a tuple of
    ``(x, y)`` points in px of the upload as sent (scaled with it when it is worked smaller), the brush
    ``width`` px wide. Written as JSON: ``{"width": 30, "lines": [[[x, y], [x, y], ...], ...]}``, or the
    lines alone (``[[[x, y], ...], ...]``, width :data:`DEFAULT_WIDTH`); a line of one point is a dot."""

    DEFAULT_WIDTH = 24
    MAX_LINES, MAX_POINTS, MAX_WIDTH, MAX_PX = 64, 4096, 2000, 65535
    EXAMPLE = '{"width": 30, "lines": [[[120, 40], [180, 90]]]}'

    @classmethod
    def from_text(cls, text: str) -> "Strokes":
        value = _decoded(text)
        width: Any = cls.DEFAULT_WIDTH
        if isinstance(value, dict):
            unknown = set(value) - {"width", "lines"}
            if unknown or "lines" not in value:
                raise ValueError(f"expected {{\"width\": px, \"lines\": [...]}}, e.g. {cls.EXAMPLE}")
            width, value = value.get("width", width), value["lines"]
        if isinstance(width, bool) or not isinstance(width, (int, float)) or not 1 <= width <= cls.MAX_WIDTH:
            raise ValueError(f"width: a brush width in px, 1 to {cls.MAX_WIDTH}")
        if not isinstance(value, list) or not value:
            raise ValueError(f"expected a list of lines, each a list of [x, y] points in px, e.g. {cls.EXAMPLE}")
        if len(value) > cls.MAX_LINES:
            raise ValueError(f"at most {cls.MAX_LINES} lines")
        lines = []
        for line in value:
            if not isinstance(line, list) or not line or not all(_is_point(p, cls.MAX_PX) for p in line):
                raise ValueError(f"each line is a non-empty list of [x, y] points, each 0 to {cls.MAX_PX} px, "
                                 f"e.g. {cls.EXAMPLE}")
            lines.append(tuple((float(x), float(y)) for x, y in line))
        if sum(map(len, lines)) > cls.MAX_POINTS:
            raise ValueError(f"at most {cls.MAX_POINTS} points in all")
        return cls((float(width), *lines))

    @property
    def width(self) -> float:
        return self[0]

    @property
    def lines(self) -> tuple[tuple[tuple[float, float], ...], ...]:
        return self[1:]

    def __str__(self) -> str:
        return json.dumps({"width": self.width, "lines": [[[x, y] for x, y in line] for line in self.lines]},
                          separators=(",", ":"))


def _is_point(point: Any, limit: float) -> bool:
    return isinstance(point, list) and len(point) == 2 and all(
        not isinstance(v, bool) and isinstance(v, (int, float)) and 0 <= v <= limit for v in point)


TRANSPARENT = Background(("transparent",))
WHITE_BACKGROUND = Background(("color", *WHITE, 255))

# Complete layouts by name, written as a form writes them (and read by the same parser); explicit
# fields override a preset's. GET /api/v2/layouts lists them.
PRESETS: dict[str, dict[str, str]] = {
    "square-white": {"crop": "true", "size": "2000x2000", "scale": "85%", "max_upscale": "1", "position": "center",
                     "background": "white"},
    "square-transparent": {"crop": "true", "size": "2000x2000", "scale": "85%", "max_upscale": "1",
                           "position": "center", "background": "transparent"},
    "sticker": {"crop": "true", "padding": "32px", "size": "subject", "outline": "24", "outline_color": "white",
                "background": "transparent"},
    "portrait-blur": {"background": "blur", "blur_radius": "24"},
}


class Layout(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the result is framed and what lies under it (app/pipeline/layout/); every endpoint takes
    these fields. All defaults: the subject where it was, on the photo's own canvas."""

    preset: Annotated[Literal[tuple(PRESETS)] | None, Meta(  # type: ignore[valid-type]
        description="a complete layout by name (GET /api/v2/layouts); explicit fields override it")] = None
    crop: Annotated[bool, Meta(description="cut the canvas to the subject's bounding box (alpha of 8/255 and more)")] = False
    padding: Annotated[Padding, Meta(description="space around the subject: 1, 2 or 4 lengths (top right bottom "
                                                 "left), each px or % of the subject box, e.g. 5% or 40px 20px")] \
        = Padding(((0.0, "px"),) * 4)
    size: Annotated[Size, Meta(description="original (the photo's canvas, grown where the layout needs room), "
                                           "photo (the photo's size, fixed: the subject scaled and placed in it like "
                                           "in a WxH size), subject (the subject box with its padding) or WxH in px, "
                                           "e.g. 2000x2000")] = Size(("original", 0, 0))
    position: Annotated[Position, Meta(description="where the subject sits in a larger canvas: center, top, bottom, "
                                                   "left, right or 'X% Y%'")] = Position((0.5, 0.5))
    scale: Annotated[float, Meta(ge=0.1, le=1.0, description="the subject's size as a share of the canvas, 10%-100% "
                                                             "(its box fits in that share of each side)",
                                 extra={"percent": True})] | None = None
    max_upscale: Annotated[float, Meta(ge=0.1, le=8.0, description="the most the subject is enlarged to fit a "
                                                                   "fixed size (1 = never)")] = 1.0
    # None: the endpoint's own, filled in by Options.completed
    background: Annotated[Background, Meta(description="transparent, a colour (also #RRGGBBAA), blur (the photo's own "
                                                       "background, blurred) or image (background_file); unset: the "
                                                       "endpoint's (transparent; change_color: `color`; white for JPEG)"
                                           )] | None = None
    blur_radius: Annotated[int, Meta(ge=1, le=500, description="background=blur: the blur's radius in px")] = 20
    background_fit: Annotated[Literal["cover", "contain"], Meta(description="background=image: fill the canvas "
                                                                            "(cover) or fit inside it (contain)")] = "cover"
    shadow: Annotated[Literal["none", "drop", "contact"], Meta(description="none, drop (the silhouette, offset "
                                                                           "and soft) or contact (a floor shadow)")] = "none"
    shadow_color: Annotated[Color, Meta(description=COLOR_FORMS)] = Color((0, 0, 0))
    shadow_opacity: Annotated[float, Meta(ge=0.0, le=1.0, description="0-1")] = 0.5
    shadow_blur: Annotated[int, Meta(ge=0, le=500, description="the shadow's softness in px")] = 20
    shadow_offset: Annotated[Offset, Meta(description="shadow=drop: dx,dy in px")] = Offset((10, 10))
    outline: Annotated[int, Meta(ge=0, le=500, description="a solid border following the silhouette, px "
                                                           "(0 = none): die-cut stickers")] = 0
    outline_color: Annotated[Color, Meta(description=COLOR_FORMS)] = Color(WHITE)

    @property
    def needs_lay_out(self) -> bool:
        """Whether the layout stage (``lay_out``) must run: anything beyond the subject where it was over a
        plain background (framing, a shadow, an outline, a translucent, blurred or image background)."""
        return msgspec.structs.replace(self, background=None, preset=None) != NO_LAYOUT \
            or self.background[0] in ("blur", "image") or self.background[0] == "color" and self.background[4] != 255

    @property
    def opaque(self) -> bool:
        """The background covers the whole canvas (then the output needs no alpha channel)."""
        kind = self.background[0]
        return kind == "blur" or kind == "color" and self.background[4] == 255 or \
            kind == "image" and self.background_fit == "cover"


NO_LAYOUT = Layout()

Quality = Annotated[int, Meta(ge=1, le=100, description="JPEG/WebP quality (WebP: 100 = lossless); ignored for PNG",
                              extra={"stage": "encode"})]
Refine = Annotated[bool, Meta(description="re-estimate the subject's colours at soft edges (hair, fur) "
                                          "so they lose the old background's tint", extra={"stage": "compose"})]
UseCache = Annotated[bool, Meta(description="read and write the result cache", extra={"stage": "cache"})]


def _format(*formats: str, description: str) -> Any:
    return Annotated[Literal[formats], Meta(description=description, extra={"stage": "encode"})]  # type: ignore[valid-type]


PLAIN = Layout(background=TRANSPARENT)  # the default layout, complete (its background filled in)


class Options(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Fields every kind of result has; subclasses declare theirs. ``KIND`` names the result in cache keys.

    Built by :meth:`from_form` (or, in code, with :meth:`completed` after the constructor when a
    field is left to the endpoint); the defaults alone are complete."""

    KIND: ClassVar[str]
    layout: Layout = PLAIN  # its fields are the form's own (flat), after the class's
    use_cache: UseCache = True
    max_megapixels: Annotated[float, Meta(
        ge=0.01, le=1000, description="work at most this many megapixels: a larger photo is scaled down first "
                                      "(aspect kept); unset: the photo's own size", extra={"stage": "decode"})] | None = None
    roi: Annotated[Region, Meta(description="region of interest: only its contents can be the subject; everything "
                                            "outside is background. x1 y1 x2 y2, each px or %",
                                extra={"stage": "segment"})] | None = None
    keep_mask: Annotated[Strokes, Meta(description="correction strokes over what must stay: the model's mask is made "
                                                   "opaque under them and over the region they touch, its edge "
                                                   "re-solved. JSON {\"width\": px, \"lines\": [[[x, y], ...], ...]} in "
                                                   "px of the upload, or an image the upload's size as a file part "
                                                   "(white = painted)", extra={"stage": "segment"})] | None = None
    remove_mask: Annotated[Strokes, Meta(description="correction strokes over what must go (a ghost, a stray "
                                                     "region): the region they touch is made transparent, its edge "
                                                     "re-solved; written as keep_mask", extra={"stage": "segment"})] \
        | None = None

    def default_background(self) -> Background:
        """The background when the request names none."""
        return TRANSPARENT

    def completed(self) -> "Options":
        """These options with what the request left to the endpoint filled in (a new instance)."""
        if self.layout.background is not None:
            return self
        return msgspec.structs.replace(
            self, layout=msgspec.structs.replace(self.layout, background=self.default_background()))

    @classmethod
    def from_form(cls, form: Mapping[str, str]) -> "Options":
        """Options from form fields (strings); fields the class does not declare are not read here
        (:func:`unknown_fields` finds them)."""
        walk = fields(cls)
        given = {f.name: raw.strip() for f in walk if (raw := form.get(f.name)) is not None and raw.strip()}
        preset = given.get("preset", "").lower()
        if preset in PRESETS:  # its fields as if sent, under the ones that were
            given = {**PRESETS[preset], **given}
        values: dict[str, Any] = {f.group: {} for f in walk if f.group}  # a group's unset fields: the endpoint's
        for field in walk:
            if field.name in given:
                into = values[field.group] if field.group else values
                into[field.name] = field.prepare(given[field.name])
            elif field.required:
                raise BadOption(field.name, f"required: {field.expected}")
        try:  # one conversion of the whole form: msgspec checks every declared type and range
            options = msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as exc:
            name = _AT_FIELD.search(str(exc)).group(1).rsplit(".", 1)[-1]  # type: ignore[union-attr]
            raise next(f for f in walk if f.name == name).refusal(given[name]) from None
        return options.completed()

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        """The form's fields (the layout's among them)."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def form_schema(cls) -> dict[str, Any]:
        """The JSON Schema of each form field (JSON-valued fields are strings in a form)."""
        return form_schema(cls)

    def resolved(self) -> "Options":
        """The options of the result to make (a front for another kind of result maps onto it)."""
        return self

    def fields_without_effect(self) -> tuple[str, ...]:
        """Fields whose values do not change this result's bytes (left out of the cache key)."""
        return ("quality",) if getattr(self, "format", None) == "png" else ()  # PNG is lossless

    def cache_fields(self) -> dict[str, Any]:
        """The options that decide the output's bytes, normalised: the result cache's key. A preset
        is left out: it is the fields it sets (explicit fields give the same key)."""
        skip = {"use_cache", "preset", *self.fields_without_effect()}
        key: dict[str, Any] = {}
        for field in fields(type(self)):
            if field.name in skip:
                continue
            holder = getattr(self, field.group) if field.group else self
            into = key.setdefault(field.group, {}) if field.group else key
            into[field.name] = msgspec.to_builtins(getattr(holder, field.name))
        return key


# The correction strokes' fields: JSON lines in the form, or a mask image (a file part; the command
# line: a file's path) that app.pipeline.run.strokes_of paints at the image's working size.
STROKE_FIELDS = tuple(name for name, hint in Options.__annotations__.items() if "Strokes" in str(hint))


class RemoveOptions(Options, frozen=True):
    """The subject on a transparent background, or its mask."""

    KIND = "remove"
    format: _format("png", "webp", "jpeg", "zip", "heic", "avif",
                    description="output format: png, webp, heic (heif), avif (transparent); jpeg (jpg, over white "
                                "unless `background` says otherwise); zip (remove.bg's: color.jpg, the subject's "
                                "colours, and alpha.png, its alpha). webp, heic and avif with transparency are "
                                "worked at most MAX_ENCODE_MB / their encoder's bytes a pixel (X-Scaled-From)") = "png"
    only_mask: Annotated[bool, Meta(description="return the 8-bit mask instead", extra={"stage": "compose"})] = False
    quality: Quality = 90
    refine_foreground: Refine = False

    def __post_init__(self) -> None:
        if self.format == "zip" and self.only_mask:
            raise BadOption("format", "zip holds the subject's colours and its alpha; for the mask alone ask for "
                                      "png or jpeg with only_mask")

    def default_background(self) -> Background:  # JPEG has no transparency
        return WHITE_BACKGROUND if self.format == "jpeg" else TRANSPARENT

    def completed(self) -> "RemoveOptions":
        """The background filled in: white for JPEG, also when asked for transparent."""
        background = self.layout.background
        if background is not None and not (self.format == "jpeg" and background == TRANSPARENT):
            return self
        return msgspec.structs.replace(
            self, layout=msgspec.structs.replace(self.layout, background=self.default_background()))

    def fields_without_effect(self) -> tuple[str, ...]:
        # a mask has no colours to refine; zip's colours are always refined
        return (*super().fields_without_effect(), "refine_foreground") if self.only_mask or self.format == "zip" \
            else super().fields_without_effect()


class ChangeColorOptions(Options, frozen=True):
    """The subject over a solid colour."""

    KIND = "change_color"
    color: Annotated[Color, Meta(description=f"the background colour ({COLOR_FORMS}); `background` overrides it",
                                 extra={"stage": "compose"})] = Color(WHITE)
    format: _format("jpeg", "png", "webp", "heic", "avif", description="output format (jpg = jpeg, heif = heic)") = "jpeg"
    quality: Quality = 90
    refine_foreground: Refine = False
    layout: Layout = Layout(background=Background(("color", *WHITE, 255)))  # the default `color`'s

    def default_background(self) -> Background:  # `color`, unless `background` (or a preset) says otherwise
        return Background(("color", *self.color, 255))

    def fields_without_effect(self) -> tuple[str, ...]:
        return (*super().fields_without_effect(), "color")  # the layout's background holds it


class RemoveBackgroundOptions(Options, frozen=True):
    """POST /remove-background, the original service's fields: a front for the two above."""

    KIND = "remove"
    output_format: _format("png", "jpeg", "webp", description="png/webp: transparent; jpeg: over white") = "png"
    quality: Quality = 90

    def completed(self) -> Options:  # no background of its own: the options it resolves to give theirs
        return self

    def resolved(self) -> Options:
        """The equivalent request to /api/bg/remove or /api/bg/change_color (sharing their cache entries)."""
        common = {"quality": self.quality, "use_cache": self.use_cache, "layout": self.layout,
                  "max_megapixels": self.max_megapixels, "roi": self.roi, "keep_mask": self.keep_mask,
                  "remove_mask": self.remove_mask}
        if self.output_format == "jpeg":
            return ChangeColorOptions(format="jpeg", **common).completed()
        return RemoveOptions(format=self.output_format, **common).completed()


_EFFECTS_EXAMPLE = 'e.g. ["blackwhite", "popart"]'


class ProcessOptions(Options, frozen=True):
    """POST /api/v2/process: which effects with which (resolved, checked) parameters, and the output."""

    KIND = "process"
    effects: Annotated[list, Meta(
        min_length=1, max_length=MAX_EFFECTS,
        description=f"JSON array of 1-{MAX_EFFECTS} effect names, {_EFFECTS_EXAMPLE} (GET /api/v2/effects lists them)",
        extra={"expected": f"a JSON array of 1 to {MAX_EFFECTS} effect names, {_EFFECTS_EXAMPLE}", "stage": "effects"},
    )]
    # Completed: each effect's resolved parameters, in the order of ``effects``.
    effect_params: Annotated[dict, Meta(
        description='JSON object keyed by effect name, e.g. {"dither": {"dot_spacing": 3}}',
        extra={"expected": 'a JSON object keyed by effect name, e.g. {"dither": {"dot_spacing": 3}}',
               "stage": "effects"},
    )] = {}
    remove_background: Annotated[bool, Meta(
        description="effects act on the cut-out subject (false: on the whole photo)", extra={"stage": "segment"})] = True
    format: _format("png", "webp", "jpeg", "heic", "avif", description="output format of every image") = "png"
    quality: Quality = 90
    refine_foreground: Refine = False
    response: Annotated[Literal["json", "image"], Meta(
        description="json: every image base64-encoded in JSON, with timings and parameters; image: the image "
                    "itself (one effect; also chosen by `Accept: image/*`)", extra={"stage": "encode"})] = "json"

    def __post_init__(self) -> None:
        names = self.effects
        try:
            for name in names:
                effects.get(name)  # the registry's own check and message for an unknown name
        except ParamError as exc:
            raise BadOption(exc.field, exc.message) from None
        if len(set(names)) != len(names):
            raise BadOption("effects", "each effect may appear once (results are keyed by name)")
        for key in self.effect_params:
            if key not in names:
                raise BadOption(f"effect_params.{key}", f"parameters for an effect not in `effects` ({', '.join(names)})")

    def default_background(self) -> Background:  # JPEG has no transparency
        return WHITE_BACKGROUND if self.format == "jpeg" else TRANSPARENT

    def fields_without_effect(self) -> tuple[str, ...]:
        return (*super().fields_without_effect(), "response")  # how the images are sent, not what they are

    def completed(self) -> "ProcessOptions":
        """Each effect's parameters resolved (defaults, preset, the given ones, checked); the background
        filled in, white for JPEG (also when asked for transparent)."""
        resolved = {}
        for name in self.effects:
            try:
                resolved[name] = effects.resolve(name, self.effect_params.get(name), path=f"effect_params.{name}")
            except ParamError as exc:
                raise BadOption(exc.field, exc.message) from None
        background = self.layout.background
        if background is None or background == TRANSPARENT:
            background = self.default_background()
        return msgspec.structs.replace(self, effect_params=resolved,
                                       layout=msgspec.structs.replace(self.layout, background=background))

    def public_params(self) -> dict[str, dict[str, Any]]:
        """Each effect's parameters as applied, as JSON values (colours as #rrggbb)."""
        return {name: effects.get(name).public(params) for name, params in self.effect_params.items()}


def unknown_fields(options: type[Options], given: list[str], taker: str, also: tuple[str, ...] = ()) -> BadOption | None:
    """A form field the options do not declare is a 400 naming it, not silently ignored: someone
    migrating from another API (``crop=true``, ``bg_image=@x.jpg``) must learn it had no effect."""
    allowed = {*(f.name for f in fields(options)), *also}
    unknown = [name for name in dict.fromkeys(given) if name not in allowed]
    if not unknown:
        return None
    listed = ", ".join(repr(name[:40]) for name in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
    return BadOption(unknown[0][:100], f"unknown field{'s' if len(unknown) > 1 else ''} {listed}; "
                                       f"{taker} takes {', '.join(sorted(allowed))}")


# -- the walk over the declaration ---------------------------------------------------------


@dataclass(frozen=True)
class OptionField:
    """One form field as its class declares it. ``default`` is :data:`msgspec.NODEFAULT` for a
    required field, None where the endpoint decides (``background``, ``scale``, ``preset``)."""

    name: str
    type: Any  # the declared Python type (``int``, ``Literal[...]``, ``Color``, ``list``), optional unwrapped
    schema: Mapping[str, Any]  # its JSON Schema in a form (OpenAPI's): msgspec's, text-valued fields as strings
    default: Any
    minimum: float | None
    maximum: float | None
    choices: tuple[str, ...]
    description: str
    stage: str | None  # the pipeline step it acts on: decode, layout, segment, compose, effects, encode, cache
    group: str | None  # the options' field holding it (``layout``), if not the options themselves
    kind: str  # how a form writes it: bool | choice | int | float | percent | value (a FormValue) | json
    expected: str  # what a valid value is, for error messages

    @property
    def required(self) -> bool:
        return self.default is msgspec.NODEFAULT

    def prepare(self, raw: str) -> Any:
        """The form's text as the declared type reads it (msgspec then checks it): booleans and
        choices in their spellings, JSON decoded; colours parsed here (their own messages)."""
        kind = self.kind
        if kind == "bool":
            return BOOLEAN_WORDS.get(raw.lower(), raw)
        if kind == "choice":
            return _ALIASES.get(raw.lower(), raw.lower())
        if kind == "percent":
            if raw.endswith("%"):
                try:
                    return float(raw[:-1]) / 100
                except ValueError:
                    return raw
            return raw
        if kind == "json":
            return _json(self.name, raw)
        if kind == "value":
            try:
                return self.type.from_text(raw)
            except ValueError as exc:
                raise BadOption(self.name, str(exc)) from None
        return raw

    def refusal(self, raw: str) -> BadOption:
        """The 400 for a value msgspec refused: what the declaration expects, and what came."""
        if self.kind == "json":
            return BadOption(self.name, f"expected {self.expected}")
        got: Any = raw
        if self.kind == "int":
            try:
                got = int(raw)
            except ValueError:
                pass
        return BadOption(self.name, f"expected {self.expected}, got {got!r}")


@functools.cache
def fields(cls: type[msgspec.Struct]) -> tuple[OptionField, ...]:
    """Every form field of an options class, as declared: its own first, then the layout's (a group's
    fields are the form's own), the common ones (``use_cache``) last. The one reader of msgspec's view
    of the declaration: the form reader, the cache key and the OpenAPI document all start here."""
    hints = typing.get_type_hints(cls, include_extras=True)
    schemas = _schemas(cls)
    walk: list[OptionField] = []
    for f in mi.type_info(cls).fields:
        if isinstance(f.type, mi.StructType):  # a group (the layout): its fields are the form's own
            walk.extend(_in_group(g, f.name) for g in fields(f.type.cls))
            continue
        walk.append(_field(f, _python_type(hints[f.name]), schemas[f.name]))
    common = set(Options.__struct_fields__)
    return (*(f for f in walk if f.name not in common and not f.group), *(f for f in walk if f.group),
            *(f for f in walk if f.name in common))


def form_schema(cls: type[Options]) -> dict[str, Any]:
    """Each form field's JSON Schema, by name (the form in the OpenAPI document)."""
    return {f.name: dict(f.schema) for f in fields(cls)}


def _in_group(field: OptionField, group: str) -> OptionField:
    return dataclasses.replace(field, group=group, stage=field.stage or group)  # a group's stage is its name


def _field(f: mi.Field, python_type: Any, prop: dict[str, Any]) -> OptionField:
    t, extra = f.type, {}
    if isinstance(t, mi.Metadata):
        t, extra = t.type, t.extra or {}
    if isinstance(t, mi.UnionType) and any(isinstance(x, mi.NoneType) for x in t.types):  # optional
        t = next(x for x in t.types if not isinstance(x, mi.NoneType))
        if isinstance(t, mi.Metadata):
            t, extra = t.type, t.extra or {}
    lo = hi = None
    choices: tuple[str, ...] = ()
    if isinstance(t, mi.BoolType):
        kind, expected = "bool", "true or false"
    elif isinstance(t, mi.LiteralType):
        choices = tuple(t.values)
        kind, expected = "choice", "one of " + ", ".join(choices)
    elif isinstance(t, mi.IntType):
        lo, hi = t.ge, t.le
        kind, expected = "int", f"an integer from {lo} to {hi}"
    elif isinstance(t, mi.FloatType):
        lo, hi = t.ge, t.le
        percent = extra.get("percent")
        kind = "percent" if percent else "float"
        expected = f"{lo * 100:g}% to {hi * 100:g}%" if percent else f"a number from {lo:g} to {hi:g}"
    elif isinstance(t, mi.CustomType) and issubclass(t.cls, FormValue):
        kind, expected = "value", ""  # its own messages
    else:  # a list or an object, sent as JSON text
        lo, hi = getattr(t, "min_length", None), getattr(t, "max_length", None)
        kind, expected = "json", extra.get("expected", "JSON")
    default = f.default if f.default_factory is msgspec.NODEFAULT else f.default_factory()
    if "anyOf" in prop:  # an optional value: its type, not null (a form leaves it out)
        prop = {**next(p for p in prop["anyOf"] if p.get("type") != "null"),
                **{k: v for k, v in prop.items() if k not in ("anyOf", "default")}}
    if kind in ("json", "value", "percent"):  # text in a form; a value's default as the form writes it
        prop = {"type": "string", "description": prop.get("description", ""),
                **({"default": str(default)} if kind == "value" and default is not None else {})}
    return OptionField(f.name, python_type, prop, default, lo, hi, choices, prop.get("description", ""),
                       extra.get("stage"), None, kind, expected)


def _python_type(hint: Any) -> Any:
    """The declared type without its ``Annotated`` metadata and without ``| None``."""
    if typing.get_origin(hint) is Annotated:
        hint = typing.get_args(hint)[0]
    args = typing.get_args(hint)
    if type(None) in args and typing.get_origin(hint) is not Literal:
        (hint,) = [a for a in args if a is not type(None)]
        return _python_type(hint)
    return hint


def _schemas(cls: type[msgspec.Struct]) -> dict[str, dict[str, Any]]:
    """msgspec's JSON Schema of each of the class's own fields (FormValues are text)."""
    (schema,), components = msgspec.json.schema_components([cls], schema_hook=_form_value_schema,
                                                              ref_template="{name}")
    return components[schema["$ref"]]["properties"]


def _form_value_schema(t: type) -> dict[str, Any]:
    if isinstance(t, type) and issubclass(t, FormValue):
        return {"type": "string"}
    raise NotImplementedError


def _json(field: str, raw: str) -> Any:
    try:
        return _decoded(raw)
    except ValueError as exc:
        raise BadOption(field, str(exc)) from None


def _decoded(raw: str) -> Any:
    """``raw`` JSON decoded, or a ``ValueError`` saying what is wrong with it (JSON fields, and the
    FormValues written as JSON)."""
    try:
        if raw.startswith("\ufeff"):  # as json.loads says it (one decoder for all: loads makes one per call)
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", raw, 0)
        return _DECODER.decode(raw)
    except (ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else (str(exc) or "nested too deeply")
        raise ValueError(f"malformed JSON ({reason})") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)
