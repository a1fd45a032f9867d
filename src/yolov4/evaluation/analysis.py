"""What the mAP hides: a confusion matrix and precision / recall / F1 against confidence.

Pure computation on what :func:`yolov4.evaluation.evaluate_coco` scores: the COCO ground truth
and the detections in COCO results format (``bbox`` xywh in original pixels, original
``category_id``, ``score``). Classes are indexed in ``sorted(coco_gt.getCatIds())`` order, as
``EvaluationResult.per_class`` is.

Matching is COCOeval's at one IoU threshold, per image and class: detections greedily by score
(highest first), each takes the unmatched ground truth box of its class with the highest IoU
(``torchvision.ops.box_iou``) at or above the threshold. Crowd boxes (``iscrowd=1``) are as
COCO treats them: a detection is tried against them only when no regular box matches, the
overlap is the intersection over the detection's area, a crowd box may absorb many detections,
and a detection so matched is ignored (neither TP nor FP); crowd boxes are never missed (FN).
Because the matching is greedy by score, the matches of the detections at or above any
confidence are those of the full matching restricted to them: one matching gives every
threshold.

The confusion matrix (rows: ground truth, columns: prediction, each over the classes then
``background``) at ``conf`` then adds, for the detections left unmatched, a class-agnostic
greedy pass over the ground truth left unmatched: a hit at the IoU threshold is a class
confusion (off the diagonal), the rest are background detections (last row, FP) and the ground
truth still left is missed (last column, FN). So per class ``TP`` is the diagonal, ``FP`` the
rest of the column and ``FN`` the rest of the row, exactly COCOeval's TP / FP / FN at ``conf``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torchvision.ops import box_iou

from yolov4.evaluation.analysis_config import AnalysisConfig

__all__ = ["DetectionAnalysis", "analyze_detections", "CONF", "IOU"]

CONF = AnalysisConfig.conf  # the serving threshold of the confusion matrix
IOU = AnalysisConfig.iou
BACKGROUND = "background"


def _xyxy(xywh: Sequence[Sequence[float]]) -> np.ndarray:
    b = np.asarray(xywh, dtype=np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def _overlaps(det: np.ndarray, gt: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """``(D, G)``: IoU, and for crowd columns the intersection over the detection's area."""
    if not len(det) or not len(gt):
        return np.zeros((len(det), len(gt)))
    iou = box_iou(torch.from_numpy(det), torch.from_numpy(gt)).numpy()
    if crowd.any():
        lt = np.maximum(det[:, None, :2], gt[None, crowd, :2])
        rb = np.minimum(det[:, None, 2:], gt[None, crowd, 2:])
        inter = np.clip(rb - lt, 0, None).prod(-1)
        area = np.clip(det[:, 2:] - det[:, :2], 0, None).prod(-1)
        iou[:, crowd] = inter / np.maximum(area, 1e-12)[:, None]
    return iou


