"""The YOLOv4 loss: darknet's ``[yolo]`` layer training signal (``yolo_layer.c``), vectorised.

For every ground truth box (``targets (M, 6)``: ``[image_index, class_index, x1, y1, x2, y2]``
in input pixels) and every head, with that head's values of the ``[yolo]`` keys darknet reads per
layer (``scale_x_y``, ``ignore_thresh``, ``iou_thresh``, ``iou_normalizer``, ``cls_normalizer``,
``obj_normalizer``, ``max_delta``, ``objectness_smooth``, ``label_smooth_eps``: yolov4-csp, for
one, has ``obj_normalizer`` 4 / 1 / 0.4 and ``objectness_smooth`` 0 / 1 / 1 by stride):

* **Assignment.** The shape IoU (boxes aligned at a common centre) of the target with each of
  the model's anchors picks the best anchor over *all* heads; if that anchor belongs to this
  head, it is positive in the cell containing the box centre. With ``iou_thresh`` set
  (yolov4.cfg: 0.213) every other anchor of this head whose shape IoU exceeds it is positive in
  the same cell too; without it (yolov4-tiny) only the single best anchor is.
* **Box** (positives): ``iou_normalizer * (1 - CIoU)`` (``iou_loss``: ``ciou``, or ``diou``,
  ``giou``, ``iou``) between the decoded prediction (with the
  grid-sensitivity decode of :mod:`yolov4.ops.decode`) and the target, CIoU in coordinates
  relative to the input size as darknet computes it; or with ``iou_loss="mse"`` (darknet's
  default, the YOLOv3 cfgs) a squared error on the coordinates (below).
* **Objectness**: binary cross-entropy towards 1 at positives and 0 elsewhere, times
  ``obj_normalizer``; a non-positive prediction is left alone (no push to 0) when its decoded
  box overlaps some target of its image with IoU > ``ignore_thresh`` and it has some class
  probability above 0.25 (that IoU is darknet's ``best_match_iou``, 0 without such a class).
  With ``objectness_smooth`` (yolo_layer.c:455-460, 568-572) every prediction is pushed towards
  ``best_match_iou`` where it exceeds ``ignore_thresh``, else towards 0, *positives included*:
  darknet's positive rule only writes ``1 - sigmoid(obj)`` into a delta still exactly 0, and the
  first loop has already written one for every prediction (so a positive is pulled up only as
  far as its decoded box fits some target, and down when it fits none above ``ignore_thresh``).
* **Class** (positives): binary cross-entropy per class; the target is the union of the classes
  of all targets assigned to that prediction, optionally label-smoothed (``y * (1 - eps) + eps /
  2``, darknet's ``label_smooth_eps``).
* **Class balance** (``counters_per_class``, per head; :mod:`yolov4.models.class_balance`):
  darknet's multipliers ``m_c = max(N) / N_c`` (capped at ``max_delta``) scale, for a target of
  class ``c``, its box term (``iou_normalizer * m_c``, inside ``fix_nan_inf`` and the
  ``max_delta`` clip), the objectness at its positives (``m_c`` of the slot's last target; with
  ``objectness_smooth`` of the first, where the positive rule acts) and its class's term
  (``m_c * cls_normalizer``; :func:`~yolov4.loss_darknet.balanced_class_weight` gives darknet's
  rule for several targets in one slot). The other classes' terms are not scaled.

Parts are summed over predictions and targets, averaged over images: darknet's deltas are
per-image sums and its SGD step divides by the batch size.

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

``new_coords`` (darknet's ``[yolo] new_coords=1``, the Scaled-YOLOv4 cfgs yolov4-csp, yolov4x-mish,
yolov4-p5/p6): the conv in front of the layer has ``activation=logistic``, so darknet's layer input
is ``sigmoid`` of the raw map seen here, and the layer neither activates it again nor (as always)
differentiates anything in backward; the conv's backward then multiplies ``l.delta`` by the
logistic derivative ``s * (1 - s)`` (convolutional_layer.c, ``gradient_array``). Hence:

* boxes decode as ``w = 4 * sigmoid(tw)^2 * anchor`` (``get_yolo_box``, yolo_layer.c:139-143;
  ``x, y`` as without it, ``scale_x_y`` included), in the assignment-free parts too (ignore);
* the box gradient w.r.t. the relative box (either mode, same ``fix_nan_inf``, ``max_delta``,
  class division) goes to all four of ``sigmoid(tx) .. sigmoid(th)`` unchanged, with no
  ``exp`` factor or any other factor of the decode (``delta_yolo_box``'s new_coords branch,
  yolo_layer.c:234-245, leaves ``dw, dh`` alone), then times ``s * (1 - s)`` to the raw map;
* objectness and class deltas ``target - s`` on ``s`` become ``(target - s) * s * (1 - s)`` on the
  raw map: the gradient of the squared error ``0.5 * (s - target)^2``, which is what these terms
  are here (times ``obj_normalizer``, ``cls_normalizer``) instead of the cross-entropy.

Departures from darknet, and why:

* ``box_gradient="exact"`` is not darknet's gradient (see above); ``"darknet"`` is, up to
  float rounding.
* Targets whose centre lies on the right/bottom edge use the last cell (darknet would index
  past the row); class indices are trusted (darknet skips out-of-range ones with a warning).
* ``cls_normalizer``: darknet applies it only together with ``counters_per_class``
  (yolo_layer.c:350, the positive class only), so without that key the Scaled-YOLOv4 cfgs' 0.5
  does nothing there. :meth:`from_config` passes the cfg's value to the heads with
  ``counters_per_class`` and 1.0 to the others (darknet's gradient); without
  ``counters_per_class`` the constructor's ``cls_normalizer`` scales the whole class term.
* A pair with a zero-size target gets a zero mse box term (darknet's ``log 0`` writes inf).
* ``truth_thresh`` is not implemented. It is 1.0 in every zoo cfg, but darknet's test
  ``best_iou > truth_thresh`` (yolo_layer.c:488) fires when a float IoU rounds above 1, i.e. on
  a prediction fitting a target exactly (about half of planted exact fits): that slot becomes a
  positive for the target (objectness, class and box deltas) even if not assigned to it, and an
  assigned one gets its box delta twice (objectness and class are rewritten with equal values).
  Near an exact fit the box delta is darknet's kink value, so this is a corner case.
* The options no zoo cfg uses (focal loss, ``iou_thresh_kind`` other than
  ``iou``, ``map``, adversarial training, the bad-label rejection schedule) are not implemented.
* The result is a differentiable tensor, not deltas written into the layer: it works with
  autocast (the maps are cast to float32 here), gradient accumulation and DDP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yolov4.loss_darknet import (
    darknet_class_balance,
    darknet_classes_in_box,
    darknet_dx_box_iou,
    iou_loss_gradient,
    mse_box_delta,
)
from yolov4.models.class_balance import class_multipliers, normalize_counters
from yolov4.models.config import IOU_LOSSES
from yolov4.ops.boxes import box_iou, cxcywh_to_xyxy, paired_box_iou, xyxy_to_cxcywh
from yolov4.ops.decode import decode_boxes, split_head

if TYPE_CHECKING:
    from yolov4.models.config import ModelConfig

__all__ = [
    "YoloLoss",
    "LossOutput",
    "IGNORE_CLASS_CONF",
    "BOX_GRADIENTS",
    "darknet_dx_box_iou",
    "iou_loss_gradient",
]

# yolo_layer.c: a prediction is only exempt from the no-object push (ignore_thresh) when
# compare_yolo_class finds some class probability above this (hard-coded 0.25f).
IGNORE_CLASS_CONF = 0.25
BOX_GRADIENTS = ("darknet", "exact")
# Raw tw, th are clamped to this in the box term (a box at most e^7 ~ 1100 anchors wide) so that
# a diverging prediction gives a finite loss and a gradient pulling it back instead of inf/NaN.
MAX_LOG_WH = 7.0

_T = TypeVar("_T")
# a [yolo] key darknet reads per layer: one value for every head, or one per head
PerHead = _T | Sequence[_T]


class LossOutput(NamedTuple):
    """``total = box + obj + cls``; scalar tensors, per-image means of darknet's sums."""

    total: Tensor
    box: Tensor
    obj: Tensor
    cls: Tensor


