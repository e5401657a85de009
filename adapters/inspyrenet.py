"""InSPyReNet (Swin-B) on PyTorch: the GPU tier's segmenter (``SEGMENTER=inspyrenet``).

The network is the authors' own implementation (PyPI ``transparent-background``,
``InSPyReNet_SwinB``), built with ``pretrained=False`` and loaded strictly from
``MODEL_PATH``. Its ``Remover`` (which downloads checkpoints) is never used.

- preprocess: Pillow bilinear resize to TARGET_SIZE (as the reference), uint8 to the
  device, then /255, ImageNet mean and std there.
- inference: the network's static path (``threshold=None``), batched across concurrent
  requests by :class:`adapters.batching.MicroBatcher`. The map is ``sigmoid(d0)``
  min-max normalised per image. The reference normalises over the whole batch, which is
  the same for its batches of one and keeps batched requests independent.
- postprocess: bilinear resize (align_corners=True) to the input size, ×255 truncated
  to uint8, as the reference's ``Remover.process``.

On CUDA, weights and inputs are channels_last, and precision ``auto`` uses fp16
autocast if, on a check image at boot, the map stays within ``FP16_TOLERANCE`` of fp32;
otherwise it falls back to fp32 and logs why. CUDA out-of-memory empties the allocator's cache and raises
:class:`SegmenterBusy` (503 + Retry-After); a batch that ran out is retried one
request at a time, so the requests that fit are still served.
"""

from __future__ import annotations

import logging
import os
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Mapping

import numpy as np
from PIL import Image

# transparent_background imports albumentations, which otherwise checks PyPI for updates
# over the network at import time. The service never touches the network.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

with warnings.catch_warnings():  # its GUI module warns that flet (the GUI toolkit) is absent
    warnings.simplefilter("ignore")
    from transparent_background.InSPyReNet import InSPyReNet_SwinB  # noqa: E402

from adapters.base import ModelInfo, ModelLoadError, SegmenterBusy  # noqa: E402
from adapters.batching import MicroBatcher  # noqa: E402
from adapters.modelfile import file_digest  # noqa: E402
from config import Settings  # noqa: E402

log = logging.getLogger(__name__)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
DEPTH = 64
# md5 of the authors' published checkpoints (transparent_background/config.yaml) -> model id.
KNOWN_CHECKPOINTS = {
    "d692e3dd5fa1b9658949d452bebf1cda": "inspyrenet-swinb-base",
    "9efdbfbcc49b79ef0f7891c83d2fd52f": "inspyrenet-swinb-fast",
}
# fp16 is kept only if the check image's map moves by at most this much on average (0..1 scale).
FP16_TOLERANCE = 0.005


class CheckpointMismatch(ModelLoadError):
    """The state dict does not have the official InSPyReNet Swin-B layout (the message names the keys)."""


class StaticInSPyReNet(nn.Module):
    """The reference network in static mode, its map min-max normalised per image."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d0 = self.net.forward_inspyre(x)["saliency"][-1]
        pred = torch.sigmoid(d0.float())
        lo = pred.amin(dim=(1, 2, 3), keepdim=True)
        hi = pred.amax(dim=(1, 2, 3), keepdim=True)
        return (pred - lo) / (hi - lo + 1e-8)

    def to_device(self, device: torch.device) -> "StaticInSPyReNet":
        """Move it all: the reference keeps its pyramid kernels outside its parameters, and its own ``to`` moves them."""
        self.net.to(device)
        if device.type == "cuda":
            nn.Module.to(self, memory_format=torch.channels_last)  # the layout tensor cores want
        return self


def build_network(base_size: tuple[int, int]) -> nn.Module:
    """The authors' InSPyReNet_SwinB, random weights, nothing downloaded."""
    return InSPyReNet_SwinB(depth=DEPTH, pretrained=False, base_size=list(base_size), threshold=None)


def layout_errors(expected: Mapping[str, torch.Size], given: Mapping[str, object]) -> list[str]:
    """What differs between the network's layout and a state dict: one phrase per kind, keys named."""

    def listing(keys: list[str]) -> str:
        shown = ", ".join(keys[:5])
        return shown + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

    missing = [k for k in expected if k not in given]
    unexpected = [k for k in given if k not in expected]
    misshapen = []
    for key, shape in expected.items():
        value = given.get(key)
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            misshapen.append(f"{key} is a {type(value).__name__}, not a tensor")
        elif value.shape != shape:
            misshapen.append(f"{key} is {tuple(value.shape)} in the checkpoint, {tuple(shape)} in the network")
    errors = []
    if missing:
        errors.append(f"missing key(s): {listing(missing)}")
    if unexpected:
        errors.append(f"unexpected key(s): {listing(unexpected)}")
    if misshapen:
        errors.append(f"wrong shape: {listing(misshapen)}")
    return errors


