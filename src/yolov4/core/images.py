"""Image decoding, owned once: encoded bytes → ``(H, W, 3)`` uint8 RGB in the orientation a
viewer displays. The datasets (:mod:`yolov4.data.image_io`), the Predictor and the service
(:mod:`yolov4.inference.images`) all decode through :func:`decode_image_details`.

One set of rules for every format (JPEG, PNG, WebP, TIFF, BMP, ...):

- the EXIF orientation (tag 0x0112) is applied, whatever the format carries it in (JPEG APP1,
  PNG ``eXIf``, WebP ``EXIF``, the TIFF IFD), with the table of PIL's ``ImageOps.exif_transpose``;
- grayscale is repeated to three channels, alpha is dropped, palette/CMYK/YCbCr/LA are converted
  to RGB, 16-bit samples (either byte order) keep their high byte (as libpng's ``strip_16`` and
  PIL do), PIL's 32-bit integer mode ``I`` is read as 8-bit when its values fit, else as 16-bit,
  float samples must lie in ``[0, 1]`` and are scaled by 255 (:func:`to_rgb8`);
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
for single-scan JPEGs and PNG, PIL for everything else.
"""

from __future__ import annotations

import io
import os
import re
import struct
import tempfile
import threading
import warnings
from dataclasses import dataclass
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

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
    "image_size",
    "jpeg_damage",
    "orient",
    "pil_orientation",
    "unorient",
    "pil_to_array",
    "to_rgb8",
]

# the image files datasets and predict.py take (by extension, case-insensitive)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm", ".ts")
MAX_PIXELS = 100_000_000  # default decompression-bomb guard (PIL warns at 89M)
EXIF_ORIENTATION = 0x0112  # EXIF/TIFF Orientation tag; 1 = as stored
JPEG_SOI, JPEG_EOI = b"\xff\xd8", b"\xff\xd9"
JPEG_SOS = 0xDA  # start of scan: entropy-coded data follows its header
# Markers that stand alone (no length field): TEM, RST0-7, SOI, EOI.
JPEG_STANDALONE = {0x01, *range(0xD0, 0xD8), 0xD8, 0xD9}
# The first marker after a scan's entropy-coded data: FF00 is a stuffed 0xFF byte and FFD0-FFD7
# are restart markers inside the scan (ITU T.81, B.1.1.5 and F.1.2.3).
JPEG_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7]")
# Bytes libjpeg reads as image data when a scan needs more than it holds. Non-zero, no 0xFF, and
# longer than libjpeg's bit-buffer look-ahead (MIN_GET_BITS = 25 bits, jdhuff.h), so a complete
# scan decodes the same with or without them.
JPEG_PROBE = b"\x5a" * 8
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_FORMATS = ("JPEG", "MPO")  # MPO: phones' multi-picture JPEG (first picture decoded)
# OpenCV >= 4.10 decodes JPEG straight to RGB; the orientation is applied here, for all formats.
IMREAD_JPEG = getattr(cv2, "IMREAD_COLOR_RGB", cv2.IMREAD_COLOR) | cv2.IMREAD_IGNORE_ORIENTATION
JPEG_BGR = not hasattr(cv2, "IMREAD_COLOR_RGB")
# libjpeg's warnings about damaged data (jerror.h: JWRN_EXTRANEOUS_DATA, JWRN_HIT_MARKER,
# JWRN_HUFF_BAD_CODE, JWRN_MUST_RESYNC, JWRN_JPEG_EOF), which OpenCV leaves libjpeg to print on
# standard error; the decode goes on with what libjpeg makes of the data.
LIBJPEG_DAMAGE = re.compile(rb"^(?:Corrupt JPEG data: [^\n]*|Premature end of JPEG file)\n?", re.M)
_STDERR_LOCK = threading.Lock()  # one borrower of file descriptor 2 at a time
# PIL modes converted to RGB(A) before the array is taken.
PIL_CONVERT = ("P", "PA", "LA", "La", "1", "CMYK", "YCbCr", "HSV", "LAB", "RGBa", "RGBX")


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
    ``RGBA``, ``I;16``, ...)."""

    image: np.ndarray
    format: str
    converted: bool
    orientation: int = 1
    mode: str = "RGB"


def to_rgb8(image: np.ndarray, color: str = "rgb", where: str = "image") -> np.ndarray:
    """A decoded array of any supported layout/depth → ``(H, W, 3)`` uint8 RGB (new array).

    ``image``: ``(H, W)``, ``(H, W, 1)``, ``(H, W, 3)`` or ``(H, W, 4)`` (alpha dropped), in
    ``color`` order (``rgb`` or ``bgr``); uint8, bool, uint16 (either byte order; high byte kept)
    or float in ``[0, 1]`` (scaled by 255).
    """
    if image.size == 0 or image.ndim not in (2, 3):
        raise InputError(
            f"{where}: expected an (H, W, 3) image, got an array of shape {image.shape}"
        )
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        raise InputError(f"{where}: expected 1, 3 or 4 channels (H, W, C), got shape {image.shape}")
    if image.dtype.kind == "u" and image.dtype.itemsize == 2:  # '<u2' or '>u2'
        image = (image.astype(np.uint16) >> 8).astype(np.uint8)
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
    if color == "bgr":  # OpenCV's swap is several times faster than a strided numpy copy
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image)


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


def _jpeg_last_scan(data: bytes) -> tuple[int, int, bool] | None:
    """``(end, scans, eoi)``: where the entropy-coded data of the last scan ends (its end marker, or
    the end of ``data``), how many scans come before the end of the image, and whether its end
    marker was found; ``(len(data), 0, False)`` when the data stops before the first scan. ``None`` when the marker structure cannot be
    followed (left to the decoder)."""
    pos, n, end, scans, eoi = 2, len(data), None, 0, False
    while pos + 1 < n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
        elif marker == 0xD9:  # end of image: what follows is not ours
            eoi = True
            break
        elif marker in JPEG_STANDALONE:
            pos += 2
        else:
            if pos + 4 > n:
                break
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
            if pos > n and scans == 0:  # cut inside a header segment
                return n, 0, False
            if marker == JPEG_SOS:
                scans += 1
                found = JPEG_SCAN_END.search(data, pos)
                end = pos = found.start() if found else n
    if end is None:
        return (n, 0, False) if pos + 1 >= n else None
    return end, scans, eoi


def _imdecode_jpeg(data: bytes) -> np.ndarray | None:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), IMREAD_JPEG)
    if image is None or image.size == 0:
        return None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if JPEG_BGR else image


def _pil_decode_jpeg(data: bytes) -> np.ndarray | None:
    """PIL's libjpeg: silent about recoverable errors (OpenCV prints libjpeg's warnings)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return pil_to_array(im)[0]
    except (OSError, ValueError, SyntaxError, struct.error):
        return None


