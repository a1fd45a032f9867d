"""Checks and coercions of :class:`~yolov4.models.config.ModelConfig`'s values, each error naming
the ``model.<key>`` it refuses (or the cfg line, for :func:`check_cfg_shapes`).

The config's :meth:`~yolov4.models.config.ModelConfig.from_dict` coerces with :func:`whole`,
:func:`pairs` and :func:`per_head`; its ``validate`` checks with the rest.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from yolov4.errors import ConfigError
from yolov4.models import budget
from yolov4.models.cfg import Section, resolve_layers
from yolov4.models.gaussian import YOLO_KINDS
from yolov4.models.stride import check_stride_multiple

__all__ = [
    "LOSS_RANGES",
    "check_anchors",
    "check_cfg_shapes",
    "check_choice",
    "check_flags",
    "check_head_values",
    "check_masks",
    "check_number",
    "check_scale_x_y",
    "pairs",
    "per_head",
    "same_value",
    "whole",
]

# per-head [yolo] key: (low, high, low inclusive); None is allowed for iou_thresh and max_delta
LOSS_RANGES: dict[str, tuple[float, float, bool]] = {
    "ignore_thresh": (0.0, 1.0, True),
    # darknet's truth_thresh < 1 branch (extra positives) is not implemented; >= 1 is
    # inert (every zoo cfg has 1)
    "truth_thresh": (1.0, float("inf"), True),
    "iou_thresh": (0.0, 1.0, False),
    "iou_normalizer": (0.0, float("inf"), True),
    "cls_normalizer": (0.0, float("inf"), True),
    "obj_normalizer": (0.0, float("inf"), True),
    "max_delta": (0.0, float("inf"), False),
    "label_smooth_eps": (0.0, 1.0, True),
}


def pairs(value: Any) -> tuple[tuple[float, float], ...]:
    """``[[w, h], ...]`` as a tuple of float pairs."""
    return tuple((float(w), float(h)) for w, h in value)


def whole(value: Any, key: str) -> int:
    """``value`` as an int when it is a whole number (``4``, ``4.0``, ``"4"``); a
    :class:`ConfigError` naming ``model.<key>`` for anything else (``2.5`` or ``True`` were read
    as 2 and 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | numbers.Integral):
        raise ConfigError(f"model.{key} must be whole numbers, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"model.{key} must be whole numbers, got {value!r}") from None
    if not number.is_integer():
        raise ConfigError(f"model.{key} must be whole numbers, got {value!r}")
    return int(number)


def per_head(key: str, value: Any, heads: int) -> tuple[Any, ...]:
    """A per-head ``[yolo]`` key as one value per head: a list of ``heads`` values as given, a
    scalar repeated for every head."""
    if not isinstance(value, (list, tuple)):
        return (value,) * heads
    if len(value) != heads:
        raise ConfigError(
            f"model.{key} needs one value per head ({heads}, ascending stride) "
            f"or one for all, got {list(value)}"
        )
    return tuple(value)


def same_value(raw: str, got: str) -> bool:
    """Whether a cfg value ``raw`` is the ``got`` a message names (``.9`` is ``0.9``)."""
    try:
        return float(raw) == float(got)
    except ValueError:
        return raw == got


def check_number(key: str, value: Any, lo: float, hi: float, inclusive: bool) -> None:
    """``value`` is a number in ``[lo, hi]`` (``(lo, hi]`` unless ``inclusive``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = ok and (lo <= value if inclusive else lo < value) and value <= hi
    if not ok:
        bound = f"{'[' if inclusive else '('}{lo:g}, {hi:g}]"
        raise ConfigError(f"model.{key} must be a number in {bound}, got {value!r}")


def check_anchors(anchors: Sequence[tuple[float, float]]) -> None:
    """The anchor count and every side within the resource budget."""
    if len(anchors) > budget.MAX_ANCHORS:
        raise ConfigError("model.anchors: " + budget.over("MAX_ANCHORS", f"{len(anchors)} anchors"))
    for w, h in anchors:
        for v in (w, h):
            budget.check_anchor(v, "model.anchors")


def check_masks(masks: Sequence[Sequence[int]], num_anchors: int, heads: int) -> None:
    """One non-empty mask per head, of equal length, each index into the ``num_anchors``."""
    if len(masks) != heads:
        raise ConfigError(
            f"model.masks needs one entry per head ({heads}, ascending stride), got {len(masks)}"
        )
    for i, mask in enumerate(masks):
        bad = [a for a in mask if not 0 <= a < num_anchors]
        if bad or not mask:
            raise ConfigError(
                f"model.masks[{i}]={list(mask)} must be non-empty indices into the "
                f"{num_anchors} anchors"
            )
        if len(mask) != len(masks[0]):
            raise ConfigError(
                f"every head needs the same number of anchors; model.masks = {tuple(masks)}"
            )


def check_choice(key: str, value: Any, choices: Sequence[str]) -> None:
    """``value`` is one of ``choices`` (a dict's keys count as its choices)."""
    if value not in choices:
        raise ConfigError(f"model.{key} must be one of {list(choices)}, got {value!r}")


def check_head_values(key: str, values: Sequence[Any]) -> None:
    """Every head's value of the ``LOSS_RANGES`` key ``key`` within its range."""
    lo, hi, inclusive = LOSS_RANGES[key]
    for value in values:
        if value is None and key in ("iou_thresh", "max_delta"):
            continue
        if key == "truth_thresh" and isinstance(value, float | int) and value < 1:
            raise ConfigError(
                f"model.truth_thresh must be >= 1 (darknet's truth_thresh < 1, which "
                f"makes every anchor over that IoU with a box a positive, is not "
                f"implemented), got {value!r}"
            )
        check_number(key, value, lo, hi, inclusive)


def check_flags(flags: dict[str, Any], objectness_smooth: Sequence[Any]) -> None:
    """Each of ``flags`` (key -> value) and every head's ``objectness_smooth`` is a bool."""
    for key, value in flags.items():
        if not isinstance(value, bool):
            raise ConfigError(f"model.{key} must be true or false, got {value!r}")
    if any(not isinstance(v, bool) for v in objectness_smooth):
        raise ConfigError(
            f"model.objectness_smooth must be true or false, got {list(objectness_smooth)}"
        )


def check_scale_x_y(scale_x_y: Sequence[Any], strides: Sequence[int]) -> None:
    """Every head's ``scale_x_y`` a finite number > 0."""
    for h, s in enumerate(scale_x_y):
        # darknet reads any value; decode and loss (x * g - (g - 1) / 2) take any g > 0
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 < s < math.inf:
            raise ConfigError(
                f"model.scale_x_y of head {h} (stride {strides[h]}) must be a finite "
                f"number > 0, got {s!r}"
            )


def check_cfg_shapes(sections: list[Section], overrides: dict[str, Any]) -> None:
    """The cfg's own anchors per ``[yolo]`` layer and ``[net]`` size (where ``overrides`` do not
    replace them) against what the model takes, naming the cfg's lines (the model config's
    checks name ``model.masks`` / ``model.input_size``)."""
    if "masks" not in overrides:
        yolos = [s for s in sections if s.kind in YOLO_KINDS]
        counts = [len(y.get_ints("mask")) if "mask" in y.options else y.get_int("num", 1)
                  for y in yolos]  # fmt: skip
        other = next((k for k, n in enumerate(counts) if n != counts[0]), None)
        if other is not None:
            raise ConfigError(
                f"{yolos[other].where('mask')}: {counts[other]} anchors where "
                f"{yolos[0].where('mask')} has {counts[0]}: every head needs the same number of "
                "anchors here (darknet allows a different count per [yolo] layer)"
            )
    if "input_size" not in overrides:
        net = sections[0]
        size = [net.get_int("height", 416), net.get_int("width", 416)]  # darknet's defaults
        multiple = max(max(layer.strides) for layer in resolve_layers(sections))
        bad = [k for k, side in zip(("height", "width"), size) if side <= 0 or side % multiple]
        if bad:
            lines = ", ".join(str(net.lines.get(k, net.line)) for k in bad)
            what = f"{net.source}:{lines}: [net] {', '.join(bad)}"
            check_stride_multiple(size, multiple, what)
