"""ONNX adapter: U²-Net and IS-Net family graphs on onnxruntime (CPU).

Kept in three steps, as a torchserve handler would be: ``preprocess`` (image ->
tensor), ``infer`` (the session), ``postprocess`` (map -> mask at the input's
size). Pre- and post-processing reproduce the reference tool rembg's for the
same model (PIL Lanczos resizes, scaling by the image maximum, min-max
normalisation of the first output), so the masks agree with rembg's; two
differences: where the model is confident the mask is exactly 255 (or 0), where
rembg's truncation leaves the subject at 254 (``postprocess``), and a photo
larger than 1024 px gets its mask brought up along its own edges
(``app.pipeline.upscale``), not stretched.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from adapters import int8
from adapters.base import ModelInfo, ModelLoadError
from adapters.modelfile import file_digest
from app.pipeline.upscale import upscale_mask
from config import Settings
from config.settings import onnx_runtime_for_auto


class _Onnxruntime:
    """onnxruntime, imported on first use (its first attribute read through ``ort``), with its logger
    set to errors only (we report load failures ourselves): ``ONNX_RUNTIME=openvino`` never loads it,
    ~19 MB less resident."""

    def __getattr__(self, name: str):
        import onnxruntime

        onnxruntime.set_default_logger_severity(3)
        globals()["ort"] = onnxruntime
        return getattr(onnxruntime, name)


ort = _Onnxruntime()


@dataclass(frozen=True)
class Profile:
    """How a model family wants its input."""

    name: str
    size: int  # square input side
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


PROFILES = {
    # u2net, u2netp, silueta, u2net_human_seg...: 320x320, ImageNet statistics.
    "u2net": Profile("u2net", 320, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # isnet-general-use, isnet-anime: 1024x1024, mean 0.5, std 1.
    "isnet": Profile("isnet", 1024, (0.5, 0.5, 0.5), (1.0, 1.0, 1.0)),
}


# onnxruntime memory modes (ONNX_MEMORY_MODE, config.settings.ONNX_MEMORY_MODES), measured by
# ``benchmarks/ort_options.py`` and ``benchmarks/server_memory.py`` (figures in README):
#   lean      no arena, no memory pattern, 'extended' graph optimisation: lowest peak
#   balanced  no arena, no memory pattern, 'all' (NCHWc layouts): ~25% faster, ~75 MB more
#   fast      one arena for the process, kept between runs, 'all': fastest, holds its peak for good
# Without the arena, the malloc policy of app.ops.tuning.configure returns freed activations to the OS.
# fast's arena (:func:`_shared_arena`) starts as one chunk of ARENA_CHUNK_MB, enough for a run of
# u2netp (int8: ~110 MB at its peak), so it need not grow by doubling chunks as the session's own
# arena does (1 MB, 2, 4, ... 64: ~125 MB held). In the server (int8, EDGE_MATTING=plain, 4 clients;
# benchmarks/bench_servers.py, docs/benchmarks.md): peak 282-287 MB against 304 with the session's
# own arena under the malloc policy, 333 without it (fast ran without it until 2026-12-07), 249-255
# in lean; a request 164-176 ms against 223-234 in lean (0.55x rembg's server).
ARENA_CHUNK_MB = {"int8": 128, "fp32": 256}
# Where lean's time goes against rembg (ort defaults: arena, pattern, 'all'), issue 19, measured
# interleaved (ort_options.py; 2 CPUs, busy: ratios to lean): two parts, neither free in memory.
#  - 'extended' vs 'all': the FusedConv kernels (im2col + GEMM; ~70% of a run in onnxruntime's
#    profile) take ~1.6x NCHWc's Conv. 'all' costs ~75 MB more peak (ReorderOutput/ReorderInput
#    copies around its 51 Concat and 38 Resize nodes: 232 -> 307 MB for one run), past the 512 MB
#    tier's 300 MB target, and its masks differ (at most 1 level, <= 0.05% of pixels).
#  - fresh activations: ~220 MB mmapped, faulted in (~55,000 4 KiB faults) and unmapped per run:
#    0.84-0.86x with any allocator that keeps them (the arena as it is, kSameAsRequested, a
#    planned memory pattern, jemalloc without decay), but each holds ~40-50 MB above lean's peak
#    (its fragmentation: 318-331 MB against 281 MB per process), and giving it back after each
#    run (memory.enable_memory_arena_shrinkage) brings the faults and the time back (1.02-1.05x).
#  So lean stays as it is and only faults in huge pages (app.ops.tuning.MALLOC_TUNABLES, set at
#  process start): ~12,000 faults per image instead of ~55,000, identical masks, 0.92-1.00x in
#  five interleaved runs (bench_pipeline.py: 1.36x rembg against 1.45x without, on a busy machine),
#  peak 282 against 281 MB per process, the 4-client server's 307 against 304 MB (idle +4 MB).
def session_options(threads: int, memory_mode: str, int8: bool = False) -> ort.SessionOptions:
    """``int8``: the quantized model (adapters/quantize.py) runs at the 'all' level in every mode: its
    activations are uint8, so the NCHWc copies cost it nothing (peak 193 MB in lean and balanced
    alike, one run of u2netp) and its int8 kernels are channels-last there (~1.25x faster)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.enable_mem_pattern = False
    so.enable_cpu_mem_arena = False
    if memory_mode == "fast":  # the process's shared arena instead of one per session
        _shared_arena("int8" if int8 else "fp32")
        so.add_session_config_entry("session.use_env_allocators", "1")
    so.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED if memory_mode == "lean" and not int8
        else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    )
    # Thread spinning stays on (onnxruntime's default): turning it off cost 16% in 'lean' on a quiet
    # machine; on one busy with other processes it gained (0.78-0.85x, issue 19): measure on the target.
    return so


