"""The box term of the YOLOv4 loss (:mod:`yolov4.loss`): per (target, positive prediction) pair,
its value and the gradient to put on the raw map (darknet's ``delta_yolo_box``).

The gradient of the box term is chosen by ``box_gradient``; in both modes it is the chain of
darknet's ``delta_yolo_box`` (yolo_layer.c:173-288): a gradient w.r.t. the relative box
``(x, y, w, h)`` (fractions of the input size) goes to ``tx, ty`` directly (no sigmoid or
``scale_x_y`` factor: ``backward_yolo_layer`` passes ``l.delta`` through, yolo_layer.c:930) and,
times ``exp(tw), exp(th)`` (not the anchor / input size factor), to ``tw, th``; it is multiplied by
``iou_normalizer``, non-finite components become 0 (``fix_nan_inf``, :154) and each is clipped to
``+-max_delta`` (``clip_value``, :160) per (target, prediction) pair before pairs are summed.

* ``"darknet"`` (default; every darknet recipe was tuned with it): the gradient w.r.t. the
  relative box is darknet's hand-derived ``dx_box_iou`` (box.c:258-456) for ``iou_loss``,
  transcribed with its departures from the derivative of the value: the IoU/GIoU part of
  ``dw, dh`` is ``d/dr - d/dl`` (twice the derivative, box.c:409-410 "we do not divided by 2");
  the intersection ``Iw * Ih`` is not clamped at 0; GIoU/DIoU/CIoU keep only their penalty term
  when the boxes do not overlap (``Iw <= 0 || Ih <= 0``, box.c:348, 421, 444); the distance
  term's enclosing-box part has the opposite sign on ``dx, dy`` (box.c:416-417, 439-440); the
  aspect-ratio term is ``alpha * 8/pi^2 * (atan(w_t/h_t) - atan(w/h)) * h`` without
  ``1/(w^2 + h^2)`` (box.c:435-436, so its push grows with the box). ``w, h`` come from the raw,
  unclamped ``exp(tw), exp(th)`` in float32, so a diverged prediction gets darknet's value, and
  0 where float32 overflows (fix_nan_inf). With ``iou_thresh`` set, a positive's box gradient is
  divided by the number of classes whose darknet class delta ``target - sigmoid(logit)`` is
  positive, when its final objectness delta is non-zero (``averages_yolo_deltas``,
  yolo_layer.c:291-306 and 638-651): with label smoothing nearly every class counts (about
  ``C - 1``).
* ``"exact"``: the autograd derivative of ``iou_normalizer * (1 - IoU-kind)`` w.r.t. the relative
  box (CIoU's ``alpha`` held constant, as in the paper), at ``tw, th`` clamped to
  ``MAX_LOG_WH``; with ``iou_thresh`` set, a prediction assigned to targets of ``k`` distinct
  classes gets the mean (``/ k``) of their box gradients.

The value reported is ``iou_normalizer * sum(1 - IoU-kind)`` in both modes.

``iou_loss="mse"`` (``delta_yolo_box``'s ``MSE`` branch, yolo_layer.c:191-212): per pair, darknet's
delta is ``iou_normalizer * (2 - w_t * h_t) * (target - x)`` on each coordinate, ``w_t, h_t`` the
target's size relative to the input, ``x`` the layer's output (``sigmoid(t) * g - (g - 1) / 2`` for
x, y; the raw ``tw, th``) and the targets ``cx_t / stride - i``, ``cy_t / stride - j``,
``log(w_t_px / anchor_w)``, ``log(h_t_px / anchor_h)``. The value is ``0.5 * iou_normalizer *
(2 - w_t h_t) * |target - x|^2``. ``"darknet"`` puts ``-delta`` on ``t`` unchanged (no sigmoid or
``scale_x_y`` factor on x, y, as above); ``"exact"`` is the derivative of the value w.r.t. ``t``.
Darknet neither zeroes non-finite values nor applies ``max_delta`` here (``max_delta`` has no
effect with mse); the ``iou_thresh`` class division applies as above. With ``new_coords`` darknet's
mse targets ``sqrt(w_t_px / (4 * anchor_w))`` for ``sigmoid(tw)`` (what ``4 s^2 anchor`` needs) and
x, y as without it; implemented so, the delta then passing through the logistic as below.

With ``new_coords`` (see :mod:`yolov4.loss`) boxes decode as ``w = 4 * sigmoid(tw)^2 * anchor``,
and the gradient w.r.t. the relative box (either mode, same ``fix_nan_inf``, ``max_delta``)
goes to all four of ``sigmoid(tx) .. sigmoid(th)`` unchanged (``delta_yolo_box``'s new_coords
branch, yolo_layer.c:234-245), then times the conv's logistic derivative ``s * (1 - s)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from yolov4.loss.darknet import iou_loss_gradient, mse_box_delta
from yolov4.ops.boxes import cxcywh_to_xyxy, paired_box_iou

__all__ = ["MAX_LOG_WH", "box_term"]

# Raw tw, th are clamped to this in the box term (a box at most e^7 ~ 1100 anchors wide) so that
# a diverging prediction gives a finite loss and a gradient pulling it back instead of inf/NaN.
MAX_LOG_WH = 7.0


def box_term(
    t: Tensor,
    cell: Tensor,
    anchor_wh: Tensor,
    target_rel: Tensor,
    scale: Tensor,
    *,
    stride: int,
    scale_x_y: float,
    iou_loss: str,
    box_gradient: str,
    norm: float | Tensor,
    max_delta: float | None,
    new_coords: bool,
) -> tuple[Tensor, Tensor | None]:
    """Per pair the box value ``(P,)`` and the gradient ``(P, 4)`` to put on the raw ``t (P, 4)``
    (``None`` without autograd): ``box_gradient``'s, chained, made finite and clipped as
    ``delta_yolo_box`` does (see the module docstring).

    ``cell (P, 2)`` the pair's grid cell ``(i, j)``, ``anchor_wh (P, 2)`` its anchor in pixels,
    ``target_rel (P, 4)`` the target cxcywh relative to the input, ``scale (4,)`` the input
    ``(w, h, w, h)`` in pixels; ``stride``, ``scale_x_y``, ``max_delta`` the head's; ``norm`` its
    ``iou_normalizer``, or per pair ``(P,)`` times the class multiplier."""
    if iou_loss == "mse":
        return _mse_box_term(
            t, cell, anchor_wh, target_rel, scale, stride, scale_x_y, box_gradient, norm,
            new_coords,
        )  # fmt: skip
    norm_col = norm[:, None] if isinstance(norm, Tensor) else norm
    g = scale_x_y
    td = t.detach()
    xy = (td[:, :2].sigmoid() * g - (g - 1) / 2 + cell) * stride / scale[:2]
    if new_coords:
        s = td.sigmoid()  # darknet's layer input (the conv's logistic output)
        exp_wh = 4 * s[:, 2:].square()
    else:
        exp_wh = td[:, 2:].clamp(max=MAX_LOG_WH).exp()
    rel = torch.cat((xy, exp_wh * anchor_wh / scale[2:]), 1)
    iou = paired_box_iou(cxcywh_to_xyxy(rel), cxcywh_to_xyxy(target_rel), iou_loss)
    loss = norm * (1 - iou)
    if not (torch.is_grad_enabled() and t.requires_grad):
        return loss, None
    if box_gradient == "darknet" and not new_coords:
        exp_wh = td[:, 2:].exp()  # darknet's raw exp(tw), exp(th): inf when it overflows
        rel = torch.cat((xy, exp_wh * anchor_wh / scale[2:]), 1)
    d_rel = norm_col * iou_loss_gradient(rel, target_rel, iou_loss, box_gradient)
    # d/d(x, y) straight to tx, ty; d/d(w, h) * exp(t) to tw, th (delta_yolo_box); with
    # new_coords all four straight to the layer input sigmoid(t)
    grad = d_rel if new_coords else torch.cat((d_rel[:, :2], d_rel[:, 2:] * exp_wh), 1)
    grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)  # fix_nan_inf
    if max_delta is not None:
        grad = grad.clamp(-max_delta, max_delta)
    if new_coords:  # the conv's logistic derivative (its backward, not the layer's)
        grad = grad * (s * (1 - s))
    return loss, grad


def _mse_box_term(
    t, cell, anchor_wh, target_rel, scale, stride, g, box_gradient, norm, new_coords
) -> tuple[Tensor, Tensor | None]:
    """``iou_loss="mse"``: value ``0.5 * iou_normalizer * (2 - w_t h_t) * |target - x|^2`` and
    the gradient (see the module docstring); no ``fix_nan_inf`` or ``max_delta``."""
    td = t.detach()
    err, delta = mse_box_delta(
        td, cell, anchor_wh, target_rel, scale[:2] / stride, scale[2:], g, new_coords
    )
    delta = delta * (norm[:, None] if isinstance(norm, Tensor) else norm)
    loss = 0.5 * (delta * err).sum(1)
    if not (torch.is_grad_enabled() and t.requires_grad):
        return loss, None
    # darknet: d/dx of the value, x the layer's output, passed to t as is (with new_coords
    # through the conv's logistic); exact: times the rest of the chain, d x / d t
    s = td.sigmoid()
    ds = s * (1 - s)
    one = torch.ones_like(ds[:, :2])
    if box_gradient == "exact":
        chain = torch.cat((g * ds[:, :2], ds[:, 2:] if new_coords else one), 1)
    else:
        chain = ds if new_coords else torch.ones_like(ds)
    return loss, -delta * chain
