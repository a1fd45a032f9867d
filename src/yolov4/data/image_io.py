"""Image decoding with repair: any file → ``(H, W, 3)`` uint8 RGB or ``None`` (reported).

JPEGs are decoded with OpenCV's ``IMREAD_COLOR(_RGB)`` (applies the EXIF orientation, converts
grayscale/CMYK). Other formats are decoded unchanged and converted here so the conversion of a
grayscale, RGBA or 16-bit file can be reported. Header-only sizes come from PIL (a torchvision
dependency) with the EXIF orientation applied, matching what the decoder returns.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from yolov4.data.records import Problem, ProblemReport

__all__ = ["read_image", "image_size", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
JPEG_SOI = b"\xff\xd8"  # start-of-image marker
JPEG_EOI = b"\xff\xd9"  # end-of-image marker; missing means the file was cut short
JPEG_EOI_SEARCH = 1024  # tail bytes searched for the EOI marker (writers may append padding)
UINT16_TO_UINT8 = 257  # 65535 / 255
# OpenCV >= 4.10 decodes straight to RGB (saves a colour conversion per image).
IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", cv2.IMREAD_COLOR)


def _to_rgb8(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """Decoded-unchanged BGR(A)/gray of any depth → RGB uint8, and whether it was converted."""
    converted = False
    if image.dtype == np.uint16:
        image, converted = (image // UINT16_TO_UINT8).astype(np.uint8), True
    elif image.dtype != np.uint8:  # float TIFF etc.
        image = np.clip(image * 255.0 if image.max() <= 1.0 else image, 0, 255).astype(np.uint8)
        converted = True
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB), True
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB), True
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB), converted


def read_image(path: str | Path, report: ProblemReport) -> np.ndarray | None:
    """Decode ``path`` to an ``(H, W, 3)`` uint8 RGB array.

    Missing, unreadable and truncated files are reported and give ``None``; grayscale, RGBA and
    16-bit files are converted and reported. In strict mode the report raises instead.
    """
    try:
        raw = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        report.add(Problem.MISSING_FILE, path)
        return None
    is_jpeg = raw[:2].tobytes() == JPEG_SOI
    truncated = is_jpeg and JPEG_EOI not in raw[-JPEG_EOI_SEARCH:].tobytes()
    flags = IMREAD_RGB if is_jpeg else cv2.IMREAD_UNCHANGED
    image = cv2.imdecode(raw, flags) if raw.size else None
    if image is None or image.size == 0:
        if truncated:
            report.add(Problem.TRUNCATED, path, "no JPEG end marker and not decodable")
        else:
            report.add(Problem.UNREADABLE, path, f"{raw.size} bytes, not a decodable image")
        return None
    if truncated:
        report.add(Problem.TRUNCATED, path, "no JPEG end marker")
    if is_jpeg:
        return image if IMREAD_RGB != cv2.IMREAD_COLOR else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    image, converted = _to_rgb8(image)
    if converted:
        report.add(Problem.CONVERTED, path)
    return image


def image_size(path: str | Path) -> tuple[int, int] | None:
    """``(height, width)`` as decoded (EXIF orientation applied) from the header; ``None`` when
    the file is missing or not an image."""
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)  # EXIF Orientation tag
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    # Orientations 5-8 rotate by 90 degrees (ImageOps.exif_transpose's table).
    return (w, h) if orientation in (5, 6, 7, 8) else (h, w)
