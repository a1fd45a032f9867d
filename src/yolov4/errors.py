"""The project's exception types.

Every check happens at the boundary where bad data enters (network forward, Predictor, dataset
set-up, checkpoint load, HTTP request) and names what was expected and what was found.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = [
    "shown",
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
