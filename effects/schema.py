"""Declared effect parameters: one schema per effect drives validation, the API listing and the docs.

A :class:`Param` knows its type, range and default and turns a JSON value into a
checked Python value; an :class:`Effect` bundles its parameters, presets and the
pure pixel function. Every check happens in :meth:`Effect.resolve`, before any
pixel work.

A size whose right value depends on the picture (a block, a dot pitch) defaults to
``"auto"``: :meth:`Effect.concrete` turns it into pixels for the subject at hand, so
the art keeps its look from a 400 px thumbnail to a 4000 px print. A value the client
sends is in pixels and used as is.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from effects.colors import FORMS as COLOR_FORMS
from effects.colors import hex_color, parse_color

TYPES = ("number", "integer", "boolean", "enum", "color")
AUTO = "auto"
OPAQUE = 128  # alpha at or above this is the subject's body, for its size


class ParamError(ValueError):
    """A parameter value is not acceptable. ``field`` is a dotted path, e.g. ``blackwhite.grain_strength``."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # one of TYPES
    default: Any
    description: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    # for a size whose default is AUTO: its pixels for this picture, from the RGBA array and the
    # parameters made concrete before it (declaration order)
    auto: Callable[[np.ndarray, Mapping[str, Any]], float] | None = None

    def __post_init__(self):
        assert self.type in TYPES, self.type
        assert (self.auto is not None) == (self.default == AUTO), f"{self.name}: auto needs an auto function"
        # the default must pass its own checks, so a schema cannot advertise a value it refuses
        self.coerce(self.default, self.name)

    def coerce(self, value: Any, path: str) -> Any:
        """The checked value, or :class:`ParamError` naming ``path``."""
        if self.auto is not None and value == AUTO:
            return AUTO
        if self.type == "boolean":
            if isinstance(value, bool):
                return value
            raise ParamError(path, f"expected true or false, got {_show(value)}")
        if self.type == "enum":
            if isinstance(value, str) and value in self.choices:
                return value
            raise ParamError(path, f"expected one of {', '.join(self.choices)}, got {_show(value)}")
        if self.type == "color":
            return _coerce_color(value, path)
        return self._coerce_number(value, path)

    def _coerce_number(self, value: Any, path: str) -> int | float:
        kind = "an integer" if self.type == "integer" else "a number"
        expected = f"expected {kind} from {_num(self.minimum)} to {_num(self.maximum)}"
        if self.auto is not None:
            expected += f' or "{AUTO}"'
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamError(path, f"{expected}, got {_show(value)}")
        # JSON integers are unbounded (4,000 digits parse): compare them exactly, as ints, before any
        # conversion to float, which would overflow; floats must be finite.
        if isinstance(value, float) and not math.isfinite(value):
            raise ParamError(path, f"{expected}, got {_show(value)}")
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            raise ParamError(path, f"{expected}, got {_show(value) if isinstance(value, int) else _num(value)}")
        if self.type == "integer":
            if isinstance(value, float) and not value.is_integer():
                raise ParamError(path, f"{expected}, got {_show(value)}")
            return int(value)
        try:
            return float(value)
        except OverflowError:  # only reachable for a parameter without bounds
            raise ParamError(path, f"{expected}, got {_show(value)}") from None

    def concrete(self, rgba: np.ndarray, values: Mapping[str, Any]) -> int | float:
        """The AUTO value in pixels for this picture, within the parameter's range."""
        value = min(self.maximum, max(self.minimum, self.auto(rgba, values)))
        return int(round(value)) if self.type == "integer" else round(float(value), 2)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "default": self.default}
        if self.type in ("number", "integer"):
            out.update(minimum=self.minimum, maximum=self.maximum)
        if self.type == "enum":
            out["choices"] = list(self.choices)
        if self.type == "color":
            out["default"] = hex_color(self.default)
            out["format"] = COLOR_FORMS
        out["description"] = self.description
        return out


