"""Decoding uploads into arrays and encoding results, with every check before the pixels.

Pure functions of bytes and arrays; no Flask here.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from app.errors import ApiError, ImageTooLarge, InvalidImage, MissingFile, UnsupportedImage

# Pillow format -> file extensions a client may use for it.
SUPPORTED_FORMATS: dict[str, tuple[str, ...]] = {
    "JPEG": ("jpg", "jpeg"),
    "MPO": (),  # multi-picture JPEG from phone cameras; reads as its first picture
    "PNG": ("png",),
    "WEBP": ("webp",),
    "GIF": ("gif",),
    "BMP": ("bmp",),
    "TIFF": ("tif", "tiff"),
}
_OPENERS = [f for f in SUPPORTED_FORMATS if f != "MPO"]  # Pillow's JPEG opener returns MPO files
ALLOWED_EXTENSIONS = sorted(ext for exts in SUPPORTED_FORMATS.values() for ext in exts)

OUTPUT_FORMATS = {
    # name: (Pillow format, MIME type, file extension)
    "png": ("PNG", "image/png", "png"),
    "webp": ("WEBP", "image/webp", "webp"),
    "jpeg": ("JPEG", "image/jpeg", "jpg"),
}

Image.init()  # import every Pillow plugin at boot, not during the first requests

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_RGB_PROFILE_MODES = {"RGB", "RGBA", "RGBX", "P", "PA"}  # an ICC profile of these describes RGB pixels


@dataclass(frozen=True)
class DecodedImage:
    rgb: np.ndarray  # HxWx3 uint8, orientation applied, fitted into the size limit
    alpha: np.ndarray | None  # HxW uint8 if the input had any transparency
    source_format: str  # e.g. "JPEG"
    source_size: tuple[int, int]  # (width, height) as stored in the file
    icc_profile: bytes | None  # kept so that output colours match the input's

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]


def decode_image(data: bytes, *, max_dimension: int, max_pixels: int) -> DecodedImage:
    """Bytes of an upload -> :class:`DecodedImage`, or an :class:`ApiError` saying what is wrong.

    Dimensions are checked from the header before a pixel is decoded; JPEGs larger
    than needed are decoded at a reduced DCT scale (``draft``), which is faster and
    smaller; ``max_pixels`` bounds what would actually be decoded.
    """
    if not data:
        raise MissingFile("file: the uploaded file is empty")
    img = _open(data)
    try:
        source_size = img.size
        width, height = source_size
        if width < 1 or height < 1:
            raise InvalidImage(f"file: the image declares an impossible size {width}x{height}")
        if img.format in ("JPEG", "MPO") and max(width, height) > max_dimension:
            img.draft(None, (max_dimension, max_dimension))
        decoded = img.size[0] * img.size[1]
        if decoded > max_pixels:
            raise ImageTooLarge(
                f"file: the image is {width}x{height} pixels; at most {max_pixels:,} pixels can be decoded "
                f"(the longest side is scaled to {max_dimension} anyway)"
            )
        fmt = img.format or "unknown"
        icc = img.info.get("icc_profile") if img.mode in _RGB_PROFILE_MODES else None
        img.load()  # first frame of an animation or multi-page file
        pixels = _fit(_to_rgb_or_rgba(_apply_orientation(img)), max_dimension)
        rgb = np.asarray(pixels.convert("RGB"))
        alpha = np.asarray(pixels.getchannel("A")) if pixels.mode == "RGBA" else None
    except ApiError:
        raise
    except Image.DecompressionBombError:
        raise ImageTooLarge("file: the image declares too many pixels") from None
    except Exception:  # Pillow raises OSError, SyntaxError, ValueError... on broken files
        raise InvalidImage("file: the image data is truncated or corrupt") from None
    finally:
        img.close()
    return DecodedImage(rgb, alpha, fmt, source_size, icc or None)


def _open(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data), formats=_OPENERS)
    except Image.DecompressionBombError:
        raise ImageTooLarge("file: the image declares too many pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        pass
    # Not one of ours: is it an image at all? (header parsing only, nothing is decoded)
    try:
        with Image.open(io.BytesIO(data)) as other:
            kind = other.format
    except Exception:
        kind = None
    if kind:
        raise UnsupportedImage(
            f"file: {kind} images are not supported; send one of {', '.join(ALLOWED_EXTENSIONS)}"
        )
    raise InvalidImage(f"file: not a readable image; send one of {', '.join(ALLOWED_EXTENSIONS)}")


def _apply_orientation(img: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not cost the user the image
        return img


def _to_rgb_or_rgba(img: Image.Image) -> Image.Image:
    """RGB, or RGBA when the image has any transparency at all."""
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        img = _high_bit_depth_to_l(img)
    if img.mode not in _ALPHA_MODES and "transparency" not in img.info:
        return img.convert("RGB")
    rgba = img.convert("RGBA")
    return rgba.convert("RGB") if rgba.getchannel("A").getextrema() == (255, 255) else rgba


def _high_bit_depth_to_l(img: Image.Image) -> Image.Image:
    """16-bit (or 32-bit) greyscale -> 8-bit, by scaling rather than clipping."""
    arr = np.asarray(img).astype(np.float32)
    if img.mode == "F":
        top = 1.0 if float(arr.max(initial=0.0)) <= 1.0 else 255.0
    else:
        top = 65535.0 if img.mode.startswith("I;16") or float(arr.max(initial=0)) > 255 else 255.0
    scaled = np.clip(arr * (255.0 / top) + 0.5, 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, "L")


def _fit(img: Image.Image, max_dimension: int) -> Image.Image:
    """Scale down so the longest side is at most ``max_dimension`` (RGBA is resampled premultiplied)."""
    width, height = img.size
    longest = max(width, height)
    if longest <= max_dimension:
        return img
    scale = max_dimension / longest
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def encode_image(
    img: Image.Image, fmt: str, *, quality: int, png_compress_level: int, icc_profile: bytes | None = None
) -> bytes:
    """Encode ``img`` as ``fmt`` (png | webp | jpeg). WebP at quality 100 is lossless."""
    pil_format = OUTPUT_FORMATS[fmt][0]
    options: dict[str, object] = {}
    if icc_profile and img.mode in ("RGB", "RGBA"):
        options["icc_profile"] = icc_profile
    if pil_format == "PNG":
        options["compress_level"] = png_compress_level
    elif pil_format == "WEBP":
        options.update(quality=quality, lossless=quality >= 100, method=4)
    else:
        if img.mode not in ("RGB", "L"):
            img = img.convert("RGB")
        options.update(quality=quality)
    buf = io.BytesIO()
    img.save(buf, pil_format, **options)
    return buf.getvalue()
