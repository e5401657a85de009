import pytest

from config import ConfigError, Settings
from config.settings import PROJECT_ROOT


def test_cpu_tier_defaults():
    s = Settings.from_env({})
    assert s.segmenter == "onnx"
    assert s.model_path == PROJECT_ROOT / "models" / "u2netp.onnx"
    assert (s.port, s.max_file_size_mb, s.max_dimension) == (5000, 8.0, 1024)
    assert (s.max_concurrent_inferences, s.request_timeout_s, s.web_concurrency) == (1, 60.0, 1)
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
    ],
)
def test_bad_values_name_the_variable(env, variable):
    with pytest.raises(ConfigError) as err:
        Settings.from_env(env)
    assert str(err.value).startswith(variable + ":")
    assert "\n" not in str(err.value)