@dataclass(frozen=True)
class Effect:
    """One effect: its API name, parameters, presets and the pure function that renders it.

    ``render(rgba, params)`` receives a read-only HxWx4 uint8 array and the concrete
    parameters (no AUTO left), and returns the new RGB; the input's alpha passes through
    (effects act on the subject, transparency is not theirs), except where the effect's
    look is its outline (8-bit's blocks).
    """

    name: str
    description: str
    params: tuple[Param, ...]
    render: Callable[[np.ndarray, Mapping[str, Any]], np.ndarray]
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # cross-parameter rules, run after each value passed its own check
    check: Callable[[Mapping[str, Any], str], None] | None = None

    def __post_init__(self):
        names = {p.name for p in self.params}
        for preset, values in self.presets.items():
            for key, value in values.items():
                assert key in names, f"{self.name}: preset {preset} sets unknown {key}"
                self.param(key).coerce(value, f"{self.name}.preset.{preset}.{key}")

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def resolve(self, given: Any, path: str | None = None) -> dict[str, Any]:
        """Defaults, then the preset (if ``preset`` is given), then explicit values -> checked parameters.

        Raises :class:`ParamError` for anything wrong, with the dotted path of the field.
        """
        path = path or self.name
        if given is None:
            given = {}
        if not isinstance(given, Mapping):
            raise ParamError(path, f"expected a JSON object of parameters, got {_show(given)}")
        values = {p.name: p.default for p in self.params}
        given = dict(given)
        preset = given.pop("preset", None)
        if self.presets:
            if preset is not None:
                if not isinstance(preset, str) or preset not in self.presets:
                    raise ParamError(f"{path}.preset", f"expected one of {', '.join(self.presets)}, got {_show(preset)}")
                values.update(self.presets[preset])
        elif preset is not None:
            raise ParamError(f"{path}.preset", f"{self.name} has no presets")
        known = {p.name for p in self.params}
        for key in given:
            if key not in known:
                raise ParamError(f"{path}.{key}", f"unknown parameter; {self.name} takes {', '.join(sorted(known))}")
        for key, value in given.items():
            values[key] = self.param(key).coerce(value, f"{path}.{key}")
        if self.check:
            self.check(values, path)
        if preset is not None:
            values = {"preset": preset, **values}
        return values

    def concrete(self, rgba: np.ndarray, params: Mapping[str, Any]) -> dict[str, Any]:
        """Resolved ``params`` with each AUTO size turned into pixels for this picture: what
        :meth:`apply` uses, and what to report as applied."""
        values = dict(params)
        for p in self.params:
            if p.auto is not None and values[p.name] == AUTO:
                values[p.name] = p.concrete(rgba, values)
        return values

    def apply(self, rgba: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
        """Render the effect on an HxWx4 uint8 array with resolved ``params``; same shape out.

        ``render`` returns RGB, and the input's alpha is put back unchanged; or RGBA,
        used as is: pop art's grid (which rearranges the image), 8-bit (one alpha a block)
        and a compiled kernel that copies the alpha itself (blackwhite's film print).
        """
        if rgba.dtype != np.uint8 or rgba.ndim != 3 or rgba.shape[2] != 4:
            raise ValueError(f"expected an HxWx4 uint8 array, got {rgba.dtype} {rgba.shape}")
        view = rgba.view()
        view.setflags(write=False)  # effects are pure: writing to the input raises here
        result = self.render(view, self.concrete(view, params))
        if result.shape[:2] != rgba.shape[:2] or result.dtype != np.uint8:
            raise AssertionError(f"{self.name} returned {result.dtype} {result.shape} for {rgba.shape}")
        if result.shape[2] == 4:
            return result
        return np.dstack((result, rgba[..., 3]))

    def public(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Resolved parameters as JSON values (colours as #rrggbb), e.g. to report what was applied."""
        return {key: hex_color(value) if isinstance(value, tuple) else value for key, value in params.items()}

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "parameters": [p.as_dict() for p in self.params],
            "presets": {name: dict(values) for name, values in self.presets.items()},
        }


def subject_size(rgba: np.ndarray) -> float:
    """The subject's size in px: the geometric mean of its box's sides (alpha at or above OPAQUE), so
    that a tiger lying long counts as a cat sitting of its area; the image's if nothing is opaque."""
    # read as one uint32 a pixel where that is alpha's top byte: contiguous reductions, 3x faster
    packed = sys.byteorder == "little" and rgba.strides[-2:] == (4, 1)
    alpha, threshold = (rgba.view(np.uint32)[..., 0], OPAQUE << 24) if packed else (rgba[..., 3], OPAQUE)
    rows = np.flatnonzero(alpha.max(axis=1) >= threshold)
    if rows.size == 0:
        return math.sqrt(rgba.shape[0] * rgba.shape[1])
    cols = np.flatnonzero(alpha[rows[0]:rows[-1] + 1].max(axis=0) >= threshold)
    return math.sqrt((rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1))


def across_subject(count: int) -> Callable[[np.ndarray, Mapping[str, Any]], float]:
    """An AUTO size that makes the subject ``count`` of it across (see :func:`subject_size`)."""
    return lambda rgba, values: subject_size(rgba) / count


def _coerce_color(value: Any, path: str) -> tuple[int, int, int]:
    if isinstance(value, str):
        try:
            return parse_color(value)
        except ValueError as exc:
            raise ParamError(path, str(exc)) from None
    if (
        isinstance(value, (list, tuple))
        and len(value) == 3
        and all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in value)
    ):
        return int(value[0]), int(value[1]), int(value[2])
    raise ParamError(path, f"expected a colour ({COLOR_FORMS}, or [R, G, B]), got {_show(value)}")


def _num(value: float | None) -> str:
    if value is None:
        return "any"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _show(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        # repr() of a huge int is long, and refused past 4,300 digits (sys.int_info.str_digits_check_threshold)
        return f"an integer of about {math.floor(value.bit_length() * math.log10(2)) + 1} digits"
    text = repr(value) if not isinstance(value, (dict, list)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."
