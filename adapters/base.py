"""The port: what the service needs from any segmentation model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from app.pipeline.errors import ServiceError
from config import BootError


class ModelLoadError(BootError):
    """The model file is missing, corrupt or of an unsupported kind (the message names it)."""


@dataclass(frozen=True)
class ModelInfo:
    name: str  # adapter family, e.g. "onnx"
    model_id: str  # e.g. "u2netp"
    input_size: tuple[int, int]  # (height, width) the network runs at
    parameters: int  # learned parameters in the file
    device: str  # e.g. "cpu"
    file_sha256: str
    file_size_bytes: int

    def as_dict(self) -> dict[str, object]:
        return {
            "adapter": self.name,
            "model": self.model_id,
            "input_size": list(self.input_size),
            "parameters": self.parameters,
            "device": self.device,
            "file_sha256": self.file_sha256,
            "file_size_mb": round(self.file_size_bytes / 1e6, 2),
        }


class SegmenterBusy(ServiceError):
    """The model cannot take this request now (e.g. the GPU ran out of memory); the
    worker is fine and the client should retry after ``retry_after_s`` seconds."""

    code = "model_busy"

    def __init__(self, message: str, retry_after_s: int = 1):
        super().__init__(message)
        self.retry_after_s = retry_after_s


@runtime_checkable
class Segmenter(Protocol):
    info: ModelInfo

    def mask(self, rgb: np.ndarray, guide: np.ndarray | None = None, follow_edges: bool = True) -> np.ndarray:
        """HxWx3 uint8 RGB in, HxW uint8 alpha (0 background .. 255 subject) out, same H and W.
        ``guide``: the photo at its own size when ``rgb`` is a smaller view of it for the model (a
        transparent upload over white): the mask then has the guide's size and follows its edges.
        ``follow_edges=False``: the model's map brought to size plainly, without following the
        photo's edges (the caller re-solves them: the edge matting, app/pipeline/matte.py).

        May raise :class:`SegmenterBusy`; safe to call from several threads."""
        ...

    def runtime(self) -> dict[str, object]:
        """Live figures for /api/bg/health and /api/bg/status (device memory, batching); {} if none."""
        ...