def load_model(state_dict: Mapping[str, object], base_size: tuple[int, int] = (1024, 1024)) -> StaticInSPyReNet:
    """The network with ``state_dict`` loaded strictly, in eval mode (on CPU).

    Raises :class:`CheckpointMismatch` naming every missing, unexpected or misshapen key.
    """
    net = build_network(base_size)
    expected = {k: v.shape for k, v in net.state_dict().items()}
    errors = layout_errors(expected, state_dict)
    if errors:
        raise CheckpointMismatch("checkpoint does not match InSPyReNet Swin-B: " + "; ".join(errors))
    net.load_state_dict(state_dict, strict=True)
    return StaticInSPyReNet(net).eval()


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a .pth file, read with ``weights_only`` (no pickled code runs)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors here
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"MODEL_PATH: {path} is not a readable PyTorch checkpoint ({reason})") from None
    if not isinstance(state, Mapping):
        raise ModelLoadError(f"MODEL_PATH: {path} holds a {type(state).__name__}, not a state dict")
    return dict(state)


def pick_device(requested: str) -> torch.device:
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        log.warning("DEVICE=auto: no CUDA device visible; InSPyReNet runs on CPU (slow)")
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"DEVICE: {requested} requested but no CUDA device is visible")
    return device


def is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)  # CPU allocator
    )


