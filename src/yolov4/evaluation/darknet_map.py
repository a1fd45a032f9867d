"""darknet's own ``detector map`` report, computed from the detections COCOeval scored.

``./darknet detector map`` (``validate_detector_map`` in AlexeyAB/darknet ``src/detector.c``)
prints per class the AP at IoU 0.5 and the TP / FP at a confidence threshold, then overall
precision, recall, F1, TP / FP / FN and the average IoU at that threshold. This module gives the
same numbers on ``(coco_gt, results)`` so that a user can compare a model here with a darknet run,
and see beside them COCOeval's AP50, which differs because darknet, unlike COCOeval:

- matches with ``IoU > iou`` (COCOeval: ``>=``); each detection takes its same-class box of
  highest IoU whether or not a higher-scored detection took it already (then it is a false
  positive: it never falls back on another free box, as COCOeval does);
- sorts the detections of all classes and images once by score and counts a box as found by the
  first detection of that order that points at it;
- knows no crowd boxes (they are ordinary ground truth here), no object sizes and no
  100-detections-per-image cap;
- interpolates with ``points`` (``-points``): 0 = the area under the precision envelope at each
  recall step (darknet's default, for ``detector map`` and for ``train -map``; as darknet since
  its July 2020 fix, the step of the single highest-scored detection of all included), 11 =
  PASCAL VOC 2007, 101 = the recall points of COCO;
- averages the AP over every class, also those without ground truth (AP 0; COCOeval leaves them
  out).

TP / FP at ``thresh`` count detections with ``score > thresh`` in each image's detection order: a
detection matched to a box that an earlier detection of the image (at any score) also points at
is a false positive. The average IoU is the sum of the TPs' IoUs over TP + FP.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

from yolov4.evaluation.analysis import _xyxy, gt_index
from yolov4.evaluation.analysis_config import DARKNET_POINT_CHOICES, AnalysisConfig, ap_label

__all__ = [
    "DarknetMap",
    "darknet_map",
    "ap_from_ranks",
    "DARKNET_THRESH",
    "DARKNET_IOU",
    "DARKNET_POINTS",
]

DARKNET_THRESH = AnalysisConfig.darknet_thresh  # `detector map -thresh` default
DARKNET_IOU = 0.5  # `-iou_thresh` default
DARKNET_POINTS = AnalysisConfig.darknet_points  # `-points` default: area under the curve
POINTS = DARKNET_POINT_CHOICES


def ap_from_ranks(
    ranks: np.ndarray, precision: np.ndarray, recall: np.ndarray, points: int
) -> float:
    """darknet's AP of one class from its detections' places in the all-class score order.

    ``ranks (m,)`` ascending global ranks of the class's detections, ``precision (m,)`` and
    ``recall (m,)`` after each of them. Between its detections a class's precision and recall
    stay as they were (0 and 0 before its first), so darknet's loop over every rank reduces to
    these ``m`` points."""
    if not len(ranks):
        return 0.0
    suffix_max = np.maximum.accumulate(precision[::-1])[::-1]  # max precision at ranks >= j
    if points == 0:
        prev_p = np.concatenate([[0.0], precision[:-1]])
        prev_r = np.concatenate([[0.0], recall[:-1]])
        # the step into rank k is counted with the envelope from rank k - 1 on; a step at global
        # rank 0 is darknet's "remaining area" (recall at rank 0 times the whole envelope)
        env = np.maximum(prev_p, suffix_max)
        return float(np.sum((recall - prev_r) * env))
    grid = np.arange(points, dtype=np.float64) / (points - 1)
    first = np.searchsorted(recall, grid, side="left")  # recall is non-decreasing
    values = np.where(first < len(recall), suffix_max[np.minimum(first, len(recall) - 1)], 0.0)
    return float(values.sum() / points)


@dataclass(frozen=True)
class DarknetMap:
    """darknet's ``detector map`` numbers.

    Attributes:
        names: class names in ``sorted(category ids)`` order.
        thresh, iou, points: the ``-thresh``, ``-iou_thresh`` and ``-points`` they are at.
        per_class: ``{name: {"AP50", "TP", "FP", "FN", "precision", "recall", "F1",
            "avg_iou", "num_gt", "num_detections"}}``.
        all: ``{"TP", "FP", "FN", "precision", "recall", "F1", "avg_iou", "num_gt",
            "num_detections"}`` over every class.
        mAP50: the mean AP over every class (darknet's ``mean average precision``).
    """

    names: list[str]
    thresh: float
    iou: float
    points: int
    per_class: dict[str, dict[str, float]] = field(repr=False)
    all: dict[str, float] = field(repr=False)
    mAP50: float = 0.0

    def to_dict(self, coco_ap50: dict[str, float | None] | None = None, coco_map50=None) -> dict:
        """``darknet_map.json``; ``coco_ap50`` (per class) and ``coco_map50``: COCOeval's AP50
        written beside darknet's."""
        per_class = {n: dict(v) for n, v in self.per_class.items()}
        if coco_ap50 is not None:
            for name, v in per_class.items():
                ap = coco_ap50.get(name)
                v["coco_AP50"] = None if ap is None else float(ap)  # None: no ground truth
        return {
            "thresh": self.thresh,
            "iou": self.iou,
            "points": self.points,
            "mAP50": self.mAP50,
            "coco_mAP50": None if coco_map50 is None else float(coco_map50),
            "all": dict(self.all),
            "per_class": per_class,
        }

    def table(self, coco_ap50: dict[str, float | None] | None = None, coco_map50=None) -> str:
        """darknet's printout as a table, COCOeval's AP at the same IoU beside (when given)."""
        width = max([len(n) for n in self.names] + [5])
        how = f"{self.points} recall points" if self.points else "area under the curve"
        ap = ap_label(self.iou)
        lines = [
            f"darknet detector map: IoU > {self.iou:g}, {how}; TP/FP/FN at conf > {self.thresh:g}",
            f"{'class':<{width}}  {ap:>6}  {'COCO':>6}  {'TP':>5}  {'FP':>5}  {'FN':>5}"
            f"  {'prec':>5}  {'rec':>5}  {'F1':>5}  {'avgIoU':>6}",
        ]
        for name in self.names:
            v = self.per_class[name]
            known = coco_ap50 and coco_ap50.get(name) is not None
            coco = f"{coco_ap50[name]:6.3f}" if known else f"{'-':>6}"
            lines.append(
                f"{name:<{width}}  {v['AP50']:6.3f}  {coco}  {v['TP']:5d}  {v['FP']:5d}  "
                f"{v['FN']:5d}  {v['precision']:5.2f}  {v['recall']:5.2f}  {v['F1']:5.2f}  "
                f"{100 * v['avg_iou']:5.2f}%"
            )
        a = self.all
        lines.append(
            f"for conf_thresh = {self.thresh:.2f}, precision = {a['precision']:.2f}, recall = "
            f"{a['recall']:.2f}, F1-score = {a['F1']:.2f}; TP = {a['TP']}, FP = {a['FP']}, "
            f"FN = {a['FN']}, average IoU = {100 * a['avg_iou']:.2f} %"
        )
        coco = "" if coco_map50 is None else f"; COCOeval {ap} = {coco_map50:.4f}"
        lines.append(f"mean average precision (mAP@{self.iou:.2f}) = {self.mAP50:.4f}{coco}")
        return "\n".join(lines)


def _prf(tp: int, fp: int, fn: int, iou_sum: float) -> dict[str, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {
        "TP": int(tp),
        "FP": int(fp),
        "FN": int(fn),
        "precision": p,
        "recall": r,
        "F1": 2 * p * r / (p + r) if p + r else 0.0,
        "avg_iou": iou_sum / (tp + fp) if tp + fp else 0.0,
    }


def darknet_map(
    coco_gt: Any,
    results: Sequence[dict[str, Any]],
    image_ids: Sequence[int] | None = None,
    thresh: float = DARKNET_THRESH,
    iou: float = DARKNET_IOU,
    points: int = DARKNET_POINTS,
    category_names: dict[int, str] | None = None,
) -> DarknetMap:
    """:class:`DarknetMap` of ``results`` (COCO results format, each image's detections in the
    order the network gave them) on ``coco_gt`` over ``image_ids`` (default: every image)."""
    if points not in POINTS:
        raise ValueError(f"darknet's -points is one of {POINTS}, got {points}")
    if not 0.0 <= thresh <= 1.0 or not 0.0 <= iou < 1.0:
        raise ValueError(
            f"darknet map needs 0 <= thresh <= 1 and 0 <= iou < 1, got {thresh}, {iou}"
        )
    cat_ids, index, names, ids = gt_index(coco_gt, image_ids, category_names)
    K = len(cat_ids)
    counts, scores, cls, truth = _match_images(coco_gt, results, ids, index, K, thresh, iou)
    truth_count, tp_thr, fp_thr, iou_thr = counts
    order = np.argsort(-scores, kind="stable")  # darknet: qsort by descending score
    per_class, aps = _per_class(names, cls[order], _first_hits(truth[order]), counts, points)
    total = _prf(
        int(tp_thr.sum()),
        int(fp_thr.sum()),
        int(truth_count.sum() - tp_thr.sum()),
        float(iou_thr.sum()),
    )
    total.update(num_gt=int(truth_count.sum()), num_detections=int(len(scores)))
    return DarknetMap(
        names=names,
        thresh=float(thresh),
        iou=float(iou),
        points=int(points),
        per_class=per_class,
        all=total,
        mAP50=float(np.mean(aps)) if aps else 0.0,
    )


def _first_hits(s_truth: np.ndarray) -> np.ndarray:
    """``(D,)`` bool: the detection is the first, in score order, to match its ground-truth box
    (``s_truth (D,)``: the matched box's index per detection in score order, -1: none)."""
    hit = np.zeros(len(s_truth), dtype=bool)
    if (s_truth >= 0).any():
        valid = np.flatnonzero(s_truth >= 0)
        _, first_at = np.unique(s_truth[valid], return_index=True)
        hit[valid[first_at]] = True
    return hit


def _per_class(
    names: Sequence[str],
    s_cls: np.ndarray,
    hit: np.ndarray,
    counts: tuple[np.ndarray, ...],
    points: int,
) -> tuple[dict[str, dict[str, float]], list[float]]:
    """Each class's AP50 (darknet's ``points`` interpolation) and its counts at the threshold
    by name, and the APs in class order. ``s_cls (D,)``, ``hit (D,)``: class and first hit of
    each detection in score order; ``counts``: ``(truth, tp, fp, iou sum)`` per class."""
    truth_count, tp_thr, fp_thr, iou_thr = counts
    per_class: dict[str, dict[str, float]] = {}
    aps = []
    for k, name in enumerate(names):
        ranks = np.flatnonzero(s_cls == k)
        ctp = np.cumsum(hit[ranks])
        n = np.arange(1, len(ranks) + 1)
        precision = ctp / n
        recall = ctp / truth_count[k] if truth_count[k] else np.zeros(len(ranks))
        ap = ap_from_ranks(ranks, precision, recall.astype(np.float64), points)
        aps.append(ap)
        fn = int(truth_count[k] - tp_thr[k])
        per_class[name] = {
            "AP50": ap,
            **_prf(int(tp_thr[k]), int(fp_thr[k]), fn, float(iou_thr[k])),
            "num_gt": int(truth_count[k]),
            "num_detections": int(len(ranks)),
        }
    return per_class, aps


def _match_images(
    coco_gt: Any,
    results: Sequence[dict[str, Any]],
    ids: Sequence[int],
    index: dict[int, int],
    K: int,
    thresh: float,
    iou: float,
) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray, np.ndarray]:
    """darknet's matching of each image of ``ids`` -> (per class: boxes, TP and FP at
    ``thresh``, IoU sum of those TP), and per detection (images in ``ids`` order): score,
    class, the box it matches (numbered over all images; -1: none)."""
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_image[int(r["image_id"])].append(r)
    truth_count = np.zeros(K, dtype=np.int64)
    tp_thr = np.zeros(K, dtype=np.int64)
    fp_thr = np.zeros(K, dtype=np.int64)
    iou_thr = np.zeros(K, dtype=np.float64)
    all_scores, all_cls, all_truth = [], [], []
    offset = 0  # darknet's unique_truth_count: boxes are numbered over all images
    for image_id in ids:
        anns = coco_gt.imgToAnns.get(image_id, [])
        gt = _xyxy([a["bbox"] for a in anns])
        gt_cls = np.array([index[a["category_id"]] for a in anns], dtype=np.int64)
        truth_count += np.bincount(gt_cls, minlength=K)
        dets = by_image.get(image_id, [])
        det = _xyxy([d["bbox"] for d in dets])
        det_cls = np.array([index[d["category_id"]] for d in dets], dtype=np.int64)
        scores = np.array([float(d["score"]) for d in dets], dtype=np.float64)
        if len(det) and len(gt):
            overlap = box_iou(torch.from_numpy(det), torch.from_numpy(gt)).numpy()
        else:
            overlap = np.zeros((len(det), len(gt)))
        ok = np.where((det_cls[:, None] == gt_cls[None]) & (overlap > iou), overlap, 0.0)
        has = ok.max(1, initial=0.0) > 0
        best = ok.argmax(1) if len(gt) else np.zeros(len(det), dtype=np.int64)  # first maximum
        truth = np.where(has, offset + best, -1)
        best_iou = np.where(has, ok.max(1, initial=0.0), 0.0)
        # at thresh: a TP unless an earlier detection of this image points at the same box
        first = np.zeros(len(det), dtype=bool)
        if has.any():
            _, first_at = np.unique(truth, return_index=True)
            first[first_at] = True
        above = scores > thresh
        tp = above & has & first
        np.add.at(tp_thr, det_cls[tp], 1)
        np.add.at(fp_thr, det_cls[above & ~tp], 1)
        np.add.at(iou_thr, det_cls[tp], best_iou[tp])
        all_scores.append(scores)
        all_cls.append(det_cls)
        all_truth.append(truth)
        offset += len(anns)

    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    cls = np.concatenate(all_cls) if all_cls else np.zeros(0, dtype=np.int64)
    truth = np.concatenate(all_truth) if all_truth else np.zeros(0, dtype=np.int64)
    return (truth_count, tp_thr, fp_thr, iou_thr), scores, cls, truth
