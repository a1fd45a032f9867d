"""Darknet's box deltas (AlexeyAB darknet, src/yolo_layer.c and src/box.c), vectorised for
:class:`~yolov4.loss.yolo.YoloLoss`: ``dx_box_iou`` of the IoU-kind losses, the ``mse`` branch of
``delta_yolo_box``, the divisor of ``averages_yolo_deltas``, and where ``counters_per_class``'s
class multipliers act (``delta_yolo_class`` and its callers). Pure tensor functions; the
loss imports them (never the other way round)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from yolov4.ops.boxes import cxcywh_to_xyxy, paired_box_iou

__all__ = [
    "darknet_dx_box_iou",
    "iou_loss_gradient",
    "darknet_classes_in_box",
    "mse_box_delta",
    "balanced_class_weight",
    "darknet_class_balance",
    "first_last_pair",
]


def iou_loss_gradient(pred: Tensor, truth: Tensor, kind: str, box_gradient: str) -> Tensor:
    """``d(1 - IoU-kind)/d(pred)`` of matched ``pred``, ``truth (P, 4)`` cxcywh boxes ->
    ``(P, 4)`` (pred's dtype): the autograd derivative (``box_gradient="exact"``, CIoU's alpha
    held constant) or darknet's ``dx_box_iou`` with its sign flipped (``"darknet"``)."""
    if box_gradient == "darknet":
        return -darknet_dx_box_iou(pred, truth, kind)
    with torch.enable_grad():
        pred = pred.detach().requires_grad_()
        iou = paired_box_iou(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(truth), kind)
        (grad,) = torch.autograd.grad((1 - iou).sum(), pred)
    return grad


def darknet_classes_in_box(
    cls_out: Tensor, cls_target: Tensor, obj_delta: Tensor, cls_weight: Tensor | None = None
) -> Tensor:
    """``averages_yolo_deltas``' divisor per positive slot ``(S,)`` float: the number of classes
    whose class delta ``cls_weight * (cls_target - sigmoid(logit))`` is positive, or 1 when there
    is none or the slot's final objectness delta ``obj_delta (S,)`` is 0 (darknet then skips the
    slot). ``cls_out (S, C)`` raw class logits, ``cls_target (S, C)`` (smoothed) targets,
    ``cls_weight (S, C)`` :func:`balanced_class_weight` (``None``: 1)."""
    with torch.no_grad():
        prob = cls_out.float().sigmoid()
        delta = cls_target - prob if cls_weight is None else cls_weight * (cls_target - prob)
        count = (delta > 0).sum(1)
        averaged = (obj_delta != 0) & (count > 0)
        return torch.where(averaged, count, torch.ones_like(count)).to(cls_target.dtype)


def first_last_pair(pair_slot: Tensor, pair_index: Tensor, slots: int) -> tuple[Tensor, Tensor]:
    """Per slot ``(S,)`` long: the first and the last of its pairs in darknet's order (truths in
    order, ``pair_index (P,)`` the target index of each pair; ``pair_slot (P,)`` its slot in
    ``0..S-1``; every slot has a pair). A truth has at most one pair per slot."""
    big = torch.iinfo(torch.long).max
    first = torch.full((slots,), big, dtype=torch.long, device=pair_index.device)
    last = torch.full((slots,), -1, dtype=torch.long, device=pair_index.device)
    first = first.scatter_reduce(0, pair_slot, pair_index, "amin")
    last = last.scatter_reduce(0, pair_slot, pair_index, "amax")
    return first, last


