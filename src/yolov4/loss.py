"""The YOLOv4 loss: darknet's ``[yolo]`` layer training signal (``yolo_layer.c``), vectorised.

For every ground truth box (``targets (M, 6)``: ``[image_index, class_index, x1, y1, x2, y2]``
in input pixels) and every head:

* **Assignment.** The shape IoU (boxes aligned at a common centre) of the target with each of
  the model's anchors picks the best anchor over *all* heads; if that anchor belongs to this
  head, it is positive in the cell containing the box centre. With ``iou_thresh`` set
  (yolov4.cfg: 0.213) every other anchor of this head whose shape IoU exceeds it is positive in
  the same cell too; without it (yolov4-tiny) only the single best anchor is.
* **Box** (positives): ``iou_normalizer * (1 - CIoU)`` (``iou_loss``: ``ciou``, or ``diou``,
  ``giou``, ``iou``) between the decoded prediction (with the
  grid-sensitivity decode of :mod:`yolov4.ops.decode`) and the target, CIoU in coordinates
  relative to the input size as darknet computes it.
* **Objectness**: binary cross-entropy towards 1 at positives and 0 elsewhere, times
  ``obj_normalizer``; a non-positive prediction is left alone (no push to 0) when its decoded
  box overlaps some target of its image with IoU > ``ignore_thresh`` and it has some class
  probability above 0.25.
* **Class** (positives): binary cross-entropy per class times ``cls_normalizer``; the target is
  the union of the classes of all targets assigned to that prediction, optionally label-smoothed
  (``y * (1 - eps) + eps / 2``, darknet's ``label_smooth_eps``).

Parts are summed over predictions and targets, averaged over images: darknet's deltas are
per-image sums and its SGD step divides by the batch size.

The gradient of the box term is darknet's ``delta_yolo_box``, not the autograd gradient of the
value: ``iou_normalizer * d(1 - CIoU)/d(x, y, w, h)`` of the relative box goes to ``tx, ty``
directly and, times ``exp(tw), exp(th)``, to ``tw, th``; non-finite components become 0
(``fix_nan_inf``) and each is clipped to ``+-max_delta``; with ``iou_thresh`` set, a prediction
assigned to targets of ``k`` distinct classes gets the mean (``/ k``) of their box gradients
(``averages_yolo_deltas``). The value reported is ``iou_normalizer * sum(1 - CIoU)``.

Departures from darknet, and why:

* ``d CIoU`` is exact autograd (alpha held constant, as in the paper); darknet's
  ``dx_box_iou`` is a hand-derived approximation of it.
* Targets whose centre lies on the right/bottom edge use the last cell (darknet would index
  past the row); class indices are trusted (darknet skips out-of-range ones with a warning).
* ``cls_normalizer`` scales the class term; darknet applies it only together with
  ``counters_per_class`` (its default 1.0 makes both the same).
* ``truth_thresh`` (1.0 in every YOLOv4 cfg, i.e. never) and the unused options
  (``objectness_smooth``, focal loss, ``new_coords``, class multipliers) are not implemented.
* The result is a differentiable tensor, not deltas written into the layer: it works with
  autocast (the maps are cast to float32 here), gradient accumulation and DDP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yolov4.models.config import IOU_LOSSES
from yolov4.ops.boxes import box_iou, cxcywh_to_xyxy, paired_box_iou, xyxy_to_cxcywh
from yolov4.ops.decode import decode_boxes, split_head

if TYPE_CHECKING:
    from yolov4.models.config import ModelConfig

__all__ = ["YoloLoss", "LossOutput", "IGNORE_CLASS_CONF"]

# yolo_layer.c: a prediction is only exempt from the no-object push (ignore_thresh) when
# compare_yolo_class finds some class probability above this (hard-coded 0.25f).
IGNORE_CLASS_CONF = 0.25
# Raw tw, th are clamped to this in the box term (a box at most e^7 ~ 1100 anchors wide) so that
# a diverging prediction gives a finite loss and a gradient pulling it back instead of inf/NaN.
MAX_LOG_WH = 7.0


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
    """

    def __init__(
        self,
        *,
        num_classes: int,
        anchors: Sequence[Sequence[float]],
        masks: Sequence[Sequence[int]],
        strides: Sequence[int],
        scale_x_y: Sequence[float],
        ignore_thresh: float = 0.7,
        iou_thresh: float | None = None,
        iou_normalizer: float = 0.07,
        cls_normalizer: float = 1.0,
        obj_normalizer: float = 1.0,
        max_delta: float | None = None,
        iou_loss: str = "ciou",
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if iou_loss not in IOU_LOSSES:
            raise ValueError(f"iou_loss must be one of {list(IOU_LOSSES)}, got {iou_loss!r}")
        self.iou_loss = iou_loss
        self.num_classes = num_classes
        self.masks = [list(m) for m in masks]
        self.strides = list(strides)
        self.scale_x_y = list(scale_x_y)
        self.ignore_thresh = ignore_thresh
        # darknet's default iou_thresh is 1.0: "no extra anchors"
        self.iou_thresh = iou_thresh if iou_thresh is not None and iou_thresh < 1.0 else None
        self.iou_normalizer = iou_normalizer
        self.cls_normalizer = cls_normalizer
        self.obj_normalizer = obj_normalizer
        self.max_delta = max_delta
        self.label_smoothing = label_smoothing
        self.register_buffer(
            "anchors", torch.tensor(anchors, dtype=torch.float32).view(-1, 2), persistent=False
        )

    @classmethod
    def from_config(cls, config: ModelConfig, label_smoothing: float = 0.0) -> YoloLoss:
        """The loss a :class:`~yolov4.models.ModelConfig` (``model.config``) describes."""
        return cls(
            num_classes=config.num_classes,
            anchors=config.anchors,
            masks=config.masks,
            strides=config.strides,
            scale_x_y=config.scale_x_y,
            ignore_thresh=config.ignore_thresh,
            iou_thresh=config.iou_thresh,
            iou_normalizer=config.iou_normalizer,
            cls_normalizer=config.cls_normalizer,
            obj_normalizer=config.obj_normalizer,
            max_delta=config.max_delta,
            iou_loss=config.iou_loss,
            label_smoothing=label_smoothing,
        )

    def forward(self, maps: Sequence[Tensor], targets: Tensor) -> LossOutput:
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
            mask = torch.tensor(self.masks[level], device=device)
            positive = best_anchor[:, None] == mask[None, :]  # (M, A)
            if self.iou_thresh is not None:
                positive |= shape_iou[:, mask] > self.iou_thresh
            b, o, c = self._head_loss(
                level,
                head.float(),
                anchors[mask],
                positive,
                t_img,
                t_cls,
                t_box,
                padded,
                valid,
                input_hw,
            )
            box_loss, obj_loss, cls_loss = box_loss + b, obj_loss + o, cls_loss + c
        box_loss, obj_loss, cls_loss = box_loss / batch, obj_loss / batch, cls_loss / batch
        return LossOutput(box_loss + obj_loss + cls_loss, box_loss, obj_loss, cls_loss)

    @staticmethod
    def _anchor_match(wh: Tensor, anchors: Tensor) -> tuple[Tensor, Tensor]:
        """Shape IoU ``(M, T)`` of target sizes ``(M, 2)`` with all anchors ``(T, 2)``, and the
        best anchor per target ``(M,)`` (first of equals, as darknet's strict ``>``)."""
        zeros_t = torch.zeros_like(wh)
        zeros_a = torch.zeros_like(anchors)
        shape_iou = box_iou(torch.cat((zeros_t, wh), 1), torch.cat((zeros_a, anchors), 1))
        return shape_iou.argmax(dim=1), shape_iou

    def _head_loss(
        self, level, head, anchors, positive, t_img, t_cls, t_box, padded, valid, input_hw
    ):
        """Box, objectness and class sums of one head (see the module docstring)."""
        num_anchors = anchors.shape[0]
        stride, g = self.strides[level], self.scale_x_y[level]
        p = split_head(head, num_anchors)  # (B, A, H, W, 5 + C)
        batch, _, h, w, _ = p.shape
        flat = p.reshape(-1, p.shape[-1])  # (B * A * H * W, 5 + C)

        # positives: (target, anchor) pairs and their slot in `flat`
        gt, a = positive.nonzero(as_tuple=True)
        gi = (t_box[gt, 0] / stride).floor().long().clamp(0, w - 1)
        gj = (t_box[gt, 1] / stride).floor().long().clamp(0, h - 1)
        slot = ((t_img[gt] * num_anchors + a) * h + gj) * w + gi
        slots, pair_slot = slot.unique(return_inverse=True)

        # class targets: union of the assigned targets' classes per positive slot
        cls_target = flat.new_zeros(slots.shape[0], self.num_classes)
        cls_target[pair_slot, t_cls[gt]] = 1.0
        classes_per_slot = cls_target.sum(1)
        if self.label_smoothing:
            cls_target = cls_target * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        cls_loss = self.cls_normalizer * F.binary_cross_entropy_with_logits(
            flat[slots, 5:], cls_target, reduction="sum"
        )

        # box term, darknet's delta as gradient
        scale = flat.new_tensor([input_hw[1], input_hw[0]] * 2)
        weight = (
            1.0 / classes_per_slot[pair_slot]
            if self.iou_thresh is not None
            else torch.ones_like(gi, dtype=flat.dtype)
        )
        t = flat[slot, :4]
        cell = torch.stack((gi, gj), 1).to(t.dtype)
        box_loss = (
            weight * self._box_term(t, cell, anchors[a], stride, g, t_box[gt] / scale, scale)
        ).sum()

        # objectness: 1 at positives, 0 elsewhere unless ignored
        obj_target = torch.zeros_like(flat[:, 4])
        obj_target[slots] = 1.0
        with torch.no_grad():
            keep = ~self._ignored(p, anchors, stride, g, padded, valid).flatten()
            keep[slots] = True
        obj_bce = F.binary_cross_entropy_with_logits(flat[:, 4], obj_target, reduction="none")
        obj_loss = self.obj_normalizer * (obj_bce * keep).sum()
        return box_loss, obj_loss, cls_loss

    def _ignored(self, p, anchors, stride, g, padded, valid) -> Tensor:
        """``(B, A, H, W)`` bool: predictions exempt from the no-object push."""
        if padded.shape[1] == 0:
            return torch.zeros(p.shape[:4], dtype=torch.bool, device=p.device)
        boxes = cxcywh_to_xyxy(decode_boxes(p[..., :4], anchors, stride, g))
        iou = box_iou(boxes.reshape(p.shape[0], -1, 4), padded)  # (B, A*H*W, Mmax)
        best = iou.masked_fill(~valid[:, None, :], -1.0).amax(dim=2).view(p.shape[:4])
        confident = (p[..., 5:].sigmoid() > IGNORE_CLASS_CONF).any(dim=-1)
        return (best > self.ignore_thresh) & confident

    def _box_term(self, t, cell, anchor_wh, stride, g, target_rel, scale) -> Tensor:
        """Per pair ``iou_normalizer * (1 - CIoU)`` ``(P,)``; gradient w.r.t. the raw ``t (P, 4)``
        is darknet's (bounded) ``delta_yolo_box`` rather than the autograd one."""

        exp_wh = t.detach()[:, 2:].clamp(max=MAX_LOG_WH).exp()
        xy = (t.detach()[:, :2].sigmoid() * g - (g - 1) / 2 + cell) * stride
        rel = torch.cat((xy, exp_wh * anchor_wh), 1) / scale

        def value(rel: Tensor) -> Tensor:
            iou = paired_box_iou(cxcywh_to_xyxy(rel), cxcywh_to_xyxy(target_rel), self.iou_loss)
            return self.iou_normalizer * (1 - iou)

        if not (torch.is_grad_enabled() and t.requires_grad):
            return value(rel)
        rel = rel.requires_grad_()
        with torch.enable_grad():
            loss = value(rel)
            (d_rel,) = torch.autograd.grad(loss.sum(), rel)
        # d/d(x, y) straight to tx, ty; d/d(w, h) * exp(t) to tw, th (delta_yolo_box)
        grad = torch.cat((d_rel[:, :2], d_rel[:, 2:] * exp_wh), 1)
        grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)  # fix_nan_inf
        if self.max_delta is not None:
            grad = grad.clamp(-self.max_delta, self.max_delta)
        return loss.detach() + (grad * (t - t.detach())).sum(1)


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
