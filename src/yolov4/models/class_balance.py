"""Darknet's class balance: the ``[yolo] counters_per_class`` key and its class multipliers.

``counters_per_class=N_0,N_1,...`` (one count per class, usually the number of boxes of each
class in the training set, what darknet's ``detector calc_anchors`` prints) turns into per-class
multipliers ``max(N) / N_c``, each capped at the layer's ``max_delta`` (``get_classes_multipliers``,
darknet's src/parser.c). :mod:`yolov4.loss` applies them where darknet's ``yolo_layer.c`` does:
the positive class delta (together with ``cls_normalizer``), the objectness and box deltas of a
target of that class.

Darknet reads the key per ``[yolo]`` layer, so the model config holds one entry per head
(``None``: that head has none). Darknet clamps counts below 1 to 1 and reads each value with
``atoi``; here a value that is not a positive integer is refused, naming the key (and the cfg
line), as is a list whose length is not the number of classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from yolov4.errors import ConfigError

__all__ = ["KEY", "parse_counters", "normalize_counters", "class_multipliers"]

KEY = "counters_per_class"


def _check_counts(values: Sequence[Any], num_classes: int, where: str) -> tuple[int, ...]:
    counts = list(values)
    if len(counts) != num_classes:
        raise ConfigError(
            f"{where}: expected one count per class ({num_classes} classes), got {len(counts)} "
            f"values {counts}"
        )
    for i, v in enumerate(counts):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ConfigError(
                f"{where}: expected positive integers (boxes per class), got {v!r} at index {i}"
            )
    return tuple(int(v) for v in counts)


def parse_counters(raw: str, num_classes: int, where: str) -> tuple[int, ...]:
    """The counts of a cfg value ``raw`` (``"120,35,8"``); ``where`` names the file, line,
    section and key in errors (:meth:`yolov4.models.cfg.Section.where`)."""
    values: list[Any] = []
    for token in raw.split(","):
        try:
            values.append(int(token))
        except ValueError:
            raise ConfigError(
                f"{where}: expected comma-separated positive integers, got {raw!r}"
            ) from None
    return _check_counts(values, num_classes, where)


def normalize_counters(value: Any, num_classes: int, heads: int) -> tuple:
    """``model.counters_per_class`` as one entry per head, each ``None`` or a tuple of
    ``num_classes`` positive ints. Accepts ``None``, one list of counts (every head) or a list of
    ``heads`` entries (each ``None`` or a list of counts)."""
    key = f"model.{KEY}"
    if value is None:
        return (None,) * heads
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(
            f"{key}: expected a list of {num_classes} counts (or one entry per head), got {value!r}"
        )
    per_head = any(v is None or isinstance(v, (list, tuple)) for v in value)
    if not per_head:
        return (_check_counts(value, num_classes, key),) * heads
    if len(value) != heads:
        raise ConfigError(
            f"{key}: expected one entry per head ({heads}, ascending stride) or one list of "
            f"counts for all, got {len(value)} entries"
        )
    return tuple(
        None if v is None else _check_counts(v, num_classes, f"{key}[{h}]")
        for h, v in enumerate(value)
    )


def class_multipliers(counts: Sequence[int], max_delta: float | None = None) -> np.ndarray:
    """Darknet's ``classes_multipliers`` ``(C,)`` float32: ``max(counts) / counts[c]`` in float32,
    capped at ``max_delta`` (``None``: darknet's FLT_MAX, no cap); counts below 1 count as 1."""
    c = np.maximum(np.asarray(counts, dtype=np.int64), 1).astype(np.float32)
    multipliers = np.float32(c.max()) / c
    if max_delta is not None:
        multipliers = np.minimum(multipliers, np.float32(max_delta))
    return multipliers.astype(np.float32)
