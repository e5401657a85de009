"""The service's own pipeline, in this process: the same :class:`~app.pipeline.Job` the endpoints run,
on a :class:`~app.pipeline.runtime.Runtime` built by the same composition root, without Flask.

:class:`Engine` makes one input's images; :func:`init_worker` and :func:`work` are the same in a
worker process of ``bgremove batch --workers N`` (each worker builds its own runtime, loads the model
once, and takes inputs one at a time).
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from app.pipeline.errors import ServiceError
from app.pipeline.options import Options
from config import Settings


@dataclass(frozen=True)
class Outcome:
    """One input's result: its images (name -> bytes) or the error a request would have answered."""

    images: dict[str, bytes] | None = None
    code: str | None = None
    message: str | None = None
    seconds: float = 0.0
    width: int = 0
    height: int = 0
    scaled_from: tuple[int, int] | None = None  # the input's size when it was worked smaller (X-Scaled-From)
    fatal: bool = False  # no other input can succeed either (the service refused the API key): stop the batch

    @property
    def ok(self) -> bool:
        return self.images is not None


class Engine:
    """The runtime (model loaded once) and the options every input is processed with."""

    def __init__(self, settings: Settings, options: Options, background: bytes | None = None,
                 masks: Mapping[str, bytes] | None = None):
        """``masks``: correction strokes given as mask images (``keep_mask``, ``remove_mask``), as the
        API's file parts; made for one photo (``bgremove remove``)."""
        from app.pipeline.runtime import build_runtime  # onnxruntime and the model: only where work is done

        self.runtime = build_runtime(settings)
        self.options = options
        self.background = background
        self.masks = dict(masks or {})

    def process(self, data: bytes) -> Outcome:
        from app.pipeline import Job

        started = time.perf_counter()
        try:
            rendered = Job(self.runtime, self.options, data, background=self.background, masks=self.masks).run()
        except ServiceError as exc:
            return Outcome(code=exc.code, message=exc.message, seconds=time.perf_counter() - started)
        except MemoryError:
            return Outcome(code="out_of_memory", message="ran out of memory for this image",
                           seconds=time.perf_counter() - started)
        return Outcome(dict(rendered.images), seconds=time.perf_counter() - started, width=rendered.width,
                       height=rendered.height, scaled_from=rendered.scaled_from)


def deployment(settings: Settings) -> dict[str, Any]:
    """What decides an output besides the photo and its options, known before a model is loaded (a
    batch's resume key; a server's result cache keys the loaded model's own facts, the same ones:
    app.pipeline.cache.keys.fingerprint): the model file and the precision it will run in, and the
    settings that change the pixels."""
    from adapters.modelfile import file_digest
    from app.pipeline.cache.keys import PIXEL_SETTINGS

    path = Path(settings.model_path)
    out: dict[str, Any] = {"segmenter": settings.segmenter, "model_sha256": file_digest(path)}
    if settings.segmenter == "onnx":
        from adapters import onnx

        int8 = onnx.fp32_reason(settings, path) is None
        out["precision"] = "int8" if int8 else "fp32"
        if int8:
            out["int8_sha256"] = file_digest(onnx.int8_path(path))
    else:
        out["precision"] = settings.precision
    for name in ("model_profile", *PIXEL_SETTINGS):
        out[name] = getattr(settings, name)
    return out


_engine: Engine | None = None


def init_worker(env: Mapping[str, str], result: str, form: Mapping[str, str], background: bytes | None) -> None:
    """A worker process's start: Ctrl-C is the parent's to handle (it stops handing out work and
    ends the workers); the settings and the options as the parent read them; the model loaded."""
    global _engine
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from app.cli.flags import RESULTS

    settings = Settings.from_env(dict(env))
    options = next(r for r in RESULTS if r.name == result).options.from_form(form).resolved()
    _engine = Engine(settings, options, background)


def work(data: bytes) -> Outcome:
    assert _engine is not None, "init_worker did not run"
    return _engine.process(data)

