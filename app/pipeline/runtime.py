"""What a :class:`~app.pipeline.Job` runs with, built once by :func:`build_runtime` (the composition root).

The model, its slots, the result cache, the settings and this process's counters: no Flask, so
that the web app, a CLI and a batch worker build the same :class:`Runtime` and run the same jobs.
Capacity and counters only; no per-user state (instances scale horizontally).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

import effects
from adapters import Segmenter, load_segmenter
from app.ops import metrics, tuning
from app.pipeline.cache import CacheUse, ResultCache, fingerprint, open_cache
from app.pipeline.gate import InferenceGate
from app.pipeline.options import Options
from config import Settings


class Activity:
    """This process's counters: requests served, whether the model has run, uptime."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.model_loaded = False  # true once the model has produced a mask (warm-up or a request)
        self.requests_served = 0
        self._lock = threading.Lock()

    def model_ran(self) -> None:
        self.model_loaded = True

    def served(self) -> None:
        with self._lock:
            self.requests_served += 1

    @property
    def ready(self) -> bool:
        """Serving: the model has run, or a request was answered (from the cache, say)."""
        return self.model_loaded or self.requests_served > 0

    @property
    def status(self) -> str:
        """``ready`` or ``warming_up``: the one readiness word of /api/bg/health, /api/bg/status and /model-info."""
        return "ready" if self.ready else "warming_up"

    def uptime_s(self) -> float:
        return time.monotonic() - self.started


@dataclass
class Runtime:
    settings: Settings
    segmenter: Segmenter
    gate: InferenceGate
    cache: ResultCache
    cache_model: dict[str, Any]  # the model part of every cache key (app.pipeline.cache.fingerprint)
    observe_stage: Callable[[str, float], None] | None = None  # each pipeline stage's seconds (metrics)
    activity: Activity = field(default_factory=Activity)

    def cache_use(self, upload: bytes, options: Options) -> CacheUse:
        """One job's use of the result cache (``use_cache`` off: none)."""
        return CacheUse(self.cache, options.use_cache, upload, self.cache_model)

    def warm_up(self) -> None:
        """One inference and one run of each effect at boot: the first request is not the slow
        one, and a model that cannot run stops the boot."""
        grey = np.full((64, 64, 3), 128, np.uint8)
        self.segmenter.mask(grey)
        self.activity.model_ran()
        sample = np.full((64, 64, 4), 128, np.uint8)
        for name in effects.EFFECTS:  # builds the palettes' lookup tables now, not on a request
            effects.apply(name, sample, effects.resolve(name))
        if tuning.page_out_model_runtime(self.settings):  # the load's code handed back (app.ops.tuning)
            self.segmenter.mask(grey)  # and a run's brought back

    def inference(self) -> dict[str, object]:
        """The inference slots and their queue, now (for /api/bg/status and /stats)."""
        s = self.settings
        return {"max_concurrent": s.max_concurrent_inferences, "max_queue": s.max_queue, "active": self.gate.active,
                "waiting": self.gate.waiting, "request_timeout_s": s.request_timeout_s}


def build_runtime(settings: Settings, segmenter: Segmenter | None = None) -> Runtime:
    """The composition root: the process's tuning, the model (loaded here, at boot, never on a
    request; run once with WARMUP), its gate, the result cache, each wired to the metrics."""
    tuning.configure(settings)  # before the model loads: the malloc policy and thread pools it runs under
    segmenter = segmenter or load_segmenter(settings)
    runtime = Runtime(
        settings, segmenter,
        gate=InferenceGate(settings.max_concurrent_inferences, settings.max_queue, metrics.on_gate_change),
        cache=open_cache(settings, metrics.on_cache_event),
        cache_model=fingerprint(segmenter.info, settings),
        observe_stage=metrics.observe_stage,
    )
    if settings.warmup:
        runtime.warm_up()
    tuning.after_boot(settings)
    return runtime
