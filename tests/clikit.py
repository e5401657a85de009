"""Run the real ``bgremove`` command in a subprocess, and make small photo folders for it."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.serverkit import ROOT, fixture_images

BGREMOVE = Path(sys.executable).parent / "bgremove"  # the [project.scripts] entry, as pip installs it


def bgremove(*args: str, env: dict[str, str] | None = None, stdin: bytes | None = None, timeout: float = 120,
             cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``bgremove ARGS`` to completion: stdout as bytes, stderr as text. No settings file of the
    user's is read (``XDG_CONFIG_HOME`` points nowhere) and no cache of theirs is touched."""
    return subprocess.run([str(BGREMOVE), *args], input=stdin, capture_output=True, timeout=timeout,
                          cwd=cwd or ROOT, env=cli_env(env))


def start(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen([str(BGREMOVE), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=cwd or ROOT, env=cli_env(env))


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {**os.environ, "XDG_CONFIG_HOME": str(ROOT / "tests" / "data" / "no-such-config-dir")}
    env.pop("STORAGE_EMULATOR_HOST", None)
    return {**env, **(extra or {})}


def summary(result: subprocess.CompletedProcess) -> dict:
    """The batch's ``--json`` summary (its last line of stdout)."""
    lines = result.stdout.decode().strip().splitlines()
    assert lines, f"no output; stderr: {result.stderr.decode()[-2000:]}"
    return json.loads(lines[-1])


def small_photos(folder: Path, count: int, side: int = 160, nested: bool = True) -> list[Path]:
    """``count`` fixture photos scaled to ``side`` px at most (quick to segment), every other one in
    ``sub/`` when ``nested``, as JPEG."""
    made = []
    photos = fixture_images()
    for n in range(count):
        source = photos[n % len(photos)]
        img = Image.open(source).convert("RGB")
        img.thumbnail((side, side))
        where = folder / "sub" if nested and n % 2 else folder
        where.mkdir(parents=True, exist_ok=True)
        path = where / f"{source.stem}-{n}.jpg"
        img.save(path, quality=90)
        made.append(path)
    return made


def decoded(data_or_path: bytes | Path) -> Image.Image:
    data = data_or_path.read_bytes() if isinstance(data_or_path, Path) else data_or_path
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def manifest_lines(folder: Path) -> list[dict]:
    path = folder / ".bgremove" / "manifest.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