def coco_match(
    overlap: np.ndarray,
    det_cls: np.ndarray,
    gt_cls: np.ndarray,
    crowd: np.ndarray,
    order: np.ndarray,
    iou: float,
) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval's matching in one image at one IoU threshold, per class.

    ``overlap (D, G)`` from :func:`_overlaps`; ``det_cls (D,)``, ``gt_cls (G,)`` class indices;
    ``crowd (G,)`` bool; ``order``: the detections by descending score. Returns ``status (D,)``
    int8 (1 TP, 0 FP, -1 ignored: on a crowd box) and ``taken_by (G,)`` (the detection that
    matched each box, -1 for none)."""
    status = np.zeros(len(det_cls), dtype=np.int8)
    taken_by = np.full(len(gt_cls), -1, dtype=np.int64)
    if not len(gt_cls) or not len(det_cls):
        return status, taken_by
    reach = (det_cls[:, None] == gt_cls[None, :]) & (overlap >= iou)  # (D, G)
    # a detection that reaches no box is a false positive whatever came before it: only the
    # others need the greedy pass (most detections at a low conf reach none)
    for d in order[reach[order].any(1)]:
        same = reach[d]
        free = same & ~crowd & (taken_by < 0)
        if free.any():
            g = int(np.argmax(np.where(free, overlap[d], -1.0)))
            taken_by[g], status[d] = d, 1
        elif (same & crowd).any():
            status[d] = -1
    return status, taken_by


def _curves(scores: np.ndarray, tp: np.ndarray, num_gt: int, grid: np.ndarray) -> dict[str, Any]:
    """Precision, recall and F1 of the detections with score >= each ``grid`` value, and the
    threshold (one of the scores) that maximises F1 (the highest such on ties)."""
    order = np.argsort(-scores, kind="stable")
    s, hit = scores[order], tp[order].astype(np.int64)
    ctp, cfp = np.cumsum(hit), np.cumsum(1 - hit)

    def prf(n: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = np.where(n > 0, ctp[np.maximum(n - 1, 0)] if len(s) else 0, 0).astype(float)
        f = np.where(n > 0, cfp[np.maximum(n - 1, 0)] if len(s) else 0, 0).astype(float)
        # no detection left: no false positive, precision 1 (the PR-curve convention)
        p = np.divide(t, t + f, out=np.ones_like(t), where=(t + f) > 0)
        r = t / num_gt if num_gt else np.zeros_like(t)
        f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(t), where=(p + r) > 0)
        return p, r, f1

    n_at = np.searchsorted(-s, -grid, side="right")  # detections with score >= t
    p, r, f1 = prf(n_at)
    best: dict[str, Any] = {"conf": None, "precision": 0.0, "recall": 0.0, "f1": 0.0}
    if len(s):
        ends = np.flatnonzero(np.append(s[1:] != s[:-1], True)) + 1  # counts at distinct scores
        bp, br, bf = prf(ends)
        if bf.max() > 0:
            i = int(np.argmax(bf))  # first maximum: the highest confidence
            best = {
                "conf": float(s[ends[i] - 1]),
                "precision": float(bp[i]),
                "recall": float(br[i]),
                "f1": float(bf[i]),
            }
    return {
        "num_gt": int(num_gt),
        "num_detections": int(len(s)),
        "precision": p.tolist(),
        "recall": r.tolist(),
        "f1": f1.tolist(),
        "best": best,
    }


@dataclass(frozen=True)
class DetectionAnalysis:
    """The confusion matrix at ``conf`` / ``iou`` and the P / R / F1 curves at ``iou``.

    Attributes:
        names: class names in ``sorted(category ids)`` order (``background`` is index ``K``).
        conf, iou: the confusion matrix's confidence and IoU thresholds.
        matrix: ``(K + 1, K + 1)`` counts, rows ground truth, columns prediction.
        confidence: the confidence grid of the curves.
        per_class_curves, overall_curves: :func:`_curves` output (``overall`` pools every class).
        per_image: ``{image_id: {"TP", "FP", "FN"}}`` at ``conf`` and ``iou`` (what the worst
            images are ranked by; ``FP`` includes class confusions, crowd matches are neither).
    """

    names: list[str]
    conf: float
    iou: float
    matrix: np.ndarray = field(repr=False)
    confidence: np.ndarray = field(repr=False)
    per_class_curves: dict[str, dict[str, Any]] = field(repr=False)
    overall_curves: dict[str, Any] = field(repr=False)
    per_image: dict[int, dict[str, int]] = field(default_factory=dict, repr=False)

    @property
    def labels(self) -> list[str]:
        return [*self.names, BACKGROUND]

    @property
    def normalized(self) -> np.ndarray:
        """Row-normalised matrix (each ground-truth row sums to 1; an empty row stays 0)."""
        rows = self.matrix.sum(1, keepdims=True).astype(float)
        return np.divide(self.matrix, rows, out=np.zeros(self.matrix.shape), where=rows > 0)

    def counts(self) -> dict[str, dict[str, int]]:
        """``{class: {"TP", "FP", "FN"}}`` at ``conf`` and ``iou``."""
        m, out = self.matrix, {}
        for k, name in enumerate(self.names):
            tp = int(m[k, k])
            out[name] = {"TP": tp, "FP": int(m[:, k].sum()) - tp, "FN": int(m[k, :].sum()) - tp}
        return out

    def confusion_dict(self) -> dict[str, Any]:
        """``confusion_matrix.json``."""
        per_class, total = {}, {"TP": 0, "FP": 0, "FN": 0}
        for name, c in self.counts().items():
            per_class[name] = {**c, **_prf(c)}
            for key in total:
                total[key] += c[key]
        return {
            "conf": self.conf,
            "iou": self.iou,
            "labels": self.labels,
            "rows": "ground truth",
            "columns": "prediction",
            "counts": self.matrix.astype(int).tolist(),
            "normalized": [[round(v, 6) for v in row] for row in self.normalized.tolist()],
            "per_class": per_class,
            "all": {**total, **_prf(total)},
        }

    def pr_f1_dict(self) -> dict[str, Any]:
        """``pr_f1.json``: the curves against ``confidence`` and the best-F1 confidences."""
        return {
            "iou": self.iou,
            "confidence": [round(v, 6) for v in self.confidence.tolist()],
            "all": self.overall_curves,
            "per_class": self.per_class_curves,
            "best_f1": {
                "all": self.overall_curves["best"],
                **{n: c["best"] for n, c in self.per_class_curves.items()},
            },
        }


def _prf(c: dict[str, int]) -> dict[str, float]:
    tp, fp, fn = c["TP"], c["FP"], c["FN"]
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def gt_index(
    coco_gt: Any, image_ids: Sequence[int] | None, category_names: dict[int, str] | None
) -> tuple[list[int], dict[int, int], list[str], list[int]]:
    """What every report indexes by: the category ids sorted (contiguous class ``k`` is
    ``cat_ids[k]``), ``{category id: k}``, the class names (``category_names`` over the names in
    ``coco_gt``) and the image ids evaluated, sorted (default: every image of ``coco_gt``)."""
    cat_ids = sorted(coco_gt.getCatIds())
    index = {c: k for k, c in enumerate(cat_ids)}
    names = [(category_names or {}).get(c, coco_gt.cats[c]["name"]) for c in cat_ids]
    ids = sorted({int(i) for i in (image_ids if image_ids is not None else coco_gt.getImgIds())})
    return cat_ids, index, names, ids


def _confusion_at(
    matrix: np.ndarray,
    overlap: np.ndarray,
    det_cls: np.ndarray,
    gt_cls: np.ndarray,
    crowd: np.ndarray,
    scores: np.ndarray,
    order: np.ndarray,
    status: np.ndarray,
    taken_by: np.ndarray,
    conf: float,
    iou: float,
) -> dict[str, int]:
    """One image's detections at ``conf`` added to the confusion ``matrix`` (its last row:
    background detections, its last column: missed boxes) -> the image's TP, FP, FN at conf."""
    K = matrix.shape[0] - 1
    keep = scores >= conf
    hits = (status == 1) & keep
    np.add.at(matrix, (det_cls[hits], det_cls[hits]), 1)
    found = taken_by >= 0
    found[found] = keep[taken_by[found]]  # matched by a detection at or above conf
    left = ~crowd & ~found
    missed = int(left.sum())  # FN at conf: the class confusions found below are FN too
    for d in order:
        if not keep[d] or status[d] != 0:
            continue
        cand = left & (overlap[d] >= iou)  # any class: a confusion
        if cand.any():
            g = int(np.argmax(np.where(cand, overlap[d], -1.0)))
            matrix[gt_cls[g], det_cls[d]] += 1
            left[g] = False
        else:
            matrix[K, det_cls[d]] += 1  # a background detection
    np.add.at(matrix, (gt_cls[left], np.full(int(left.sum()), K)), 1)  # missed
    return {
        "TP": int(hits.sum()),
        "FP": int((keep & (status == 0)).sum()),
        "FN": missed,
    }


