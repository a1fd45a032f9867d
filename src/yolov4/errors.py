"""The project's exception types.

Every check happens at the boundary where bad data enters (network forward, Predictor, dataset
set-up, checkpoint load, HTTP request) and names what was expected and what was found.
"""

from __future__ import annotations

import codecs
import math
import numbers
from typing import Any

__all__ = [
    "shown",
    "bom_encoding",
    "not_utf8",
    "other_text",
    "YoloError",
    "InputError",
    "CheckpointError",
    "ConfigError",
    "DatasetError",
    "ExportError",
    "DivergedError",
]


class YoloError(Exception):
    """Base class of every error this project raises on purpose."""


class InputError(YoloError, ValueError):
    """A tensor or image handed to the model/Predictor does not meet its contract."""


class CheckpointError(YoloError, RuntimeError):
    """A weights file (project, Lightning or darknet) does not fit the model or is unreadable."""


class ConfigError(YoloError, ValueError):
    """A configuration key is unknown or has a bad value."""


class DatasetError(YoloError, ValueError):
    """A dataset on disk is missing, malformed or inconsistent with the configuration."""


class ExportError(YoloError, RuntimeError):
    """An exported file disagrees with PyTorch, or an artifact is missing, altered or unknown."""


class DivergedError(YoloError, FloatingPointError):
    """Training's loss became NaN or infinite (the run stops: its checkpoints are the last good
    ones)."""


def shown(value: Any) -> str:
    """``value`` as a message quotes what was found: its ``repr``, but a NaN as ``NaN`` (it fails
    every comparison: "must be a number in [0, 1], got nan" hides why) and an infinity as
    ``infinity`` / ``-infinity`` (Python, numpy and Hydra's ``nan`` / ``inf`` overrides alike)."""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        number = float(value)
        if math.isnan(number):
            return "NaN"
        if math.isinf(number):
            return "infinity" if number > 0 else "-infinity"
    return repr(value)


# The byte order marks of text that is not UTF-8 (UTF-32's before UTF-16's, which they start
# with), each with the Python codec that reads it: Windows Notepad's "Unicode" and PowerShell
# 5's `>` write UTF-16 with FF FE.
OTHER_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def _other_bom(data: bytes) -> tuple[bytes, str] | None:
    """The ``(mark, encoding)`` of :data:`OTHER_BOMS` that starts ``data``, ``None`` for none."""
    return next(((bom, enc) for bom, enc in OTHER_BOMS if data.startswith(bom)), None)


def bom_encoding(data: bytes) -> str | None:
    """The encoding (``UTF-16``, ``UTF-32``: a codec that reads its mark) whose byte order mark
    starts ``data``; ``None`` when none does (UTF-8, with or without its mark, included)."""
    found = _other_bom(data)
    return None if found is None else found[1]


def other_text(data: bytes) -> str | None:
    """``UTF-16 text (BOM FF FE): save it as UTF-8`` when a byte order mark of another encoding
    than UTF-8 starts ``data``; ``None`` otherwise."""
    found = _other_bom(data)
    if found is None:
        return None
    bom, encoding = found
    return f"{encoding} text (BOM {bom.hex(' ').upper()}): save it as UTF-8"


def not_utf8(e: UnicodeDecodeError) -> str:
    """What a text file that failed to decode as UTF-8 holds, for a message's "expected UTF-8
    text, found ...": :func:`other_text`, or the first byte that is not UTF-8 and its offset."""
    return other_text(e.object) or f"byte {e.object[e.start]:#04x} at offset {e.start}"
