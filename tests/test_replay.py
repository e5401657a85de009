"""Every endpoint's output for a recorded set of requests is byte-identical to the hashes taken
before the request path was reshaped (tests/replay/): the refactoring changes no answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.replay.cases import CASES, case_id, fingerprint

EXPECTED = json.loads((Path(__file__).parent / "replay" / "expected.json").read_text())


def test_every_case_is_recorded():
    assert sorted(EXPECTED) == sorted(case_id(case) for case in CASES)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_output_is_byte_identical_to_the_recording(client, case):
    assert fingerprint(client, case) == EXPECTED[case_id(case)]
