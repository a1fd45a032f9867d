"""Decoded pixels into the one layout every consumer reads, ``(H, W, 3)`` uint8 RGB
(:func:`to_rgb8`: grayscale repeated, alpha dropped, 16-bit samples to their high byte, float
in ``[0, 1]`` scaled by 255), a PIL image into such an array (:func:`pil_to_array`), and the
EXIF orientations applied and undone (:func:`orient`, :func:`unorient`). Decoding itself is
:mod:`yolov4.core.images`'.
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

from yolov4.errors import InputError

__all__ = ["to_rgb8", "orient", "unorient", "pil_to_array", "pil_array"]

# PIL modes converted to RGB(A) before the array is taken.
PIL_CONVERT = ("P", "PA", "LA", "La", "1", "CMYK", "YCbCr", "HSV", "LAB", "RGBa", "RGBX")


def to_rgb8(image: np.ndarray, color: str = "rgb", where: str = "image") -> np.ndarray:
    """A decoded array of any supported layout/depth → ``(H, W, 3)`` uint8 RGB (new array).

    ``image``: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` (alpha dropped), in
    ``color`` order (``rgb`` or ``bgr``); uint8, uint16 (either byte order; high byte kept) or
    float in ``[0, 1]`` (scaled by 255). Other dtypes raise :class:`InputError`: a bool array is
    a mask, not an image.
    """
    if image.size == 0 or image.ndim not in (2, 3):
        raise InputError(
            f"{where}: expected an (H, W, 3) image, got an array of shape {image.shape}"
        )
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        raise InputError(f"{where}: expected 1, 3 or 4 channels (H, W, C), got shape {image.shape}")
    if image.dtype.kind == "u" and image.dtype.itemsize == 2:  # '<u2' or '>u2'
        image = (image.astype(np.uint16) >> 8).astype(np.uint8)
    elif np.issubdtype(image.dtype, np.floating):
        _check_unit_range(image, where)
        image = np.round(image * 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        mask = " (a mask?)" if image.dtype == np.bool_ else ""
        raise InputError(
            f"{where}: unsupported dtype {image.dtype}{mask}; expected uint8, uint16 or float "
            "in [0, 1]"
        )
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        code = cv2.COLOR_BGRA2RGB if color == "bgr" else cv2.COLOR_RGBA2RGB
        return cv2.cvtColor(np.ascontiguousarray(image), code)
    if color == "bgr":  # OpenCV's swap is several times faster than a strided numpy copy
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image)


def _check_unit_range(image: np.ndarray, where: str) -> None:
    """An :class:`InputError` unless every value of the float ``image`` lies in ``[0, 1]``:
    naming how many are NaN or infinite, else the range found."""
    finite = np.isfinite(image)
    if not finite.all():
        nan = int(np.isnan(image).sum())
        inf = image.size - int(finite.sum()) - nan
        found = " and ".join(
            f"{n} {what} value{'s' if n != 1 else ''}"
            for n, what in ((nan, "NaN"), (inf, "infinite"))
            if n
        )
        raise InputError(
            f"{where}: float images must hold values in [0, 1], got {found} (of {image.size})"
        )
    if image.min() < 0 or image.max() > 1:
        raise InputError(
            f"{where}: float images must hold values in [0, 1], got range "
            f"[{image.min():.3g}, {image.max():.3g}] (pass uint8 for 0-255 pixels)"
        )


def orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """``(H, W, C)`` as stored → as displayed for EXIF ``orientation`` 1-8 (PIL's
    ``ImageOps.exif_transpose`` table); other values leave the image as it is."""
    ops = {
        2: lambda a: a[:, ::-1],  # mirrored
        3: lambda a: a[::-1, ::-1],  # rotated 180
        4: lambda a: a[::-1],  # flipped
        5: lambda a: a.swapaxes(0, 1),  # transposed
        6: lambda a: a.swapaxes(0, 1)[:, ::-1],  # rotated 90 clockwise
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),  # transversed
        8: lambda a: a.swapaxes(0, 1)[::-1],  # rotated 90 counter-clockwise
    }
    op = ops.get(orientation)
    return image if op is None else np.ascontiguousarray(op(image))


def unorient(image: np.ndarray, orientation: int) -> np.ndarray:
    """The inverse of :func:`orient`: ``(H, W, C)`` as displayed → as stored in the file."""
    return orient(image, {6: 8, 8: 6}.get(orientation, orientation))  # the rest are involutions


def _int32_samples(array: np.ndarray) -> np.ndarray:
    """PIL mode ``I`` (32-bit integers, no depth stated: 16-bit files, ``Image.fromarray`` of
    an int32 array) as uint8 when every value lies in ``[0, 255]`` (PIL's own conversion to 8
    bits reads them so), else as uint16 (values clipped to ``[0, 65535]``; :func:`to_rgb8`
    keeps the high byte). Read as 16-bit, 8-bit values would all be near black."""
    if array.size and array.min() >= 0 and array.max() <= np.iinfo(np.uint8).max:
        return array.astype(np.uint8)
    return np.clip(array, 0, np.iinfo(np.uint16).max).astype(np.uint16)


def pil_to_array(im: Image.Image) -> tuple[np.ndarray, bool]:
    """A PIL image (loaded here if needed) → ``(array, converted)``: an array :func:`to_rgb8`
    accepts (RGB order), and whether the image was other than 8-bit RGB."""
    array, deep = pil_array(im)
    return array, deep or im.mode != "RGB"


def pil_array(im: Image.Image) -> tuple[np.ndarray, bool]:
    """:func:`pil_to_array`'s array, and whether the samples had more than 8 bits."""
    args = im.tile[0][3] if getattr(im, "tile", None) else ""
    rawmode = args[0] if isinstance(args, tuple) and args else args
    deep = isinstance(rawmode, str) and ";16" in rawmode  # 16-bit RGB read as 8-bit by PIL
    im.load()
    mode = im.mode
    if mode in PIL_CONVERT:
        has_alpha = "A" in mode or "a" in mode or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
    array = np.asarray(im)
    if mode == "I":  # 32-bit integer samples of no stated depth: 8 bits when they fit
        array = _int32_samples(array)
    elif mode.startswith("I;16"):
        array = array.astype(np.uint16)  # native byte order
    return array, deep or mode in ("I", "F") or array.dtype != np.uint8
