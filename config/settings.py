"""Typed settings, read from the environment once at boot and validated there.

Nothing else in the code base reads ``os.environ``: the settings object is built
here and passed down. A bad value raises :class:`ConfigError` whose message
starts with the variable's name, so the boot stops with one clear line.

Each setting is stated once, as a field of :class:`Settings`: its variable, how it is
parsed, and its default (the CPU tier's; :data:`TIER_DEFAULTS` holds the other tier's).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

PROJECT_ROOT = Path(__file__).resolve().parent.parent

T = TypeVar("T")


class BootError(Exception):
    """The service cannot start: the message is the one line an operator reads."""


class ConfigError(BootError):
    """An environment variable has a bad value (the message names it)."""


# The defaults that differ by tier, i.e. by the adapter chosen by SEGMENTER, by field name:
# the fields' own defaults are the onnx tier's (the 512 MB tier: one inference at a time, small
# uploads, photos worked at their own size up to 12.5 MP). Any environment variable overrides them.
TIER_DEFAULTS: dict[str, dict[str, object]] = {
    "onnx": {},
    # The GPU tier: InSPyReNet (Swin-B) on one GPU; Cloud Run's concurrency is 4.
    "inspyrenet": {
        "model_path": None,  # required: no weights ship with the project
        "max_file_size_mb": 50.0,
        "max_input_pixels": 8192 * 8192,
        "max_work_pixels": 4096 * 4096,
        "max_decode_mb": 2048.0,
        "max_encode_mb": 2048.0,
        "max_concurrent_inferences": 4,
        "max_queue": 16,
        # InSPyReNet's own edges are its strength: the matting was measured on u2netp's (docs/quality.md)
        "edge_matting": "off",
    },
}

MODEL_PROFILES = ("auto", "u2net", "isnet")
ONNX_MEMORY_MODES = ("lean", "balanced", "fast")  # see adapters/onnx.py
ONNX_PRECISIONS = ("auto", "fp32", "int8")  # see adapters/onnx.py (choose_precision) and adapters/int8.py
ONNX_RUNTIMES = ("auto", "onnxruntime", "openvino")  # see adapters/onnx.py (OpenVinoSession), onnx_runtime_for_auto
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("json", "text")
PRECISIONS = ("auto", "fp32", "fp16")  # see adapters/inspyrenet.py
CACHE_BACKENDS = ("local", "gcs", "none")  # see app/pipeline/cache/
EDGE_MATTINGS = ("band", "off", "plain")  # see app/pipeline/matte.py and app/pipeline/run.subject_alpha
MIN_ADMIN_TOKEN_CHARS = 16
# The words a boolean is written in, in the environment and in a request's form (app.pipeline.options).
BOOLEAN_WORDS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
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


def default_config_path(env: Mapping[str, str]) -> Path:
    """The command line's settings file (XDG): ``$XDG_CONFIG_HOME/bgremove/config.toml``, else
    ``~/.config/bgremove/config.toml``; read when it exists (``bgremove --config`` names another)."""
    base = env.get("XDG_CONFIG_HOME", "").strip()
    if base:
        return Path(base) / "bgremove" / "config.toml"
    home = env.get("HOME", "").strip()
    return (Path(home) if home else Path.home()) / ".config" / "bgremove" / "config.toml"


def variables() -> tuple[str, ...]:
    """Every environment variable a setting is read from (and the aliases :meth:`Settings.from_env` reads)."""
    return (*(f.metadata["env"] for f in dataclasses.fields(Settings)), "MAX_CONCURRENT_REQUESTS")


def read_config_file(path: Path) -> dict[str, str]:
    """A settings file: TOML whose keys are the settings' variables (any case: ``max_queue = 4`` is
    ``MAX_QUEUE=4``), each a string, number or boolean, read as the environment's text would be.
    A key that is no setting, or a value of another kind, is a :class:`ConfigError` naming the file."""
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the settings file ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    known, values = set(variables()), {}
    for key, value in table.items():
        name = key.upper()
        if name not in known:
            raise ConfigError(f"{path}: {key}: not a setting (the settings are the variables of README's "
                              "Configuration table, e.g. ONNX_PRECISION, MAX_WORK_PIXELS)")
        if isinstance(value, bool):
            values[name] = "true" if value else "false"
        elif isinstance(value, (str, int, float)):
            values[name] = str(value)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):  # API_KEYS, CORS_ORIGINS
            values[name] = ",".join(value)
        else:
            raise ConfigError(f"{path}: {key}: expected a string, a number or true/false")
    return values


def layered_env(*layers: tuple[str, Mapping[str, str]]) -> tuple[dict[str, str], dict[str, str]]:
    """``layers`` of variables, ``(source, values)``, lowest first (e.g. a program's defaults, a
    settings file, the environment, command-line flags), merged: the environment
    :meth:`Settings.from_env` reads, and where each variable came from (for :func:`from_layers`' messages)."""
    env: dict[str, str] = {}
    source: dict[str, str] = {}
    for name, values in layers:
        for key, value in values.items():
            env[key] = value
            source[key] = name
    return env, source


def from_layers(*layers: tuple[str, Mapping[str, str]]) -> "Settings":
    """:meth:`Settings.from_env` of the merged ``layers`` (:func:`layered_env`); a bad value's
    :class:`ConfigError` also says which layer set it (``MAX_QUEUE (from --setting): expected ...``)."""
    env, source = layered_env(*layers)
    try:
        return Settings.from_env(env)
    except ConfigError as exc:
        name, sep, rest = str(exc).partition(":")
        if sep and name in source and source[name] != "environment":
            raise ConfigError(f"{name} (from {source[name]}):{rest}") from None
        raise


def cpu_has_vnni() -> bool:
    """True where the CPU has AVX-512 VNNI or AVX-VNNI (Linux: /proc/cpuinfo flags); else False."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return "avx512_vnni" in flags or "avx_vnni" in flags
    except OSError:
        return False
    return False


def onnx_runtime_for_auto() -> tuple[str, str]:
    """What ONNX_RUNTIME=auto runs on this machine, and why.

    OpenVINO where it is installed and the CPU has VNNI: it runs the int8 build's convolutions with
    VNNI or AMX kernels (u2netp in 33 ms on an Intel Xeon with AMX, against onnxruntime's 130-146;
    with the edge matting, the server's request in 0.2x the time of rembg's with its alpha matting,
    docs/benchmarks.md).
    onnxruntime elsewhere: on a CPU without VNNI the fp32 model runs, and there onnxruntime's lean
    mode is the one measured (issue 32). Read without importing either runtime (the gunicorn
    master reads its settings too)."""
    from importlib.util import find_spec

    if find_spec("openvino") is None:
        return "onnxruntime", "auto: the openvino package is not installed"
    if not cpu_has_vnni():
        return "onnxruntime", "auto: this CPU has no VNNI instructions"
    return "openvino", "auto: this CPU has VNNI instructions and openvino is installed"


def _available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _env(variable: str, default: object, kind: str = "text", **spec: object) -> Any:
    """A field read from ``variable`` by ``_Reader.<kind>(variable, default, **spec)``; secrets stay out of repr."""
    return field(default=default, repr=not kind.startswith("secret"), metadata={"env": variable, "kind": kind, "spec": spec})


@dataclass(frozen=True)
class Settings:
    segmenter: str = _env("SEGMENTER", "onnx", "choice", choices=tuple(TIER_DEFAULTS))
    model_path: Path = _env("MODEL_PATH", PROJECT_ROOT / "models" / "u2netp.onnx", "path")
    model_profile: str = _env("MODEL_PROFILE", "auto", "choice", choices=MODEL_PROFILES)
    port: int = _env("PORT", 5000, "integer", lo=1, hi=65535)
    host: str = _env("HOST", "0.0.0.0")
    max_file_size_mb: float = _env("MAX_FILE_SIZE_MB", 8.0, "number", lo=0.001, hi=1024)
    # An operator's cap on the longest side (larger inputs are scaled down to it); JPEGs larger than
    # needed are decoded at a reduced scale. 4096: a 12 MP phone photo (4032x3024) passes whole.
    max_dimension: int = _env("MAX_DIMENSION", 4096, "integer", lo=16, hi=16384)
    max_input_pixels: int = _env("MAX_INPUT_PIXELS", 4096 * 4096, "integer", lo=256, hi=1 << 31)
    # The most pixels a photo is worked at: larger ones are scaled down to it (X-Scaled-From names the
    # upload's size). 12.5 MP keeps a 4032x3024 photo whole within the 512 MB tier's 350 MB.
    max_work_pixels: int = _env("MAX_WORK_PIXELS", 12_500_000, "integer", lo=256, hi=1 << 31)
    # Memory decoding one upload may take (pixels in their own mode, decoder copies): with
    # the worker's ~110 MB at rest and the inference peak, the tree stays under 350 MB.
    max_decode_mb: float = _env("MAX_DECODE_MB", 128.0, "number", lo=1, hi=1 << 20)
    # Memory encoding one output may take, beyond its pixels: WebP, HEIC with alpha and AVIF hold
    # 7-41 bytes a pixel while they encode (PNG and JPEG stream); a larger output in those formats
    # is worked smaller (X-Scaled-From), as with max_megapixels (imaging.ENCODER_BYTES_PER_PIXEL).
    max_encode_mb: float = _env("MAX_ENCODE_MB", 128.0, "number", lo=1, hi=1 << 20)
    # The most pixels a laid-out output may have (a fixed `size`, or the canvas a layout grows to).
    max_output_pixels: int = _env("MAX_OUTPUT_PIXELS", 4096 * 4096, "integer", lo=256, hi=1 << 31)
    # Also read as MAX_CONCURRENT_REQUESTS: the GPU deployment's name for it (Cloud Run's concurrency).
    max_concurrent_inferences: int = _env("MAX_CONCURRENT_INFERENCES", 1, "integer", lo=1, hi=256)
    # 1 slot and 8 waiting: a burst of 8 uploads at once is queued, not shed (each 0.5-0.8 s on 2 cores,
    # the last answered in 4-7 s, well inside REQUEST_TIMEOUT_S); a queued request holds only its
    # upload (<= MAX_FILE_SIZE_MB), it is decoded in its slot. Past 9 at once: 503 + Retry-After.
    max_queue: int = _env("MAX_QUEUE", 8, "integer", lo=0, hi=10_000)
    request_timeout_s: float = _env("REQUEST_TIMEOUT_S", 60.0, "number", lo=0.1, hi=3600)
    web_concurrency: int = _env("WEB_CONCURRENCY", 1, "integer", lo=1, hi=64)
    # 0 (the default): enough threads for every admitted request plus two spare, so that health
    # probes and 503 answers are served while the queue is full (see __post_init__).
    web_threads: int = _env("WEB_THREADS", 0, "integer", lo=1, hi=1024)
    graceful_timeout_s: float = _env("GRACEFUL_TIMEOUT_S", 30.0, "number", lo=0, hi=3600)
    inference_threads: int = _env("INFERENCE_THREADS", _available_cpus(), "integer", lo=1, hi=256)
    png_compress_level: int = _env("PNG_COMPRESS_LEVEL", 1, "integer", lo=0, hi=9)
    # lean and balanced also run under app.ops.tuning.MALLOC_TUNABLES (huge pages), set at process start.
    onnx_memory_mode: str = _env("ONNX_MEMORY_MODE", "lean", "choice", choices=ONNX_MEMORY_MODES)
    # int8: MODEL_PATH's <stem>.int8.onnx (built by `make setup`); auto: that file where the CPU has
    # VNNI and it passes its self-check at boot, else MODEL_PATH itself.
    onnx_precision: str = _env("ONNX_PRECISION", "auto", "choice", choices=ONNX_PRECISIONS)
    # auto: openvino where it is installed and the CPU has VNNI, else onnxruntime (onnx_runtime_for_auto,
    # resolved at boot). openvino: OpenVINO runs the model ONNX_PRECISION picks (the int8 build's
    # convolutions in int8, the rest in fp32: ~4x onnxruntime's int8 on a Xeon with AMX); of
    # ONNX_MEMORY_MODE only whether its activations are kept between runs (fast) applies to it. Not
    # the default: its compiled int8 network holds ~30 MB more at rest, which takes the 12 MP
    # memory-bomb test to 318-350 MB against onnxruntime's 290 (docs/benchmarks.md).
    onnx_runtime: str = _env("ONNX_RUNTIME", "onnxruntime", "choice", choices=ONNX_RUNTIMES)
    # band (the CPU tier's default): the mask's uncertain band re-solved by closed-form matting on a
    # bounded grid (app/pipeline/matte.py: mean SAD 37.8 -> 26.8 on the AM-2k animals, 45-80 ms a
    # photo), with X-Mask-Warnings; off (the GPU tier's): the model's mask brought up along the photo's
    # edges; plain: the model's map resized as rembg resizes it (the fastest).
    edge_matting: str = _env("EDGE_MATTING", "band", "choice", choices=EDGE_MATTINGS)
    warmup: bool = _env("WARMUP", True, "boolean")
    log_level: str = _env("LOG_LEVEL", "info", "choice", choices=LOG_LEVELS)
    # InSPyReNet (GPU tier); ignored by the onnx adapter. TARGET_SIZE: a multiple of 32.
    target_size: int = _env("TARGET_SIZE", 1024, "integer", lo=64, hi=4096)
    device: str = _env("DEVICE", "auto", "device")
    precision: str = _env("PRECISION", "auto", "choice", choices=PRECISIONS)
    max_batch: int = _env("MAX_BATCH", 4, "integer", lo=1, hi=64)
    batch_window_ms: float = _env("BATCH_WINDOW_MS", 5.0, "number", lo=0, hi=1000)
    # Result cache (app/pipeline/cache/). CACHE_DIR's default depends on the environment: default_cache_dir.
    cache_backend: str = _env("CACHE_BACKEND", "local", "choice", choices=CACHE_BACKENDS)
    cache_dir: Path = _env("CACHE_DIR", default_cache_dir(os.environ), "path")
    cache_max_mb: float = _env("CACHE_MAX_MB", 1024.0, "number", lo=0.1, hi=10_000_000)
    cache_ttl_s: int = _env("CACHE_TTL", 86400, "integer", lo=1, hi=10 * 365 * 86400)
    cache_timeout_s: float = _env("CACHE_TIMEOUT_S", 1.0, "number", lo=0.01, hi=60)
    storage_bucket: str = _env("STORAGE_BUCKET", "")  # required for CACHE_BACKEND=gcs
    cache_prefix: str = _env("CACHE_PREFIX", "bgremove-cache/")
    # Bearer token for admin endpoints (POST /api/bg/clear_cache); empty = those endpoints are off.
    admin_token: str = _env("ADMIN_TOKEN", "", "secret")
    # Operations and protection (app/ops/observability.py, app/web/protection.py).
    log_format: str = _env("LOG_FORMAT", "json", "choice", choices=LOG_FORMATS)
    gcp_project: str = _env("GOOGLE_CLOUD_PROJECT", "")  # for Cloud Logging's trace field
    api_keys: tuple[str, ...] = _env("API_KEYS", (), "secret_words")
    rate_limit: str = _env("RATE_LIMIT", "", "rate")  # e.g. "60/minute"; empty = no limit
    rate_limit_storage_uri: str = _env("RATE_LIMIT_STORAGE_URI", "memory://", "storage_uri")
    # Socket connect/read timeout of the rate-limit store (Redis): an outage costs a request at most this (x2).
    rate_limit_storage_timeout_s: float = _env("RATE_LIMIT_STORAGE_TIMEOUT_S", 0.25, "number", lo=0.01, hi=10)
    # Failed API-key checks allowed per client IP (only with API_KEYS); over it, 429 without checking the key.
    auth_failure_limit: str = _env("AUTH_FAILURE_LIMIT", "10/minute", "rate")
    cors_origins: tuple[str, ...] = _env("CORS_ORIGINS", (), "words")
    # Proxies in front of gunicorn that set X-Forwarded-For; 0: clients' own X-Forwarded-For is ignored.
    # config/serve counts its nginx edge: 1 unless set (the edge alone), e.g. 2 behind Cloud Run's front.
    proxy_hops: int = _env("PROXY_HOPS", 0, "integer", lo=0, hi=10)
    # Image URLs (image_url, background_url; remove.bg's image_url, bg_image_url): app/pipeline/fetch.py.
    # The whole download (lookup, connection, redirects, body) ends within URL_FETCH_TIMEOUT_S.
    url_fetch_timeout_s: float = _env("URL_FETCH_TIMEOUT_S", 10.0, "number", lo=0.1, hi=600)
    url_fetch_connect_timeout_s: float = _env("URL_FETCH_CONNECT_TIMEOUT_S", 3.0, "number", lo=0.05, hi=60)
    # true lets URLs reach loopback, private and link-local addresses (tests, or a private deployment
    # fetching from its own network). Off by default: it opens the server to SSRF (cloud metadata at
    # 169.254.169.254, internal services); never set it on a server open to the internet.
    url_fetch_allow_private: bool = _env("URL_FETCH_ALLOW_PRIVATE", False, "boolean")
    # Set by gunicorn.conf.py for the workers: prometheus-client's shared directory (multiprocess mode).
    metrics_dir: str = _env("PROMETHEUS_MULTIPROC_DIR", "")

    def __post_init__(self) -> None:
        if not self.web_threads:
            object.__setattr__(self, "web_threads", self.max_concurrent_inferences + self.max_queue + 2)
        if self.onnx_runtime == "auto":  # resolved once: the cache keys and the adapter see the runtime run
            object.__setattr__(self, "onnx_runtime", onnx_runtime_for_auto()[0])

    @property
    def max_file_size_bytes(self) -> int:
        return int(self.max_file_size_mb * 1024 * 1024)

    @property
    def max_request_body_bytes(self) -> int:
        """The largest request body: the file plus room for the multipart boundaries and the small
        option fields around it. nginx (config/edge.py) and werkzeug both refuse larger bodies."""
        return self.max_file_size_bytes + MULTIPART_SLACK_BYTES

    @property
    def max_b64_body_bytes(self) -> int:
        """The largest body where the image may come as base64 text (remove.bg's image_file_b64):
        a third larger than the upload it encodes."""
        return math.ceil(self.max_file_size_bytes / 3) * 4 + MULTIPART_SLACK_BYTES

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Build and validate the settings from ``env`` (default: the process environment)."""
        env = os.environ if env is None else env
        read = _Reader(env)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        segmenter = read.setting(fields["segmenter"])  # the tier, and with it the other defaults
        defaults = {**TIER_DEFAULTS[segmenter], "cache_dir": default_cache_dir(env)}
        model_path = read.setting(fields["model_path"], defaults)  # checked first: nothing runs without it
        if model_path is None:
            raise ConfigError(f"MODEL_PATH: required for SEGMENTER={segmenter} (no weights ship with the project)")
        if not model_path.is_file():
            hint = " (run `make setup` to fetch the default model)" if segmenter == "onnx" else ""
            raise ConfigError(f"MODEL_PATH: no such model file: {model_path}{hint}")
        values = {name: read.setting(f, defaults) for name, f in fields.items()}
        slots = values["max_concurrent_inferences"]
        requests_limit = read.integer("MAX_CONCURRENT_REQUESTS", slots, **fields["max_concurrent_inferences"].metadata["spec"])
        if "MAX_CONCURRENT_INFERENCES" in env and "MAX_CONCURRENT_REQUESTS" in env and requests_limit != slots:
            raise ConfigError(
                f"MAX_CONCURRENT_REQUESTS: {requests_limit} contradicts MAX_CONCURRENT_INFERENCES={slots}; set one of them"
            )
        values["max_concurrent_inferences"] = requests_limit
        if values["target_size"] % 32:
            raise ConfigError(f"TARGET_SIZE: expected a multiple of 32 (Swin-B's patch merging), got {values['target_size']}")
        if values["cache_backend"] == "gcs" and not values["storage_bucket"]:
            raise ConfigError("STORAGE_BUCKET: required for CACHE_BACKEND=gcs (the bucket's name)")
        if values["admin_token"] and len(values["admin_token"]) < MIN_ADMIN_TOKEN_CHARS:
            raise ConfigError(f"ADMIN_TOKEN: too short to be secret (at least {MIN_ADMIN_TOKEN_CHARS} characters, "
                              "e.g. `openssl rand -hex 32`)")
        prefix = values["cache_prefix"].lstrip("/")
        values["cache_prefix"] = prefix + "/" if prefix and not prefix.endswith("/") else prefix
        return cls(**values)

    def replace(self, **changes: object) -> "Settings":
        return dataclasses.replace(self, **changes)


class _Reader:
    """Parses one variable at a time; every error message starts with the variable's name."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env

    def setting(self, f: dataclasses.Field, defaults: Mapping[str, object] = {}) -> Any:
        """The field ``f`` from its variable (see ``_env``), defaulting to ``defaults[f.name]``, else its own default."""
        meta = f.metadata
        return getattr(self, meta["kind"])(meta["env"], defaults.get(f.name, f.default), **meta["spec"])

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

    def path(self, name: str, default: Path | None) -> Path | None:
        return self._get(name, default, Path, "a path")

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

    def words(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        """A comma-separated list; blanks dropped."""
        return tuple(w.strip() for w in self.env.get(name, "").split(",") if w.strip()) or default

    def secret(self, name: str, default: str = "") -> str:
        """A token compared with what clients send in a header: printable ASCII only. HTTP clients
        send other characters in different encodings (UTF-8, Latin-1), so such a token would match
        some clients and not others. The value is never echoed in the message."""
        value = self.env.get(name, "").strip()
        if not (value.isascii() and value.isprintable()):
            raise ConfigError(f"{name}: must be printable ASCII (HTTP headers carry no other characters "
                              "reliably), e.g. `openssl rand -hex 32`")
        return value or default

    def secret_words(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        """A comma-separated list of secrets (see :meth:`secret`); blanks dropped."""
        words = self.words(name, default)
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
            try:
                return BOOLEAN_WORDS[raw.lower()]
            except KeyError:
                raise ValueError(raw) from None

        return self._get(name, default, parse, "true or false")
