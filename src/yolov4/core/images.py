"""Image decoding, owned once: encoded bytes → ``(H, W, 3)`` uint8 RGB in the orientation a
viewer displays. The datasets (:mod:`yolov4.data.image_io`), the Predictor and the service
(:mod:`yolov4.inference.images`) all decode through :func:`decode_image_details`.

One set of rules for every format (JPEG, PNG, WebP, TIFF, BMP, ...):

- the EXIF orientation (tag 0x0112) is applied, whatever the format carries it in (JPEG APP1,
  PNG ``eXIf``, WebP ``EXIF``, the TIFF IFD), with the table of PIL's ``ImageOps.exif_transpose``;
- grayscale is repeated to three channels, alpha is dropped, palette/CMYK/YCbCr/LA are converted
  to RGB, 16-bit samples (either byte order) keep their high byte (as libpng's ``strip_16`` and
  PIL do), PIL's 32-bit integer mode ``I`` is read as 8-bit when its values fit, else as 16-bit,
  float samples must lie in ``[0, 1]`` and are scaled by 255
  (:func:`~yolov4.core.pixels.to_rgb8`);
- the pixel count is checked from the header, before any pixel is decoded (:class:`ImageTooLarge`);
- a JPEG is judged complete by decoding it, not by looking for an end marker: data after the end
  of the image (motion photos append a video) is ignored, and a JPEG whose image data stops
  before its last block is a :class:`TruncatedImage` even when an end marker follows the cut.

How the JPEG check works. The entropy-coded data of the last scan is handed to libjpeg followed
by a few non-marker bytes instead of its end marker. A complete scan never reads them; a cut one
decodes them as image data and then runs out of input, which OpenCV reports as a failed decode
(one decode, no extra cost). Progressive (multi-scan) files need their end marker to produce any
output, so for them the scan is decoded twice, once followed by the extra bytes and once not: a
complete file gives the same pixels both times, a cut one does not. Decoders: OpenCV (libjpeg-turbo)
for single-scan JPEGs and PNG, PIL for everything else. The JPEG structure and decoders are
:mod:`yolov4.core.jpeg`'s, the pixel layouts and orientations :mod:`yolov4.core.pixels`'.
"""

from __future__ import annotations

import io
import os
import re
import struct
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from yolov4.core.files import files_under
from yolov4.core.jpeg import (
    JPEG_EOI,
    JPEG_PROBE,
    JPEG_SOI,
    imdecode_jpeg,
    jpeg_last_scan,
    pil_decode_jpeg,
)
from yolov4.core.pixels import orient, pil_array, to_rgb8
from yolov4.errors import InputError
from yolov4.version import warn_renamed

__all__ = [
    "IMAGE_SUFFIXES",
    "VIDEO_SUFFIXES",
    "MAX_PIXELS",
    "DecodedImage",
    "ImageDecodeError",
    "ImageTooLarge",
    "TruncatedImage",
    "decode",  # deprecated: decode_image_details
    "decode_image",
    "decode_image_details",
    "image_files",
    "image_size",
    "images_under",
    "pil_orientation",
]

# the image files datasets and predict.py take (by extension, case-insensitive)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm", ".ts")
MAX_PIXELS = 100_000_000  # default decompression-bomb guard (PIL warns at 89M)
EXIF_ORIENTATION = 0x0112  # EXIF/TIFF Orientation tag; 1 = as stored
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_FORMATS = ("JPEG", "MPO")  # MPO: phones' multi-picture JPEG (first picture decoded)


def image_files(paths: Iterable[Path]) -> list[Path]:
    """The image files of ``paths`` (by suffix, case-insensitive: :data:`IMAGE_SUFFIXES`),
    sorted."""
    return sorted(p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES)


def images_under(folder: str | os.PathLike) -> list[Path]:
    """The image files under ``folder``, recursively (:func:`yolov4.core.files.files_under`),
    by suffix, sorted (:func:`image_files`); ``[]`` for a folder without any."""
    return image_files(files_under(folder))


class ImageDecodeError(InputError):
    """Bytes that are not an image, or whose image data cannot be decoded."""


class ImageTooLarge(InputError):
    """An image over the configured byte or pixel limit (HTTP 413 in the service)."""


class TruncatedImage(ImageDecodeError):
    """An image whose data stops early. ``partial`` holds what was there (the rest grey) when
    the decoder could produce it, else ``None``."""

    def __init__(self, message: str, partial: np.ndarray | None = None) -> None:
        super().__init__(message)
        self.partial = partial


