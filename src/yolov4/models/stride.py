"""The one check of input sizes against a network's largest stride.

Every ``[route]`` of a darknet network joins maps of equal size only when the input's H and W
are multiples of the coarsest stride of any layer (``ModelConfig.max_stride``: 32, 64 for
yolov4-p6). The model config, the model's forward, the DataModule, the checkpoint writer, the
export and the artifact metadata all check it here, with one wording; each boundary raises its
own error type (``ConfigError``, ``InputError``, ``CheckpointError``, ``ExportError``).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from yolov4.errors import ConfigError

__all__ = ["check_stride_multiple", "stride_multiple_error", "round_up_size"]


def round_up_size(side: int, multiple: int) -> int:
    """The smallest positive multiple of ``multiple`` that is at least ``side``."""
    return max(multiple, math.ceil(side / multiple) * multiple)


def _side(value: Any) -> int | None:
    """``value`` as a positive int when it is a positive whole number (not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    if not float(value).is_integer() or value <= 0:
        return None
    return int(value)


def stride_multiple_error(size: Any, multiple: int, what: str, found: Any = None) -> str | None:
    """The message for ``size`` (``(H, W)``) unless both sides are positive multiples of
    ``multiple``; ``None`` when it is fine. ``what`` names the key or argument; ``found`` is
    what the message quotes (default: ``size`` as a list)."""
    sides = None
    if not isinstance(size, (str, bytes)) and isinstance(size, Sequence) and len(size) == 2:
        sides = [_side(s) for s in size]
    if sides is not None and all(s is not None and s % multiple == 0 for s in sides):
        return None
    shown = found if found is not None else (list(size) if isinstance(size, tuple) else size)
    hint = ""
    if sides is not None and all(s is not None for s in sides):
        h, w = (round_up_size(s, multiple) for s in sides)
        hint = f" (resize or letterbox to e.g. [{h}, {w}])"
    return (
        f"{what}: expected (H, W) positive multiples of {multiple} (the network's largest "
        f"stride), got {shown!r}{hint}"
    )


def check_stride_multiple(
    size: Any,
    multiple: int,
    what: str,
    error: type[Exception] = ConfigError,
    found: Any = None,
) -> tuple[int, int]:
    """``size`` as ``(H, W)`` ints, or ``error`` (the boundary's type) with the one wording of
    :func:`stride_multiple_error` when a side is not a positive multiple of ``multiple``."""
    message = stride_multiple_error(size, multiple, what, found)
    if message is not None:
        raise error(message)
    return int(size[0]), int(size[1])
