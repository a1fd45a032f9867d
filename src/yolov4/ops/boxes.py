"""Box conversions and the IoU family (IoU, GIoU, DIoU, CIoU): pure, stateless tensor functions.

Boxes are ``xyxy`` (``x1, y1, x2, y2`` with ``x1 <= x2``, ``y1 <= y2``) unless a name says
``cxcywh`` (centre, width, height), in any consistent unit (input pixels everywhere in this
project). Two flavours of each overlap measure:

* pairwise, torchvision's names and semantics: ``boxes1 (..., N, 4)``, ``boxes2 (..., M, 4)`` ->
  ``(..., N, M)``;
* elementwise, :func:`paired_box_iou`: ``(..., 4)`` with ``(..., 4)`` (broadcast) -> ``(...)``,
  what a loss needs for matched prediction/target pairs.

Numerics: fp16/bf16 inputs are computed in float32 and the result is cast back (integer boxes
give float32, as torchvision's); a ratio whose
denominator vanishes (union, enclosing area of zero-area boxes, aspect ratio of a point) is 0
with a zero gradient, so zero-area, zero-width and coincident boxes give finite values and
finite gradients instead of NaN/inf. Where torchvision's result is finite the values agree.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "EPS",
    "IOU_KINDS",
    "xyxy_to_cxcywh",
    "cxcywh_to_xyxy",
    "box_area",
    "box_iou",
    "generalized_box_iou",
    "distance_box_iou",
    "complete_box_iou",
    "paired_box_iou",
    "complete_box_iou_loss",
]

# Floor of every denominator; torchvision's IoU losses use the same 1e-7.
EPS = 1e-7
IOU_KINDS = ("iou", "giou", "diou", "ciou")
# CIoU's aspect-ratio consistency term v = 4 / pi^2 * (atan(w_gt/h_gt) - atan(w/h))^2
# (Zheng et al., "Distance-IoU Loss", AAAI 2020; darknet box.c box_ciou).
_CIOU_V_SCALE = 4.0 / math.pi**2


def xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``(..., 4)`` ``x1, y1, x2, y2`` -> ``(..., 4)`` ``cx, cy, w, h``; same dtype, new tensor."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    return torch.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1), dim=-1)


def cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(..., 4)`` ``cx, cy, w, h`` -> ``(..., 4)`` ``x1, y1, x2, y2``; same dtype, new tensor."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """``(..., 4)`` xyxy -> ``(...)`` area ``(x2 - x1) * (y2 - y1)``."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def _upcast(t: Tensor) -> Tensor:
    """Half-precision boxes are computed in float32 (squares of pixel distances overflow fp16),
    and so are integer ones (their ratios are fractions)."""
    return (
        t.float() if t.dtype in (torch.float16, torch.bfloat16) or not t.is_floating_point() else t
    )


def _out_dtype(boxes1: Tensor, boxes2: Tensor) -> torch.dtype:
    """The result's dtype: the promoted input dtype, float32 for integer boxes (as torchvision:
    an IoU cast back to int is 0 or 1)."""
    dtype = torch.promote_types(boxes1.dtype, boxes2.dtype)
    return dtype if dtype.is_floating_point else torch.float32


def _safe_div(num: Tensor, den: Tensor) -> Tensor:
    """``num / den`` where ``den > EPS``, else 0, with zero (not NaN) gradient in that case.

    Every ratio here has ``|num| <= den``, so a vanishing denominator means a vanishing term;
    ``torch.where`` on a safe denominator keeps autograd from seeing ``x / 0``.
    """
    ok = den > EPS
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(num))


def _aspect_angle(w: Tensor, h: Tensor) -> Tensor:
    """``atan(w / h)`` for ``w, h >= 0`` (pi/2 when ``h = 0``), 0 with zero gradient for a point."""
    point = (w.abs() + h.abs()) <= EPS
    return torch.atan2(
        torch.where(point, torch.zeros_like(w), w), torch.where(point, torch.ones_like(h), h)
    )


