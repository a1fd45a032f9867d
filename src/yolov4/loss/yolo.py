"""Darknet's ``[yolo]`` loss over all heads, :class:`YoloLoss` (the rules: :mod:`yolov4.loss`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from yolov4.loss.assign import Pairs, anchor_match, pad_per_image, positive_anchors, positive_pairs
from yolov4.loss.box import box_term
from yolov4.loss.darknet import (
    darknet_class_balance,
    darknet_classes_in_box,
)
from yolov4.loss.inputs import check_maps, check_options, check_targets, per_head
from yolov4.models.class_balance import class_multipliers, normalize_counters
from yolov4.models.region import check_trainable
from yolov4.ops.boxes import box_iou, cxcywh_to_xyxy, xyxy_to_cxcywh
from yolov4.ops.decode import decode_boxes, split_head

if TYPE_CHECKING:
    from yolov4.models.config import ModelConfig

__all__ = ["YoloLoss", "LossOutput", "IGNORE_CLASS_CONF"]

# yolo_layer.c: a prediction is only exempt from the no-object push (ignore_thresh) when
# compare_yolo_class finds some class probability above this (hard-coded 0.25f).
IGNORE_CLASS_CONF = 0.25

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
    """Darknet's ``[yolo]`` loss over all heads (see :mod:`yolov4.loss`).

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
        check_options(iou_loss, box_gradient, len(masks), len(strides))
        heads = len(strides)
        self.box_gradient = box_gradient
        self.new_coords = bool(new_coords)
        self.iou_loss = iou_loss
        self.num_classes = num_classes
        self.masks = [list(m) for m in masks]
        self.strides = list(strides)
        self.scale_x_y = per_head("scale_x_y", scale_x_y, heads)
        self.ignore_thresh = per_head("ignore_thresh", ignore_thresh, heads)
        # darknet's default iou_thresh is 1.0: "no extra anchors"
        self.iou_thresh = [
            v if v is not None and v < 1.0 else None
            for v in per_head("iou_thresh", iou_thresh, heads)
        ]
        self.iou_normalizer = per_head("iou_normalizer", iou_normalizer, heads)
        self.cls_normalizer = per_head("cls_normalizer", cls_normalizer, heads)
        self.obj_normalizer = per_head("obj_normalizer", obj_normalizer, heads)
        self.max_delta = per_head("max_delta", max_delta, heads)
        self.objectness_smooth = [
            bool(v) for v in per_head("objectness_smooth", objectness_smooth, heads)
        ]
        eps = label_smoothing if label_smoothing else label_smooth_eps
        self.label_smooth_eps = per_head("label_smooth_eps", eps, heads)
        self.register_buffer(
            "anchors", torch.tensor(anchors, dtype=torch.float32).view(-1, 2), persistent=False
        )
        self._register_class_balance(counters_per_class, heads)

    def _register_class_balance(self, counters_per_class: Any, heads: int) -> None:
        """``balanced`` (which heads have ``counters_per_class``) and the ``class_multipliers``
        buffer ``(heads, C)``: darknet's classes_multipliers, 1 on heads without counters."""
        num_classes = self.num_classes
        counts = normalize_counters(counters_per_class or None, num_classes, heads)
        self.balanced = [c is not None for c in counts]
        multipliers = [
            class_multipliers(c, self.max_delta[h]) if c is not None else [1.0] * num_classes
            for h, c in enumerate(counts)
        ]
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
        ``label_smoothing``, 0 by default, is such an override). A ``[region]`` (YOLOv2) network
        and a ``[Gaussian_yolo]`` network are refused (:func:`yolov4.models.region.check_trainable`)."""
        check_trainable(config)
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

    def check_maps(self, maps: Any) -> None:
        """``maps`` as the network gives them (:func:`~yolov4.loss.inputs.check_maps` with this
        loss's strides and channels per head), or :class:`InputError` naming what was found."""
        check_maps(maps, self.strides, [len(m) * (5 + self.num_classes) for m in self.masks])

    def forward(self, maps: Sequence[Tensor], targets: Tensor) -> LossOutput:
        return self.compute(maps, targets, self.box_gradient)

    def compute(self, maps: Sequence[Tensor], targets: Tensor, box_gradient: str) -> LossOutput:
        """The loss of ``maps`` and ``targets`` (as :meth:`forward`) with the box gradient
        ``box_gradient`` (``darknet``|``exact``) instead of the module's own."""
        self.check_maps(maps)
        batch = maps[0].shape[0]
        device = maps[0].device
        input_hw = (maps[0].shape[2] * self.strides[0], maps[0].shape[3] * self.strides[0])
        check_targets(targets, batch, self.num_classes, input_hw)
        targets = targets.to(device=device, dtype=torch.float32)
        t_img, t_cls = targets[:, 0].long(), targets[:, 1].long()
        t_box = xyxy_to_cxcywh(targets[:, 2:6])
        anchors = self.anchors.to(device)
        best_anchor, shape_iou = anchor_match(t_box[:, 2:], anchors)
        padded, valid = pad_per_image(targets[:, 2:6], t_img, batch)
        zero = torch.zeros((), device=device)
        box_loss, obj_loss, cls_loss = zero, zero, zero
        for level, head in enumerate(maps):
            b, o, c = self._head_loss(
                level,
                head.float(),
                anchors[self.masks[level]],
                positive_anchors(best_anchor, shape_iou, self.masks[level], self.iou_thresh[level]),
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
        """Box, objectness and class sums of one head (see :mod:`yolov4.loss`)."""
        num_anchors = anchors.shape[0]
        p = split_head(head, num_anchors)  # (B, A, H, W, 5 + C)
        flat = p.reshape(-1, p.shape[-1])  # (B * A * H * W, 5 + C)
        pairs = positive_pairs(positive, t_img, t_box, self.strides[level], p.shape[:4])
        slots, pair_slot = pairs.slots, pairs.pair_slot

        # class targets: union of the assigned targets' classes per positive slot
        cls_target = flat.new_zeros(slots.shape[0], self.num_classes)
        cls_target[pair_slot, t_cls[pairs.gt]] = 1.0
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
                slots.shape[0], pair_slot, pairs.gt, t_cls, self.class_multipliers[level],
                self.cls_normalizer[level], rule, self.objectness_smooth[level],
            )  # fmt: skip
            obj_bce = obj_bce * torch.ones_like(obj_bce).index_put((slots,), obj_weight)
            iou_norm = iou_norm * pair_mult
        norm = cls_weight if cls_weight is not None else self.cls_normalizer[level]
        cls_loss = (norm * cls_loss).sum()
        obj_loss = self.obj_normalizer[level] * obj_bce.sum()
        box_loss = self._box_loss(
            level, flat, pairs, anchors, t_box, input_hw, box_gradient, iou_norm,
            classes_per_slot, obj_target, cls_target, cls_weight,
        )  # fmt: skip
        return box_loss, obj_loss, cls_loss

    def _box_loss(
        self,
        level,
        flat,
        pairs: Pairs,
        anchors,
        t_box,
        input_hw,
        box_gradient,
        iou_norm,
        classes_per_slot,
        obj_target,
        cls_target,
        cls_weight,
    ) -> Tensor:
        """Box sum of one head: each pair's value weighted by 1/k (k distinct classes at its
        slot, with ``iou_thresh``), its gradient as ``box_gradient`` chooses (darknet's divides
        by the classes in the box, :func:`~yolov4.loss.darknet.darknet_classes_in_box`)."""
        gt, a, slot, slots, pair_slot = pairs.gt, pairs.a, pairs.slot, pairs.slots, pairs.pair_slot
        scale = flat.new_tensor([input_hw[1], input_hw[0]] * 2)
        t = flat[slot, :4]
        cell = torch.stack((pairs.gi, pairs.gj), 1).to(t.dtype)
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
        return box_loss

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
        """:func:`~yolov4.loss.box.box_term` with head ``level``'s keys; ``norm`` the head's
        ``iou_normalizer`` (``None``), or per pair ``(P,)`` times the class multiplier."""
        return box_term(
            t, cell, anchor_wh, target_rel, scale,
            stride=self.strides[level],
            scale_x_y=self.scale_x_y[level],
            iou_loss=self.iou_loss,
            box_gradient=box_gradient,
            norm=self.iou_normalizer[level] if norm is None else norm,
            max_delta=self.max_delta[level],
            new_coords=self.new_coords,
        )  # fmt: skip
