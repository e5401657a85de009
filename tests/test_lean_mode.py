"""The 512 MB tier's lean mode (issue 19 point 2): what must hold for its peak, its masks and its
malloc tunables. Real sessions and real processes; no timing assertions (benchmarks/ort_options.py
measures the speed)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import onnxruntime as ort
import pytest
import requests

from adapters import onnx
from app.ops import tuning
from config import Settings
from tests.conftest import IMAGES, ROOT
from tests.serverkit import running_server


def test_lean_is_the_default_and_keeps_no_arena(settings):
    """The peak stays low only while freed activations go back to the OS, and the masks stay the
    ones the 'extended' level gives ('all' changes them by a level here and there and costs ~75 MB)."""
    assert Settings.from_env({}).onnx_memory_mode == "lean"
    so = onnx.session_options(2, "lean")
    assert not so.enable_cpu_mem_arena and not so.enable_mem_pattern
    assert so.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED


@pytest.mark.parametrize("mode", ["lean", "balanced", "fast"])
def test_every_memory_mode_runs_under_the_tunables(mode):
    """fast too: its arena keeps the activations, and the rest (decoded photos, the matting's
    arrays) gains from the same policy as in lean (app.ops.tuning.configure)."""
    assert tuning.wants_malloc_tunables(Settings.from_env({"ONNX_MEMORY_MODE": mode}))
    so = onnx.session_options(2, mode)
    assert not so.enable_cpu_mem_arena  # fast: the process's shared arena (adapters.onnx._shared_arena)
    assert _config(so, "session.use_env_allocators") == ("1" if mode == "fast" else None)


def _config(so, key: str) -> str | None:
    try:
        return so.get_session_config_entry(key)
    except RuntimeError:  # onnxruntime: no entry with that key
        return None


CHILD = """
import os, sys
sys.path.insert(0, {root!r})
from app.ops import tuning
from config import Settings
print(os.getpid(), os.environ.get("GLIBC_TUNABLES", ""), flush=True)
tuning.exec_with_malloc_tunables(Settings.from_env())
"""


def _exec_once(env: dict[str, str]) -> list[list[str]]:
    """Lines (pid, GLIBC_TUNABLES) printed by a process that calls exec_with_malloc_tunables."""
    full = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"} | env
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT))], env=full, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return [(line.split(" ", 1) + [""])[:2] for line in out.splitlines()]


def test_exec_restarts_once_with_the_tunable_same_pid():
    lines = _exec_once({})
    assert len(lines) == 2, lines  # the first start, then the restart, which returns
    (pid1, before), (pid2, after) = lines
    assert pid1 == pid2 and before == "" and after == tuning.MALLOC_TUNABLES


def test_exec_keeps_other_tunables_and_an_explicit_choice():
    (_, _), (_, after) = _exec_once({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"})
    assert after == "glibc.malloc.arena_max=2:" + tuning.MALLOC_TUNABLES
    opted_out = _exec_once({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"})
    assert len(opted_out) == 1 and opted_out[0][1] == "glibc.malloc.hugetlb=0"  # no restart


MASKS = """
import hashlib, sys
sys.path.insert(0, {root!r})
from adapters import onnx
from app import pipeline
from app.ops import tuning
from config import Settings
settings = Settings.from_env({{**__import__("os").environ, "ONNX_PRECISION": "fp32", "ONNX_RUNTIME": "onnxruntime"}})  # the lean fp32 session
tuning.configure(settings)
segmenter = onnx.load(settings)
for path in sys.argv[1:]:
    print(hashlib.sha256(segmenter.mask(pipeline.decode(open(path, "rb").read(), settings).rgb).tobytes()).hexdigest())
"""


def test_huge_pages_leave_the_masks_byte_identical():
    """The tunable changes where activations live, never what is computed."""
    paths = [str(p) for p in IMAGES[:3]]
    digests = {}
    for tunables in ("glibc.malloc.hugetlb=0", tuning.MALLOC_TUNABLES):
        env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"} | {"GLIBC_TUNABLES": tunables}
        out = subprocess.run([sys.executable, "-c", MASKS.format(root=str(ROOT)), *paths], env=env,
                             capture_output=True, text=True, timeout=120, check=True).stdout
        digests[tunables] = out.split()
    first, second = digests.values()
    assert len(first) == len(paths) and first == second


def test_in_process_masks_match_a_lean_subprocess(segmenter, settings):
    """The tests' own segmenter (no tunable) gives the server's masks: same bytes."""
    from app import pipeline

    path = IMAGES[0]
    expected = hashlib.sha256(segmenter.mask(pipeline.decode(path.read_bytes(), settings).rgb).tobytes()).hexdigest()
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"} | {"GLIBC_TUNABLES": tuning.MALLOC_TUNABLES}
    out = subprocess.run([sys.executable, "-c", MASKS.format(root=str(ROOT)), str(path)], env=env,
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.split() == [expected]


def test_gunicorn_workers_run_under_the_tunable():
    with running_server() as server:
        master = server.process.pid
        workers = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout.split()
        assert workers
        for pid in [master, *map(int, workers)]:
            environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            assert f"GLIBC_TUNABLES={tuning.MALLOC_TUNABLES}".encode() in environ, pid
        assert requests.get(server.url + "/api/bg/health", timeout=5).status_code == 200