def balanced_class_weight(
    pair_slot: Tensor, pair_class: Tensor, first_class: Tensor, multipliers: Tensor, cls_norm: float
) -> Tensor:
    """``(S, C)`` float32 factors of the class deltas of positive slots with
    ``counters_per_class`` (``delta_yolo_class``, yolo_layer.c:308-352): a truth's first write at
    a slot sets every class delta to ``target - p`` and multiplies its own class's by
    ``multipliers[c] * cls_norm``; a later truth at the slot (its class delta is no longer 0)
    rewrites only its own class's, times ``multipliers[c]`` without ``cls_norm``. So a class of
    the slot's truths gets ``multipliers[c]``, times ``cls_norm`` when it is the class of the
    slot's first truth (``first_class (S,)``) and no other truth there has it; other classes 1.
    ``pair_slot``, ``pair_class (P,)`` long; ``multipliers (C,)`` float32."""
    slots, classes = first_class.shape[0], multipliers.shape[0]
    hits = torch.zeros(slots, classes, device=multipliers.device)
    hits.index_put_((pair_slot, pair_class), torch.ones_like(pair_slot, dtype=hits.dtype), True)
    weight = torch.where(hits > 0, multipliers.expand(slots, -1), torch.ones_like(hits))
    rows = torch.arange(slots, device=hits.device)
    once = hits[rows, first_class] == 1
    weight[rows, first_class] = torch.where(
        once, multipliers[first_class] * cls_norm, weight[rows, first_class]
    )
    return weight


