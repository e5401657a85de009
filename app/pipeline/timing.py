"""One timing mechanism: the wall time of each stage of one request.

The same figures go to the ``Server-Timing`` header, /api/v2/process's ``metadata.timings_ms``
and the stage histogram (``observe``, the metrics). Each stage name has one meaning:

- ``cache``: reading the result cache (the finished output, then the mask on a miss)
- ``decode``: the upload to pixels, every check included
- ``segment``: the model's inference (and combining its mask with the input's transparency)
- ``matte``: the edge matting of the mask's uncertain band (``EDGE_MATTING=band``)
- ``correct``: the correction strokes applied to the mask
- ``review``: the review signal read from the mask (``X-Mask-Confidence``, ``X-Mask-Warnings``)
- ``compose``: the cut-out, the mask image or the subject over a colour; colour refinement
- an effect's name (``blackwhite``, ``dither``, ``popart``, ``8bit``): rendering that effect
- ``encode``: encoding every output image
A stage entered twice adds up.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator


class Timings:
    def __init__(self, observe: Callable[[str, float], None] | None = None):
        """``observe(stage, seconds)`` sees each stage as it ends (e.g. a metrics histogram)."""
        self._ms: dict[str, float] = {}
        self._observe = observe

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self._ms[name] = self._ms.get(name, 0.0) + elapsed * 1000
            if self._observe is not None:
                self._observe(name, elapsed)

    def ms(self) -> dict[str, float]:
        """Each stage's milliseconds (0.1 ms resolution), in the order they were first entered."""
        return {name: round(ms, 1) for name, ms in self._ms.items()}

    def server_timing(self) -> str:
        return ", ".join(f"{name};dur={ms:.1f}" for name, ms in self._ms.items())
