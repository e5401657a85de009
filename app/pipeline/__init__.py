"""The request pipeline, no Flask: :class:`Job` (``run.py``) and its steps.

    output cache → slot → decode → mask (cache, else segment) → compose → effects → encode → store

The names below load on first use, so that importing one module of the package (``errors``,
which the adapters' own errors derive from) does not load the whole pipeline.
"""

import importlib

_EXPORTS = {"UNLIMITED": "budget", "Budget": "budget", "peer_closed": "budget", "IMAGE": "run", "Job": "run",
            "Rendered": "run", "decode": "run", "slot": "run", "subject_alpha": "run"}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'app.pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(f"app.pipeline.{_EXPORTS[name]}"), name)
