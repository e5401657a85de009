"""Write tests/replay/expected.json from the current code: `python -m tests.replay.record`."""

from __future__ import annotations

import json
from pathlib import Path

from adapters import load_segmenter
from app.web.factory import create_app
from config import Settings
from tests.replay.cases import CASES, case_id, fingerprint


def main() -> None:
    # as tests/conftest.py: fp32 (int8 is tested on its own), no cache
    settings = Settings.from_env({"CACHE_BACKEND": "none", "LOG_LEVEL": "warning", "ONNX_PRECISION": "fp32"})
    client = create_app(settings, load_segmenter(settings)).test_client()
    expected = {case_id(case): fingerprint(client, case) for case in CASES}
    path = Path(__file__).with_name("expected.json")
    path.write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    print(f"{len(expected)} cases written to {path}")


if __name__ == "__main__":
    main()
