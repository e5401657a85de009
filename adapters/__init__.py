"""Segmentation adapters behind one port (:class:`adapters.base.Segmenter`).

The adapter is picked once at boot from ``SEGMENTER``; nothing else in the code
branches on which one it is. Adapters are imported lazily, so the CPU tier never
imports torch.
"""

from __future__ import annotations

import importlib

from adapters.base import ModelInfo, ModelLoadError, Segmenter, SegmenterBusy
from config import ConfigError, Settings

# SEGMENTER value -> module exposing ``load(settings) -> Segmenter``.
ADAPTERS = {
    "onnx": "adapters.onnx",
    "inspyrenet": "adapters.inspyrenet",  # needs the `gpu` extra (torch, timm, transparent-background)
}


def load_segmenter(settings: Settings) -> Segmenter:
    module_name = ADAPTERS.get(settings.segmenter)
    if module_name is None:
        known = ", ".join(sorted(ADAPTERS))
        raise ConfigError(f"SEGMENTER: adapter {settings.segmenter!r} is not available in this build (available: {known})")
    return importlib.import_module(module_name).load(settings)


__all__ = ["ADAPTERS", "ModelInfo", "ModelLoadError", "Segmenter", "SegmenterBusy", "load_segmenter"]