@dataclass(frozen=True)
class DecodedImage:
    """``image`` ``(H, W, 3)`` uint8 RGB as displayed; ``format`` as PIL names it (``JPEG``,
    ``PNG``, ...); ``converted``: the file did not hold 8-bit RGB (grayscale, alpha, palette,
    CMYK, 16-bit, float); ``orientation``: the EXIF orientation applied to it (1: none);
    ``mode``: the file's pixel layout as PIL names it (``RGB``, ``L`` for 8-bit grayscale,
    ``RGBA``, ``P`` for palette, ``I;16``, ...); ``deep``: its samples had more than 8 bits
    (16-bit, 32-bit integer, float), reduced to 8."""

    image: np.ndarray
    format: str
    converted: bool
    orientation: int = 1
    mode: str = "RGB"
    deep: bool = False


def _exif_orientation(exif: Image.Exif) -> int:
    value = exif.get(EXIF_ORIENTATION, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def pil_orientation(im: Image.Image) -> int:
    """The EXIF orientation (1-8) of an opened PIL image; 1 when it has none or it is unreadable."""
    try:
        return _exif_orientation(im.getexif())
    except (OSError, ValueError, SyntaxError, struct.error):
        return 1


def _png_exif_orientation(f: BinaryIO) -> int:
    """The orientation in a PNG's ``eXIf`` chunk, walking the chunk headers only."""
    f.seek(len(PNG_SIGNATURE))
    while True:
        head = f.read(8)
        if len(head) < 8:
            return 1
        length, kind = struct.unpack(">I4s", head)
        if kind == b"eXIf":
            exif = Image.Exif()
            try:
                exif.load(f.read(length))
            except (OSError, ValueError, SyntaxError, struct.error):
                return 1
            return _exif_orientation(exif)
        if kind == b"IEND":
            return 1
        f.seek(length + 4, os.SEEK_CUR)  # data + CRC


def _orientation(im: Image.Image, f: BinaryIO) -> int:
    """EXIF orientation without decoding pixels (PIL's ``getexif`` would load a PNG)."""
    try:
        if im.format == "PNG":
            return _png_exif_orientation(f)
        return _exif_orientation(im.getexif())
    except (OSError, ValueError, SyntaxError, struct.error):
        return 1  # an unreadable EXIF block: shown as stored, as viewers do


def _open(f: BinaryIO, where: str, size: int, max_pixels: int | None = None) -> Image.Image:
    try:
        with warnings.catch_warnings():  # the pixel limit is ours (MAX_PIXELS), said in one line
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(f)
    except UnidentifiedImageError:
        raise ImageDecodeError(
            f"{where}: {size:,} bytes that are not an image in a supported format "
            "(JPEG, PNG, BMP, TIFF, WebP)"
        ) from None
    except Image.DecompressionBombError as e:  # over Pillow's own limit, from the header
        found = re.search(r"\((\d+) pixels\)", str(e))
        if found is None:
            raise ImageTooLarge(f"{where}: {e}") from None
        limit = (
            f"the limit of {max_pixels:,}" if max_pixels else "Pillow's decompression-bomb limit"
        )
        raise ImageTooLarge(f"{where}: {int(found[1]):,} pixels is over {limit}") from None
    except (OSError, ValueError, SyntaxError, struct.error) as e:
        raise ImageDecodeError(f"{where}: cannot read the image header: {e}") from None


def image_size(source: str | os.PathLike | bytes) -> tuple[int, int]:
    """``(H, W)`` as :func:`decode` returns it (EXIF orientation applied), from the header only.
    Raises :class:`ImageDecodeError` for what is not an image and ``OSError`` for a missing file."""
    where = "image" if isinstance(source, bytes) else str(source)
    f = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    with f:
        size = len(source) if isinstance(source, bytes) else os.fstat(f.fileno()).st_size
        with _open(f, where, size) as im:
            w, h = _stored_size(im)
            return (w, h) if _orientation(im, f) >= 5 else (h, w)


def _stored_size(im: Image.Image) -> tuple[int, int]:
    """``(W, H)`` as stored (Pillow >= 11 reports a TIFF's size already oriented)."""
    if im.format == "TIFF" and hasattr(im, "tag_v2"):
        w, h = im.tag_v2.get(256), im.tag_v2.get(257)  # ImageWidth, ImageLength
        if isinstance(w, int) and isinstance(h, int):
            return w, h
    return im.size


def _decode_jpeg(data: bytes, where: str) -> np.ndarray:
    """A JPEG → ``(H, W, 3)`` uint8 RGB as stored; see the module docstring for the checks."""
    plan = jpeg_last_scan(data)
    if plan is None:  # a marker structure we cannot follow: the decoder alone decides
        image = imdecode_jpeg(data)
        if image is None:
            raise ImageDecodeError(f"{where}: the JPEG data cannot be decoded (corrupt)")
        return image
    end, scans, eoi = plan
    if scans == 0:
        raise TruncatedImage(f"{where}: truncated JPEG ({len(data):,} bytes): no image data")
    body = data[:end]
    if scans == 1:
        image = imdecode_jpeg(body + JPEG_PROBE)
        if image is not None:
            return image
        partial = pil_decode_jpeg(body + JPEG_EOI)  # libjpeg fills the rest with grey
    else:
        partial = pil_decode_jpeg(body + JPEG_EOI)
        probed = pil_decode_jpeg(body + JPEG_PROBE + JPEG_EOI)
        # without its end marker a multi-scan file lost the scans after the last one seen
        if eoi and partial is not None and probed is not None and np.array_equal(partial, probed):
            return partial
    if partial is None:
        raise ImageDecodeError(f"{where}: the JPEG data cannot be decoded (corrupt)")
    raise TruncatedImage(
        f"{where}: truncated JPEG ({len(data):,} bytes): its image data ends before the last "
        "block (cut short or corrupt)",
        partial,
    )


def decode_image_details(
    data: bytes, where: str = "image", max_pixels: int | None = MAX_PIXELS
) -> DecodedImage:
    """Encoded bytes → :class:`DecodedImage`: pixels, file format, whether the decoder converted them.

    Raises:
        ImageTooLarge: more than ``max_pixels`` pixels (checked from the header).
        TruncatedImage: a JPEG whose data stops early (``partial`` holds what was there).
        ImageDecodeError: empty data, not an image, corrupt image data.
    """
    if not data:
        raise ImageDecodeError(f"{where}: empty image data (0 bytes)")
    f = io.BytesIO(data)
    try:
        im = _open(f, where, len(data), max_pixels)
    except ImageDecodeError:
        if data[:2] == JPEG_SOI and jpeg_last_scan(data) == (len(data), 0, False):
            raise TruncatedImage(
                f"{where}: truncated JPEG ({len(data):,} bytes): cut short in its headers"
            ) from None
        raise
    with im:
        w, h = im.size
        if max_pixels is not None and h * w > max_pixels:
            raise ImageTooLarge(
                f"{where}: {w}x{h} = {h * w:,} pixels is over the limit of {max_pixels:,}"
            )
        fmt = im.format or "unknown"
        if fmt in JPEG_FORMATS or fmt == "PNG":
            orientation = _orientation(im, f)
        if fmt in JPEG_FORMATS:
            converted = im.mode != "RGB"
            image = orient(_decode_jpeg(data, where), orientation)
            return DecodedImage(image, fmt, converted, orientation, im.mode)
        if fmt == "PNG":  # OpenCV: faster than PIL, and keeps 16-bit RGB
            array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            if array is None or array.size == 0:
                raise ImageDecodeError(
                    f"{where}: the PNG data cannot be decoded (corrupt or truncated)"
                )
            deep = array.dtype != np.uint8  # 16-bit
            image = to_rgb8(array, "bgr", where)
        else:
            try:
                array, deep = pil_array(im)
            except (OSError, ValueError, SyntaxError, struct.error) as e:
                raise ImageDecodeError(
                    f"{where}: the {fmt} data cannot be decoded (corrupt or truncated): {e}"
                ) from None
            image = to_rgb8(array, "rgb", where)
            # read after loading: Pillow >= 11 applies a TIFF's orientation itself and drops it
            orientation = pil_orientation(im)
        converted = deep or im.mode != "RGB"  # palette, gray, alpha, CMYK, 16-bit, float
    image = orient(image, orientation)
    return DecodedImage(image, fmt, converted, orientation, im.mode, deep)


def decode_image(
    data: bytes, where: str = "image", max_pixels: int | None = MAX_PIXELS
) -> np.ndarray:
    """Encoded bytes → ``(H, W, 3)`` uint8 RGB as displayed (its :func:`decode_image_details`)."""
    return decode_image_details(data, where, max_pixels).image


def decode(data: bytes, where: str = "image", max_pixels: int | None = MAX_PIXELS) -> DecodedImage:
    """The old name of :func:`decode_image_details`, kept for one release (warns)."""
    warn_renamed("yolov4.core.images.decode", "decode_image_details")
    return decode_image_details(data, where, max_pixels)
