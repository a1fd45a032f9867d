"""Image files for training and evaluation: any file → ``(H, W, 3)`` uint8 RGB or ``None``
(reported).

Decoding is :func:`yolov4.core.images.decode_image_details`, the one the Predictor and the service use: EXIF
orientation applied for every format, every pixel layout converted one way, JPEG integrity judged
by decoding. This module only turns its outcomes into :class:`ProblemReport` entries.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from yolov4.core import images as core_images
from yolov4.core.images import (
    IMAGE_SUFFIXES,
    JPEG_FORMATS,
    DecodedImage,
    ImageDecodeError,
    ImageTooLarge,
    TruncatedImage,
    decode_image_details,
)
from yolov4.core.jpeg import jpeg_damage
from yolov4.core.pixels import unorient
from yolov4.data.problems import Note, Problem, ProblemReport
from yolov4.errors import InputError

__all__ = ["read_image", "image_size", "IMAGE_SUFFIXES", "ORDINARY_MODES"]

# PIL modes of 8-bit files read as darknet (stb_image / OpenCV with 3 channels) and
# ultralytics (OpenCV's IMREAD_COLOR) read them, nothing repaired: a note, not a problem.
# Grayscale (8-bit, 1-bit bilevel): three equal channels; palette: its colours; alpha: dropped.
ORDINARY_MODES = {
    "L": Note.GRAYSCALE,
    "1": Note.GRAYSCALE,
    "P": Note.PALETTE,
    "RGBA": Note.ALPHA,
    "LA": Note.ALPHA,
    "PA": Note.ALPHA,
}
# PIL modes that name their sample depth: 32-bit integer, 32-bit float (and ``I;16...``).
DEPTH_MODES = {"I", "F"}


def read_image(
    path: str | Path, report: ProblemReport | None, as_stored: bool = False, check: bool = False
) -> np.ndarray | None:
    """Decode ``path`` to an ``(H, W, 3)`` uint8 RGB array, as displayed (EXIF orientation), or
    with ``as_stored`` as the file stores it (the orientation undone).

    Missing and unreadable files are reported and give ``None``; a truncated JPEG is reported
    and gives what was there (the rest grey; ``None`` when cut in its headers); CMYK, 16-bit
    and float files are converted and reported; 8-bit grayscale, palette and alpha files are
    read as darknet and ultralytics read them and counted as a :class:`Note`
    (:data:`ORDINARY_MODES`). With ``check``, a JPEG
    without its end marker or with data libjpeg calls corrupt is reported and gives what libjpeg
    makes of it (one more decode: a caller checks each file once). In strict mode the report
    raises instead. ``report`` ``None``: nothing is reported (a file whose report was made).
    """
    try:
        data = Path(path).read_bytes()
    except OSError:
        _add(report, Problem.MISSING_FILE, path)
        return None
    name = Path(path).name
    try:
        decoded = decode_image_details(data, name, max_pixels=None)
    except TruncatedImage as e:  # what was there (None when no row could be decoded)
        _add(report, Problem.TRUNCATED, path, str(e).removeprefix(f"{name}: "))  # named once
        return e.partial
    except InputError as e:  # not an image, too large, values no image holds (a float TIFF)
        detail = f"{len(data):,} bytes: {str(e).removeprefix(f'{name}: ')}"
        _add(report, Problem.UNREADABLE, path, detail)
        return None
    if decoded.converted:
        _report_layout(report, path, decoded)
    if check and decoded.format in JPEG_FORMATS:
        damage = jpeg_damage(data)
        if damage:
            _add(report, Problem.DAMAGED_JPEG, path, "; ".join(damage))
    if as_stored:
        return unorient(decoded.image, decoded.orientation)
    return decoded.image


def _report_layout(report: ProblemReport | None, path: str | Path, decoded: DecodedImage) -> None:
    """A file other than 8-bit RGB: a note when it is read as darknet and ultralytics read it
    (:data:`ORDINARY_MODES`), else a :attr:`Problem.CONVERTED` (CMYK, 16-bit, float, ...)."""
    note = None if decoded.deep else ORDINARY_MODES.get(decoded.mode)
    if note is None:
        _add(report, Problem.CONVERTED, path, f"{decoded.format} file, {_layout(decoded)} pixels")
    elif report is not None:
        detail = "" if note == Note.GRAYSCALE else f", {decoded.mode} pixels"
        report.note(note, path, f"{decoded.format} file{detail}")


def _layout(decoded: DecodedImage) -> str:
    """The file's pixel layout: PIL's mode, with its depth where the mode does not state one
    (PIL names a 16-bit RGB PNG or TIFF ``RGB``; ``I;16``, ``I`` and ``F`` state theirs)."""
    if decoded.deep and decoded.mode not in DEPTH_MODES and not decoded.mode.startswith("I;"):
        return f"16-bit {decoded.mode}"
    return decoded.mode


def _add(report: ProblemReport | None, kind: str, path: str | Path, detail: str = "") -> None:
    if report is not None:
        report.add(kind, path, detail)


def image_size(path: str | Path) -> tuple[int, int] | None:
    """``(height, width)`` as :func:`read_image` returns it (EXIF orientation applied), from the
    header; ``None`` when the file is missing or not an image."""
    try:
        return core_images.image_size(path)
    except (OSError, ImageDecodeError, ImageTooLarge):
        return None
