"""Form fields -> typed, validated options. A bad value is a 400 naming its field."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import effects
from app.web.errors import BadOption
from effects import ParamError
from effects.colors import hex_color, parse_color

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_FORMAT_ALIASES = {"jpg": "jpeg"}
DEFAULT_QUALITY = 90


def _value(form: Mapping[str, str], field: str) -> str | None:
    raw = form.get(field)
    if raw is None or raw.strip() == "":
        return None
    return raw.strip()


def parse_bool(form: Mapping[str, str], field: str, default: bool) -> bool:
    raw = _value(form, field)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise BadOption(field, f"expected true or false, got {raw!r}")


def parse_format(form: Mapping[str, str], field: str, allowed: tuple[str, ...], default: str) -> str:
    raw = _value(form, field)
    if raw is None:
        return default
    value = _FORMAT_ALIASES.get(raw.lower(), raw.lower())
    if value not in allowed:
        raise BadOption(field, f"expected one of {', '.join(allowed)}, got {raw!r}")
    return value


def parse_int(form: Mapping[str, str], field: str, lo: int, hi: int, default: int) -> int:
    raw = _value(form, field)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadOption(field, f"expected an integer from {lo} to {hi}, got {raw!r}") from None
    if not lo <= value <= hi:
        raise BadOption(field, f"expected an integer from {lo} to {hi}, got {value}")
    return value


def parse_color_field(form: Mapping[str, str], field: str, default: tuple[int, int, int]) -> tuple[int, int, int]:
    raw = form.get(field)
    if raw is None:
        return default
    try:
        return parse_color(raw)
    except ValueError as exc:
        raise BadOption(field, str(exc)) from None


def _hex(color: tuple[int, int, int] | None) -> str | None:
    """The cache key's form of a colour: one-to-one (a channel outside 0-255 is refused, never written)."""
    return None if color is None else hex_color(color)


def _encoding(fmt: str, quality: int) -> dict[str, Any]:
    """The output format, with the quality only where it changes the bytes (PNG is lossless)."""
    return {"format": fmt} if fmt == "png" else {"format": fmt, "quality": quality}


def _enum(values: tuple[str, ...], default: str, description: str) -> dict[str, Any]:
    return {"type": "string", "enum": list(values), "default": default, "description": description}


_QUALITY = {"type": "integer", "minimum": 1, "maximum": 100, "default": DEFAULT_QUALITY,
            "description": "JPEG/WebP quality (WebP: 100 = lossless); ignored for PNG"}
_REFINE = {"type": "boolean", "default": False,
           "description": "re-estimate the subject's colours at soft edges (hair, fur) so they lose the old background's tint"}
_COLOR = {"type": "string", "description": "#00FF00, 00FF00, #0F0, 255,0,0, rgb(...) or a CSS colour name"}

# Form fields every processing endpoint takes besides its options (documented in /openapi.json).
COMMON_FIELDS: dict[str, dict[str, Any]] = {
    "file": {"type": "string", "format": "binary", "description": "the image (JPEG, PNG, WebP, GIF, BMP, TIFF)"},
    "use_cache": {"type": "boolean", "default": True, "description": "read and write the result cache"},
}


@dataclass(frozen=True)
class RemoveOptions:
    FIELDS: ClassVar[dict[str, dict[str, Any]]] = {
        "format": _enum(("png", "webp"), "png", "output format (transparent background)"),
        "only_mask": {"type": "boolean", "default": False, "description": "return the 8-bit mask instead"},
        "quality": _QUALITY,
        "refine_foreground": _REFINE,
    }

    format: str
    only_mask: bool
    quality: int
    refine_foreground: bool

    @classmethod
    def from_form(cls, form: Mapping[str, str]) -> "RemoveOptions":
        return cls(
            format=parse_format(form, "format", ("png", "webp"), "png"),
            only_mask=parse_bool(form, "only_mask", False),
            quality=parse_int(form, "quality", 1, 100, DEFAULT_QUALITY),
            refine_foreground=parse_bool(form, "refine_foreground", False),
        )

    def cache_fields(self) -> dict[str, Any]:
        """The options that decide the output's bytes, normalised (the result cache's key)."""
        if self.only_mask:
            return {"only_mask": True, **_encoding(self.format, self.quality)}
        return {"only_mask": False, "refine_foreground": self.refine_foreground, **_encoding(self.format, self.quality)}


@dataclass(frozen=True)
class ChangeColorOptions:
    FIELDS: ClassVar[dict[str, dict[str, Any]]] = {
        "color": {**_COLOR, "default": "#FFFFFF"},
        "format": _enum(("jpeg", "png", "webp"), "jpeg", "output format (jpg = jpeg)"),
        "quality": _QUALITY,
        "refine_foreground": _REFINE,
    }

    color: tuple[int, int, int]
    format: str
    quality: int
    refine_foreground: bool

    @classmethod
    def from_form(cls, form: Mapping[str, str]) -> "ChangeColorOptions":
        return cls(
            color=parse_color_field(form, "color", (255, 255, 255)),
            format=parse_format(form, "format", ("jpeg", "png", "webp"), "jpeg"),
            quality=parse_int(form, "quality", 1, 100, DEFAULT_QUALITY),
            refine_foreground=parse_bool(form, "refine_foreground", False),
        )

    def cache_fields(self) -> dict[str, Any]:
        return {"color": _hex(self.color), "refine_foreground": self.refine_foreground,
                **_encoding(self.format, self.quality)}