_ARENA: list[str] = []  # the precision the process's shared arena was sized for, once registered


def _shared_arena(precision: str) -> None:
    """Register onnxruntime's CPU arena for the whole process (``session.use_env_allocators``), its
    first chunk :data:`ARENA_CHUNK_MB` for ``precision``, growing by doubling past it: once per
    process, sized by the first session (the served one; the fp32 fall-back after a failed int8
    self-check grows it)."""
    if _ARENA:
        return
    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(info, ort.OrtArenaCfg({
        "arena_extend_strategy": 0,  # kNextPowerOfTwo
        "initial_chunk_size_bytes": ARENA_CHUNK_MB[precision] << 20,
    }))
    _ARENA.append(precision)


# Pillow's resize to the network's input first reduces a photo by a whole factor (box averages), at
# least 2, where it is at least this many times that factor the output size, then applies Lanczos:
# a 12 MP photo to 320x320 in 21 ms instead of 85 (Intel Xeon), its pixels at most 2 levels (mean
# 0.19) from the plain Lanczos resize. Applied where both sides are 1920 px (3 x 2 x 320) or more;
# smaller photos are resized exactly as rembg resizes them.
REDUCING_GAP = 3.0

# The share of the normalised output's range, at each end, that counts as certain: at or above
# 1 - margin the mask is 255, at or below the margin 0 (measured on the fixture photos: inside a
# clear subject u2netp gives 0.98-0.9999, on clear background under 0.02).
CONFIDENT_MARGIN = 0.02