class YoloLoss(nn.Module):
    """Darknet's ``[yolo]`` loss over all heads (see the module docstring).

    Call with ``maps`` (list of ``(B, A * (5 + C), H_l, W_l)`` raw head maps, ascending stride,
    any float dtype) and ``targets (M, 6)`` float ``[image_index, class_index, x1, y1, x2, y2]``
    in input pixels (``M`` may be 0). Returns a :class:`LossOutput` of float32 scalars.

    The ``[yolo]`` keys darknet reads per layer (``scale_x_y``, ``ignore_thresh``, ``iou_thresh``,
    the three normalizers, ``max_delta``, ``objectness_smooth``, ``label_smooth_eps``) take one
    value for every head or a sequence of one per head (ascending stride); head ``l`` uses its own.
    ``label_smoothing``, when non-zero, overrides ``label_smooth_eps`` for every head.
    ``counters_per_class`` (darknet's class balance): one count per class for every head, or one
    entry per head (``None``: that head has none); ``cls_normalizer`` then acts as in darknet.
    """

    def __init__(
        self,
        *,
        num_classes: int,
        anchors: Sequence[Sequence[float]],
        masks: Sequence[Sequence[int]],
        strides: Sequence[int],
        scale_x_y: PerHead[float],
        ignore_thresh: PerHead[float] = 0.7,
        iou_thresh: PerHead[float | None] = None,
        iou_normalizer: PerHead[float] = 0.07,
        cls_normalizer: PerHead[float] = 1.0,
        obj_normalizer: PerHead[float] = 1.0,
        max_delta: PerHead[float | None] = None,
        objectness_smooth: PerHead[bool] = False,
        label_smooth_eps: PerHead[float] = 0.0,
        iou_loss: str = "ciou",
        label_smoothing: float | None = None,
        box_gradient: str = "darknet",
        new_coords: bool = False,
        counters_per_class: Any = None,
    ) -> None:
        super().__init__()
        if iou_loss not in IOU_LOSSES:
            raise ValueError(f"iou_loss must be one of {list(IOU_LOSSES)}, got {iou_loss!r}")
        if box_gradient not in BOX_GRADIENTS:
            raise ValueError(
                f"box_gradient must be one of {list(BOX_GRADIENTS)}, got {box_gradient!r}"
            )
        heads = len(strides)
        if len(masks) != heads:
            raise ValueError(f"{len(masks)} masks for {heads} strides: one per head")
        self.box_gradient = box_gradient
        self.new_coords = bool(new_coords)
        self.iou_loss = iou_loss
        self.num_classes = num_classes
        self.masks = [list(m) for m in masks]
        self.strides = list(strides)
        self.scale_x_y = _per_head("scale_x_y", scale_x_y, heads)
        self.ignore_thresh = _per_head("ignore_thresh", ignore_thresh, heads)
        # darknet's default iou_thresh is 1.0: "no extra anchors"
        self.iou_thresh = [
            v if v is not None and v < 1.0 else None
            for v in _per_head("iou_thresh", iou_thresh, heads)
        ]
        self.iou_normalizer = _per_head("iou_normalizer", iou_normalizer, heads)
        self.cls_normalizer = _per_head("cls_normalizer", cls_normalizer, heads)
        self.obj_normalizer = _per_head("obj_normalizer", obj_normalizer, heads)
        self.max_delta = _per_head("max_delta", max_delta, heads)
        self.objectness_smooth = [
            bool(v) for v in _per_head("objectness_smooth", objectness_smooth, heads)
        ]
        eps = label_smoothing if label_smoothing else label_smooth_eps
        self.label_smooth_eps = _per_head("label_smooth_eps", eps, heads)
        self.register_buffer(
            "anchors", torch.tensor(anchors, dtype=torch.float32).view(-1, 2), persistent=False
        )
        counts = normalize_counters(counters_per_class or None, num_classes, heads)
        self.balanced = [c is not None for c in counts]
        multipliers = [
            class_multipliers(c, self.max_delta[h]) if c is not None else [1.0] * num_classes
            for h, c in enumerate(counts)
        ]  # (heads, C) darknet's classes_multipliers, 1 on heads without counters_per_class
        self.register_buffer(
            "class_multipliers", torch.tensor(np.array(multipliers)), persistent=False
        )

    @classmethod
    def from_config(
        cls,
        config: ModelConfig,
        label_smoothing: float | None = None,
        box_gradient: str = "darknet",
    ) -> YoloLoss:
        """The loss a :class:`~yolov4.models.ModelConfig` (``model.config``) describes, every
        ``[yolo]`` key per head, with the training-recipe options ``box_gradient``
        (``darknet``|``exact``) and ``label_smoothing``: ``None`` or 0 keeps the cfg's per-head
        ``label_smooth_eps``; any other value replaces it for every head (the training module's
        ``label_smoothing``, 0 by default, is such an override)."""
        counts = config.counters_per_class or (None,) * len(config.strides)
        return cls(
            num_classes=config.num_classes,
            anchors=config.anchors,
            masks=config.masks,
            strides=config.strides,
            scale_x_y=config.scale_x_y,
            ignore_thresh=config.ignore_thresh,
            iou_thresh=config.iou_thresh,
            iou_normalizer=config.iou_normalizer,
            # inert in darknet without counters_per_class (see above)
            cls_normalizer=[
                n if c is not None else 1.0
                for n, c in zip(config.cls_normalizer, counts, strict=True)
            ],
            obj_normalizer=config.obj_normalizer,
            max_delta=config.max_delta,
            objectness_smooth=config.objectness_smooth,
            label_smooth_eps=config.label_smooth_eps,
            iou_loss=config.iou_loss,
            label_smoothing=label_smoothing,
            box_gradient=box_gradient,
            new_coords=config.new_coords,
            counters_per_class=counts,
        )

    def forward(self, maps: Sequence[Tensor], targets: Tensor) -> LossOutput:
        return self._loss(maps, targets, self.box_gradient)

    def _loss(self, maps: Sequence[Tensor], targets: Tensor, box_gradient: str) -> LossOutput:
        batch = maps[0].shape[0]
        device = maps[0].device
        input_hw = (maps[0].shape[2] * self.strides[0], maps[0].shape[3] * self.strides[0])
        targets = targets.to(device=device, dtype=torch.float32)
        t_img, t_cls = targets[:, 0].long(), targets[:, 1].long()
        t_box = xyxy_to_cxcywh(targets[:, 2:6])
        anchors = self.anchors.to(device)
        best_anchor, shape_iou = self._anchor_match(t_box[:, 2:], anchors)
        padded, valid = _pad_per_image(targets[:, 2:6], t_img, batch)
        zero = torch.zeros((), device=device)
        box_loss, obj_loss, cls_loss = zero, zero, zero
        for level, head in enumerate(maps):
            b, o, c = self._head_loss(
                level,
                head.float(),
                anchors[self.masks[level]],
                self._positive(level, best_anchor, shape_iou),
                t_img,
                t_cls,
                t_box,
                padded,
                valid,
                input_hw,
                box_gradient,
            )
            box_loss, obj_loss, cls_loss = box_loss + b, obj_loss + o, cls_loss + c
        box_loss, obj_loss, cls_loss = box_loss / batch, obj_loss / batch, cls_loss / batch
        return LossOutput(box_loss + obj_loss + cls_loss, box_loss, obj_loss, cls_loss)

    def darknet_cost(self, maps: Sequence[Tensor], targets: Tensor) -> Tensor:
        """The loss darknet prints and charts for this batch, from this loss's own gradient.

        Darknet's per-iteration "loss" is not a loss value: ``train_network_waitkey``
        (network.c:407-473) returns the sum over subdivisions of ``get_network_cost`` divided by
        ``subdivisions * batch``, and ``get_network_cost`` (network.c:317-329) is the *mean* of
        ``l.cost`` over the layers that have one (the ``[yolo]`` layers). With the default
        ``show_details=1`` a ``[yolo]`` layer's cost (yolo_layer.c:868-913) is
        ``obj_normalizer * |l.delta with x, y, w, h zeroed|^2 + iou_normalizer * tot / count``
        (that layer's normalizers): the squared deltas of objectness and classes over the batch,
        plus the mean over the layer's (target, anchor) box pairs (``count``, iou_thresh extras
        included; 0 without any) of ``1 - GIoU`` for ``iou_loss=giou``, else ``1 - IoU`` (the
        plain IoU, also for CIoU/DIoU; yolo_layer.c:555-558); for ``iou_loss=mse`` it is
        ``|l.delta|^2``, box deltas included, no normalizer. Darknet's delta is
        ``-batch * d(loss)/d(map)`` of this loss with ``box_gradient="darknet"`` (whatever this
        loss's own mode; through the conv's logistic derivative with ``new_coords``, which is
        divided out). Returns ``mean over heads of layer cost / batch``, a detached float32
        scalar; one forward and backward of the loss (not of the network) on detached ``maps``.
        """
        batch = maps[0].shape[0]
        with torch.enable_grad():
            leaves = [m.detach().float().requires_grad_() for m in maps]
            total = self._loss(leaves, targets, "darknet").total
            grads = torch.autograd.grad(total, leaves, allow_unused=True)
        with torch.no_grad():
            mse = self.iou_loss == "mse"
            pair_sums, counts = ([], []) if mse else self._pair_iou_loss(leaves, targets)
            costs = []
            for level, (leaf, grad) in enumerate(zip(leaves, grads, strict=True)):
                if grad is None:
                    grad = torch.zeros_like(leaf)
                delta = -batch * grad
                if self.new_coords:
                    s = leaf.sigmoid()
                    delta = delta / (s * (1 - s))
                if mse:
                    costs.append(delta.square().sum())
                    continue
                a = len(self.masks[level])
                delta = delta.view(batch, a, -1, *delta.shape[2:])
                cls_obj = self.obj_normalizer[level] * delta[:, :, 4:].square().sum()
                iou_part = self.iou_normalizer[level] * pair_sums[level] / max(counts[level], 1)
                costs.append(cls_obj + iou_part)
            return torch.stack(costs).mean() / batch

    def _pair_iou_loss(self, maps: Sequence[Tensor], targets: Tensor) -> tuple[list, list[int]]:
        """Per head: darknet's ``tot_iou_loss`` (``tot_giou_loss`` for ``iou_loss=giou``), the sum
        over (target, positive anchor) pairs of ``1 - IoU`` of the decoded prediction (raw
        ``exp``, unclamped) and the target, and the number of pairs (darknet's ``count``)."""
        device = maps[0].device
        targets = targets.to(device=device, dtype=torch.float32)
        t_img = targets[:, 0].long()
        t_box = xyxy_to_cxcywh(targets[:, 2:6])
        anchors = self.anchors.to(device)
        best_anchor, shape_iou = self._anchor_match(t_box[:, 2:], anchors)
        kind = "giou" if self.iou_loss == "giou" else "iou"
        sums, counts = [], []
        for level, head in enumerate(maps):
            mask = self.masks[level]
            p = split_head(head.float(), len(mask))  # (B, A, H, W, 5 + C)
            _, _, h, w, _ = p.shape
            stride = self.strides[level]
            gt, a = self._positive(level, best_anchor, shape_iou).nonzero(as_tuple=True)
            gi, gj = self._cell(t_box[gt], stride, h, w)
            boxes = decode_boxes(
                p[..., :4], anchors[mask], stride, self.scale_x_y[level], self.new_coords
            )
            pred = boxes[t_img[gt], a, gj, gi]
            iou = paired_box_iou(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(t_box[gt]), kind)
            sums.append((1 - iou).sum())
            counts.append(int(gt.numel()))
        return sums, counts

    def _positive(self, level: int, best_anchor: Tensor, shape_iou: Tensor) -> Tensor:
        """``(M, A)`` bool: target ``m`` is positive for anchor ``a`` of head ``level`` (its best
        anchor over all heads is ``a``, or this head's ``iou_thresh`` admits ``a`` too)."""
        mask = torch.tensor(self.masks[level], device=best_anchor.device)
        positive = best_anchor[:, None] == mask[None, :]
        if self.iou_thresh[level] is not None:
            positive |= shape_iou[:, mask] > self.iou_thresh[level]
        return positive

    @staticmethod
    def _cell(box: Tensor, stride: int, h: int, w: int) -> tuple[Tensor, Tensor]:
        """Grid cell ``(gi, gj)`` ``(P,)`` long of boxes ``(P, 4)`` cxcywh in input pixels; a
        centre on the right/bottom edge uses the last cell (see the departures)."""
        gi = (box[:, 0] / stride).floor().long().clamp(0, w - 1)
        gj = (box[:, 1] / stride).floor().long().clamp(0, h - 1)
        return gi, gj

    @staticmethod
    def _anchor_match(wh: Tensor, anchors: Tensor) -> tuple[Tensor, Tensor]:
        """Shape IoU ``(M, T)`` of target sizes ``(M, 2)`` with all anchors ``(T, 2)``, and the
        best anchor per target ``(M,)`` (first of equals, as darknet's strict ``>``)."""
        zeros_t = torch.zeros_like(wh)
        zeros_a = torch.zeros_like(anchors)
        shape_iou = box_iou(torch.cat((zeros_t, wh), 1), torch.cat((zeros_a, anchors), 1))
        return shape_iou.argmax(dim=1), shape_iou

    def _head_loss(
        self,
        level,
        head,
        anchors,
        positive,
        t_img,
        t_cls,
        t_box,
        padded,
        valid,
        input_hw,
        box_gradient,
    ):
        """Box, objectness and class sums of one head (see the module docstring)."""
        num_anchors = anchors.shape[0]
        stride = self.strides[level]
        p = split_head(head, num_anchors)  # (B, A, H, W, 5 + C)
        batch, _, h, w, _ = p.shape
        flat = p.reshape(-1, p.shape[-1])  # (B * A * H * W, 5 + C)

        # positives: (target, anchor) pairs and their slot in `flat`
        gt, a = positive.nonzero(as_tuple=True)
        gi, gj = self._cell(t_box[gt], stride, h, w)
        slot = ((t_img[gt] * num_anchors + a) * h + gj) * w + gi
        slots, pair_slot = slot.unique(return_inverse=True)

        # class targets: union of the assigned targets' classes per positive slot
        cls_target = flat.new_zeros(slots.shape[0], self.num_classes)
        cls_target[pair_slot, t_cls[gt]] = 1.0
        classes_per_slot = cls_target.sum(1)
        eps = self.label_smooth_eps[level]
        if eps:
            cls_target = cls_target * (1 - eps) + 0.5 * eps
        cls_loss = self._prob_loss(flat[slots, 5:], cls_target)
        # objectness: its targets (and which predictions count) per darknet's two rules
        obj_target, keep, rule = self._objectness_target(
            level, p, flat, slots, anchors, padded, valid
        )
        obj_bce = self._prob_loss(flat[:, 4], obj_target) * keep
        cls_weight, iou_norm = None, self.iou_normalizer[level]
        if self.balanced[level]:  # counters_per_class: darknet's class multipliers
            cls_weight, obj_weight, pair_mult = darknet_class_balance(
                slots.shape[0], pair_slot, gt, t_cls, self.class_multipliers[level],
                self.cls_normalizer[level], rule, self.objectness_smooth[level],
            )  # fmt: skip
            obj_bce = obj_bce * torch.ones_like(obj_bce).index_put((slots,), obj_weight)
            iou_norm = iou_norm * pair_mult
        norm = cls_weight if cls_weight is not None else self.cls_normalizer[level]
        cls_loss = (norm * cls_loss).sum()
        obj_loss = self.obj_normalizer[level] * obj_bce.sum()

        # box term: value weighted by 1/k (k distinct classes at the slot), gradient as chosen
        scale = flat.new_tensor([input_hw[1], input_hw[0]] * 2)
        t = flat[slot, :4]
        cell = torch.stack((gi, gj), 1).to(t.dtype)
        value, grad = self._box_term(
            level, t, cell, anchors[a], t_box[gt] / scale, scale, box_gradient, iou_norm
        )
        if self.iou_thresh[level] is None:
            box_loss = value.sum()
        else:
            value_weight = 1.0 / classes_per_slot[pair_slot]
            box_loss = (value_weight * value).sum()
            if grad is not None:
                if box_gradient == "darknet":
                    with torch.no_grad():  # the slot's final objectness delta
                        obj_delta = self.obj_normalizer[level] * (
                            obj_target[slots] - flat[slots, 4].float().sigmoid()
                        )
                    count = darknet_classes_in_box(
                        flat[slots, 5:], cls_target, obj_delta, cls_weight
                    )
                    grad = grad / count[pair_slot, None]
                else:
                    grad = grad * value_weight[:, None]
        if grad is not None:  # grad is d(box_loss)/dt by construction; the value stays as is
            box_loss = box_loss + (grad * (t - t.detach())).sum()
        return box_loss, obj_loss, cls_loss

    def _objectness_target(self, level, p, flat, slots, anchors, padded, valid):
        """Objectness targets ``(N,)``, which predictions count ``(N,)`` bool (``N = B*A*H*W``)
        and which positive slots ``(S,)`` bool darknet's positive rule sets.

        Without ``objectness_smooth``: 1 at positives (all set by the rule); 0 elsewhere except
        the ignored predictions (``best_match_iou > ignore_thresh``), which do not count. With it
        (yolo_layer.c:455-460, 568-572): every prediction counts, with target ``best_match_iou``
        where ignored, else 0, positives included; a positive whose delta towards that target is
        exactly 0 gets 1 (the rule)."""
        obj_norm = self.obj_normalizer[level]
        with torch.no_grad():
            best = self._best_match_iou(p, anchors, level, padded, valid).flatten()
            ignored = best > self.ignore_thresh[level]
            if not self.objectness_smooth[level]:
                obj_target = torch.zeros_like(flat[:, 4])
                obj_target[slots] = 1.0
                keep = ~ignored
                keep[slots] = True
                return obj_target, keep, torch.ones_like(slots, dtype=torch.bool)
            obj_target = torch.where(ignored, best, torch.zeros_like(best))
            first = obj_norm * (obj_target[slots] - flat[slots, 4].sigmoid())
            obj_target[slots] = torch.where(first == 0, 1.0, obj_target[slots])
            return obj_target, torch.ones_like(ignored), first == 0

    def _prob_loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Per-element objectness/class loss: cross-entropy on the logits, or with ``new_coords``
        ``0.5 * (sigmoid - target)^2`` (darknet's ``target - s`` through the conv's logistic)."""
        if self.new_coords:
            return 0.5 * (logits.sigmoid() - target).square()
        return F.binary_cross_entropy_with_logits(logits, target, reduction="none")

    def _best_match_iou(self, p, anchors, level, padded, valid) -> Tensor:
        """``(B, A, H, W)`` darknet's ``best_match_iou``: the largest IoU of each decoded
        prediction with a target of its image if it has some class probability above
        :data:`IGNORE_CLASS_CONF`, else 0 (any negative IoU is below every threshold)."""
        if padded.shape[1] == 0:
            return torch.zeros(p.shape[:4], device=p.device)
        stride, g = self.strides[level], self.scale_x_y[level]
        boxes = cxcywh_to_xyxy(decode_boxes(p[..., :4], anchors, stride, g, self.new_coords))
        iou = box_iou(boxes.reshape(p.shape[0], -1, 4), padded)  # (B, A*H*W, Mmax)
        best = iou.masked_fill(~valid[:, None, :], -1.0).amax(dim=2).view(p.shape[:4])
        confident = (p[..., 5:].sigmoid() > IGNORE_CLASS_CONF).any(dim=-1)
        return torch.where(confident, best, torch.zeros_like(best))

    def _box_term(
        self, level, t, cell, anchor_wh, target_rel, scale, box_gradient, norm=None
    ) -> tuple[Tensor, Tensor | None]:
        """Per pair the box value ``(P,)`` and the gradient ``(P, 4)`` to put on the raw
        ``t (P, 4)`` (``None`` without autograd): ``box_gradient``'s, chained, made finite and
        clipped as ``delta_yolo_box`` does (see the module docstring). ``norm``: the head's
        ``iou_normalizer`` (``None``), or per pair ``(P,)`` times the class multiplier."""
        norm = self.iou_normalizer[level] if norm is None else norm
        if self.iou_loss == "mse":
            return self._mse_box_term(
                level, t, cell, anchor_wh, target_rel, scale, box_gradient, norm
            )
        norm_col = norm[:, None] if isinstance(norm, Tensor) else norm
        stride, g = self.strides[level], self.scale_x_y[level]
        td = t.detach()
        xy = (td[:, :2].sigmoid() * g - (g - 1) / 2 + cell) * stride / scale[:2]
        if self.new_coords:
            s = td.sigmoid()  # darknet's layer input (the conv's logistic output)
            exp_wh = 4 * s[:, 2:].square()
        else:
            exp_wh = td[:, 2:].clamp(max=MAX_LOG_WH).exp()
        rel = torch.cat((xy, exp_wh * anchor_wh / scale[2:]), 1)
        iou = paired_box_iou(cxcywh_to_xyxy(rel), cxcywh_to_xyxy(target_rel), self.iou_loss)
        loss = norm * (1 - iou)
        if not (torch.is_grad_enabled() and t.requires_grad):
            return loss, None
        if box_gradient == "darknet" and not self.new_coords:
            exp_wh = td[:, 2:].exp()  # darknet's raw exp(tw), exp(th): inf when it overflows
            rel = torch.cat((xy, exp_wh * anchor_wh / scale[2:]), 1)
        d_rel = norm_col * iou_loss_gradient(rel, target_rel, self.iou_loss, box_gradient)
        # d/d(x, y) straight to tx, ty; d/d(w, h) * exp(t) to tw, th (delta_yolo_box); with
        # new_coords all four straight to the layer input sigmoid(t)
        grad = d_rel if self.new_coords else torch.cat((d_rel[:, :2], d_rel[:, 2:] * exp_wh), 1)
        grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)  # fix_nan_inf
        if self.max_delta[level] is not None:
            grad = grad.clamp(-self.max_delta[level], self.max_delta[level])
        if self.new_coords:  # the conv's logistic derivative (its backward, not the layer's)
            grad = grad * (s * (1 - s))
        return loss, grad

    def _mse_box_term(
        self, level, t, cell, anchor_wh, target_rel, scale, box_gradient, norm
    ) -> tuple[Tensor, Tensor | None]:
        """``iou_loss="mse"``: value ``0.5 * iou_normalizer * (2 - w_t h_t) * |target - x|^2`` and
        the gradient (see the module docstring); no ``fix_nan_inf`` or ``max_delta``."""
        stride, g = self.strides[level], self.scale_x_y[level]
        td = t.detach()
        err, delta = mse_box_delta(
            td, cell, anchor_wh, target_rel, scale[:2] / stride, scale[2:], g, self.new_coords
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
            chain = torch.cat((g * ds[:, :2], ds[:, 2:] if self.new_coords else one), 1)
        else:
            chain = ds if self.new_coords else torch.ones_like(ds)
        grad = -delta * chain
        return loss, grad


def _per_head(name: str, value: Any, heads: int) -> list:
    """One value per head from a scalar (every head) or a sequence of ``heads`` values."""
    if isinstance(value, (list, tuple)):
        if len(value) != heads:
            raise ValueError(
                f"{name} needs one value per head ({heads}) or one for all, got {value}"
            )
        return list(value)
    return [value] * heads


def _pad_per_image(boxes: Tensor, image_index: Tensor, batch: int) -> tuple[Tensor, Tensor]:
    """``boxes (M, 4)`` with ``image_index (M,)`` -> ``(B, Mmax, 4)`` padded and ``(B, Mmax)`` valid."""
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
