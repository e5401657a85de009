"""Form fields -> typed, validated options. A bad value is a 400 naming its field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from app.colors import parse_color
from app.errors import BadOption

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


@dataclass(frozen=True)
class RemoveOptions:
    format: str
    only_mask: bool
    quality: int

    @classmethod
    def from_form(cls, form: Mapping[str, str]) -> "RemoveOptions":
        return cls(
            format=parse_format(form, "format", ("png", "webp"), "png"),
            only_mask=parse_bool(form, "only_mask", False),
            quality=parse_int(form, "quality", 1, 100, DEFAULT_QUALITY),
        )


@dataclass(frozen=True)
class ChangeColorOptions:
    color: tuple[int, int, int]
    format: str
    quality: int

    @classmethod
    def from_form(cls, form: Mapping[str, str]) -> "ChangeColorOptions":
        return cls(
            color=parse_color_field(form, "color", (255, 255, 255)),
            format=parse_format(form, "format", ("jpeg", "png", "webp"), "jpeg"),
            quality=parse_int(form, "quality", 1, 100, DEFAULT_QUALITY),
        )
