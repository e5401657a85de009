"""A recorded set of requests, replayed by tests/test_replay.py against hashes taken before the
request path was reshaped (issue 13's constraint: every endpoint's output byte-identical).

Each case is (endpoint, photo, form fields). `python -m tests.replay.record` writes
tests/replay/expected.json from the current code: run it only when an output is meant to change,
and say why in the commit.
"""

from __future__ import annotations

import base64
import hashlib
import json

from tests.conftest import photo, post

PHOTOS = ("animal-1.jpg", "animal-2.jpg", "car-1.jpg")
EFFECTS4 = '["blackwhite", "dither", "popart", "8bit"]'

_PER_PHOTO = [
    ("/api/bg/remove", {}),
    ("/api/bg/remove", {"format": "webp", "quality": "80"}),
    ("/api/bg/remove", {"format": "webp", "quality": "100"}),
    ("/api/bg/remove", {"only_mask": "true"}),
    ("/api/bg/remove", {"refine_foreground": "true"}),
    ("/api/bg/change_color", {}),
    ("/api/bg/change_color", {"color": "#2a6fdb", "format": "png"}),
    ("/api/bg/change_color", {"color": "red", "format": "webp", "refine_foreground": "true"}),
    ("/remove-background", {}),
    ("/remove-background", {"output_format": "jpeg", "quality": "70"}),
    ("/api/v2/process", {"effects": EFFECTS4}),
    ("/api/v2/process", {"effects": '["blackwhite"]', "effect_params": '{"blackwhite": {"preset": "vintage"}}',
                         "background": "#ffffff", "format": "jpeg"}),
    ("/api/v2/process", {"effects": '["dither", "8bit"]', "remove_background": "false", "format": "webp"}),
    ("/api/v2/process", {"effects": '["popart"]', "refine_foreground": "true", "background": "black"}),
]

CASES = [(endpoint, name, fields) for name in PHOTOS for endpoint, fields in _PER_PHOTO]


def case_id(case) -> str:
    endpoint, name, fields = case
    return f"{endpoint} {name} " + "&".join(f"{k}={v}" for k, v in sorted(fields.items()))


def fingerprint(client, case) -> dict:
    """What must not change: status, content type, the body's sha256 (for v2: each image's and the
    JSON without its timings)."""
    endpoint, name, fields = case
    resp = post(client, endpoint, photo(name).read_bytes(), filename=name, **{**fields, "use_cache": "false"})
    out = {"status": resp.status_code, "type": resp.mimetype}
    if resp.mimetype == "application/json":
        body = resp.get_json()
        images = body.pop("images")
        body["metadata"].pop("timings_ms")
        body["metadata"].pop("foreground")  # added since the recording (the layout stage): new, so not compared
        body["metadata"].pop("mask_confidence")  # added since the recording (issue 19): new, so not compared
        out["images"] = {k: hashlib.sha256(base64.b64decode(v)).hexdigest() for k, v in images.items()}
        out["json"] = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    else:
        out["sha256"] = hashlib.sha256(resp.data).hexdigest()
        out["disposition"] = resp.headers.get("Content-Disposition")
    return out
