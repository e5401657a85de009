"""Parsing colours as clients write them: ``#00FF00``, ``00FF00``, ``#0F0``, ``255,0,0``, CSS names.

Every form names one colour with channels 0-255, or is refused: Pillow's ``ImageColor``
also accepts out-of-range functional forms (``rgb(300,0,0)``, ``rgb(200%,0%,0%)``,
``hsl(0,200%,50%)``) and returns channels above 255 or below 0, which would be clamped or
wrapped downstream (and collide in cache keys); those are refused here, like ``300,0,0``.
"""

from __future__ import annotations

import re

from PIL import ImageColor

_HEX = re.compile(r"[0-9a-fA-F]{3}|[0-9a-fA-F]{6}")
_TRIPLE = re.compile(r"(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})")
# Pillow's functional forms; each number's limit by position (hue in degrees, the rest 0-255 or 0-100%).
_FUNCTION = re.compile(r"(rgba?|hsl|hs[bv])\s*\((.*)\)", re.IGNORECASE | re.DOTALL)
_NUMBER = re.compile(r"(\d+\.?\d*)(%?)")

FORMS = "#RRGGBB, RRGGBB, #RGB, R,G,B (0-255), rgb(R,G,B) or a CSS colour name"


def parse_color(text: str) -> tuple[int, int, int]:
    """Return the colour as an (R, G, B) tuple; ``ValueError`` with a readable message otherwise."""
    value = text.strip()
    if not value:
        raise ValueError(f"empty colour; use {FORMS}")
    if _HEX.fullmatch(value):
        value = "#" + value
    triple = _TRIPLE.fullmatch(value)
    if triple:
        channels = tuple(int(c) for c in triple.groups())
        if any(c > 255 for c in channels):
            raise ValueError(f"{_quote(text)}: each channel must be 0-255")
        return channels  # type: ignore[return-value]
    try:
        rgb = ImageColor.getrgb(value)
    except ValueError:
        raise ValueError(f"{_quote(text)} is not a colour; use {FORMS}") from None
    _check_function_ranges(value, text)
    if any(not 0 <= c <= 255 for c in rgb):  # whatever the form: never a channel Pillow computed out of range
        raise ValueError(f"{_quote(text)}: each channel must be 0-255")
    if len(rgb) == 4 and rgb[3] != 255:
        raise ValueError(f"{_quote(text)}: a background colour must be opaque")
    return rgb[0], rgb[1], rgb[2]


def _check_function_ranges(value: str, text: str) -> None:
    """rgb()/rgba(): channels 0-255 or 0-100%; hsl()/hsv()/hsb(): hue 0-360, the others 0-100%."""
    function = _FUNCTION.fullmatch(value)
    if not function:
        return
    name = function.group(1).lower()
    numbers = _NUMBER.findall(function.group(2))
    for position, (number, percent) in enumerate(numbers):
        amount = float(number)
        if name.startswith("rgb"):
            limit, unit = (100, "%") if percent else (255, "")
            what = "alpha" if position == 3 else "each channel"
        else:
            limit, unit = (360, "") if position == 0 else (100, "%")
            what = "the hue" if position == 0 else "saturation and lightness (or value)"
        if amount > limit:
            raise ValueError(f"{_quote(text)}: {what} must be 0-{limit}{unit}")


def _quote(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def hex_color(color: tuple[int, int, int]) -> str:
    """``#rrggbb`` of a colour: one-to-one on valid colours, and refuses anything else (so two
    different values can never share a normalised form, e.g. in a cache key)."""
    if (
        not isinstance(color, tuple)
        or len(color) != 3
        or not all(type(c) is int and 0 <= c <= 255 for c in color)
    ):
        raise ValueError(f"not an (R, G, B) colour with channels 0-255: {color!r}")
    return "#%02x%02x%02x" % color