def analyze_detections(
    coco_gt: Any,
    results: Sequence[dict[str, Any]],
    image_ids: Sequence[int] | None = None,
    conf: float = CONF,
    iou: float = IOU,
    category_names: dict[int, str] | None = None,
    points: int = 101,
) -> DetectionAnalysis:
    """The :class:`DetectionAnalysis` of ``results`` on ``coco_gt`` over ``image_ids``
    (default: every image; detections of other images are left out).

    ``points``: the size of the confidence grid ``linspace(0, 1, points)`` of the curves (the
    best-F1 confidences are exact, searched over the detections' scores)."""
    if not 0.0 <= conf <= 1.0 or not 0.0 < iou <= 1.0:
        raise ValueError(f"analysis needs 0 <= conf <= 1 and 0 < iou <= 1, got {conf}, {iou}")
    cat_ids, index, names, ids = gt_index(coco_gt, image_ids, category_names)
    K = len(cat_ids)
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        by_image[int(r["image_id"])].append(r)

    matrix = np.zeros((K + 1, K + 1), dtype=np.int64)
    per_image: dict[int, dict[str, int]] = {}
    num_gt = np.zeros(K, dtype=np.int64)
    all_scores, all_cls, all_tp = [], [], []
    for image_id in ids:
        anns = coco_gt.imgToAnns.get(image_id, [])
        gt = _xyxy([a["bbox"] for a in anns])
        gt_cls = np.array([index[a["category_id"]] for a in anns], dtype=np.int64)
        crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
        num_gt += np.bincount(gt_cls[~crowd], minlength=K)
        dets = by_image.get(image_id, [])
        det = _xyxy([d["bbox"] for d in dets])
        det_cls = np.array([index[d["category_id"]] for d in dets], dtype=np.int64)
        scores = np.array([float(d["score"]) for d in dets], dtype=np.float64)
        order = np.argsort(-scores, kind="stable")
        overlap = _overlaps(det, gt, crowd)

        status, taken_by = coco_match(overlap, det_cls, gt_cls, crowd, order, iou)
        counted = status >= 0
        all_scores.append(scores[counted])
        all_cls.append(det_cls[counted])
        all_tp.append(status[counted] == 1)

        per_image[image_id] = _confusion_at(
            matrix, overlap, det_cls, gt_cls, crowd, scores, order, status, taken_by, conf, iou
        )

    scores = np.concatenate(all_scores) if all_scores else np.zeros(0)
    cls = np.concatenate(all_cls) if all_cls else np.zeros(0, dtype=np.int64)
    tp = np.concatenate(all_tp) if all_tp else np.zeros(0, dtype=bool)
    grid = np.linspace(0.0, 1.0, points)
    per_class = {
        name: _curves(scores[cls == k], tp[cls == k], int(num_gt[k]), grid)
        for k, name in enumerate(names)
    }
    return DetectionAnalysis(
        names=names,
        conf=float(conf),
        iou=float(iou),
        matrix=matrix,
        confidence=grid,
        per_class_curves=per_class,
        overall_curves=_curves(scores, tp, int(num_gt.sum()), grid),
        per_image=per_image,
    )
