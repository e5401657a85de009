"""Cache keys: everything that decides the bytes of a result (the upload's sha256, the model, the
settings that change pixels, the normalised options, the rendering code's sha256, :data:`KEY_VERSION`),
and nothing else; the details: docs/cache.md ("Keys").
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

from adapters import ModelInfo
from config import Settings

KEY_VERSION = 2  # 2: confident masks reach 255 (adapters/onnx.py), decoding scales before converting


_PACKAGE_ROOT = Path(__file__).resolve().parents[3]
RENDERING_PACKAGES = ("app", "adapters", "effects")


def code_digest(root: Path = _PACKAGE_ROOT, packages: tuple[str, ...] = RENDERING_PACKAGES) -> str:
    """sha256 over the rendering code's source files (path and bytes, in a fixed order)."""
    digest = hashlib.sha256()
    for package in packages:
        for path in sorted((root / package).rglob("*")):
            if path.suffix in (".py", ".c") and "__pycache__" not in path.parts:
                digest.update(path.relative_to(root).as_posix().encode() + b"\0")
                digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


CODE_SHA256 = code_digest()  # once, at import (boot)


def upload_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def fingerprint(info: ModelInfo, settings: Settings) -> dict[str, Any]:
    """What, besides the upload and the request's options, decides a result on this deployment."""
    return {
        "adapter": info.name,
        "model": info.model_id,
        "model_sha256": info.file_sha256,
        "input_size": list(info.input_size),
        "max_dimension": settings.max_dimension,
        "png_compress_level": settings.png_compress_level,
        "code": CODE_SHA256,
    }


def entry_key(kind: str, upload_sha256: str, model: Mapping[str, Any], options: Mapping[str, Any]) -> str:
    document = {"v": KEY_VERSION, "kind": kind, "upload": upload_sha256, "model": model, "options": options}
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()
