"""The report files of one evaluation, written by ``evaluate.py`` and at the end of training.

:func:`write_reports`: ``metrics.json`` (:meth:`EvaluationResult.to_dict`), ``detections.json``
(COCO results, original category ids, ``COCO.loadRes``-ready), ``pr_curve.png`` and the
analysis of :func:`write_analysis` at :class:`AnalysisConfig` (``analysis.*``):
``confusion_matrix.json`` / ``.png`` (classes + background, counts and row-normalised, per-class
TP / FP / FN), ``pr_f1.json`` / ``.png`` (precision, recall and F1 against confidence, the
best-F1 confidence overall and per class), ``darknet_map.json`` (darknet's ``detector map``
report beside COCOeval's AP50), ``errors.json`` / ``.png`` (the TIDE-style breakdown of the
missed AP50) and ``worst_images.json`` / ``.png`` (the images with most FP + FN at
``analysis.conf``, drawn). ``analysis.plots=false`` leaves every ``.png`` out.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from yolov4.core.files import write_json
from yolov4.evaluation.analysis import DetectionAnalysis, analyze_detections
from yolov4.evaluation.analysis_config import AnalysisConfig
from yolov4.evaluation.coco import ap_at_iou
from yolov4.evaluation.darknet_map import darknet_map
from yolov4.evaluation.plots import plot_confusion_matrix, plot_errors, plot_pr_curves, plot_pr_f1
from yolov4.evaluation.result import METRICS_FILE, EvaluationResult
from yolov4.evaluation.tide import error_breakdown
from yolov4.evaluation.worst import worst_gallery, worst_images, write_png

__all__ = [
    "write_analysis",
    "write_reports",
    "per_class_table",
    "DETECTIONS_FILE",
    "PR_CURVE_FILE",
    "CONFUSION_FILE",
    "PR_F1_FILE",
    "DARKNET_MAP_FILE",
    "ERRORS_FILE",
    "WORST_IMAGES_FILE",
]

log = logging.getLogger(__name__)

DETECTIONS_FILE = "detections.json"
PR_CURVE_FILE = "pr_curve.png"
CONFUSION_FILE = "confusion_matrix"  # .json and .png
PR_F1_FILE = "pr_f1"  # .json and .png
DARKNET_MAP_FILE = "darknet_map.json"
ERRORS_FILE = "errors"  # .json and .png
WORST_IMAGES_FILE = "worst_images"  # .json and .png


def per_class_table(per_class: dict[str, dict[str, float]]) -> str:
    width = max([len(n) for n in per_class] + [5])
    lines = [f"{'class':<{width}}  {'AP':>6}  {'AP50':>6}"]
    lines += [f"{n:<{width}}  {_ap(v['AP'])}  {_ap(v['AP50'])}" for n, v in per_class.items()]
    if any(v["AP"] is None for v in per_class.values()):
        lines.append("n/a: no ground-truth box of the class in these images (not in the mean)")
    return "\n".join(lines)


def _ap(value: float | None) -> str:
    return f"{'n/a':>6}" if value is None else f"{value:6.3f}"


def write_analysis(
    out: Path,
    coco_gt: Any,
    result: EvaluationResult,
    settings: AnalysisConfig | Mapping[str, Any] | None = None,
    image_files: dict[int, str] | None = None,
    read_image: Callable[[int], np.ndarray | None] | None = None,
) -> DetectionAnalysis:
    """The analysis files in ``out``, from the detections and images of ``result`` on
    ``coco_gt``: ``confusion_matrix.json`` / ``.png``, ``pr_f1.json`` / ``.png``,
    ``darknet_map.json``, ``errors.json`` / ``.png``, ``worst_images.json`` / ``.png``.

    ``settings``: an :class:`AnalysisConfig` or ``analysis.*`` (missing keys at its defaults).
    ``image_files``: ``{image_id: path}`` named by ``worst_images.json`` and, without
    ``read_image``, read by the gallery (default: the ground truth's ``file_name``).
    ``read_image(image_id)``: the image as validation read it, for the gallery (a DataModule's
    ``val_image``; :func:`~yolov4.evaluation.worst.worst_gallery`). Call it on one process:
    under DDP ``result`` already holds every rank's detections, deduplicated."""
    cfg = AnalysisConfig.from_config(settings)
    out = Path(out)
    cat_ids = sorted(coco_gt.getCatIds())
    names = dict(zip(cat_ids, result.per_class))
    image_ids = result.image_ids or None
    analysis = analyze_detections(
        coco_gt,
        result.results,
        image_ids=image_ids,
        conf=cfg.conf,
        iou=cfg.iou,
        category_names=names,
    )
    write_json(out / f"{CONFUSION_FILE}.json", analysis.confusion_dict())
    write_json(out / f"{PR_F1_FILE}.json", analysis.pr_f1_dict())
    if cfg.plots:
        plot_confusion_matrix(analysis, out / f"{CONFUSION_FILE}.png")
        plot_pr_f1(analysis, out / f"{PR_F1_FILE}.png")

    _write_darknet_map(out, coco_gt, result, cfg, image_ids, names)
    _write_errors(out, coco_gt, result, cfg, image_ids, names)
    _write_worst(out, analysis, coco_gt, result, cfg, image_files, read_image)
    best = analysis.overall_curves["best"]
    log.info(
        "at conf %g IoU %g: %s; best F1 %.3f at conf %s",
        analysis.conf,
        analysis.iou,
        analysis.confusion_dict()["all"],
        best["f1"],
        best["conf"],
    )
    return analysis


def _write_darknet_map(
    out: Path,
    coco_gt: Any,
    result: EvaluationResult,
    cfg: AnalysisConfig,
    image_ids: list[int] | None,
    names: dict[int, str],
) -> None:
    """``darknet_map.json`` (with COCOeval's AP at the same IoU beside darknet's), logged."""
    darknet = darknet_map(
        coco_gt,
        result.results,
        image_ids=image_ids,
        thresh=cfg.darknet_thresh,
        iou=cfg.iou,
        points=cfg.darknet_points,
        category_names=names,
    )
    # COCOeval's AP at the same IoU beside darknet's (none when it is not one of COCO's)
    coco = ap_at_iou(result.precision, cfg.iou, list(result.per_class))
    coco_ap, coco_map = coco if coco is not None else (None, None)
    write_json(out / DARKNET_MAP_FILE, darknet.to_dict(coco_ap, coco_map))
    log.info("\n%s", darknet.table(coco_ap, coco_map))


def _write_errors(
    out: Path,
    coco_gt: Any,
    result: EvaluationResult,
    cfg: AnalysisConfig,
    image_ids: list[int] | None,
    names: dict[int, str],
) -> None:
    """``errors.json`` / ``.png``: the TIDE error breakdown, logged."""
    errors = error_breakdown(
        coco_gt,
        result.results,
        image_ids=image_ids,
        tb=cfg.errors_tb,
        tf=cfg.iou,
        category_names=names,
    )
    write_json(out / f"{ERRORS_FILE}.json", errors.to_dict())
    if cfg.plots:
        plot_errors(errors, out / f"{ERRORS_FILE}.png")
    log.info("\n%s", errors.table())


def _write_worst(
    out: Path,
    analysis: DetectionAnalysis,
    coco_gt: Any,
    result: EvaluationResult,
    cfg: AnalysisConfig,
    image_files: dict[int, str] | None,
    read_image: Callable[[int], np.ndarray | None] | None,
) -> None:
    """``worst_images.json`` / ``.png``: the images with the most errors and their gallery."""
    worst = worst_images(analysis, coco_gt, image_files, cfg.worst_images)
    write_json(
        out / f"{WORST_IMAGES_FILE}.json", {"conf": cfg.conf, "iou": cfg.iou, "images": worst}
    )
    if cfg.plots:
        gallery = worst_gallery(
            worst, coco_gt, result.results, analysis.names, cfg.conf, read_image=read_image
        )
        if gallery is not None:
            write_png(gallery, out / f"{WORST_IMAGES_FILE}.png")


def _stats(out: Path, names: list[str]) -> dict[str, tuple[int, int, int] | None]:
    stats = {n: (out / n).stat() if (out / n).is_file() else None for n in names}
    return {n: st and (st.st_ino, st.st_mtime_ns, st.st_size) for n, st in stats.items()}


def write_reports(
    out: Path,
    result: EvaluationResult,
    coco_gt: Any,
    settings: AnalysisConfig | Mapping[str, Any] | None = None,
    image_files: dict[int, str] | None = None,
    weights: dict[str, str] | None = None,
    read_image: Callable[[int], np.ndarray | None] | None = None,
) -> None:
    """Every report of ``result`` in ``out`` (module docstring); ``weights`` (what was scored:
    file, backend, precision) is recorded in metrics.json; ``image_files`` and ``read_image``
    as :func:`write_analysis` takes them. Prints COCOeval's summary and a per-class table; logs
    the files written (a plot without data is not, nor any with ``analysis.plots=false``)."""
    out = Path(out)
    plots = AnalysisConfig.from_config(settings).plots
    names = [METRICS_FILE, DETECTIONS_FILE, PR_CURVE_FILE, DARKNET_MAP_FILE]
    names += [
        f"{n}.{e}"
        for n in (CONFUSION_FILE, PR_F1_FILE, ERRORS_FILE, WORST_IMAGES_FILE)
        for e in ("json", "png")
    ]
    before = _stats(out, names)
    write_json(
        out / METRICS_FILE, {**result.to_dict(), **({"weights": weights} if weights else {})}
    )
    (out / DETECTIONS_FILE).write_text(json.dumps(result.results))
    if plots and result.precision is not None:
        plot_pr_curves(result.precision, list(result.per_class), out / PR_CURVE_FILE)
    write_analysis(out, coco_gt, result, settings, image_files, read_image)
    print(result.summary)
    print(per_class_table(result.per_class))
    after = _stats(out, names)
    written = [n for n in names if after[n] is not None and after[n] != before[n]]
    skipped = [n for n in names if n not in written and (plots or not n.endswith(".png"))]
    log.info(
        "wrote %s in %s%s%s",
        ", ".join(written),
        out,
        f" (not written, no data for them: {', '.join(skipped)})" if skipped else "",
        "; no figures (analysis.plots=false)" if not plots else "",
    )