@dataclass(frozen=True)
class RemoveBackgroundOptions:
    """POST /remove-background, the original service's fields."""

    FIELDS: ClassVar[dict[str, dict[str, Any]]] = {
        "output_format": _enum(("png", "jpeg", "webp"), "png", "png/webp: transparent; jpeg: over white"),
        "quality": _QUALITY,
    }

    output_format: str
    quality: int

    @classmethod
    def from_form(cls, form: Mapping[str, str]) -> "RemoveBackgroundOptions":
        return cls(
            output_format=parse_format(form, "output_format", ("png", "jpeg", "webp"), "png"),
            quality=parse_int(form, "quality", 1, 100, DEFAULT_QUALITY),
        )


MAX_EFFECTS = 4


@dataclass(frozen=True)
class ProcessOptions:
    """POST /api/v2/process: which effects with which (resolved, checked) parameters, and the output."""

    FIELDS: ClassVar[dict[str, dict[str, Any]]] = {
        "effects": {"type": "string", "description": 'JSON array of 1-4 effect names, e.g. ["blackwhite", "popart"] '
                                                     "(GET /api/v2/effects lists them)"},
        "effect_params": {"type": "string", "description": 'JSON object keyed by effect name, e.g. '
                                                           '{"dither": {"dot_spacing": 3}}'},
        "remove_background": {"type": "boolean", "default": True,
                              "description": "effects act on the cut-out subject (false: on the whole photo)"},
        "background": {**_COLOR, "default": "transparent", "description": "transparent, or a colour laid under each result"},
        "format": _enum(("png", "webp", "jpeg"), "png", "output format of every image"),
        "quality": _QUALITY,
        "refine_foreground": _REFINE,
    }

    effects: tuple[tuple[str, dict[str, Any]], ...]  # (name, resolved params), in request order
    remove_background: bool
    background: tuple[int, int, int] | None  # None = transparent
    format: str
    quality: int
    refine_foreground: bool = False

    @classmethod
    def from_form(cls, form: Mapping[str, str]) -> "ProcessOptions":
        names = _effect_names(form)
        given = _json_field(form, "effect_params", default={})
        if not isinstance(given, dict):
            raise BadOption("effect_params", "expected a JSON object keyed by effect name, e.g. {\"dither\": {\"dot_spacing\": 3}}")
        for key in given:
            if key not in names:
                raise BadOption(f"effect_params.{key}", f"parameters for an effect not in `effects` ({', '.join(names)})")
        resolved = []
        for name in names:
            try:
                resolved.append((name, effects.resolve(name, given.get(name), path=f"effect_params.{name}")))
            except ParamError as exc:
                raise BadOption(exc.field, exc.message) from None
        background = _value(form, "background")
        return cls(
            effects=tuple(resolved),
            remove_background=parse_bool(form, "remove_background", True),
            background=None if background is None or background.lower() == "transparent"
            else parse_color_field(form, "background", (255, 255, 255)),
            format=parse_format(form, "format", ("png", "webp", "jpeg"), "png"),
            quality=parse_int(form, "quality", 1, 100, DEFAULT_QUALITY),
            refine_foreground=parse_bool(form, "refine_foreground", False),
        )

    @property
    def effective_background(self) -> tuple[int, int, int] | None:
        """The colour laid under each result: JPEG has no transparency, so white there by default."""
        if self.background is None and self.format == "jpeg":
            return (255, 255, 255)
        return self.background

    def cache_fields(self) -> dict[str, Any]:
        return {
            "effects": [[name, effects.get(name).public(params)] for name, params in self.effects],
            "remove_background": self.remove_background,
            "refine_foreground": self.refine_foreground,
            "background": _hex(self.effective_background),
            **_encoding(self.format, self.quality),
        }


def _effect_names(form: Mapping[str, str]) -> list[str]:
    example = 'e.g. ["blackwhite", "popart"]'
    names = _json_field(form, "effects", default=None)
    if names is None:
        raise BadOption("effects", f"required: a JSON array of 1 to {MAX_EFFECTS} effect names, {example}")
    if not isinstance(names, list) or not 1 <= len(names) <= MAX_EFFECTS:
        raise BadOption("effects", f"expected a JSON array of 1 to {MAX_EFFECTS} effect names, {example}")
    for name in names:
        try:
            effects.get(name)  # the registry's own check and message for an unknown name
        except ParamError as exc:
            raise BadOption(exc.field, exc.message) from None
    if len(set(names)) != len(names):
        raise BadOption("effects", "each effect may appear once (results are keyed by name)")
    return names


def _json_field(form: Mapping[str, str], field: str, default: Any) -> Any:
    raw = _value(form, field)
    if raw is None:
        return default
    try:
        return json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else (str(exc) or "nested too deeply")
        raise BadOption(field, f"malformed JSON ({reason})") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number")