def _overlap(b1: Tensor, b2: Tensor, kind: str, beta: float = 1.0) -> Tensor:
    """The IoU family for broadcastable ``(..., 4)`` xyxy boxes -> ``(...)`` float32/64.

    ``beta`` is the exponent of DIoU's distance penalty ``(rho^2 / c^2) ** beta``: 1 for the
    loss (paper, torchvision), darknet's ``beta_nms`` (0.6) for DIoU-NMS.
    """
    if kind not in IOU_KINDS:
        raise ValueError(f"kind must be one of {IOU_KINDS}, got {kind!r}")
    b1, b2 = _upcast(b1), _upcast(b2)
    w1, h1 = b1[..., 2] - b1[..., 0], b1[..., 3] - b1[..., 1]
    w2, h2 = b2[..., 2] - b2[..., 0], b2[..., 3] - b2[..., 1]
    iw = torch.minimum(b1[..., 2], b2[..., 2]) - torch.maximum(b1[..., 0], b2[..., 0])
    ih = torch.minimum(b1[..., 3], b2[..., 3]) - torch.maximum(b1[..., 1], b2[..., 1])
    inter = iw.clamp(min=0) * ih.clamp(min=0)
    union = w1 * h1 + w2 * h2 - inter
    iou = _safe_div(inter, union)
    if kind == "iou":
        return iou
    # smallest enclosing box
    cw = torch.maximum(b1[..., 2], b2[..., 2]) - torch.minimum(b1[..., 0], b2[..., 0])
    ch = torch.maximum(b1[..., 3], b2[..., 3]) - torch.minimum(b1[..., 1], b2[..., 1])
    if kind == "giou":
        c_area = cw * ch
        return iou - _safe_div(c_area - union, c_area)
    c2 = cw**2 + ch**2 + EPS
    dx = b1[..., 0] + b1[..., 2] - b2[..., 0] - b2[..., 2]  # twice the centre offset
    dy = b1[..., 1] + b1[..., 3] - b2[..., 1] - b2[..., 3]
    rho2 = (dx**2 + dy**2) / 4
    penalty = rho2 / c2 if beta == 1.0 else (rho2 / c2) ** beta
    diou = iou - penalty
    if kind == "diou":
        return diou
    v = _CIOU_V_SCALE * (_aspect_angle(w2, h2) - _aspect_angle(w1, h1)) ** 2
    with torch.no_grad():  # alpha is a weight, not differentiated (paper, torchvision)
        alpha = v / (1 - iou + v + EPS)
    return diou - alpha * v


def _pairwise(boxes1: Tensor, boxes2: Tensor, kind: str, beta: float = 1.0) -> Tensor:
    out = _overlap(boxes1[..., :, None, :], boxes2[..., None, :, :], kind, beta)
    return out.to(_out_dtype(boxes1, boxes2))


def box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise IoU: ``boxes1 (..., N, 4)``, ``boxes2 (..., M, 4)`` xyxy -> ``(..., N, M)`` in [0, 1]."""
    return _pairwise(boxes1, boxes2, "iou")


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise GIoU: ``(..., N, 4)``, ``(..., M, 4)`` xyxy -> ``(..., N, M)`` in [-1, 1]."""
    return _pairwise(boxes1, boxes2, "giou")


def distance_box_iou(boxes1: Tensor, boxes2: Tensor, beta: float = 1.0) -> Tensor:
    """Pairwise DIoU ``IoU - (rho^2 / c^2) ** beta``: ``(..., N, 4)``, ``(..., M, 4)`` xyxy ->
    ``(..., N, M)``. ``rho`` is the centre distance, ``c`` the enclosing box's diagonal.

    ``beta = 1`` is the paper's DIoU (torchvision's ``distance_box_iou``); darknet's DIoU-NMS
    uses ``beta_nms = 0.6``. With ``beta < 1`` the gradient at coincident centres is infinite:
    that form is for NMS, not for losses.
    """
    return _pairwise(boxes1, boxes2, "diou", beta)


def complete_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise CIoU: ``(..., N, 4)``, ``(..., M, 4)`` xyxy -> ``(..., N, M)``."""
    return _pairwise(boxes1, boxes2, "ciou")


def paired_box_iou(boxes1: Tensor, boxes2: Tensor, kind: str = "iou") -> Tensor:
    """Elementwise overlap of matched boxes: ``(..., 4)`` and ``(..., 4)`` xyxy (broadcast) ->
    ``(...)``; ``kind`` is one of ``iou``, ``giou``, ``diou``, ``ciou``. Output dtype is the
    promoted input dtype (float32 for integer boxes); gradients are finite for any finite boxes,
    degenerate ones included.
    """
    return _overlap(boxes1, boxes2, kind).to(_out_dtype(boxes1, boxes2))


def complete_box_iou_loss(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """``1 - CIoU`` of matched ``(..., 4)`` xyxy boxes -> ``(...)``, no reduction (torchvision's
    ``complete_box_iou_loss(reduction="none")``). ``boxes1`` are predictions, ``boxes2`` targets."""
    return 1 - paired_box_iou(boxes1, boxes2, "ciou")
