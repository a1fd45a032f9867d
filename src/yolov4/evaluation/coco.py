"""COCO mAP with pycocotools (or faster-coco-eval), right on one process or many.

Detections arrive per image in original-image pixels (``(K, 6)`` ``[x1, y1, x2, y2, score,
class_index]``, see :func:`yolov4.ops.letterbox.unmap_detections`) and are kept per image id.
Under ``torch.distributed`` every rank's images are gathered and an image seen twice (the
``DistributedSampler`` pads the last batch by repeating images) counts once, so the numbers are
the same on every rank and for any number of processes. ``COCOeval`` then runs once per rank on
those same gathered detections.

Two backends run ``COCOeval`` (:data:`COCO_BACKENDS`): ``pycocotools``, the reference and the
default, and ``faster_coco_eval`` (the faster-coco-eval package: the same algorithm with the
per-image matching and the accumulation in C++), which gives the same 12 numbers, per-class AP
and precision array up to float64 rounding (``tests/evaluation/test_coco_backends.py``) in a
fraction of the time at COCO scale (``benchmarks/coco_eval.py``).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from yolov4.evaluation.coco_checks import (
    COCO_BACKENDS,
    DEFAULT_COCO_BACKEND,
    check_category_ids,
    check_coco_backend,
    check_results,
)
from yolov4.evaluation.result import METRIC_KEYS, EvaluationResult

__all__ = [
    "COCO_BACKENDS",
    "DEFAULT_COCO_BACKEND",
    "CocoEvaluator",
    "check_category_ids",
    "check_coco_backend",
    "check_results",
    "cocoeval",
    "detections_to_coco",
    "evaluate_coco",
    "per_class_ap",
    "ap_at_iou",
]


def cocoeval(
    coco_gt: COCO,
    results: list[dict[str, Any]],
    image_ids: Sequence[int],
    backend: str = DEFAULT_COCO_BACKEND,
) -> Any:
    """The bbox ``COCOeval`` of ``backend`` over ``image_ids`` with ``results`` loaded
    (``loadRes``), ready for ``evaluate()``, ``accumulate()``, ``summarize()``; ``results`` must
    not be empty. The ``results`` dicts are left as they are (``loadRes`` adds ``segmentation``,
    ``area``, ``id`` and ``iscrowd`` to copies); faster-coco-eval indexes a copy of the ground
    truth (pycocotools, the reference, writes ``ignore`` / ``_ignore`` into ``coco_gt``'s
    annotations, as it always has)."""
    check_coco_backend(backend)
    copies = [dict(r) for r in results]
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO as FasterCOCO
        from faster_coco_eval import COCOeval_faster

        def quiet(*_: Any) -> None:
            pass

        ds = coco_gt.dataset
        gt = FasterCOCO(
            {**ds, "annotations": [dict(a) for a in ds.get("annotations", [])]},
            print_function=quiet,
        )
        ev = COCOeval_faster(gt, gt.loadRes(copies), "bbox", print_function=quiet)
    else:
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(coco_gt, coco_gt.loadRes(copies), "bbox")
    ev.params.imgIds = list(image_ids)
    return ev


def _summarize(ev: Any, backend: str) -> str:
    """Run ``ev.summarize()``; its 12-line text (faster-coco-eval prints two more lines, AR at
    IoU 0.5 and 0.75, which pycocotools does not: dropped)."""
    if backend == "faster_coco_eval":
        lines: list[str] = []
        ev.print_function = lines.append
        ev.summarize()
        return "\n".join(lines[: len(METRIC_KEYS)])
    with contextlib.redirect_stdout(io.StringIO()) as summary:
        ev.summarize()
    return summary.getvalue().rstrip()


def per_class_ap(precision: np.ndarray, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """``{name: {"AP": AP@[.5:.95], "AP50": AP@.5}}`` from COCOeval's ``(T, R, K, A, M)``
    ``precision`` (area ``all``, the largest maxDets), ``names[k]`` for class ``k``; a class
    without ground truth (precision ``-1``) gets ``None``: undefined, as COCOeval leaves it out
    of the mean (a 0 would read as a class the model misses)."""
    out = {}
    for k, name in enumerate(names):
        p_all, p50 = precision[:, :, k, 0, -1], precision[0, :, k, 0, -1]
        out[name] = {
            "AP": float(p_all[p_all > -1].mean()) if (p_all > -1).any() else None,
            "AP50": float(p50[p50 > -1].mean()) if (p50 > -1).any() else None,
        }
    return out


def ap_at_iou(
    precision: np.ndarray | None, iou: float, names: Sequence[str]
) -> tuple[dict[str, float | None], float | None] | None:
    """Per-class AP at the IoU threshold ``iou`` and their mean over classes with ground truth,
    from COCOeval's ``(T, R, K, A, M)`` ``precision`` (area ``all``, the largest maxDets);
    ``None`` when ``iou`` is not one of COCOeval's thresholds (0.5, 0.55, ..., 0.95); 0 without
    detections (no precision), as :func:`evaluate_coco` reports them."""
    thresholds = np.linspace(0.5, 0.95, 10)
    hit = np.flatnonzero(np.isclose(thresholds, iou))
    if not len(hit):
        return None
    if precision is None:  # no detections: 0, as evaluate_coco's metrics say
        return {n: 0.0 for n in names}, 0.0
    per_class: dict[str, float | None] = {}
    for k, name in enumerate(names):
        p = precision[hit[0], :, k, 0, -1]
        per_class[name] = float(p[p > -1].mean()) if (p > -1).any() else None
    every = precision[hit[0], :, :, 0, -1]  # the mean as COCOeval's summary takes it
    return per_class, (float(every[every > -1].mean()) if (every > -1).any() else None)


def detections_to_coco(
    detections: torch.Tensor | np.ndarray, image_id: int, category_ids: Sequence[int]
) -> list[dict[str, Any]]:
    """``(K, 6)`` ``[x1, y1, x2, y2, score, class_index]`` original pixels -> COCO results
    (``bbox`` xywh to 3 decimals, ``score`` to 5, the original ``category_id`` of each
    contiguous class index).

    Rounded with numpy (3x faster than Python's ``round`` per number: a third of validation's
    evaluation time with faster-coco-eval at COCO scale, ``benchmarks/coco_eval.py``). For
    float32 detections, what the network and the Predictor give, this is exactly Python's
    ``round``: a float32 value is never within float64 rounding of a half-way decimal without
    being on it, and exact ties go to even in both."""
    d = (
        detections.detach().cpu().double().numpy()
        if isinstance(detections, torch.Tensor)
        else np.asarray(detections, float)
    ).reshape(-1, 6)
    xywh = np.round(np.concatenate([d[:, :2], d[:, 2:4] - d[:, :2]], 1), 3).tolist()
    scores = np.round(d[:, 4], 5).tolist()
    cats = np.asarray(category_ids, dtype=np.int64)[d[:, 5].astype(np.int64)].tolist()
    image_id = int(image_id)
    return [
        {"image_id": image_id, "category_id": c, "bbox": b, "score": s}
        for b, s, c in zip(xywh, scores, cats, strict=True)
    ]


def evaluate_coco(
    coco_gt: COCO,
    results: list[dict[str, Any]],
    image_ids: Sequence[int] | None = None,
    category_names: dict[int, str] | None = None,
    backend: str = DEFAULT_COCO_BACKEND,
) -> EvaluationResult:
    """Run ``COCOeval`` (bbox, with ``backend``: one of :data:`COCO_BACKENDS`) on ``results``
    over ``image_ids`` (default: all images).

    Returns an :class:`EvaluationResult`: ``metrics`` by :data:`METRIC_KEYS`, ``per_class``
    (AP@[.5:.95] and AP50 per class name, in category id order), the summary text, ``results``
    and COCOeval's ``(T, R, K, A, M)`` ``precision``, K in ``sorted(coco_gt.getCatIds())`` order.
    Without any detection (which COCOeval cannot load) the numbers are COCOeval's for none: 0
    where the ground truth has boxes, -1 (``None`` per class) where it has none (and so -1 for
    ``image_ids=[]``: no image, no ground truth). ``category_names`` defaults to the names in
    ``coco_gt``. A result or image id that does not fit ``coco_gt`` is an :class:`InputError`
    (:func:`check_results`).
    """
    check_coco_backend(backend)
    ids = sorted(set(int(i) for i in (image_ids if image_ids is not None else coco_gt.getImgIds())))
    check_results(coco_gt, results, ids)
    cat_ids = sorted(coco_gt.getCatIds())
    names = [(category_names or {}).get(c, coco_gt.cats[c]["name"]) for c in cat_ids]
    if not results:
        precision, metrics = _without_detections(coco_gt, ids, cat_ids)
        return EvaluationResult(
            metrics=metrics,
            per_class=per_class_ap(precision, names),
            num_images=len(ids),
            summary="no detections: AP and AR are 0 where the ground truth has boxes, -1 where "
            "it has none",
            results=[],
            precision=precision,
            image_ids=tuple(ids),
        )
    ev = cocoeval(coco_gt, results, ids, backend)
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    summary = _summarize(ev, backend)
    # (T iou thresholds, R recall points, K classes, A areas, M maxdets)
    precision = ev.eval["precision"]
    return EvaluationResult(
        metrics={k: float(v) for k, v in zip(METRIC_KEYS, ev.stats, strict=True)},
        per_class=per_class_ap(precision, names),
        num_images=len(ids),
        summary=summary,
        results=results,
        precision=precision,
        image_ids=tuple(ids),
    )


# COCOeval's area ranges (all, small, medium, large), px², and its iouThrs / recThrs / maxDets
_AREAS = ((0.0, 1e10), (0.0, 32.0**2), (32.0**2, 96.0**2), (96.0**2, 1e10))
_T, _R, _M = 10, 101, 3


def _without_detections(
    coco_gt: COCO, ids: Sequence[int], cat_ids: Sequence[int]
) -> tuple[np.ndarray, dict[str, float]]:
    """COCOeval's ``precision`` and stats for no detections: per class and area range 0 where
    some ground truth box counts (not crowd, not ``ignore``, area in the range), else -1."""
    counted = np.zeros((len(cat_ids), len(_AREAS)), bool)
    k_of = {c: k for k, c in enumerate(cat_ids)}
    anns = [a for i in ids for a in coco_gt.imgToAnns.get(i, [])]  # getAnnIds reads [] as all
    for ann in anns:
        if ann.get("iscrowd", 0) or ann.get("ignore", 0) or ann["category_id"] not in k_of:
            continue
        for a, (lo, hi) in enumerate(_AREAS):
            area = ann.get("area", ann["bbox"][2] * ann["bbox"][3])
            counted[k_of[ann["category_id"]], a] |= lo <= area <= hi
    value = np.where(counted, 0.0, -1.0)  # (K, A)
    precision = np.broadcast_to(value[None, None, :, :, None], (_T, _R, *value.shape, _M)).copy()

    def stat(area: int) -> float:
        return 0.0 if counted[:, area].any() else -1.0

    every = stat(0)
    aps = [every, every, every, stat(1), stat(2), stat(3)]
    ars = [every, every, every, stat(1), stat(2), stat(3)]
    return precision, dict(zip(METRIC_KEYS, aps + ars, strict=True))


class CocoEvaluator:
    """Accumulates detections per image over an epoch, gathers them across ranks, evaluates.

    Args:
        coco_gt: the ground truth (``DataModule.val_coco``).
        category_ids: ``category_ids[class_index]`` = original COCO category id, each a
            category of ``coco_gt`` (:func:`check_category_ids`).
        class_names: names for the per-class table (default: from ``coco_gt``).
        backend: what runs COCOeval, one of :data:`COCO_BACKENDS` (checked here, at start-up).
    """

    def __init__(
        self,
        coco_gt: COCO,
        category_ids: Sequence[int],
        class_names: Sequence[str] | None = None,
        backend: str = DEFAULT_COCO_BACKEND,
    ):
        self.backend = check_coco_backend(backend)
        self.coco_gt = coco_gt
        self.category_ids = check_category_ids(coco_gt, category_ids)
        self.category_names = dict(zip(self.category_ids, class_names)) if class_names else None
        self.per_image: dict[int, list[dict[str, Any]]] = {}

    def reset(self) -> None:
        self.per_image = {}

    def update(
        self, detections: Sequence[torch.Tensor], image_ids: Sequence[int] | torch.Tensor
    ) -> None:
        """``detections[i]``: ``(K_i, 6)`` in original pixels for image ``image_ids[i]``."""
        ids = image_ids.tolist() if isinstance(image_ids, torch.Tensor) else list(image_ids)
        for det, image_id in zip(detections, ids, strict=True):
            # an image seen again (sampler padding) keeps its first detections
            self.per_image.setdefault(
                int(image_id), detections_to_coco(det, int(image_id), self.category_ids)
            )

    def gather(self) -> dict[int, list[dict[str, Any]]]:
        """Every rank's images, duplicates removed by image id (identical on every rank)."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return dict(self.per_image)
        parts: list[dict[int, list[dict[str, Any]]] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, self.per_image)
        merged: dict[int, list[dict[str, Any]]] = {}
        for part in parts:
            for image_id, dets in (part or {}).items():
                merged.setdefault(image_id, dets)
        return merged

    def compute(self) -> EvaluationResult:
        """The :class:`EvaluationResult` over the gathered images (identical on every rank)."""
        per_image = self.gather()
        results = [r for image_id in sorted(per_image) for r in per_image[image_id]]
        return evaluate_coco(
            self.coco_gt, results, list(per_image), self.category_names, self.backend
        )
