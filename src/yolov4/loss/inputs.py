"""What :class:`~yolov4.loss.yolo.YoloLoss` takes, checked where it enters: its options
(:func:`check_options`, :func:`per_head`), the head maps (:func:`check_maps`) and the targets
(:func:`check_targets`); each error names what was expected and what was found."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from yolov4.errors import InputError
from yolov4.models.yolo_keys import IOU_LOSSES

__all__ = ["BOX_GRADIENTS", "check_maps", "check_options", "check_targets", "per_head"]

BOX_GRADIENTS = ("darknet", "exact")


def check_options(iou_loss: str, box_gradient: str, masks: int, heads: int) -> None:
    """``iou_loss`` one of ``IOU_LOSSES``, ``box_gradient`` one of :data:`BOX_GRADIENTS` and
    one mask per head (``masks`` and ``heads`` are counts); :class:`ValueError` otherwise."""
    if iou_loss not in IOU_LOSSES:
        raise ValueError(f"iou_loss must be one of {list(IOU_LOSSES)}, got {iou_loss!r}")
    if box_gradient not in BOX_GRADIENTS:
        raise ValueError(f"box_gradient must be one of {list(BOX_GRADIENTS)}, got {box_gradient!r}")
    if masks != heads:
        raise ValueError(f"{masks} masks for {heads} strides: one per head")


def per_head(name: str, value: Any, heads: int) -> list:
    """One value per head from a scalar (every head) or a sequence of ``heads`` values."""
    if isinstance(value, (list, tuple)):
        if len(value) != heads:
            raise ValueError(
                f"{name} needs one value per head ({heads}) or one for all, got {value}"
            )
        return list(value)
    return [value] * heads


def check_maps(maps: Any, strides: Sequence[int], channels: Sequence[int]) -> None:
    """``maps`` as the network gives them, or :class:`InputError` naming what was found: one
    ``(B, channels[l], H_l, W_l)`` float tensor per head (``channels[l] = A * (5 + C)``),
    ascending stride, of one batch and one input size (``H_l * strides[l]`` the same for every
    head): one map of two heads, or the heads reversed, would give a loss of another network
    without a word."""
    strides, per = list(strides), list(channels)
    want = ", ".join(f"(B, {c}, H/{s}, W/{s})" for c, s in zip(per, strides))
    if not isinstance(maps, Sequence) or not all(isinstance(m, Tensor) for m in maps):
        found = f" {tuple(maps.shape)}" if isinstance(maps, Tensor) else ""
        raise InputError(
            f"expected {len(strides)} head maps {want} in a list, got a "
            f"{type(maps).__name__}{found}"
        )
    shapes = [tuple(m.shape) for m in maps]
    sizes = {
        (m.shape[2] * s, m.shape[3] * s) if m.ndim == 4 else None for m, s in zip(maps, strides)
    }
    if (
        len(maps) != len(strides)
        or any(
            m.ndim != 4 or m.shape[1] != c or not m.is_floating_point() for m, c in zip(maps, per)
        )
        or len({m.shape[0] for m in maps}) != 1
        or len(sizes) != 1
    ):
        raise InputError(
            f"expected {len(strides)} head maps {want} (ascending stride {strides}: one batch, "
            f"one input size), got {len(maps)}: {shapes}"
        )


def check_targets(
    targets: Any, batch: int, num_classes: int, input_hw: Sequence[int] | None = None
) -> None:
    """``targets`` as the loss takes them, or :class:`InputError` naming what was found: a
    float tensor ``(M, 6)`` of finite ``[image index, class, x1, y1, x2, y2]`` rows, the index
    in ``[0, batch)``, the class in ``[0, num_classes)`` (both whole numbers) and the box corners
    in input pixels, ``x2 >= x1`` and ``y2 >= y1`` (a user's loader giving ``cx, cy, w, h`` or
    YOLO's normalised boxes would otherwise train on wrong boxes without a word), each box with
    part of it inside the ``input_hw`` image (one wholly outside would train an edge cell)."""
    expected = "targets (M, 6) float rows [image index, class, x1, y1, x2, y2] in input pixels"
    if not isinstance(targets, Tensor):
        raise InputError(f"expected {expected}, got {type(targets).__name__}")
    if targets.ndim != 2 or targets.shape[1] != 6 or not targets.is_floating_point():
        raise InputError(f"expected {expected}, got {targets.dtype} {tuple(targets.shape)}")
    if targets.shape[0] == 0:
        return
    rows = targets.detach().float()
    img, cls, box = rows[:, 0], rows[:, 1], rows[:, 2:]
    problems = {
        "not finite": ~torch.isfinite(rows).all(1),
        f"image index outside 0..{batch - 1} or not whole": (img < 0)
        | (img >= batch)
        | (img != img.round()),
        f"class outside 0..{num_classes - 1} or not whole": (cls < 0)
        | (cls >= num_classes)
        | (cls != cls.round()),
        "x2 < x1 or y2 < y1 (corners expected, not cx, cy, w, h)": (box[:, 2] < box[:, 0])
        | (box[:, 3] < box[:, 1]),
    }
    if input_hw is not None:
        h, w = input_hw
        problems[f"box wholly outside the {w}x{h} (WxH) input"] = (
            (box[:, 2] <= 0) | (box[:, 3] <= 0) | (box[:, 0] >= w) | (box[:, 1] >= h)
        )
    bad = torch.stack(list(problems.values()))
    # one device sync per training step for every check: counts, first rows, largest coordinate
    largest = box.abs().max().ceil().long().reshape(1)
    found = torch.cat([bad.sum(1), bad.int().argmax(1), largest]).tolist()
    n = len(problems)
    for what, count, first in zip(problems, found[:n], found[n : 2 * n]):
        if count:
            raise InputError(
                f"{count} of {rows.shape[0]} target rows {what}, e.g. row {first}: "
                f"{[round(v, 4) for v in rows[first].tolist()]}; expected {expected}"
            )
    if found[-1] <= 1:  # the largest |coordinate|, rounded up
        raise InputError(
            f"every target box lies within 1 pixel of the origin (e.g. "
            f"{[round(v, 4) for v in rows[0].tolist()]}): boxes normalised to [0, 1]? "
            f"expected {expected}"
        )
