"""Operations endpoints outside the API's namespace: GET /stats."""

from __future__ import annotations

from flask import Blueprint, jsonify

from app.state import get_state

bp = Blueprint("ops", __name__)


@bp.get("/stats")
def stats():
    """This worker's counters: requests, inference queue, result cache (entries and size are the cache's own)."""
    state = get_state()
    return jsonify({
        "uptime_s": round(state.uptime_s(), 1),
        "requests_served": state.requests_served,
        "inference": {"active": state.gate.active, "waiting": state.gate.waiting,
                      "max_concurrent": state.settings.max_concurrent_inferences,
                      "max_queue": state.settings.max_queue},
        "cache": state.cache.stats(),
    })
