import dataclasses
import os

import pytest

from config import ConfigError, Settings
from config.settings import PROJECT_ROOT, TIER_DEFAULTS


def test_cpu_tier_defaults():
    s = Settings.from_env({})
    assert s.segmenter == "onnx"
    assert s.model_path == PROJECT_ROOT / "models" / "u2netp.onnx"
    assert (s.port, s.max_file_size_mb, s.max_dimension) == (5000, 8.0, 4096)
    assert (s.max_concurrent_inferences, s.request_timeout_s, s.web_concurrency) == (1, 60.0, 1)
    assert s.max_queue == 8  # a burst of 8 uploads is queued, not shed (tests/test_server.py)
    assert s.proxy_hops == 0  # no client's X-Forwarded-For is believed unless a proxy is declared
    assert s.web_threads == s.max_concurrent_inferences + s.max_queue + 2
    assert s.onnx_memory_mode == "lean"


def test_environment_overrides():
    s = Settings.from_env({"PORT": "8080", "MAX_FILE_SIZE_MB": "2.5", "MAX_QUEUE": "0", "WARMUP": "false",
                           "MODEL_PROFILE": "U2NET", "LOG_LEVEL": "DEBUG"})
    assert (s.port, s.max_file_size_bytes, s.max_queue, s.warmup) == (8080, int(2.5 * 2**20), 0, False)
    assert (s.model_profile, s.log_level) == ("u2net", "debug")


@pytest.mark.parametrize(
    "env, variable",
    [
        ({"SEGMENTER": "magic"}, "SEGMENTER"),
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"MAX_FILE_SIZE_MB": "-1"}, "MAX_FILE_SIZE_MB"),
        ({"MAX_FILE_SIZE_MB": "nan"}, "MAX_FILE_SIZE_MB"),
        ({"MAX_QUEUE": "1.5"}, "MAX_QUEUE"),
        ({"WARMUP": "maybe"}, "WARMUP"),
        ({"MODEL_PROFILE": "sam"}, "MODEL_PROFILE"),
        ({"ONNX_MEMORY_MODE": "huge"}, "ONNX_MEMORY_MODE"),
        ({"MODEL_PATH": "/nonexistent/model.onnx"}, "MODEL_PATH"),
        ({"SEGMENTER": "inspyrenet"}, "MODEL_PATH"),  # required, no weights ship
        ({"TARGET_SIZE": "1000"}, "TARGET_SIZE"),  # not a multiple of 32
        ({"TARGET_SIZE": "8"}, "TARGET_SIZE"),
        ({"DEVICE": "gpu"}, "DEVICE"),
        ({"PRECISION": "bf16"}, "PRECISION"),
        ({"MAX_BATCH": "0"}, "MAX_BATCH"),
        ({"BATCH_WINDOW_MS": "-1"}, "BATCH_WINDOW_MS"),
        ({"MAX_CONCURRENT_REQUESTS": "2", "MAX_CONCURRENT_INFERENCES": "3"}, "MAX_CONCURRENT_REQUESTS"),
    ],
)
def test_bad_values_name_the_variable(env, variable):
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert str(err.value).startswith(variable + ":")
    assert "\n" not in str(err.value)


def test_gpu_tier_settings():
    s = Settings.from_env({"MAX_CONCURRENT_REQUESTS": "4", "TARGET_SIZE": "384", "DEVICE": "cuda:1",
                           "PRECISION": "FP32", "MAX_BATCH": "8", "BATCH_WINDOW_MS": "2.5"})
    assert s.max_concurrent_inferences == 4  # MAX_CONCURRENT_REQUESTS is the GPU deployment's name for it
    assert (s.target_size, s.device, s.precision, s.max_batch, s.batch_window_ms) == (384, "cuda:1", "fp32", 8, 2.5)
    d = Settings.from_env({})
    assert (d.target_size, d.device, d.precision, d.max_batch) == (1024, "auto", "auto", 4)


def test_default_cache_dir_is_per_user():
    """Not one /tmp directory shared by every checkout and user: XDG_CACHE_HOME, else ~/.cache."""
    from pathlib import Path

    assert Settings.from_env({"XDG_CACHE_HOME": "/srv/cache", "HOME": "/home/a"}).cache_dir == Path("/srv/cache/bgremove")
    assert Settings.from_env({"HOME": "/home/a"}).cache_dir == Path("/home/a/.cache/bgremove")
    assert Settings.from_env({"HOME": "/home/a", "CACHE_DIR": "/data/c"}).cache_dir == Path("/data/c")


def test_each_default_is_stated_once_in_the_fields_and_the_tier_table():
    """from_env's defaults are the fields' own (the CPU tier), the GPU tier's are its table's."""
    home = {k: os.environ[k] for k in ("HOME", "XDG_CACHE_HOME") if k in os.environ}
    cpu = Settings.from_env(home)
    assert cpu == Settings()
    names = {f.name for f in dataclasses.fields(Settings)}
    assert all(set(tier) <= names for tier in TIER_DEFAULTS.values())
    gpu = Settings.from_env({**home, "SEGMENTER": "inspyrenet", "MODEL_PATH": str(cpu.model_path)})
    changed = {f.name for f in dataclasses.fields(Settings) if getattr(gpu, f.name) != getattr(cpu, f.name)}
    assert changed == set(TIER_DEFAULTS["inspyrenet"]) - {"model_path"} | {"segmenter", "web_threads"}
    assert all(getattr(gpu, k) == v for k, v in TIER_DEFAULTS["inspyrenet"].items() if k != "model_path")
    assert (cpu.edge_matting, gpu.edge_matting) == ("band", "off")  # the matting was measured on u2netp
    assert gpu.web_threads == gpu.max_concurrent_inferences + gpu.max_queue + 2
