"""The JPEG structure walked without decoding it (:func:`jpeg_last_scan`: where the last scan's
entropy-coded data ends), its two decoders (OpenCV's libjpeg-turbo and PIL's libjpeg), and
what libjpeg repairs without a word (:func:`jpeg_damage`). How a cut JPEG is told from a whole
one is said in :mod:`yolov4.core.images`, which uses these.
"""

from __future__ import annotations

import io
import os
import re
import struct
import tempfile
import threading

import cv2
import numpy as np
from PIL import Image

from yolov4.core.pixels import pil_to_array

__all__ = [
    "JPEG_EOI",
    "JPEG_PROBE",
    "JPEG_SOI",
    "imdecode_jpeg",
    "jpeg_damage",
    "jpeg_last_scan",
    "pil_decode_jpeg",
]

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
# OpenCV >= 4.10 decodes JPEG straight to RGB; the orientation is applied here, for all formats.
IMREAD_JPEG = getattr(cv2, "IMREAD_COLOR_RGB", cv2.IMREAD_COLOR) | cv2.IMREAD_IGNORE_ORIENTATION
JPEG_BGR = not hasattr(cv2, "IMREAD_COLOR_RGB")
# libjpeg's warnings about damaged data (jerror.h: JWRN_EXTRANEOUS_DATA, JWRN_HIT_MARKER,
# JWRN_HUFF_BAD_CODE, JWRN_MUST_RESYNC, JWRN_JPEG_EOF), which OpenCV leaves libjpeg to print on
# standard error; the decode goes on with what libjpeg makes of the data.
LIBJPEG_DAMAGE = re.compile(rb"^(?:Corrupt JPEG data: [^\n]*|Premature end of JPEG file)\n?", re.M)
_STDERR_LOCK = threading.Lock()  # one borrower of file descriptor 2 at a time


def jpeg_last_scan(data: bytes) -> tuple[int, int, bool] | None:
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


def imdecode_jpeg(data: bytes) -> np.ndarray | None:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), IMREAD_JPEG)
    if image is None or image.size == 0:
        return None
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if JPEG_BGR else image


def pil_decode_jpeg(data: bytes) -> np.ndarray | None:
    """PIL's libjpeg: silent about recoverable errors (OpenCV prints libjpeg's warnings)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return pil_to_array(im)[0]
    except (OSError, ValueError, SyntaxError, struct.error):
        return None


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
            imdecode_jpeg(data)
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
    """What is wrong with a JPEG that :func:`~yolov4.core.images.decode_image_details` decodes without a complaint:
    no end-of-image marker (``FFD9``; its image data complete), and libjpeg's own warnings
    (``Corrupt JPEG data: 3 extraneous bytes before marker 0xda``, ``... premature end of data
    segment``, ``... bad Huffman code``), after which libjpeg decodes what it can make of the
    data, possibly garbage. Empty for a sound JPEG and for any other format. One more decode:
    for dataset checks, not for every request."""
    if data[:2] != JPEG_SOI:
        return []
    found = []
    plan = jpeg_last_scan(data)
    if plan is not None and not plan[2]:
        found.append("no end-of-image marker (FFD9) after its image data")
    return found + _libjpeg_warnings(data)
