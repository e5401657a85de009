"""Typed settings, read from the environment once at boot and validated there.

Nothing else in the code base reads ``os.environ``: the settings object is built
here and passed down. A bad value raises :class:`ConfigError` whose message
starts with the variable's name, so the boot stops with one clear line.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, TypeVar

PROJECT_ROOT = Path(__file__).resolve().parent.parent

T = TypeVar("T")


class BootError(Exception):
    """The service cannot start: the message is the one line an operator reads."""


class ConfigError(BootError):
    """An environment variable has a bad value (the message names it)."""


# Defaults that depend on the tier, i.e. on the adapter chosen by SEGMENTER.
# Any environment variable overrides them.
TIER_DEFAULTS: dict[str, dict[str, object]] = {
    # The 512 MB tier: one inference at a time, small uploads, 1024 px.
    "onnx": {
        "MODEL_PATH": str(PROJECT_ROOT / "models" / "u2netp.onnx"),
        "MAX_FILE_SIZE_MB": 8.0,
        "MAX_DIMENSION": 1024,
        "MAX_INPUT_PIXELS": 4096 * 4096,
        # Memory decoding one upload may take (pixels in their own mode, decoder copies): with
        # the worker's ~110 MB at rest and the inference peak, the tree stays under 350 MB.
        "MAX_DECODE_MB": 128.0,
        "MAX_CONCURRENT_INFERENCES": 1,
        "MAX_QUEUE": 4,
    },
    # The GPU tier: InSPyReNet (Swin-B) on one GPU; Cloud Run's concurrency is 4.
    "inspyrenet": {
        "MODEL_PATH": "",
        "MAX_FILE_SIZE_MB": 50.0,
        "MAX_DIMENSION": 4096,
        "MAX_INPUT_PIXELS": 8192 * 8192,
        "MAX_DECODE_MB": 2048.0,
        "MAX_CONCURRENT_INFERENCES": 4,
        "MAX_QUEUE": 16,
    },
}

MODEL_PROFILES = ("auto", "u2net", "isnet")
ONNX_MEMORY_MODES = ("lean", "balanced", "fast")  # see adapters/onnx.py
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("json", "text")
PRECISIONS = ("auto", "fp32", "fp16")  # see adapters/inspyrenet.py
CACHE_BACKENDS = ("local", "gcs", "none")  # see app/cache/
MIN_ADMIN_TOKEN_CHARS = 16
MULTIPART_SLACK_BYTES = 64 * 1024  # see Settings.max_request_body_bytes
# Rate-limit stores (limits' URI schemes) that work with the synchronous Flask-Limiter and need
# no package beyond redis-py: per-worker memory, or Redis (TCP, TLS, unix socket).
RATE_LIMIT_STORAGE_SCHEMES = ("memory", "redis", "rediss", "redis+unix")


def default_cache_dir(env: Mapping[str, str]) -> Path:
    """The user's cache directory (XDG): ``$XDG_CACHE_HOME/bgremove``, else ``~/.cache/bgremove``.
    Per user, not one directory in /tmp shared by every checkout and user on the machine."""
    base = env.get("XDG_CACHE_HOME", "").strip()
    if base:
        return Path(base) / "bgremove"
    home = env.get("HOME", "").strip()
    return (Path(home) if home else Path.home()) / ".cache" / "bgremove"


DEFAULT_CACHE_DIR = default_cache_dir(os.environ)


@dataclass(frozen=True)
class Settings:
    segmenter: str = "onnx"
    model_path: Path = PROJECT_ROOT / "models" / "u2netp.onnx"
    model_profile: str = "auto"
    port: int = 5000
    host: str = "0.0.0.0"
    max_file_size_mb: float = 8.0
    max_dimension: int = 1024
    max_input_pixels: int = 4096 * 4096
    max_decode_mb: float = 128.0
    max_concurrent_inferences: int = 1
    max_queue: int = 4
    request_timeout_s: float = 60.0
    web_concurrency: int = 1
    web_threads: int = 7
    graceful_timeout_s: float = 30.0
    inference_threads: int = 2
    png_compress_level: int = 1
    onnx_memory_mode: str = "lean"
    warmup: bool = True
    log_level: str = "info"
    # InSPyReNet (GPU tier); ignored by the onnx adapter.
    target_size: int = 1024
    device: str = "auto"
    precision: str = "auto"
    max_batch: int = 4
    batch_window_ms: float = 5.0
    # Result cache (app/cache/).
    cache_backend: str = "local"
    cache_dir: Path = DEFAULT_CACHE_DIR
    cache_max_mb: float = 1024.0
    cache_ttl_s: int = 86400
    cache_timeout_s: float = 1.0
    storage_bucket: str = ""
    cache_prefix: str = "bgremove-cache/"
    # Bearer token for admin endpoints (POST /api/bg/clear_cache); empty = those endpoints are off.
    admin_token: str = field(default="", repr=False)
    # Operations and protection (app/observability.py, app/protection.py).
    log_format: str = "json"
    gcp_project: str = ""  # GOOGLE_CLOUD_PROJECT: for Cloud Logging's trace field
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    rate_limit: str = ""  # e.g. "60/minute"; empty = no limit
    rate_limit_storage_uri: str = "memory://"
    # Socket connect/read timeout of the rate-limit store (Redis): an outage costs a request at most this (x2).
    rate_limit_storage_timeout_s: float = 0.25
    # Failed API-key checks allowed per client IP (only with API_KEYS); over it, 429 without checking the key.
    auth_failure_limit: str = "10/minute"
    cors_origins: tuple[str, ...] = ()
    proxy_hops: int = 0
    # Set by config/serve: nginx (config/edge.py) is one more proxy in front, appending to X-Forwarded-For.
    edge_proxy: bool = False
    # Set by gunicorn.conf.py for the workers: prometheus-client's shared directory (multiprocess mode).
    metrics_dir: str = ""

    @property
    def max_file_size_bytes(self) -> int:
        return int(self.max_file_size_mb * 1024 * 1024)

    @property
    def max_request_body_bytes(self) -> int:
        """The largest request body: the file plus room for the multipart boundaries and the small
        option fields around it. nginx (config/edge.py) and werkzeug both refuse larger bodies."""
        return self.max_file_size_bytes + MULTIPART_SLACK_BYTES

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Build and validate the settings from ``env`` (default: the process environment)."""
        env = os.environ if env is None else env
        read = _Reader(env)
        segmenter = read.choice("SEGMENTER", "onnx", tuple(TIER_DEFAULTS))
        tier = TIER_DEFAULTS[segmenter]

        model_path_text = read.text("MODEL_PATH", str(tier["MODEL_PATH"]))
        if not model_path_text:
            raise ConfigError(f"MODEL_PATH: required for SEGMENTER={segmenter} (no weights ship with the project)")
        model_path = Path(model_path_text)
        if not model_path.is_file():
            hint = " (run `make setup` to fetch the default model)" if segmenter == "onnx" else ""
            raise ConfigError(f"MODEL_PATH: no such model file: {model_path}{hint}")

        slots = read.integer("MAX_CONCURRENT_INFERENCES", int(tier["MAX_CONCURRENT_INFERENCES"]), lo=1, hi=256)
        # MAX_CONCURRENT_REQUESTS: the GPU deployment's name for the same number (Cloud Run's concurrency).
        requests_limit = read.integer("MAX_CONCURRENT_REQUESTS", slots, lo=1, hi=256)
        if "MAX_CONCURRENT_INFERENCES" in env and "MAX_CONCURRENT_REQUESTS" in env and requests_limit != slots:
            raise ConfigError(
                f"MAX_CONCURRENT_REQUESTS: {requests_limit} contradicts MAX_CONCURRENT_INFERENCES={slots}; set one of them"
            )
        slots = requests_limit
        target_size = read.integer("TARGET_SIZE", 1024, lo=64, hi=4096)
        if target_size % 32:
            raise ConfigError(f"TARGET_SIZE: expected a multiple of 32 (Swin-B's patch merging), got {target_size}")
        queue = read.integer("MAX_QUEUE", int(tier["MAX_QUEUE"]), lo=0, hi=10_000)
        cache_backend = read.choice("CACHE_BACKEND", "local", CACHE_BACKENDS)
        bucket = read.text("STORAGE_BUCKET", "")
        if cache_backend == "gcs" and not bucket:
            raise ConfigError("STORAGE_BUCKET: required for CACHE_BACKEND=gcs (the bucket's name)")
        admin_token = read.secret("ADMIN_TOKEN")
        if admin_token and len(admin_token) < MIN_ADMIN_TOKEN_CHARS:
            raise ConfigError(f"ADMIN_TOKEN: too short to be secret (at least {MIN_ADMIN_TOKEN_CHARS} characters, "
                              "e.g. `openssl rand -hex 32`)")
        prefix = read.text("CACHE_PREFIX", "bgremove-cache/").lstrip("/")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return cls(
            segmenter=segmenter,
            model_path=model_path,
            model_profile=read.choice("MODEL_PROFILE", "auto", MODEL_PROFILES),
            port=read.integer("PORT", 5000, lo=1, hi=65535),
            host=read.text("HOST", "0.0.0.0"),
            max_file_size_mb=read.number("MAX_FILE_SIZE_MB", float(tier["MAX_FILE_SIZE_MB"]), lo=0.001, hi=1024),
            max_dimension=read.integer("MAX_DIMENSION", int(tier["MAX_DIMENSION"]), lo=16, hi=16384),
            max_input_pixels=read.integer("MAX_INPUT_PIXELS", int(tier["MAX_INPUT_PIXELS"]), lo=256, hi=1 << 31),
            max_decode_mb=read.number("MAX_DECODE_MB", float(tier["MAX_DECODE_MB"]), lo=1, hi=1 << 20),
            max_concurrent_inferences=slots,
            max_queue=queue,
            request_timeout_s=read.number("REQUEST_TIMEOUT_S", 60.0, lo=0.1, hi=3600),
            web_concurrency=read.integer("WEB_CONCURRENCY", 1, lo=1, hi=64),
            # Enough threads for every admitted request plus two spare, so that health
            # probes and 503 answers are served while the queue is full.
            web_threads=read.integer("WEB_THREADS", slots + queue + 2, lo=1, hi=1024),
            graceful_timeout_s=read.number("GRACEFUL_TIMEOUT_S", 30.0, lo=0, hi=3600),
            inference_threads=read.integer("INFERENCE_THREADS", _available_cpus(), lo=1, hi=256),
            png_compress_level=read.integer("PNG_COMPRESS_LEVEL", 1, lo=0, hi=9),
            onnx_memory_mode=read.choice("ONNX_MEMORY_MODE", "lean", ONNX_MEMORY_MODES),
            warmup=read.boolean("WARMUP", True),
            log_level=read.choice("LOG_LEVEL", "info", LOG_LEVELS),
            target_size=target_size,
            device=read.device("DEVICE", "auto"),
            precision=read.choice("PRECISION", "auto", PRECISIONS),
            max_batch=read.integer("MAX_BATCH", 4, lo=1, hi=64),
            batch_window_ms=read.number("BATCH_WINDOW_MS", 5.0, lo=0, hi=1000),
            cache_backend=cache_backend,
            cache_dir=Path(read.text("CACHE_DIR", str(default_cache_dir(env)))),
            cache_max_mb=read.number("CACHE_MAX_MB", 1024.0, lo=0.1, hi=10_000_000),
            cache_ttl_s=read.integer("CACHE_TTL", 86400, lo=1, hi=10 * 365 * 86400),
            cache_timeout_s=read.number("CACHE_TIMEOUT_S", 1.0, lo=0.01, hi=60),
            storage_bucket=bucket,
            cache_prefix=prefix,
            admin_token=admin_token,
            log_format=read.choice("LOG_FORMAT", "json", LOG_FORMATS),
            gcp_project=read.text("GOOGLE_CLOUD_PROJECT", ""),
            api_keys=read.secret_words("API_KEYS"),
            rate_limit=read.rate("RATE_LIMIT"),
            rate_limit_storage_uri=read.storage_uri("RATE_LIMIT_STORAGE_URI", "memory://"),
            rate_limit_storage_timeout_s=read.number("RATE_LIMIT_STORAGE_TIMEOUT_S", 0.25, lo=0.01, hi=10),
            auth_failure_limit=read.rate("AUTH_FAILURE_LIMIT", "10/minute"),
            cors_origins=read.words("CORS_ORIGINS"),
            proxy_hops=read.integer("PROXY_HOPS", 0, lo=0, hi=10),
            edge_proxy=read.boolean("EDGE_PROXY", False),
            metrics_dir=read.text("PROMETHEUS_MULTIPROC_DIR", ""),
        )

    def replace(self, **changes: object) -> "Settings":
        return dataclasses.replace(self, **changes)


