"""The request pipeline, no Flask: :class:`Job` (``run.py``) and its steps.

    output cache → slot → decode → mask (cache, else segment) → compose → effects → encode → store
"""

from app.pipeline.budget import UNLIMITED, Budget, peer_closed
from app.pipeline.run import IMAGE, Job, Rendered, decode, slot, subject_alpha

__all__ = ["IMAGE", "UNLIMITED", "Budget", "Job", "Rendered", "decode", "peer_closed", "slot", "subject_alpha"]
