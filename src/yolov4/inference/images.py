"""Everything a user may hand the Predictor, turned into ``(H, W, 3)`` uint8 RGB arrays.

Accepted per image: a file path, encoded bytes (JPEG/PNG/BMP/TIFF/WebP), a PIL image, a numpy
array ``(H, W, 3)`` uint8 (RGB, or BGR with ``color="bgr"``), ``(H, W)``/``(H, W, 1)`` grayscale,
``(H, W, 4)`` RGBA (alpha dropped), uint16 (scaled), float in ``[0, 1]``, or a torch ``(3, H, W)``
/ ``(H, W)`` tensor (uint8, or float in ``[0, 1]``). Anything else raises :class:`InputError`
naming the image's index and what was wrong, before any model code runs.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from yolov4.errors import InputError

__all__ = ["to_rgb8", "decode_image", "load_image", "load_images", "ImageTooLarge", "MAX_PIXELS"]

UINT16_TO_UINT8 = 257  # 65535 / 255
MAX_PIXELS = 100_000_000  # default decompression-bomb guard (PIL warns at 89M)
JPEG_SOI, JPEG_EOI = b"\xff\xd8", b"\xff\xd9"
JPEG_EOI_SEARCH = 1024  # writers may pad after the end-of-image marker
COLORS = ("rgb", "bgr")


class ImageTooLarge(InputError):
    """An image over the configured byte or pixel limit (HTTP 413 in the service)."""


def to_rgb8(image: np.ndarray, color: str = "rgb", where: str = "image") -> np.ndarray:
    """A decoded array of any supported layout/depth -> ``(H, W, 3)`` uint8 RGB (new array)."""
    if image.size == 0 or image.ndim not in (2, 3):
        raise InputError(
            f"{where}: expected an (H, W, 3) image, got an array of shape {image.shape}"
        )
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        raise InputError(f"{where}: expected 1, 3 or 4 channels (H, W, C), got shape {image.shape}")
    if image.dtype == np.uint16:
        image = (image // UINT16_TO_UINT8).astype(np.uint8)
    elif image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
    elif np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise InputError(
                f"{where}: float images must hold values in [0, 1], got range "
                f"[{np.nanmin(image):.3g}, {np.nanmax(image):.3g}] (pass uint8 for 0-255 pixels)"
            )
        image = np.round(image * 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        raise InputError(
            f"{where}: unsupported dtype {image.dtype}; expected uint8, uint16 or float in [0, 1]"
        )
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        code = cv2.COLOR_BGRA2RGB if color == "bgr" else cv2.COLOR_RGBA2RGB
        return cv2.cvtColor(np.ascontiguousarray(image), code)
    return np.ascontiguousarray(image[..., ::-1] if color == "bgr" else image)


def _check_pixels(h: int, w: int, max_pixels: int | None, where: str) -> None:
    if max_pixels is not None and h * w > max_pixels:
        raise ImageTooLarge(
            f"{where}: {w}x{h} = {h * w:,} pixels is over the limit of {max_pixels:,}"
        )


def decode_image(
    data: bytes, where: str = "image", max_pixels: int | None = MAX_PIXELS
) -> np.ndarray:
    """Encoded bytes -> ``(H, W, 3)`` uint8 RGB, EXIF orientation applied (boxes then come out in
    the orientation a viewer displays). Empty, non-image, truncated and over-size inputs raise."""
    if not data:
        raise InputError(f"{where}: empty image data (0 bytes)")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:  # header only: size check before decoding
            w, h = im.size
    except UnidentifiedImageError:
        raise InputError(
            f"{where}: {len(data):,} bytes that are not an image in a supported format (JPEG, PNG, BMP, TIFF, WebP)"
        ) from None
    except Image.DecompressionBombError as e:
        raise ImageTooLarge(f"{where}: {e}") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{where}: cannot read the image header: {e}") from None
    _check_pixels(h, w, max_pixels, where)
    raw = np.frombuffer(data, np.uint8)
    is_jpeg = data[:2] == JPEG_SOI
    if is_jpeg and JPEG_EOI not in data[-JPEG_EOI_SEARCH:]:
        raise InputError(f"{where}: truncated JPEG ({len(data):,} bytes, no end-of-image marker)")
    if is_jpeg:  # IMREAD_COLOR applies the EXIF orientation
        image = cv2.imdecode(raw, getattr(cv2, "IMREAD_COLOR_RGB", cv2.IMREAD_COLOR))
        if image is not None and not hasattr(cv2, "IMREAD_COLOR_RGB"):
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        if image is None:
            raise InputError(f"{where}: the JPEG data cannot be decoded (corrupt or truncated)")
        return image
    try:
        from PIL import ImageOps

        with Image.open(io.BytesIO(data)) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("P", "PA", "LA", "1", "CMYK", "YCbCr", "HSV"):
                im = im.convert("RGBA" if "A" in im.mode or "transparency" in im.info else "RGB")
            array = np.asarray(im)
    except (OSError, ValueError, SyntaxError) as e:
        raise InputError(
            f"{where}: the image data cannot be decoded (corrupt or truncated): {e}"
        ) from None
    if array.dtype == np.int32 or array.dtype == np.uint32:  # PIL "I" mode (16-bit PNG)
        array = np.clip(array, 0, 65535).astype(np.uint16)
    return to_rgb8(array, "rgb", where)


def load_image(
    item: Any, index: int = 0, color: str = "rgb", max_pixels: int | None = MAX_PIXELS
) -> np.ndarray:
    """One user input (see module docstring) -> ``(H, W, 3)`` uint8 RGB."""
    where = f"image {index}"
    if color not in COLORS:
        raise InputError(f"color must be one of {COLORS}, got {color!r}")
    if isinstance(item, (str, Path)):
        path = Path(item)
        if not path.is_file():
            raise InputError(f"{where}: file {str(path)!r} does not exist")
        return decode_image(path.read_bytes(), f"{where} ({path.name})", max_pixels)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return decode_image(bytes(item), where, max_pixels)
    if isinstance(item, torch.Tensor):
        t = item.detach().cpu()
        if t.dim() == 3 and t.shape[0] in (1, 3, 4):
            t = t.permute(1, 2, 0)
        elif t.dim() != 2:
            raise InputError(
                f"{where}: expected a (3, H, W) or (H, W) tensor, got shape {tuple(item.shape)}"
            )
        item = t.numpy()
    elif type(item).__module__.startswith("PIL."):
        from PIL import ImageOps

        im = ImageOps.exif_transpose(item)
        item = np.asarray(
            im.convert("RGBA" if "A" in im.mode else "RGB")
            if im.mode not in ("RGB", "RGBA", "L")
            else im
        )
    if not isinstance(item, np.ndarray):
        raise InputError(
            f"{where}: unsupported input type {type(item).__name__}; expected a path, bytes, "
            "PIL image, numpy (H, W[, C]) array or torch (C, H, W) tensor"
        )
    _check_pixels(item.shape[0], item.shape[1] if item.ndim > 1 else 0, max_pixels, where)
    return to_rgb8(item, color, where)


def load_images(
    items: Any, color: str = "rgb", max_pixels: int | None = MAX_PIXELS
) -> list[np.ndarray]:
    """One input or a list/tuple of them -> list of ``(H, W, 3)`` uint8 RGB arrays."""
    if isinstance(items, (list, tuple)):
        if not items:
            raise InputError("expected at least one image, got an empty list")
        return [load_image(x, i, color, max_pixels) for i, x in enumerate(items)]
    if isinstance(items, torch.Tensor) and items.dim() == 4:
        return [load_image(x, i, color, max_pixels) for i, x in enumerate(items)]
    return [load_image(items, 0, color, max_pixels)]