class OnnxSegmenter:
    def __init__(self, session: ort.InferenceSession, profile: Profile, info: ModelInfo,
                 precision: tuple[str, str] = ("fp32", "")):
        self.session = session
        self.profile = profile
        self.info = info
        self.precision, self.precision_reason = precision
        self._input = session.get_inputs()[0].name
        self._output = session.get_outputs()[0].name
        p = profile
        # Per-channel affine applied to x/max: (x/max - mean)/std.
        self._mean = np.asarray(p.mean, np.float32).reshape(3, 1, 1)
        self._inv_std = (1.0 / np.asarray(p.std, np.float32)).reshape(3, 1, 1)

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        size = self.profile.size
        # reduced first only where both sides allow a whole factor of 2 or more (Pillow would reduce
        # one axis alone: a 1920x1080 photo too)
        gap = REDUCING_GAP if min(rgb.shape[:2]) >= 2 * REDUCING_GAP * size else None
        small = np.asarray(Image.fromarray(rgb, "RGB").resize((size, size), Image.Resampling.LANCZOS,
                                                               reducing_gap=gap))
        chw = small.transpose(2, 0, 1).astype(np.float32)
        chw *= np.float32(1.0 / max(float(small.max()), 1e-6))
        chw -= self._mean
        chw *= self._inv_std
        return chw[np.newaxis]

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        return self.session.run([self._output], {self._input: tensor})[0]

    @staticmethod
    def postprocess(prediction: np.ndarray, height: int, width: int, guide: np.ndarray | None = None) -> np.ndarray:
        """The model's map -> an 8-bit mask at ``height`` x ``width``: resized with Lanczos, or by
        :func:`app.pipeline.upscale.upscale_mask` along the edges of ``guide`` (the photo, HxWx3).

        Min-max normalisation as rembg's; then, unlike rembg (which truncates ``p * 255``),
        the outer :data:`CONFIDENT_MARGIN` of the range at each end maps to exactly 0 and
        255 and the rest is stretched linearly and rounded. A sigmoid output saturates short
        of 1 (inside a subject it is 0.999..., which truncation made 254 everywhere: no pixel
        fully opaque), so a confident subject is now 255 and a confident background 0.
        The stretch is symmetric about 0.5, so the mask's 50% line, and with it the shape
        rembg's masks are compared by, is unchanged; soft edges steepen by 1/(1 - 2 x margin).
        """
        pred = prediction[0, 0, :, :]
        lo, hi = float(pred.min()), float(pred.max())
        scale = 1.0 / (hi - lo) if hi > lo else 0.0
        small = (pred - lo) * np.float32(scale)
        small -= np.float32(CONFIDENT_MARGIN)
        small *= np.float32(255.0 / (1.0 - 2.0 * CONFIDENT_MARGIN))
        np.clip(small, 0.0, 255.0, out=small)
        small = np.rint(small).astype(np.uint8)
        if guide is not None:
            return upscale_mask(small, guide)
        return np.asarray(Image.fromarray(small, "L").resize((width, height), Image.Resampling.LANCZOS))

    def mask(self, rgb: np.ndarray, guide: np.ndarray | None = None, follow_edges: bool = True) -> np.ndarray:
        guide = rgb if guide is None else guide
        height, width = guide.shape[:2]
        return self.postprocess(self.infer(self.preprocess(rgb)), height, width,
                                guide=guide if follow_edges else None)

    def runtime(self) -> dict[str, object]:
        engine = getattr(self.session, "engine", None) or f"onnxruntime {ort.__version__}"  # OpenVINO's names itself
        return {"precision": self.precision, "precision_reason": self.precision_reason, "engine": engine}


def int8_path(model_path: Path) -> Path:
    """Where ``make setup`` puts the int8 build of ``model_path`` (adapters/quantize.py): beside it."""
    return model_path.with_name(model_path.stem + ".int8.onnx")


def u2net_segmenter(session: "ort.InferenceSession | OpenVinoSession") -> OnnxSegmenter:
    """``session`` (a u2netp graph) in the adapter, u2net profile: for the int8 self-check and the
    offline build, which run the service's own preprocess / infer / postprocess (no file facts:
    nothing is served with it)."""
    p = PROFILES["u2net"]
    info = ModelInfo(name="onnx", model_id="u2netp", input_size=(p.size, p.size), parameters=0,
                     device="cpu", file_sha256="", file_size_bytes=0)
    return OnnxSegmenter(session, p, info)


