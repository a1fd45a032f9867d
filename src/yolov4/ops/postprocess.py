"""Decoded predictions -> per-image detections: score threshold, top-k cap, class-aware NMS.

Darknet's detector (``get_network_boxes`` + ``diounms_sort`` in ``box.c``) keeps, for every box
and class, ``score = objectness * class_prob`` if it is above the threshold, so one box may carry
several classes ("multi-label"); it then runs a greedy NMS per class. With ``nms_kind =
greedynms`` (yolov4.cfg) a box is suppressed when its DIoU with a better box of the same class,
``IoU - (rho^2 / c^2) ** 0.6``, exceeds the NMS threshold. Both NMS flavours are here:
``nms="iou"`` (torchvision's ``batched_nms``) and ``nms="diou"`` (darknet's greedynms). Each
also runs class-agnostic (``agnostic_nms``: a better box suppresses whatever its class, as
torchvision's ``nms`` against ``batched_nms``), which leaves one box per object where
neighbouring anchors see it as different classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import batched_nms
from torchvision.ops import nms as torchvision_nms

from yolov4.ops.boxes import cxcywh_to_xyxy, distance_box_iou

__all__ = [
    "CONF_THRESH",
    "NMS_THRESH",
    "DIOU_BETA",
    "MAX_DET",
    "MAX_CANDIDATES",
    "NMS_KINDS",
    "postprocess",
    "nms",
    "diou_nms",
]

CONF_THRESH = 0.25  # darknet `detector test` default -thresh
NMS_THRESH = 0.45  # darknet detector's hard-coded nms = .45
DIOU_BETA = 0.6  # yolov4.cfg [yolo] beta_nms; darknet's box_diou (greedynms) uses the same 0.6
MAX_DET = 300  # detections kept per image (COCO evaluation looks at 100)
# Pre-NMS cap on (box, class) candidates per image: a threshold of 0.001 on an untrained model
# passes every box of every class (22,743 x 80 at 608); NMS then works on the best ones only.
MAX_CANDIDATES = 3_000
NMS_KINDS = ("iou", "diou")
_DIOU_BLOCK = 512  # boxes compared at once in diou_nms (memory: block x kept)
_DIOU_PADDED_MAX = 2_000_000  # classes x k x k pairs above which diou_nms goes block by block


def _greedy(suppresses: Tensor, alive: Tensor) -> Tensor:
    """Greedy NMS from a suppression matrix: ``suppresses (..., n, n)`` bool (``[j, i]``: a kept
    ``j`` removes ``i``; only ``j < i`` set), ``alive (..., n)`` -> kept ``(..., n)`` bool.

    ``keep_i = alive_i and no kept j < i suppresses i`` has one solution; iterating the rule
    from ``keep = alive`` fixes at least one more leading position per round (<= n rounds,
    in practice the length of the longest suppression chain).
    """
    keep = alive
    while True:
        new = alive & ~(suppresses & keep[..., :, None]).any(-2)
        if torch.equal(new, keep):
            return keep
        keep = new


def diou_nms(
    boxes: Tensor, scores: Tensor, labels: Tensor, iou_thresh: float, beta: float = DIOU_BETA
) -> Tensor:
    """Class-aware greedy DIoU-NMS: ``boxes (K, 4)`` xyxy, ``scores (K,)``, ``labels (K,)`` int
    -> kept indices ``(K',)`` int64 by decreasing score.

    A box is dropped when ``IoU - (rho^2 / c^2) ** beta > iou_thresh`` with a kept box of the
    same class and higher score (darknet ``box_diounms``; ``rho`` centre distance, ``c``
    enclosing diagonal). Exact greedy result. Candidates are sorted by (class, score); when the
    classes are balanced enough, all classes are resolved at once on a ``(classes, k, k)``
    padded tensor, otherwise block by block (a block is first checked against the kept boxes
    of its first class in earlier blocks: only that class can span blocks).
    """
    by_score = scores.argsort(descending=True, stable=True)
    order = by_score[labels[by_score].argsort(stable=True)]
    boxes, labels = boxes[order], labels[order]
    _, counts = labels.unique_consecutive(return_counts=True)
    if counts.numel() and counts.numel() * int(counts.max()) ** 2 <= _DIOU_PADDED_MAX:
        keep = _diou_padded(boxes, counts, iou_thresh, beta)
    else:
        keep = _diou_blocks(boxes, labels, iou_thresh, beta)
    kept = order[keep]
    return kept[scores[kept].argsort(descending=True, stable=True)]


def _diou_padded(boxes: Tensor, counts: Tensor, iou_thresh: float, beta: float) -> Tensor:
    """Boxes sorted by (class, score) with per-class ``counts`` -> kept ``(K,)`` bool."""
    k = int(counts.max())
    group = torch.repeat_interleave(torch.arange(counts.numel(), device=boxes.device), counts)
    pos = (
        torch.arange(boxes.shape[0], device=boxes.device)
        - (torch.cumsum(counts, 0) - counts)[group]
    )
    padded = boxes.new_zeros(counts.numel(), k, 4)
    padded[group, pos] = boxes
    valid = torch.zeros(counts.numel(), k, dtype=torch.bool, device=boxes.device)
    valid[group, pos] = True
    later = torch.ones(k, k, dtype=torch.bool, device=boxes.device).triu(1)
    suppresses = (distance_box_iou(padded, padded, beta) > iou_thresh) & later & valid[:, :, None]
    return _greedy(suppresses, valid)[group, pos]


def _diou_blocks(boxes: Tensor, labels: Tensor, iou_thresh: float, beta: float) -> Tensor:
    """Boxes sorted by (class, score) -> kept ``(K,)`` bool, ``_DIOU_BLOCK`` boxes at a time."""
    keep = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    for start in range(0, boxes.shape[0], _DIOU_BLOCK):
        blk_boxes = boxes[start : start + _DIOU_BLOCK]
        blk_labels = labels[start : start + _DIOU_BLOCK]
        n = blk_boxes.shape[0]
        alive = torch.ones(n, dtype=torch.bool, device=boxes.device)
        earlier = keep[:start] & (labels[:start] == blk_labels[0])
        if earlier.any():
            hit = distance_box_iou(boxes[:start][earlier], blk_boxes, beta) > iou_thresh
            alive = ~(hit & (blk_labels == blk_labels[0])).any(0)
        same = blk_labels[:, None] == blk_labels[None, :]
        later = torch.ones(n, n, dtype=torch.bool, device=boxes.device).triu(1)
        suppresses = (distance_box_iou(blk_boxes, blk_boxes, beta) > iou_thresh) & same & later
        keep[start : start + n] = _greedy(suppresses, alive)
    return keep


def nms(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    iou_thresh: float = NMS_THRESH,
    kind: str = "iou",
    beta: float = DIOU_BETA,
    agnostic: bool = False,
) -> Tensor:
    """Class-aware NMS: ``boxes (K, 4)`` xyxy, ``scores (K,)``, ``labels (K,)`` int ->
    kept indices ``(K',)`` int64 by decreasing score. ``kind="iou"``: torchvision's
    ``batched_nms``; ``kind="diou"``: darknet's greedy DIoU-NMS with exponent ``beta``. With
    ``agnostic`` the labels are ignored: any better box suppresses (``kind="iou"``:
    torchvision's ``nms``). Boxes and scores of any dtype: half precision and integers are
    compared in float32 (torchvision's CPU kernel takes neither)."""
    if boxes.dtype not in (torch.float32, torch.float64):
        boxes = boxes.float()
    if scores.dtype not in (torch.float32, torch.float64):
        scores = scores.float()
    if kind == "iou":
        if agnostic:
            return torchvision_nms(boxes, scores, iou_thresh)
        return batched_nms(boxes, scores, labels, iou_thresh)
    if kind == "diou":
        if agnostic:  # one class: every box is compared with every better one
            labels = torch.zeros_like(labels)
        return diou_nms(boxes, scores, labels, iou_thresh, beta)
    raise ValueError(f"nms kind must be one of {NMS_KINDS}, got {kind!r}")


def _candidates(
    pred: Tensor,
    conf_thresh: float,
    multi_label: bool,
    max_candidates: int,
    keep_cls: Tensor | None = None,
    window: Tensor | None = None,
):
    """One image's ``(N, 5 + C)`` -> (box indices, labels, scores) of the at most
    ``max_candidates`` best (box, class) pairs with ``score > conf_thresh``; with ``keep_cls``
    (bool ``(C,)``) only pairs of those classes (multi-label) or boxes whose best class is one
    of them (best-class mode, as ultralytics' ``classes=``); with ``window`` (``[x1, y1, x2,
    y2]``) only boxes overlapping it."""
    num_classes = pred.shape[1] - 5
    box_idx = (pred[:, 4] > conf_thresh).nonzero().squeeze(1)  # score <= objectness
    if window is not None:
        xyxy = cxcywh_to_xyxy(pred[box_idx, :4])
        w = window.to(xyxy)
        inside = (torch.minimum(xyxy[:, 2], w[2]) > torch.maximum(xyxy[:, 0], w[0])) & (
            torch.minimum(xyxy[:, 3], w[3]) > torch.maximum(xyxy[:, 1], w[1])
        )
        box_idx = box_idx[inside]
    scores = pred[box_idx, 4:5] * pred[box_idx, 5:]  # (M, C)
    if keep_cls is not None and multi_label:
        scores = scores * keep_cls.to(scores.dtype)
    best, best_label = scores.max(dim=1)
    if keep_cls is not None and not multi_label:
        wanted = keep_cls[best_label]
        box_idx, scores, best, best_label = (
            box_idx[wanted],
            scores[wanted],
            best[wanted],
            best_label[wanted],
        )
    if box_idx.shape[0] > max_candidates:
        # the top pairs all lie in the boxes with the top best-class scores
        best, top = best.topk(max_candidates)
        box_idx, scores, best_label = box_idx[top], scores[top], best_label[top]
    if multi_label:
        flat = scores.flatten()
        if flat.shape[0] > max_candidates:
            flat, pair = flat.topk(max_candidates)
        else:
            pair = torch.arange(flat.shape[0], device=flat.device)
        box_idx, labels, cand = box_idx[pair // num_classes], pair % num_classes, flat
    else:
        labels, cand = best_label, best
    ok = cand > conf_thresh
    return box_idx[ok], labels[ok], cand[ok]


def _class_mask(
    classes: Sequence[int] | Tensor | None, num_classes: int, device: torch.device
) -> Tensor | None:
    """``(C,)`` bool: the ``classes`` (indices) kept; ``None`` when all are. :class:`ValueError`
    for an index outside ``[0, num_classes)``."""
    if classes is None:
        return None
    wanted = torch.as_tensor(classes, dtype=torch.long, device=device)
    if ((wanted < 0) | (wanted >= num_classes)).any():
        raise ValueError(f"classes must be indices in [0, {num_classes}), got {wanted.tolist()}")
    keep_cls = torch.zeros(num_classes, dtype=torch.bool, device=device)
    keep_cls[wanted] = True
    return keep_cls


def postprocess(
    predictions: Tensor,
    image_size: tuple[int, int],
    conf_thresh: float = CONF_THRESH,
    iou_thresh: float = NMS_THRESH,
    multi_label: bool = True,
    nms_kind: str = "iou",
    beta: float = DIOU_BETA,
    max_candidates: int = MAX_CANDIDATES,
    max_det: int = MAX_DET,
    classes: Sequence[int] | Tensor | None = None,
    windows: Tensor | None = None,
    agnostic_nms: bool = False,
) -> list[Tensor]:
    """``predictions (B, N, 5 + C)`` from :func:`yolov4.ops.decode` -> list of ``B`` tensors
    ``(K_i, 6)`` ``[x1, y1, x2, y2, score, class_index]`` in input pixels, by decreasing score.

    ``score = objectness * class_prob``; candidates need ``score > conf_thresh``. With
    ``multi_label`` (darknet) every class above the threshold is a candidate of its own,
    otherwise only each box's best class. At most ``max_candidates`` best candidates per image
    enter NMS (``nms_kind``: ``"iou"`` torchvision's, ``"diou"`` darknet's greedynms; per class,
    or over all classes with ``agnostic_nms``), at most ``max_det`` leave it. Boxes are clipped
    to ``image_size = (H, W)`` after NMS (darknet suppresses on the unclipped boxes). An image
    without detections gives a ``(0, 6)`` tensor. Same dtype and device as ``predictions``;
    class indices are stored as floats.

    ``classes`` (indices) keeps only those classes, before the candidate cap and NMS, so that
    ``max_det`` counts wanted detections only and other classes never suppress them.
    ``windows`` ``(B, 4)`` (:func:`yolov4.ops.letterbox.image_windows`: where each image lies
    inside the letterbox padding) keeps only boxes overlapping it, before the candidate cap: a
    box wholly in the padding is dropped when mapped back, so it must neither take a
    ``max_det`` place nor suppress a box of the image that it overlaps.
    """
    if nms_kind not in NMS_KINDS:
        raise ValueError(f"nms_kind must be one of {NMS_KINDS}, got {nms_kind!r}")
    keep_cls = _class_mask(classes, predictions.shape[-1] - 5, predictions.device)
    h, w = image_size
    # DIoU's distance term is computed in coordinates relative to the image, as darknet does
    norm = predictions.new_tensor([w, h, w, h])
    out = []
    for b in range(predictions.shape[0]):
        box_idx, labels, cand = _candidates(
            predictions[b],
            conf_thresh,
            multi_label,
            max_candidates,
            keep_cls,
            None if windows is None else windows[b],
        )
        boxes = cxcywh_to_xyxy(predictions[b, box_idx, :4])
        keep = nms(boxes / norm, cand, labels, iou_thresh, nms_kind, beta, agnostic_nms)
        keep = keep[:max_det]
        x = boxes[keep, 0::2].clamp(0, w)
        y = boxes[keep, 1::2].clamp(0, h)
        det = torch.stack(
            (x[:, 0], y[:, 0], x[:, 1], y[:, 1], cand[keep], labels[keep].to(cand.dtype)), 1
        )
        out.append(det)
    return out