def darknet_class_balance(
    slots: int,
    pair_slot: Tensor,
    pair_index: Tensor,
    t_cls: Tensor,
    multipliers: Tensor,
    cls_norm: float,
    rule: Tensor,
    objectness_smooth: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Where ``counters_per_class``'s multipliers ``(C,)`` act on one head: the class-delta
    factors ``(S, C)`` (:func:`balanced_class_weight`), the objectness factor ``(S,)`` of the
    positive slots (``multipliers`` of the slot's last truth's class; with ``objectness_smooth``
    the first's, darknet's positive rule writing only a delta still 0; 1 where ``rule (S,)``
    bool says the rule did not act) and the box factor ``(P,)`` of each pair (its truth's
    class). ``slots``: ``S``; ``pair_slot``, ``pair_index (P,)`` long (slot in ``0..S-1``, target
    index); ``t_cls (M,)`` long."""
    first, last = first_last_pair(pair_slot, pair_index, slots)
    pair_class = t_cls[pair_index]
    cls_weight = balanced_class_weight(pair_slot, pair_class, t_cls[first], multipliers, cls_norm)
    which = t_cls[first] if objectness_smooth else t_cls[last]
    obj_weight = torch.where(rule, multipliers[which], torch.ones_like(multipliers[which]))
    return cls_weight, obj_weight, multipliers[pair_class]


def darknet_dx_box_iou(pred: Tensor, truth: Tensor, kind: str) -> Tensor:
    """Darknet's ``dx_box_iou`` (src/box.c:258-456), vectorised: its gradient of ``kind``
    (``iou``, ``giou``, ``diou``, ``ciou``) w.r.t. the predicted box, departures included (see
    :mod:`yolov4.loss.box`). ``pred``, ``truth (P, 4)`` cxcywh relative boxes, any float dtype (the
    result has it; darknet computes in float32) -> ``(P, 4)`` ``(dx, dy, dw, dh)``, the direction
    that *increases* the IoU-kind; non-finite where darknet's is (``delta_yolo_box`` zeroes it).
    """
    # delta_yolo_box: "avoid nan in dx_box_iou"
    pw = torch.where(pred[:, 2] == 0, torch.ones_like(pred[:, 2]), pred[:, 2])
    ph = torch.where(pred[:, 3] == 0, torch.ones_like(pred[:, 3]), pred[:, 3])
    px, py = pred[:, 0], pred[:, 1]
    tx, ty, tw, th = truth.unbind(1)
    top, bot, left, right = py - ph / 2, py + ph / 2, px - pw / 2, px + pw / 2
    pt, pb = torch.minimum(top, bot), torch.maximum(top, bot)
    pl, pr = torch.minimum(left, right), torch.maximum(left, right)
    tt, tb, tl, tr = ty - th / 2, ty + th / 2, tx - tw / 2, tx + tw / 2
    p, inter, union, disjoint = _sides_gradient(
        kind, (top < bot, left < right), (pt, pb, pl, pr), (tt, tb, tl, tr)
    )
    # sides -> (x, y, w, h); w, h not halved (box.c:409-410)
    d = torch.stack((p[2] + p[3], p[0] + p[1], p[3] - p[2], p[1] - p[0]))
    if kind in ("diou", "ciou"):
        penalty, c = _distance_penalty(
            kind, (px, py, pw, ph), truth, (pt, pb, pl, pr), (tt, tb, tl, tr), inter, union
        )
        d = torch.where(c > 0, d + penalty, d)
        d = torch.where(disjoint, penalty, d)
    return d.T


def _sides_gradient(
    kind: str,
    ordered: tuple[Tensor, Tensor],
    pred: tuple[Tensor, Tensor, Tensor, Tensor],
    truth: tuple[Tensor, Tensor, Tensor, Tensor],
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``dx_box_iou``'s gradient of the IoU (plus GIoU's term for ``kind == "giou"``) w.r.t. the
    predicted box's sides: ``(4, P)`` (top, bottom, left, right), then ``inter``, ``union`` and
    ``disjoint`` ``(P,)``. ``pred``, ``truth``: the sides ``(P,)`` each (top, bottom, left,
    right; ``pred``'s sorted); ``ordered``: ``(top < bottom, left < right)`` of the unsorted
    predicted sides (a flipped box takes the other side's gradient)."""
    pt, pb, pl, pr = pred
    tt, tb, tl, tr = truth
    zero = torch.zeros_like(pt)

    area = (pb - pt) * (pr - pl)
    ih = torch.minimum(pb, tb) - torch.maximum(pt, tt)
    iw = torch.minimum(pr, tr) - torch.maximum(pl, tl)
    inter = iw * ih  # not clamped: positive when both overlaps are negative
    union = area + (tb - tt) * (tr - tl) - inter
    gcw = torch.maximum(pr, tr) - torch.minimum(pl, tl)
    gch = torch.maximum(pb, tb) - torch.minimum(pt, tt)
    gc = gcw * gch
    # d(area), d(inter), d(enclosing area) w.r.t. the sides t, b, l, r
    d_area = torch.stack((-(pr - pl), pr - pl, -(pb - pt), pb - pt))
    d_inter = torch.stack(
        (
            torch.where(pt > tt, -iw, zero),
            torch.where(pb < tb, iw, zero),
            torch.where(pl > tl, -ih, zero),
            torch.where(pr < tr, ih, zero),
        )
    )
    d_union = d_area - d_inter
    d_gc = torch.stack(
        (
            torch.where(pt < tt, -gcw, zero),
            torch.where(pb > tb, gcw, zero),
            torch.where(pl < tl, -gch, zero),
            torch.where(pr > tr, gch, zero),
        )
    )
    p = torch.where(union > 0, (union * d_inter - inter * d_union) / (union * union), zero)
    # "correct corner selection": a flipped box takes the other side's gradient
    p_t = torch.where(ordered[0], p[0], p[1])
    p_l = torch.where(ordered[1], p[2], p[3])
    p = torch.stack((p_t, p[1], p_l, p[3]))
    disjoint = (iw <= 0) | (ih <= 0)
    if kind == "giou":
        g = (gc * d_union - union * d_gc) / (gc * gc)
        p = torch.where(gc > 0, p + g, p)
        p = torch.where(disjoint, g, p)
    return p, inter, union, disjoint


def _distance_penalty(
    kind: str,
    pred: tuple[Tensor, Tensor, Tensor, Tensor],
    truth: Tensor,
    pred_sides: tuple[Tensor, Tensor, Tensor, Tensor],
    truth_sides: tuple[Tensor, Tensor, Tensor, Tensor],
    inter: Tensor,
    union: Tensor,
) -> tuple[Tensor, Tensor]:
    """:func:`darknet_dx_box_iou`'s DIoU distance term (with ``kind`` ``ciou`` also the
    aspect term, box.c:411-440) -> ``(4, P)`` ``(dx, dy, dw, dh)`` and the squared diagonal
    ``c (P,)`` of the enclosing box. ``pred``: ``(x, y, w, h)`` (w, h not 0), ``truth (P, 4)``,
    the sides ``(top, bottom, left, right)`` of both, and their (unclamped) ``inter``,
    ``union``."""
    px, py, pw, ph = pred
    tx, ty, tw, th = truth.unbind(1)
    pt, pb, pl, pr = pred_sides
    tt, tb, tl, tr = truth_sides
    zero = torch.zeros_like(px)
    dist2 = (px - tx) ** 2 + (py - ty) ** 2
    cw = torch.maximum(px + pw / 2, tr) - torch.minimum(px - pw / 2, tl)
    ch = torch.maximum(py + ph / 2, tb) - torch.minimum(py - ph / 2, tt)
    c = cw * cw + ch * ch
    one = torch.ones_like(px)
    dcw_dx = torch.where(pr > tr, one, zero) - torch.where(pl < tl, one, zero)
    dch_dy = torch.where(pb > tb, one, zero) - torch.where(pt < tt, one, zero)
    dcw_dw = torch.where(pr > tr, one / 2, zero) + torch.where(pl < tl, one / 2, zero)
    dch_dh = torch.where(pb > tb, one / 2, zero) + torch.where(pt < tt, one / 2, zero)
    penalty = torch.stack(
        (
            (2 * (tx - px) * c - 2 * cw * dcw_dx * dist2) / (c * c),  # sign as box.c:416
            (2 * (ty - py) * c - 2 * ch * dch_dy * dist2) / (c * c),
            2 * cw * dcw_dw * dist2 / (c * c),
            2 * ch * dch_dh * dist2 / (c * c),
        )
    )
    if kind == "ciou":
        angle = torch.atan(tw / th) - torch.atan(pw / ph)
        v = 4 / math.pi**2 * angle * angle
        alpha = v / (1 - inter / union + v + 0.000001)
        ar = 8 / math.pi**2 * angle  # no 1/(w^2 + h^2) (box.c:435-436)
        penalty = penalty + torch.stack((zero, zero, alpha * ar * ph, -alpha * ar * pw))
    return penalty, c


def mse_box_delta(
    t: Tensor,
    cell: Tensor,
    anchor_wh: Tensor,
    target_rel: Tensor,
    layer_wh: Tensor,
    input_wh: Tensor,
    scale_x_y: float,
    new_coords: bool,
) -> tuple[Tensor, Tensor]:
    """``delta_yolo_box``'s ``mse`` branch (yolo_layer.c:191-212): per pair, the coordinate
    errors ``target - x`` and darknet's delta ``(2 - w_t * h_t) * (target - x)`` (before
    ``iou_normalizer``), both ``(P, 4)``.

    ``t (P, 4)`` raw map values; ``x`` is the layer's output there: ``sigmoid(t) * g - (g-1)/2``
    for x, y and the raw ``tw, th`` (with ``new_coords``: ``sigmoid(tw), sigmoid(th)``, the
    layer's input). Targets: ``truth.x * lw - i``, ``truth.y * lh - j`` and
    ``log(truth.w * net_w / anchor_w)`` (with ``new_coords``: ``sqrt(truth.w * net_w / (4 *
    anchor_w))``, what ``4 * s^2 * anchor`` needs). ``cell (P, 2)`` ``(i, j)``, ``anchor_wh (P, 2)``
    pixels, ``target_rel (P, 4)`` cxcywh relative to the input, ``layer_wh``, ``input_wh`` ``(2,)``
    the head's grid and the input size ``(w, h)``. A pair with a non-finite error (a zero-size
    target: ``log 0``) gets 0 (darknet would write inf into its delta).
    """
    s = t.sigmoid()
    x_xy = s[:, :2] * scale_x_y - (scale_x_y - 1) / 2
    t_xy = target_rel[:, :2] * layer_wh - cell
    size = target_rel[:, 2:] * input_wh / anchor_wh
    if new_coords:
        x_wh, t_wh = s[:, 2:], (size / 4).sqrt()
    else:
        x_wh, t_wh = t[:, 2:], size.log()
    err = torch.cat((t_xy - x_xy, t_wh - x_wh), 1)
    err = torch.where(torch.isfinite(err).all(1, keepdim=True), err, torch.zeros_like(err))
    scale = 2 - target_rel[:, 2] * target_rel[:, 3]
    return err, scale[:, None] * err