@dataclass(frozen=True)
class _Port:
    """An input or output as the adapter reads it from a session (onnxruntime's NodeArg's fields)."""
    name: str
    shape: list


class OpenVinoSession:
    """OpenVINO running an ONNX graph behind the two calls the adapter makes of an onnxruntime session
    (``run`` and the ports' names and shapes), for ``ONNX_RUNTIME=openvino``.

    OpenVINO compiles the graph for this CPU in fp32 (INFERENCE_PRECISION_HINT f32), and the int8
    build's quantized convolutions in int8 (AMX or VNNI kernels): u2netp's int8 build in 33 ms on an
    Intel Xeon with AMX, against onnxruntime's 130-146 (``benchmarks/openvino_probe.py``), mean SAD
    26.50 with the edge matting against onnxruntime's 26.79. Left to itself OpenVINO would run the
    rest in bf16 on such a CPU: no faster, and 28.50-29.19 (docs/benchmarks.md). The compiling is
    done by a child process (:func:`compiled_blob`): this process only imports the compiled network,
    and never runs (nor keeps resident) the ONNX reader and the graph transformations (~20 MB less).
    ``release``: the network's activation buffers are handed back after each run that leaves none
    running (``ONNX_MEMORY_MODE`` lean and balanced; a few ms a run of page faults in huge pages),
    else kept for good (fast). An infer request serves one run at a time: each run takes one from a
    pool, made when none is free (as many as runs at once, at most MAX_CONCURRENT_INFERENCES)."""

    def __init__(self, path: Path, threads: int, precision_hint: str = "f32", release: bool = True):
        """``precision_hint``: OpenVINO's INFERENCE_PRECISION_HINT (``f32``, ``bf16``...; ``""``:
        its own choice for this CPU, as benchmarks/openvino_probe.py compares)."""
        try:
            import openvino as ov
        except ImportError:
            raise ModelLoadError("ONNX_RUNTIME=openvino: the openvino package is not installed "
                                 "(a dependency of the project: pip install -e .)") from None
        config = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY"}
        if precision_hint:
            config["INFERENCE_PRECISION_HINT"] = precision_hint
        blob = compiled_blob(path, config)
        try:
            self.compiled = ov.Core().import_model(blob, "CPU", config)
        except Exception as exc:  # OpenVINO raises its own RuntimeError subclasses
            raise ModelLoadError(f"MODEL_PATH: {path}: OpenVINO could not import its compiled network "
                                 f"({_first_line(exc)})") from None
        from importlib.metadata import version

        self.version = version("openvino")
        self.engine = f"openvino {self.version}"  # what /api/bg/status shows (OnnxSegmenter.runtime)
        precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()  # bf16, f32, f16
        self.precision = {"f32": "fp32"}.get(precision, precision)
        self.release = release
        self._requests: list = []  # infer requests not running
        self._running = 0
        self._lock = threading.Lock()

    def get_inputs(self) -> list[_Port]:
        return [self._port(p) for p in self.compiled.inputs]

    def get_outputs(self) -> list[_Port]:
        return [self._port(p) for p in self.compiled.outputs]

    @staticmethod
    def _port(port) -> _Port:
        shape = port.get_partial_shape()
        return _Port(port.get_any_name(), [d.get_length() if d.is_static else None for d in shape])

    def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with self._lock:
            request = self._requests.pop() if self._requests else self.compiled.create_infer_request()
            self._running += 1
        try:
            results = request.infer(feeds)
            # copied: the request's buffers are reused by its next run
            return [np.array(results[self.compiled.output(name)]) for name in outputs]
        finally:
            with self._lock:
                self._requests.append(request)
                self._running -= 1
                if self.release and not self._running:  # under the lock: no run starts meanwhile
                    self.compiled.release_memory()


