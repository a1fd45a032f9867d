"""Where the AP50 goes: the error breakdown of TIDE (Bolya et al., "TIDE: A General Toolbox for
Identifying Object Detection Errors", ECCV 2020), each error type as the AP50 gained by fixing it.

Detections are matched as COCOeval matches them at IoU ``tf`` (per image and class, by score,
crowd boxes ignored, the 100 highest-scored detections per image and class), and AP50 is
COCOeval's (101 recall points, the mean over the classes with ground truth), so that the AP50
before any fix is COCOeval's ``mAP50``. Each false positive gets the first type of these that
fits (IoU against the non-crowd boxes of its image; "used": matched by a true positive):

- ``localization``: its best same-class IoU is in ``[tb, tf)``;
- ``classification``: IoU ``>= tf`` with a box of another class;
- ``duplicate``: IoU ``>= tf`` with a used box of its class;
- ``background``: IoU ``< tb`` with every box (or the image has none);
- ``both``: the rest (IoU in ``[tb, tf)`` with a box of another class only);

and a box that no true positive matched is ``missed`` unless a classification or localization
error points at it while it is free. The oracle fixes, one type at a time: a classification or
localization error becomes a true positive of its box's class (the highest-scored such error of
a box; the others are dropped, as are errors pointing at a used box); duplicate, background and
both errors are dropped; a missed box is taken out of the ground truth. ``dAP50`` of a type is
the AP50 with that type fixed minus the AP50 as is (0 when negative, as TIDE), averaged over the
classes COCOeval averages (those with ground truth before any fix; one whose boxes were all
missed and taken out scores 1 when no false positive of it is left, else 0). Fixing every type at
once gives AP50 1 (every box found or taken out, no false positive left).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from yolov4.evaluation.analysis import _overlaps, _xyxy, coco_match, gt_index
from yolov4.evaluation.analysis_config import AnalysisConfig, ap_label

__all__ = ["ErrorBreakdown", "error_breakdown", "coco_ap50", "ERROR_TYPES", "TB", "TF"]

TB = AnalysisConfig.errors_tb  # TIDE's background threshold t_b (paper, section 2.2)
TF = 0.5  # TIDE's foreground threshold t_f: the IoU of AP50
MAX_DETS = 100  # COCOeval's params.maxDets[-1]: detections per image and class
RECALL_POINTS = np.linspace(0.0, 1.0, 101)  # COCOeval's params.recThrs
ERROR_TYPES = ("classification", "localization", "both", "duplicate", "background", "missed")
_CLS, _LOC, _BOTH, _DUP, _BKG = range(5)


def coco_ap50(
    cls: np.ndarray,
    score: np.ndarray,
    tp: np.ndarray,
    order_key: np.ndarray,
    num_gt: np.ndarray,
    classes: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """COCOeval's AP (101 recall points) of each class and their mean over ``classes`` (bool
    ``(K,)``; default: the classes with ground truth, as COCOeval). ``cls, score, tp (N,)`` the
    counted detections (crowd matches left out); ``order_key (N,)`` breaks score ties as
    COCOeval does (image id order, then the results' order); ``num_gt (K,)``. A class of
    ``classes`` left without ground truth (its missed boxes taken out) has AP 1 without
    detections, else 0. Returns ``(mAP, ap (K,))``, ``ap`` NaN outside ``classes``; the mAP
    is -1 when no class counts (no ground truth: COCOeval's undefined)."""
    K = len(num_gt)
    classes = num_gt > 0 if classes is None else classes
    ap = np.full(K, np.nan)
    for k in np.flatnonzero(classes):
        sel = np.flatnonzero(cls == k)
        if num_gt[k] <= 0 or not len(sel):
            ap[k] = float(num_gt[k] <= 0 and not len(sel))
            continue
        sel = sel[np.lexsort((order_key[sel], -score[sel]))]
        hits = tp[sel].astype(np.float64)
        ctp, cfp = np.cumsum(hits), np.cumsum(1 - hits)
        recall = ctp / num_gt[k]
        precision = ctp / (ctp + cfp + np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1]  # the envelope
        at = np.searchsorted(recall, RECALL_POINTS, side="left")
        ap[k] = np.where(at < len(sel), precision[np.minimum(at, len(sel) - 1)], 0).mean()
    valid = ~np.isnan(ap)
    return (float(ap[valid].mean()) if valid.any() else -1.0), ap


@dataclass(frozen=True)
class ErrorBreakdown:
    """TIDE's main errors at AP50.

    Attributes:
        names: class names in ``sorted(category ids)`` order.
        tb, tf: background and foreground IoU thresholds.
        ap50: COCOeval's mAP50 of the detections as they are.
        dap50: ``{type: AP50 gained by fixing it}`` for :data:`ERROR_TYPES`.
        counts: ``{type: number of errors}``.
        fixed_all: the AP50 with every type fixed at once (1 when there is any ground truth;
            -1, as ``ap50``, when there is none).
        per_class_dap50: ``{type: {class: AP50 gained in that class}}``.
    """

    names: list[str]
    tb: float
    tf: float
    ap50: float
    dap50: dict[str, float]
    counts: dict[str, int]
    fixed_all: float
    per_class_dap50: dict[str, dict[str, float]] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """``errors.json``."""
        return {
            "tb": self.tb,
            "tf": self.tf,
            "AP50": self.ap50,
            "dAP50": dict(self.dap50),
            "counts": dict(self.counts),
            "AP50_all_fixed": self.fixed_all,
            "per_class_dAP50": {t: dict(v) for t, v in self.per_class_dap50.items()},
        }

    def table(self) -> str:
        """The printout; its AP is at IoU ``tf`` (``AP50`` at 0.5, ``AP75`` at 0.75; the JSON
        keys say AP50 whatever ``tf``)."""
        ap = ap_label(self.tf)
        shown = f"{self.ap50:.4f}" + (" (undefined: no ground truth)" if self.ap50 < 0 else "")
        lines = [f"error breakdown (TIDE, tb {self.tb:g}, tf {self.tf:g}): {ap} {shown}"]
        lines += [
            f"  {t:<15} d{ap} {self.dap50[t]:.4f}  ({self.counts[t]} errors)" for t in ERROR_TYPES
        ]
        return "\n".join(lines)


@dataclass
class _Matched:
    """The COCO matching of every image, joined: per counted detection (each image's in score
    order) its ``cls``, ``score``, tie-break ``key``, ``tp``, error type ``err``, the box it
    points at (``target``) and whether it is that box's TIDE ``winner``; per non-crowd box its
    ``box_cls`` and whether no detection found it (``missed``); ``num_gt`` boxes per class."""

    cls: np.ndarray
    score: np.ndarray
    key: np.ndarray
    tp: np.ndarray
    err: np.ndarray
    target: np.ndarray
    box_cls: np.ndarray
    winner: np.ndarray
    missed: np.ndarray
    num_gt: np.ndarray

    def ap_with(self, fix: set[str]) -> tuple[float, np.ndarray]:
        """AP50 and per-class AP50 with the error types of ``fix`` corrected (TIDE's oracle)."""
        err, target, winner = self.err, self.target, self.winner
        c, keep, hit = self.cls.copy(), np.ones(len(self.cls), dtype=bool), self.tp.copy()
        for name, code in (("classification", _CLS), ("localization", _LOC)):
            if name in fix:
                sel = err == code
                keep &= ~sel | winner
                promote = sel & winner
                hit |= promote
                c[promote] = self.box_cls[target[promote]]
        for name, code in (("both", _BOTH), ("duplicate", _DUP), ("background", _BKG)):
            if name in fix:
                keep &= err != code
        n_gt = self.num_gt.copy()
        if "missed" in fix:
            n_gt -= np.bincount(self.box_cls[self.missed], minlength=len(self.num_gt))
        return coco_ap50(
            c[keep], self.score[keep], hit[keep], self.key[keep], n_gt, self.num_gt > 0
        )


def _joined(
    parts: dict[str, list[np.ndarray]],
    box_parts: dict[str, list[np.ndarray]],
    num_gt: np.ndarray,
) -> _Matched:
    """:func:`_match_images`' per-image parts joined, with TIDE's best matches."""

    def joined(p: dict[str, list[np.ndarray]], name: str, dtype: Any) -> np.ndarray:
        return np.concatenate(p[name]).astype(dtype) if p[name] else np.zeros(0, dtype)

    err, target = joined(parts, "err", np.int64), joined(parts, "target", np.int64)
    score = joined(parts, "score", np.float64)
    winner, missed = _best_matches(err, target, score, joined(box_parts, "used", bool))
    return _Matched(
        cls=joined(parts, "cls", np.int64),
        score=score,
        key=joined(parts, "key", np.int64),
        tp=joined(parts, "tp", bool),
        err=err,
        target=target,
        box_cls=joined(box_parts, "cls", np.int64),
        winner=winner,
        missed=missed,
        num_gt=num_gt,
    )


def error_breakdown(
    coco_gt: Any,
    results: Sequence[dict[str, Any]],
    image_ids: Sequence[int] | None = None,
    tb: float = TB,
    tf: float = TF,
    category_names: dict[int, str] | None = None,
) -> ErrorBreakdown:
    """:class:`ErrorBreakdown` of ``results`` (COCO results format) on ``coco_gt`` over
    ``image_ids`` (default: every image)."""
    if not 0.0 <= tb < tf <= 1.0:
        raise ValueError(f"the error breakdown needs 0 <= tb < tf <= 1, got tb={tb}, tf={tf}")
    cat_ids, index, names, ids = gt_index(coco_gt, image_ids, category_names)
    K = len(cat_ids)
    matched = _joined(*_match_images(coco_gt, results, ids, index, K, tb, tf))
    ap_with = matched.ap_with
    ap50, ap_k = ap_with(set())
    dap, per_class = {}, {}
    for t in ERROR_TYPES:
        fixed, fixed_k = ap_with({t})
        dap[t] = max(fixed - ap50, 0.0)
        per_class[t] = {
            n: float(max(np.nan_to_num(fixed_k[k]) - np.nan_to_num(ap_k[k]), 0.0))
            for k, n in enumerate(names)
        }
    counts = {t: int((matched.err == code).sum()) for t, code in zip(ERROR_TYPES, range(5))}
    counts["missed"] = int(matched.missed.sum())
    return ErrorBreakdown(
        names=names,
        tb=float(tb),
        tf=float(tf),
        ap50=ap50,
        dap50=dap,
        counts=counts,
        fixed_all=ap_with(set(ERROR_TYPES))[0],
        per_class_dap50=per_class,
    )


def _match_image(
    anns: list[dict[str, Any]],
    rows: np.ndarray,
    results: Sequence[dict[str, Any]],
    index: dict[int, int],
    tb: float,
    tf: float,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """COCO matching of one image (ground truth ``anns``, detections ``results[rows]``) -> per
    counted detection, in score order, its ``cls``, ``score``, ``row``, ``tp``, error type
    ``err`` (-1: none) and the ``target`` box it points at (among the image's non-crowd boxes;
    -1: none); per non-crowd box its ``cls`` and whether a TP ``used`` it."""
    gt = _xyxy([a["bbox"] for a in anns])
    gt_cls = np.array([index[a["category_id"]] for a in anns], dtype=np.int64)
    crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
    det_cls = np.array([index[results[n]["category_id"]] for n in rows], dtype=np.int64)
    scores = np.array([float(results[n]["score"]) for n in rows], dtype=np.float64)
    # COCOeval keeps the MAX_DETS highest-scored detections per image and class
    order = np.argsort(-scores, kind="stable")
    rank = np.zeros(len(rows), dtype=np.int64)
    for k in np.unique(det_cls):
        of_k = order[det_cls[order] == k]
        rank[of_k] = np.arange(len(of_k))
    keep = rank < MAX_DETS
    rows, det_cls, scores = rows[keep], det_cls[keep], scores[keep]
    order = np.argsort(-scores, kind="stable")
    det = _xyxy([results[n]["bbox"] for n in rows])
    overlap = _overlaps(det, gt, crowd)
    status, taken_by = coco_match(overlap, det_cls, gt_cls, crowd, order, tf)

    regular = np.flatnonzero(~crowd)
    used = taken_by[regular] >= 0
    err = np.full(len(rows), -1, dtype=np.int64)
    target = np.full(len(rows), -1, dtype=np.int64)
    fp = status == 0
    if fp.any():
        err[fp], target[fp] = _classify(
            overlap[fp][:, regular],  # plain IoU with the non-crowd boxes
            det_cls[fp, None] == gt_cls[None, regular],
            used,
            tb,
            tf,
        )
    sel = order[status[order] >= 0]  # on a crowd box: neither TP nor FP
    detections = {
        "cls": det_cls[sel],
        "score": scores[sel],
        "row": rows[sel],
        "tp": status[sel] == 1,
        "err": err[sel],
        "target": target[sel],
    }
    return detections, {"cls": gt_cls[regular], "used": used}


def _match_images(
    coco_gt: Any,
    results: Sequence[dict[str, Any]],
    ids: Sequence[int],
    index: dict[int, int],
    K: int,
    tb: float,
    tf: float,
) -> tuple[dict[str, list[np.ndarray]], dict[str, list[np.ndarray]], np.ndarray]:
    """COCO matching of each image of ``ids`` -> per counted detection (each image's in score
    order) its class, score, tie-break key, TP, error type (-1: none), and the box it points
    at (-1: none); per non-crowd box its class and whether a TP took it; boxes per class."""
    by_image: dict[int, list[int]] = defaultdict(list)
    for n, r in enumerate(results):
        by_image[int(r["image_id"])].append(n)

    # per counted detection (each image's in score order): class, score, tie-break key, TP,
    # error type (-1: none), the box it points at (-1: none)
    parts: dict[str, list[np.ndarray]] = defaultdict(list)
    num_gt = np.zeros(K, dtype=np.int64)
    boxes = 0  # non-crowd boxes so far: their numbers over the images
    box_parts: dict[str, list[np.ndarray]] = defaultdict(list)
    for image_pos, image_id in enumerate(ids):
        rows = np.array(by_image.get(image_id, []), dtype=np.int64)
        dets, gts = _match_image(coco_gt.imgToAnns.get(image_id, []), rows, results, index, tb, tf)
        box_parts["cls"].append(gts["cls"])
        box_parts["used"].append(gts["used"])
        num_gt += np.bincount(gts["cls"], minlength=K)
        parts["cls"].append(dets["cls"])
        parts["score"].append(dets["score"])
        parts["key"].append(image_pos * (len(results) + 1) + dets["row"])
        parts["tp"].append(dets["tp"])
        parts["err"].append(dets["err"])
        parts["target"].append(np.where(dets["target"] >= 0, boxes + dets["target"], -1))
        boxes += len(gts["cls"])
    return parts, box_parts, num_gt


def _best_matches(
    err: np.ndarray, target: np.ndarray, score: np.ndarray, box_used: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """TIDE's best match: a free box pointed at by classification / localization errors is
    fixed by the highest-scored of them (the first in its image's score order on ties) ->
    (per detection: it is that one, per box: missed, i.e. neither taken nor fixable)."""
    cand = np.flatnonzero(np.isin(err, (_CLS, _LOC)) & (target >= 0))
    cand = cand[~box_used[target[cand]]]
    cand = cand[np.lexsort((cand, -score[cand], target[cand]))]
    first = np.ones(len(cand), dtype=bool)
    first[1:] = target[cand][1:] != target[cand][:-1]
    winner = np.zeros(len(err), dtype=bool)
    winner[cand[first]] = True
    usable = np.zeros(len(box_used), dtype=bool)
    usable[target[cand]] = True
    return winner, ~box_used & ~usable


def _classify(
    iou: np.ndarray, same: np.ndarray, used: np.ndarray, tb: float, tf: float
) -> tuple[np.ndarray, np.ndarray]:
    """The error type of each false positive of one image and the box it points at (-1: none),
    from their ``iou (F, G)`` with the image's non-crowd boxes, ``same (F, G)`` (the box is of
    the detection's class) and ``used (G,)`` (matched by a true positive)."""
    F = len(iou)
    if not iou.shape[1]:
        return np.full(F, _BKG), np.full(F, -1)
    rows = np.arange(F)
    same_iou = np.where(same, iou, 0.0)
    g_loc = same_iou.argmax(1)
    m_loc = same_iou[rows, g_loc]
    other = np.where(same, 0.0, iou)
    g_cls = other.argmax(1)
    loc = (m_loc >= tb) & (m_loc > 0) & (m_loc < tf)
    cls = ~loc & (other[rows, g_cls] >= tf)
    dup = ~loc & ~cls & (np.where(same & used[None], iou, 0.0).max(1) >= tf)
    bkg = ~loc & ~cls & ~dup & (iou.max(1) < tb)
    err = np.select([loc, cls, dup, bkg], [_LOC, _CLS, _DUP, _BKG], _BOTH)
    return err, np.select([loc, cls], [g_loc, g_cls], -1)
