"""Everything a user may hand the Predictor, turned into ``(H, W, 3)`` uint8 RGB arrays.

Accepted per image: a file path, encoded bytes (JPEG/PNG/BMP/TIFF/WebP), a PIL image, a numpy
array ``(H, W, 3)`` uint8 (RGB, or BGR with ``color="bgr"``), ``(H, W)``/``(H, W, 1)`` grayscale,
``(H, W, 4)`` RGBA (alpha dropped), uint16 (scaled), float in ``[0, 1]``, or a torch ``(C, H, W)``
(C = 1, 3 or 4) / ``(H, W)`` tensor (uint8, or float in ``[0, 1]``). Anything else raises :class:`InputError`
naming the image's index and what was wrong (a URL among them: predict.py fetches those), before
any model code runs; so does a numpy array whose shape reads as both layouts, ``(C, H, W)`` and
``(H, W, C)`` (first and last sides both 1, 3 or 4, e.g. ``(3, 100, 4)``), which would otherwise
be guessed, unless ``decoded=True`` says the arrays are a decoder's ``(H, W, C)`` output (image
files, video and stream frames, ``cv2.imread``), whose layout is known whatever their shape.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from yolov4.core.images import (
    MAX_PIXELS,
    VIDEO_SUFFIXES,
    ImageTooLarge,
    decode_image,
    pil_orientation,
)
from yolov4.core.pixels import orient, pil_to_array, to_rgb8
from yolov4.errors import InputError

__all__ = ["load_image", "load_images"]

COLORS = ("rgb", "bgr")
CHANNELS = (1, 3, 4)  # channel counts an image array may have: gray, RGB, RGBA
URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")  # a scheme: http://, rtsp://, s3://, ...


def _check_pixels(h: int, w: int, max_pixels: int | None, where: str) -> None:
    if max_pixels is not None and h * w > max_pixels:
        raise ImageTooLarge(
            f"{where}: {w}x{h} = {h * w:,} pixels is over the limit of {max_pixels:,}"
        )


def _check_layout(shape: tuple[int, ...], where: str) -> None:
    """Refuse a numpy ``(H, W, C)`` shape that reads as ``(C, H, W)`` too (or only so)."""
    if len(shape) != 3 or shape[0] not in CHANNELS:
        return
    a, b, c = shape
    if c in CHANNELS:
        raise InputError(
            f"{where}: an array of shape {shape} is ambiguous: numpy images are (H, W, C), here "
            f"{b}x{a} (WxH) pixels of {c} channels, but it may be (C, H, W), {c}x{b} pixels of {a} "
            f"channels; pass array.transpose(1, 2, 0) for (C, H, W), or decoded=True for an "
            f"(H, W, C) image {a} pixels high from a decoder (cv2.imread, video frames)"
        )
    raise InputError(
        f"{where}: expected an (H, W, C) array with C in {CHANNELS}, got shape {shape}, which "
        f"looks like (C, H, W): pass array.transpose(1, 2, 0)"
    )


def load_image(
    item: Any,
    index: int = 0,
    color: str = "rgb",
    max_pixels: int | None = MAX_PIXELS,
    decoded: bool = False,
) -> np.ndarray:
    """One user input (see module docstring) -> ``(H, W, 3)`` uint8 RGB. ``decoded``: a numpy
    array is a decoder's ``(H, W, C)`` output, taken without the layout check."""
    where = f"image {index}"
    given_array = isinstance(item, np.ndarray)  # (H, W, C) by contract; tensors are (C, H, W)
    if color not in COLORS:
        raise InputError(f"color must be one of {COLORS}, got {color!r}")
    if isinstance(item, str) and URL.match(item):
        raise InputError(
            f"{where}: {item!r} is a URL; the Predictor takes image files, encoded bytes, PIL "
            "images, numpy arrays and torch tensors, not URLs (predict.py source= fetches image "
            "URLs and reads streams)"
        )
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        if path.is_dir():
            raise InputError(
                f"{where}: {str(path)!r} is a folder; the Predictor takes image files (predict.py "
                "source= reads folders)"
            )
        if not path.is_file():
            raise InputError(f"{where}: file {str(path)!r} does not exist")
        if path.suffix.lower() in VIDEO_SUFFIXES:
            raise InputError(
                f"{where}: {str(path)!r} is a video; the Predictor takes images (predict.py "
                "source= reads videos; or pass the frames of cv2.VideoCapture with color='bgr')"
            )
        return decode_image(path.read_bytes(), f"{where} ({path.name})", max_pixels)
    if isinstance(item, (bytes, bytearray, memoryview)):
        return decode_image(bytes(item), where, max_pixels)
    if isinstance(item, torch.Tensor):
        if item.is_meta:
            raise InputError(f"{where}: a meta-device tensor holds no pixels")
        t = item.detach().cpu()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: as float32, values unchanged
            t = t.float()
        if t.dim() == 3 and t.shape[0] in (1, 3, 4):
            t = t.permute(1, 2, 0)
        elif t.dim() != 2:
            raise InputError(
                f"{where}: expected a (C, H, W) tensor with C = 1, 3 or 4 (grayscale, RGB, RGBA) "
                f"or an (H, W) tensor, got shape {tuple(item.shape)}"
            )
        item = t.numpy()
    elif type(item).__module__.startswith("PIL."):  # decoded like a file: EXIF applied
        _check_pixels(item.height, item.width, max_pixels, where)
        try:
            array, _ = pil_to_array(item)
        except (OSError, ValueError) as e:
            raise InputError(f"{where}: the PIL image cannot be loaded: {e}") from None
        return orient(to_rgb8(array, "rgb", where), pil_orientation(item))
    if not isinstance(item, np.ndarray):
        raise InputError(
            f"{where}: unsupported input type {type(item).__name__}; expected a path, bytes, "
            "PIL image, numpy (H, W[, C]) array or torch (C, H, W) tensor"
        )
    if item.ndim not in (2, 3):
        raise InputError(
            f"{where}: expected an (H, W, 3) image, got an array of shape {item.shape}"
        )
    if given_array and not decoded:
        _check_layout(item.shape, where)
    _check_pixels(item.shape[0], item.shape[1], max_pixels, where)
    return to_rgb8(item, color, where)


def load_images(
    items: Any, color: str = "rgb", max_pixels: int | None = MAX_PIXELS, decoded: bool = False
) -> list[np.ndarray]:
    """One input or a list/tuple of them -> list of ``(H, W, 3)`` uint8 RGB arrays
    (``decoded``: as :func:`load_image`'s)."""
    if isinstance(items, Iterator):
        raise InputError(
            f"expected an image or a list of images, got a {type(items).__name__} (an "
            "iterator is read once: pass list(...))"
        )
    if isinstance(items, (list, tuple)):
        if not items:
            raise InputError("expected at least one image, got an empty list")
        return [load_image(x, i, color, max_pixels, decoded) for i, x in enumerate(items)]
    if isinstance(items, torch.Tensor) and items.dim() == 4:
        return [load_image(x, i, color, max_pixels) for i, x in enumerate(items)]
    return [load_image(items, 0, color, max_pixels, decoded)]