class InSPyReNetSegmenter:
    """Preprocess in the caller's thread, infer in batches, postprocess in the caller's thread."""

    def __init__(self, model: StaticInSPyReNet, device: torch.device, size: int, precision: str,
                 max_batch: int, window_s: float, info: ModelInfo):
        self.model = model
        self.device = device
        self.size = size
        self.info = info
        self.precision_check: dict[str, float] = {}
        self._mean = torch.tensor(MEAN, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(STD, device=device).view(1, 3, 1, 1)
        self.fp16 = self._choose_fp16(precision)
        self.batcher: MicroBatcher[torch.Tensor, torch.Tensor] = MicroBatcher(
            self._run_batch, max_batch, window_s, name="inspyrenet-batcher")

    # -- preprocess / inference / postprocess

    def preprocess(self, rgb: np.ndarray) -> torch.Tensor:
        """(1,3,S,S) float32 on the device, normalised as the reference."""
        small = Image.fromarray(rgb, "RGB").resize((self.size, self.size), Image.Resampling.BILINEAR)
        x = torch.from_numpy(np.asarray(small).copy()).to(self.device, non_blocking=True)
        x = x.permute(2, 0, 1).unsqueeze(0).float()
        # contiguous NCHW: the permuted view would carry HWC strides into every CPU convolution
        return ((x / 255.0 - self._mean) / self._std).contiguous()

    def infer(self, batch: torch.Tensor, fp16: bool | None = None) -> torch.Tensor:
        """(N,1,S,S) float32 maps in 0..1 for a (N,3,S,S) batch."""
        fp16 = self.fp16 if fp16 is None else fp16
        autocast = torch.autocast("cuda", dtype=torch.float16) if fp16 else nullcontext()
        with torch.inference_mode(), autocast:
            if batch.is_cuda:
                batch = batch.contiguous(memory_format=torch.channels_last)
            return self.model(batch).float()

    @staticmethod
    def postprocess(pred: torch.Tensor, height: int, width: int) -> np.ndarray:
        with torch.inference_mode():
            full = F.interpolate(pred, (height, width), mode="bilinear", align_corners=True)
            return (full[0, 0] * 255).to(torch.uint8).cpu().numpy()  # truncation, as the reference

    def mask(self, rgb: np.ndarray, guide: np.ndarray | None = None, follow_edges: bool = True) -> np.ndarray:
        height, width = (rgb if guide is None else guide).shape[:2]
        try:
            with self.batcher.announce() as submit:
                pred = submit(self.preprocess(rgb))
            return self.postprocess(pred, height, width)
        except SegmenterBusy:
            raise
        except Exception as exc:
            if is_out_of_memory(exc):
                raise self._out_of_memory() from None
            raise

    # -- batching

    def _run_batch(self, items: list[torch.Tensor]) -> list[torch.Tensor | BaseException]:
        try:
            return list(self.infer(torch.cat(items)).split(1))
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            self._free_cache()
            if len(items) == 1:
                return [self._out_of_memory()]
        results: list[torch.Tensor | BaseException] = []
        for item in items:  # the batch did not fit: each request on its own
            try:
                results.append(self.infer(item))
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                self._free_cache()
                results.append(self._out_of_memory())
        return results

    def _free_cache(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _out_of_memory(self) -> SegmenterBusy:
        self._free_cache()
        log.warning("out of %s memory during inference; answered 503", self.device.type.upper())
        return SegmenterBusy(f"the model ran out of {self.device.type.upper()} memory; retry shortly", 2)

    # -- boot and figures

    def _choose_fp16(self, requested: str) -> bool:
        """fp16 or fp32 for PRECISION ``requested`` (see the module's docstring); records the check in ``precision_check``."""
        if self.device.type != "cuda":
            if requested == "fp16":
                raise ModelLoadError("PRECISION: fp16 needs a CUDA device; InSPyReNet is running on CPU")
            return False
        if requested == "fp32":
            return False
        x = self.preprocess(check_image(self.size))
        reference = self.infer(x, fp16=False)
        diff = (self.infer(x, fp16=True) - reference).abs()
        self.precision_check = {"mean_abs": round(float(diff.mean()), 5), "max_abs": round(float(diff.max()), 5)}
        within = self.precision_check["mean_abs"] <= FP16_TOLERANCE
        if requested == "fp16" and not within:
            log.warning("PRECISION=fp16 although the check map moved by %s (mean abs)", self.precision_check)
        elif not within:
            log.warning("fp16 moved the check map by %s (mean abs > %s): running fp32", self.precision_check, FP16_TOLERANCE)
        return requested == "fp16" or within

    def warm_up(self, max_batch: int) -> None:
        """Run every batch size once: cuDNN picks its kernels now, and a batch that does not
        fit fails the boot instead of a request. (The app's own warm-up then runs one
        request through the whole pipeline.)"""
        x = self.preprocess(check_image(self.size))
        for n in range(1, max_batch + 1):
            self.infer(x.expand(n, -1, -1, -1).contiguous())
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def runtime(self) -> dict[str, object]:
        figures: dict[str, object] = {"device": str(self.device), "precision": "fp16" if self.fp16 else "fp32",
                                      "gpu_memory_allocated_gb": None, "gpu_memory_reserved_gb": None}
        if self.device.type == "cuda":
            figures["gpu_memory_allocated_gb"] = round(torch.cuda.memory_allocated(self.device) / 1e9, 3)
            figures["gpu_memory_reserved_gb"] = round(torch.cuda.memory_reserved(self.device) / 1e9, 3)
        figures["batching"] = {"max_batch": self.batcher.max_batch, "window_ms": self.batcher.window_s * 1000,
                               **self.batcher.stats.as_dict()}
        if self.precision_check:
            figures["fp16_check"] = self.precision_check
        return figures


def check_image(size: int) -> np.ndarray:
    """A deterministic photo-like test card: a soft bright blob on a textured gradient."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    blob = np.exp(-(((yy - 0.55) / 0.25) ** 2 + ((xx - 0.5) / 0.2) ** 2))
    texture = 0.5 + 0.5 * np.sin(40 * xx) * np.cos(30 * yy)
    rgb = np.stack([0.3 + 0.6 * blob, 0.25 * texture + 0.5 * blob, 0.6 * yy * (1 - blob)], axis=-1)
    return (np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def load(settings: Settings) -> InSPyReNetSegmenter:
    path = Path(settings.model_path)  # config.Settings checked that it is a file
    device = pick_device(settings.device)  # on CPU, app.ops.tuning.configure sized torch's threads
    size = settings.target_size
    state_dict = read_checkpoint(path)
    try:
        model = load_model(state_dict, (size, size))
    except CheckpointMismatch as exc:
        raise CheckpointMismatch(f"MODEL_PATH: {path}: {exc}") from None
    del state_dict
    model.to_device(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # one input size: let cuDNN pick the fastest kernels
    md5 = file_digest(path, "md5")
    info = ModelInfo(
        name="inspyrenet",
        model_id=KNOWN_CHECKPOINTS.get(md5, f"inspyrenet-swinb-{size}"),
        input_size=(size, size),
        parameters=sum(p.numel() for p in model.parameters()),
        device=str(device) if device.type == "cpu" else f"{device} ({torch.cuda.get_device_name(device)})",
        file_sha256=file_digest(path),
        file_size_bytes=path.stat().st_size,
    )
    segmenter = InSPyReNetSegmenter(model, device, size, settings.precision, settings.max_batch,
                                    settings.batch_window_ms / 1000, info)
    if settings.warmup and device.type == "cuda":  # on CPU a batch of 8 would add a minute to the boot
        segmenter.warm_up(settings.max_batch)
    return segmenter