# What the child process of :func:`compiled_blob` runs: argv = the model's path, the config as JSON;
# the compiled network on stdout, or one line on stderr and exit status 3.
_COMPILE = """
import io, json, sys
import openvino as ov
try:
    compiled = ov.Core().compile_model(sys.argv[1], "CPU", json.loads(sys.argv[2]))
    blob = io.BytesIO()
    compiled.export_model(blob)
except Exception as exc:
    sys.stderr.write((str(exc).strip() or type(exc).__name__).splitlines()[0][:300])
    sys.exit(3)
sys.stdout.buffer.write(blob.getvalue())
"""


def compiled_blob(path: Path, config: dict) -> bytes:
    """``path`` compiled by OpenVINO for this CPU with ``config``, as ``CompiledModel.export_model``
    writes it (~5 MB for u2netp), by a child process: what compiling leaves resident (the ONNX
    reader's and the transformations' code and buffers) goes with it. ~1 s."""
    try:
        done = subprocess.run([sys.executable, "-c", _COMPILE, str(path), json.dumps(config)],
                              capture_output=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise ModelLoadError(f"MODEL_PATH: {path}: OpenVINO took over 600 s to compile it") from None
    if done.returncode != 0 or not done.stdout:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        raise ModelLoadError(f"MODEL_PATH: {path} is not a model OpenVINO can load "
                             f"({why[-1][:300] if why else f'exit status {done.returncode}'})")
    return done.stdout


def load(settings: Settings) -> OnnxSegmenter:
    path = Path(settings.model_path)  # config.Settings checked that it is a file
    session, path, precision = _precise_session(settings, path)
    profile = _choose_profile(session, settings.model_profile, path)
    info = ModelInfo(
        name="onnx",
        model_id=path.stem,
        input_size=(profile.size, profile.size),
        parameters=count_parameters(path),
        device="cpu",
        file_sha256=file_digest(path),
        file_size_bytes=path.stat().st_size,
    )
    return OnnxSegmenter(session, profile, info, precision)


def _session(settings: Settings, path: Path, int8: bool = False) -> "ort.InferenceSession | OpenVinoSession":
    """``path`` on ONNX_RUNTIME's runtime: onnxruntime under ONNX_MEMORY_MODE's options, or OpenVINO
    (its activations kept between runs only in ``fast``)."""
    if settings.onnx_runtime == "openvino":
        return OpenVinoSession(path, settings.inference_threads, release=settings.onnx_memory_mode != "fast")
    try:
        return ort.InferenceSession(
            str(path),
            session_options(settings.inference_threads, settings.onnx_memory_mode, int8),
            providers=["CPUExecutionProvider"],
        )
    except Exception as exc:  # onnxruntime raises its own pybind types
        raise ModelLoadError(f"MODEL_PATH: {path} is not a loadable ONNX model ({_first_line(exc)})") from None


def _first_line(exc: Exception) -> str:
    """A runtime's load error in one line (its first, at most 300 characters), or its type's name."""
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _precise_session(settings: Settings, path: Path) -> tuple[ort.InferenceSession, Path, tuple[str, str]]:
    """The session ONNX_PRECISION asks for, on ONNX_RUNTIME's runtime: (session, its file,
    (precision, why)); on OpenVINO, MODEL_PATH's precision is the one its session was compiled at
    (fp32: OpenVinoSession's hint) and ``why`` names OpenVINO's version."""
    session, path, (precision, reason) = _precise(settings, path)
    if isinstance(session, OpenVinoSession):
        precision = precision if precision == "int8" else session.precision
        auto = onnx_runtime_for_auto()
        why = f", {auto[1]}" if auto[0] == "openvino" else ""
        reason = f"{reason}; ONNX_RUNTIME=openvino{why}: OpenVINO {session.version}, {session.precision} where not int8"
    return session, path, (precision, reason)


def _precise(settings: Settings, path: Path) -> tuple[ort.InferenceSession, Path, tuple[str, str]]:
    """The session ONNX_PRECISION asks for: (session, its file, (precision, why)).

    fp32: MODEL_PATH. int8: its int8 build (:func:`int8_path`), which must exist and pass
    ``adapters.int8.self_check`` (one run of a test card, compared with the fp32 model's map of
    it), else the boot fails naming ONNX_PRECISION. auto: the int8 build where it exists, the CPU
    has VNNI (``cpu_has_vnni``: without it int8 is slower and may saturate) and it passes the
    self-check; else MODEL_PATH, and ``why`` says which of the three was missing."""
    wanted = settings.onnx_precision
    quantized = int8_path(path)
    reason = fp32_reason(settings, path)
    if reason is not None:
        return _session(settings, path), path, ("fp32", reason)
    try:
        session = _session(settings, quantized, int8=True)
        checked = int8.self_check(u2net_segmenter(session))
    except ModelLoadError:
        session, checked = None, False
    if checked:
        return session, quantized, ("int8", f"ONNX_PRECISION={wanted}: {quantized.name} passed its self-check")
    if wanted == "int8":
        raise ModelLoadError(f"ONNX_PRECISION=int8: {quantized} failed its self-check (rebuild it with `make int8`)")
    return _session(settings, path), path, ("fp32", f"auto: {quantized.name} failed its self-check")


def fp32_reason(settings: Settings, path: Path) -> str | None:
    """Why MODEL_PATH runs in fp32, or None where its int8 build is to be loaded (and self-checked):
    ONNX_PRECISION's choice before any session exists (``bgremove batch`` keys its outputs by it)."""
    wanted = settings.onnx_precision
    if wanted == "fp32":
        return "ONNX_PRECISION=fp32"
    quantized = int8_path(path)
    if not quantized.is_file():
        if wanted == "int8":
            raise ModelLoadError(f"ONNX_PRECISION=int8: no int8 model at {quantized} (run `make setup` to build it)")
        return f"auto: no int8 build of {path.name}"
    if wanted == "auto" and not int8.cpu_has_vnni():
        return "auto: this CPU has no VNNI instructions"
    return None


def _choose_profile(session: ort.InferenceSession, requested: str, path: Path) -> Profile:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = inputs[0].shape
    if len(shape) != 4 or len(outputs[0].shape) != 4:
        raise ModelLoadError(f"MODEL_PATH: {path} is not a segmentation graph (input {shape}, output {outputs[0].shape})")
    side = shape[2] if isinstance(shape[2], int) else None
    if requested == "auto":
        matches = [p for p in PROFILES.values() if p.size == side]
        if not matches:
            raise ModelLoadError(
                f"MODEL_PROFILE: cannot infer the profile of {path} from its input shape {shape}; "
                f"set MODEL_PROFILE to one of {', '.join(PROFILES)}"
            )
        return matches[0]
    profile = PROFILES[requested]
    if side is not None and side != profile.size:
        raise ModelLoadError(
            f"MODEL_PROFILE: {requested} runs at {profile.size}x{profile.size} but {path} takes {shape}"
        )
    return profile


def count_parameters(path: Path) -> int:
    """Number of learned values in an ONNX file: the product of each initializer's dims.

    Reads the protobuf wire format directly (ModelProto.graph = 7,
    GraphProto.initializer = 5, TensorProto.dims = 1) instead of importing the
    ``onnx`` package into a memory-tight worker for one number.
    """
    data = memoryview(path.read_bytes())
    total = 0
    for field, value in _fields(data):
        if field == 7:  # graph
            for gfield, gvalue in _fields(value):
                if gfield == 5:  # initializer
                    dims: list[int] = []
                    for tfield, tvalue in _fields(gvalue):
                        if tfield == 1:
                            dims.extend(_varints(tvalue) if isinstance(tvalue, memoryview) else [tvalue])
                    total += math.prod(dims)
    return total


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _varints(buf: memoryview) -> list[int]:
    out, pos = [], 0
    while pos < len(buf):
        value, pos = _varint(buf, pos)
        out.append(value)
    return out


def _fields(buf: memoryview):
    """Yield (field number, value) of one protobuf message; nested messages stay memoryviews."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 5:
            value, pos = None, pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield field, value
