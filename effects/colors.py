"""Parsing colours as clients write them: ``#00FF00``, ``00FF00``, ``#0F0``, ``255,0,0``, CSS names."""

from __future__ import annotations

import re

from PIL import ImageColor

_HEX = re.compile(r"[0-9a-fA-F]{3}|[0-9a-fA-F]{6}")
_TRIPLE = re.compile(r"(\d{1,3})\s*,\s*(\d{1,3})\s*,\s*(\d{1,3})")

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
            raise ValueError(f"{text!r}: each channel must be 0-255")
        return channels  # type: ignore[return-value]
    try:
        rgb = ImageColor.getrgb(value)
    except ValueError:
        raise ValueError(f"{text!r} is not a colour; use {FORMS}") from None
    if len(rgb) == 4 and rgb[3] != 255:
        raise ValueError(f"{text!r}: a background colour must be opaque")
    return rgb[0], rgb[1], rgb[2]
