"""The effects library: pure functions on RGBA arrays, each declaring its parameters.

``EFFECTS`` maps API names to :class:`effects.schema.Effect`; one module per effect.
Nothing here knows about HTTP: callers resolve parameters (``resolve``), which checks
everything, then ``apply`` them.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from effects import blackwhite, dither, eightbit, popart
from effects.schema import Effect, Param, ParamError

EFFECTS: dict[str, Effect] = {e.name: e for e in (blackwhite.EFFECT, dither.EFFECT, popart.EFFECT, eightbit.EFFECT)}

__all__ = ["EFFECTS", "Effect", "Param", "ParamError", "get", "resolve", "apply", "catalogue"]


def get(name: Any) -> Effect:
    if isinstance(name, str) and name in EFFECTS:
        return EFFECTS[name]
    raise ParamError("effects", f"unknown effect {name!r}; choose from {', '.join(EFFECTS)}")


def resolve(name: str, given: Any = None, path: str | None = None) -> dict[str, Any]:
    """Checked parameters of effect ``name`` (defaults, preset, then ``given``)."""
    return get(name).resolve(given, path)


def apply(name: str, rgba: np.ndarray, params: Mapping[str, Any]) -> np.ndarray:
    """Render effect ``name`` on an HxWx4 uint8 array with resolved ``params``."""
    return get(name).apply(rgba, params)


def catalogue() -> list[dict[str, Any]]:
    """Every effect with its parameter schema and presets, for the API listing and the docs."""
    return [effect.as_dict() for effect in EFFECTS.values()]