def _decode_jpeg(data: bytes, where: str) -> np.ndarray:
    """A JPEG → ``(H, W, 3)`` uint8 RGB as stored; see the module docstring for the checks."""
    plan = _jpeg_last_scan(data)
    if plan is None:  # a marker structure we cannot follow: the decoder alone decides
        image = _imdecode_jpeg(data)
        if image is None:
            raise ImageDecodeError(f"{where}: the JPEG data cannot be decoded (corrupt)")
        return image
    end, scans, eoi = plan
    if scans == 0:
        raise TruncatedImage(f"{where}: truncated JPEG ({len(data):,} bytes): no image data")
    body = data[:end]
    if scans == 1:
        image = _imdecode_jpeg(body + JPEG_PROBE)
        if image is not None:
            return image
        partial = _pil_decode_jpeg(body + JPEG_EOI)  # libjpeg fills the rest with grey
    else:
        partial = _pil_decode_jpeg(body + JPEG_EOI)
        probed = _pil_decode_jpeg(body + JPEG_PROBE + JPEG_EOI)
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


def _libjpeg_warnings(data: bytes) -> list[str]:
    """libjpeg's damage warnings (:data:`LIBJPEG_DAMAGE`) while OpenCV decodes ``data`` whole.
    libjpeg prints them on file descriptor 2, which is lent to a temporary file for the decode;
    anything else written there meanwhile is passed on to standard error."""
    with _STDERR_LOCK, tempfile.TemporaryFile() as sink:
        try:
            saved = os.dup(2)
        except OSError:  # no standard error to lend: nothing can be heard
            return []
        try:
            os.dup2(sink.fileno(), 2)
            _imdecode_jpeg(data)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        text = sink.read()
    rest = LIBJPEG_DAMAGE.sub(b"", text)
    if rest:
        os.write(2, rest)
    return [m.decode("ascii", "replace").strip() for m in LIBJPEG_DAMAGE.findall(text)]


def jpeg_damage(data: bytes) -> list[str]:
    """What is wrong with a JPEG that :func:`decode_image_details` decodes without a complaint:
    no end-of-image marker (``FFD9``; its image data complete), and libjpeg's own warnings
    (``Corrupt JPEG data: 3 extraneous bytes before marker 0xda``, ``... premature end of data
    segment``, ``... bad Huffman code``), after which libjpeg decodes what it can make of the
    data, possibly garbage. Empty for a sound JPEG and for any other format. One more decode:
    for dataset checks, not for every request."""
    if data[:2] != JPEG_SOI:
        return []
    found = []
    plan = _jpeg_last_scan(data)
    if plan is not None and not plan[2]:
        found.append("no end-of-image marker (FFD9) after its image data")
    return found + _libjpeg_warnings(data)


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
    return array, deep or mode != "RGB"


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
        if data[:2] == JPEG_SOI and _jpeg_last_scan(data) == (len(data), 0, False):
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
            converted = im.mode != "RGB" or array.dtype != np.uint8  # palette, gray, 16-bit
            image = to_rgb8(array, "bgr", where)
        else:
            try:
                array, converted = pil_to_array(im)
            except (OSError, ValueError, SyntaxError, struct.error) as e:
                raise ImageDecodeError(
                    f"{where}: the {fmt} data cannot be decoded (corrupt or truncated): {e}"
                ) from None
            converted = converted or array.dtype != np.uint8
            image = to_rgb8(array, "rgb", where)
            # read after loading: Pillow >= 11 applies a TIFF's orientation itself and drops it
            orientation = pil_orientation(im)
    return DecodedImage(orient(image, orientation), fmt, converted, orientation, im.mode)


def decode_image(
    data: bytes, where: str = "image", max_pixels: int | None = MAX_PIXELS
) -> np.ndarray:
    """Encoded bytes → ``(H, W, 3)`` uint8 RGB as displayed (its :func:`decode_image_details`)."""
    return decode_image_details(data, where, max_pixels).image


def decode(data: bytes, where: str = "image", max_pixels: int | None = MAX_PIXELS) -> DecodedImage:
    """The old name of :func:`decode_image_details`, kept for one release (warns)."""
    warn_renamed("yolov4.core.images.decode", "decode_image_details")
    return decode_image_details(data, where, max_pixels)
