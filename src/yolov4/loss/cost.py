"""Darknet's charted training loss (``get_network_cost``) from a :class:`~yolov4.loss.YoloLoss`:
what darknet prints per iteration, so our runs' curves compare with darknet's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from yolov4.loss.assign import anchor_match, grid_cell, positive_anchors
from yolov4.ops.boxes import cxcywh_to_xyxy, paired_box_iou, xyxy_to_cxcywh
from yolov4.ops.decode import decode_boxes, split_head

if TYPE_CHECKING:
    from yolov4.loss.yolo import YoloLoss

__all__ = ["darknet_cost"]


def darknet_cost(loss: YoloLoss, maps: Sequence[Tensor], targets: Tensor) -> Tensor:
    """The loss darknet prints and charts for this batch, from ``loss``'s own gradient.

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
    ``-batch * d(loss)/d(map)`` of ``loss`` with ``box_gradient="darknet"`` (whatever its own
    mode; through the conv's logistic derivative with ``new_coords``, which is
    divided out). Returns ``mean over heads of layer cost / batch``, a detached float32
    scalar; one forward and backward of the loss (not of the network) on detached ``maps``.
    """
    batch = maps[0].shape[0]
    with torch.enable_grad():
        leaves = [m.detach().float().requires_grad_() for m in maps]
        total = loss.compute(leaves, targets, "darknet").total
        grads = torch.autograd.grad(total, leaves, allow_unused=True)
    with torch.no_grad():
        mse = loss.iou_loss == "mse"
        pair_sums, counts = ([], []) if mse else _pair_iou_loss(loss, leaves, targets)
        costs = []
        for level, (leaf, grad) in enumerate(zip(leaves, grads, strict=True)):
            if grad is None:
                grad = torch.zeros_like(leaf)
            delta = -batch * grad
            if loss.new_coords:
                s = leaf.sigmoid()
                delta = delta / (s * (1 - s))
            if mse:
                costs.append(delta.square().sum())
                continue
            a = len(loss.masks[level])
            delta = delta.view(batch, a, -1, *delta.shape[2:])
            cls_obj = loss.obj_normalizer[level] * delta[:, :, 4:].square().sum()
            iou_part = loss.iou_normalizer[level] * pair_sums[level] / max(counts[level], 1)
            costs.append(cls_obj + iou_part)
        return torch.stack(costs).mean() / batch


def _pair_iou_loss(
    loss: YoloLoss, maps: Sequence[Tensor], targets: Tensor
) -> tuple[list, list[int]]:
    """Per head: darknet's ``tot_iou_loss`` (``tot_giou_loss`` for ``iou_loss=giou``), the sum
    over (target, positive anchor) pairs of ``1 - IoU`` of the decoded prediction (raw
    ``exp``, unclamped) and the target, and the number of pairs (darknet's ``count``)."""
    device = maps[0].device
    targets = targets.to(device=device, dtype=torch.float32)
    t_img = targets[:, 0].long()
    t_box = xyxy_to_cxcywh(targets[:, 2:6])
    anchors = loss.anchors.to(device)
    best_anchor, shape_iou = anchor_match(t_box[:, 2:], anchors)
    kind = "giou" if loss.iou_loss == "giou" else "iou"
    sums, counts = [], []
    for level, head in enumerate(maps):
        mask = loss.masks[level]
        p = split_head(head.float(), len(mask))  # (B, A, H, W, 5 + C)
        _, _, h, w, _ = p.shape
        stride = loss.strides[level]
        positive = positive_anchors(best_anchor, shape_iou, mask, loss.iou_thresh[level])
        gt, a = positive.nonzero(as_tuple=True)
        gi, gj = grid_cell(t_box[gt], stride, h, w)
        boxes = decode_boxes(
            p[..., :4], anchors[mask], stride, loss.scale_x_y[level], loss.new_coords
        )
        pred = boxes[t_img[gt], a, gj, gi]
        iou = paired_box_iou(cxcywh_to_xyxy(pred), cxcywh_to_xyxy(t_box[gt]), kind)
        sums.append((1 - iou).sum())
        counts.append(int(gt.numel()))
    return sums, counts