def _available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class _Reader:
    """Parses one variable at a time; every error message starts with the variable's name."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env

    def _get(self, name: str, default: T, parse: Callable[[str], T], expected: str) -> T:
        raw = self.env.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            return parse(raw.strip())
        except ValueError:
            raise ConfigError(f"{name}: expected {expected}, got {raw!r}") from None

    def text(self, name: str, default: str) -> str:
        return self._get(name, default, str, "text")

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        def parse(raw: str) -> str:
            if raw.lower() not in choices:
                raise ValueError
            return raw.lower()

        return self._get(name, default, parse, "one of " + ", ".join(choices))

    def integer(self, name: str, default: int, *, lo: int, hi: int) -> int:
        def parse(raw: str) -> int:
            value = int(raw)
            if not lo <= value <= hi:
                raise ValueError
            return value

        return self._get(name, default, parse, f"an integer from {lo} to {hi}")

    def number(self, name: str, default: float, *, lo: float, hi: float) -> float:
        def parse(raw: str) -> float:
            value = float(raw)
            if not lo <= value <= hi:  # also rejects nan
                raise ValueError
            return value

        return self._get(name, default, parse, f"a number from {lo:g} to {hi:g}")

    def device(self, name: str, default: str) -> str:
        def parse(raw: str) -> str:
            lowered = raw.lower()
            if lowered in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", lowered):
                return lowered
            raise ValueError

        return self._get(name, default, parse, "auto, cpu, cuda or cuda:N")

    def words(self, name: str) -> tuple[str, ...]:
        """A comma-separated list; blanks dropped."""
        return tuple(w.strip() for w in self.env.get(name, "").split(",") if w.strip())

    def secret(self, name: str) -> str:
        """A token compared with what clients send in a header: printable ASCII only. HTTP clients
        send other characters in different encodings (UTF-8, Latin-1), so such a token would match
        some clients and not others. The value is never echoed in the message."""
        value = self.env.get(name, "").strip()
        if not (value.isascii() and value.isprintable()):
            raise ConfigError(f"{name}: must be printable ASCII (HTTP headers carry no other characters "
                              "reliably), e.g. `openssl rand -hex 32`")
        return value

    def secret_words(self, name: str) -> tuple[str, ...]:
        """A comma-separated list of secrets (see :meth:`secret`); blanks dropped."""
        words = self.words(name)
        for position, word in enumerate(words, 1):
            if not (word.isascii() and word.isprintable()):
                raise ConfigError(f"{name}: key {position} of {len(words)} is not printable ASCII (HTTP headers "
                                  "carry no other characters reliably), e.g. `openssl rand -hex 32`")
        return words

    def rate(self, name: str, default: str = "") -> str:
        def parse(raw: str) -> str:
            from limits import parse_many  # the rate limiter's own parser, so what boots is what it enforces

            parse_many(raw)
            return raw

        return self._get(name, default, parse, 'a rate such as "60/minute" or "10/second;1000/day"')

    def storage_uri(self, name: str, default: str) -> str:
        """A rate-limit store's URI. Its value is not echoed: a Redis URI may carry a password."""
        raw = self.env.get(name, "").strip()
        if not raw:
            return default
        scheme, sep, rest = raw.partition("://")
        if not sep or scheme.lower() not in RATE_LIMIT_STORAGE_SCHEMES or (scheme.lower() != "memory" and not rest):
            got = f"the scheme {scheme.lower()[:20]!r}" if sep else "no scheme"
            raise ConfigError(f"{name}: expected memory:// or redis://[:password@]host:port[/db] (also rediss://, "
                              f"redis+unix:///path), got {got}")
        return raw

    def boolean(self, name: str, default: bool) -> bool:
        def parse(raw: str) -> bool:
            lowered = raw.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError

        return self._get(name, default, parse, "true or false")
