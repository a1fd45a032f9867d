"""Which predictions a target trains in the YOLOv4 loss (:mod:`yolov4.loss`): darknet's anchor
assignment (``yolo_layer.c``'s best anchor over all heads by shape IoU, plus ``iou_thresh``'s
extra anchors), the grid cell of a box and the per-image padding of the targets. Pure tensor
functions."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from yolov4.ops.boxes import box_iou

__all__ = [
    "Pairs",
    "anchor_match",
    "grid_cell",
    "pad_per_image",
    "positive_anchors",
    "positive_pairs",
]


def anchor_match(wh: Tensor, anchors: Tensor) -> tuple[Tensor, Tensor]:
    """Best anchor per target ``(M,)`` long (first of equals, as darknet's strict ``>``) and the
    shape IoU ``(M, T)`` (boxes aligned at a common centre) of target sizes ``wh (M, 2)`` with
    all anchors ``(T, 2)``, both in pixels."""
    zeros_t = torch.zeros_like(wh)
    zeros_a = torch.zeros_like(anchors)
    shape_iou = box_iou(torch.cat((zeros_t, wh), 1), torch.cat((zeros_a, anchors), 1))
    return shape_iou.argmax(dim=1), shape_iou


def positive_anchors(
    best_anchor: Tensor, shape_iou: Tensor, mask: Sequence[int], iou_thresh: float | None
) -> Tensor:
    """``(M, A)`` bool: target ``m`` is positive for anchor ``a`` of the head whose anchors are
    ``mask`` (indices into all anchors): its best anchor over all heads is ``mask[a]``, or
    ``iou_thresh`` (``None``: none) admits ``mask[a]`` too. ``best_anchor (M,)``,
    ``shape_iou (M, T)`` from :func:`anchor_match`."""
    index = torch.tensor(list(mask), device=best_anchor.device)
    positive = best_anchor[:, None] == index[None, :]
    if iou_thresh is not None:
        positive |= shape_iou[:, index] > iou_thresh
    return positive


def grid_cell(box: Tensor, stride: int, h: int, w: int) -> tuple[Tensor, Tensor]:
    """Grid cell ``(gi, gj)`` ``(P,)`` long of boxes ``(P, 4)`` cxcywh in input pixels on an
    ``h x w`` grid; a centre on the right/bottom edge uses the last cell (darknet would index
    past the row)."""
    gi = (box[:, 0] / stride).floor().long().clamp(0, w - 1)
    gj = (box[:, 1] / stride).floor().long().clamp(0, h - 1)
    return gi, gj


class Pairs(NamedTuple):
    """The positive (target, anchor) pairs ``P`` of one head and their prediction slots ``S``."""

    gt: Tensor  # (P,) long: target index
    a: Tensor  # (P,) long: anchor of the head
    gi: Tensor  # (P,) long: grid column
    gj: Tensor  # (P,) long: grid row
    slot: Tensor  # (P,) long: index into the head's (B * A * H * W) predictions
    slots: Tensor  # (S,) long: the distinct slots, ascending
    pair_slot: Tensor  # (P,) long: index of each pair's slot into ``slots``


def positive_pairs(
    positive: Tensor, t_img: Tensor, t_box: Tensor, stride: int, shape: Sequence[int]
) -> Pairs:
    """The :class:`Pairs` of ``positive (M, A)`` bool (:func:`positive_anchors`) for targets of
    images ``t_img (M,)`` long with boxes ``t_box (M, 4)`` cxcywh in input pixels, on a head of
    ``stride`` whose predictions have shape ``(B, A, H, W)``."""
    _, num_anchors, h, w = shape
    gt, a = positive.nonzero(as_tuple=True)
    gi, gj = grid_cell(t_box[gt], stride, h, w)
    slot = ((t_img[gt] * num_anchors + a) * h + gj) * w + gi
    slots, pair_slot = slot.unique(return_inverse=True)
    return Pairs(gt, a, gi, gj, slot, slots, pair_slot)


def pad_per_image(boxes: Tensor, image_index: Tensor, batch: int) -> tuple[Tensor, Tensor]:
    """``boxes (M, 4)`` with ``image_index (M,)`` long -> ``(B, Mmax, 4)`` padded (boxes of each
    image in their order) and ``(B, Mmax)`` bool valid."""
    counts = torch.bincount(image_index, minlength=batch)
    m_max = int(counts.max()) if image_index.numel() else 0
    order = image_index.argsort(stable=True)
    img = image_index[order]
    starts = torch.cumsum(counts, 0) - counts
    pos = torch.arange(img.shape[0], device=boxes.device) - starts[img]
    padded = boxes.new_zeros(batch, m_max, 4)
    valid = torch.zeros(batch, m_max, dtype=torch.bool, device=boxes.device)
    padded[img, pos] = boxes[order]
    valid[img, pos] = True
    return padded, valid
