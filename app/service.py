"""What one worker process holds: settings, the loaded model, its gate, the result cache, counters.

Capacity and counters only; no per-user state (instances scale horizontally).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import psutil

import effects
from flask import current_app

from adapters import Segmenter
from app.ops import metrics
from app.pipeline.cache import ResultCache, fingerprint, open_cache
from app.pipeline.gate import InferenceGate
from app.ops.observability import LatencyWindow
from config import Settings

EXTENSION_KEY = "bgremove"


class ServiceState:
    def __init__(self, settings: Settings, segmenter: Segmenter):
        self.settings = settings
        self.segmenter = segmenter
        self.gate = InferenceGate(settings.max_concurrent_inferences, settings.max_queue, metrics.on_gate_change)
        self.cache: ResultCache = open_cache(settings, metrics.on_cache_event)
        self.latency = LatencyWindow()
        self.cache_model = fingerprint(segmenter.info, settings)  # the model part of every cache key
        self.started = time.monotonic()
        self.ready = False  # true once the model has produced a mask
        self._served = 0
        self._lock = threading.Lock()
        self._process = psutil.Process()

    def warm_up(self) -> None:
        """One inference and one run of each effect at boot: the first request is not the slow
        one, and a model that cannot run stops the boot."""
        self.segmenter.mask(np.full((64, 64, 3), 128, np.uint8))
        sample = np.full((64, 64, 4), 128, np.uint8)
        for name in effects.EFFECTS:  # builds the palettes' lookup tables now, not on a request
            effects.apply(name, sample, effects.resolve(name))
        self.ready = True

    def record_served(self) -> None:
        with self._lock:
            self._served += 1
        self.ready = True

    @property
    def requests_served(self) -> int:
        return self._served

    def uptime_s(self) -> float:
        return time.monotonic() - self.started

    def inference(self) -> dict[str, object]:
        """The inference slots and their queue, now (for /api/bg/status and /stats)."""
        s = self.settings
        return {"max_concurrent": s.max_concurrent_inferences, "max_queue": s.max_queue, "active": self.gate.active,
                "waiting": self.gate.waiting, "request_timeout_s": s.request_timeout_s}

    def model_memory_mb(self) -> float:
        """The weights' memory: float32 parameters (activations come and go with requests)."""
        return round(self.segmenter.info.parameters * 4 / 2**20, 1)

    def rss_mb(self) -> float:
        return self._process.memory_info().rss / 2**20


def get_state() -> ServiceState:
    return current_app.extensions[EXTENSION_KEY]
