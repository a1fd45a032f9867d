"""``python evaluate.py``: COCO mAP of a project checkpoint, a darknet weights file or an export
artifact (through the Predictor, from the image files, exactly as the service would answer).

Writes to ``paths.output_dir``: ``metrics.json`` (:meth:`EvaluationResult.to_dict`),
``detections.json`` (COCO results, original category ids, ``COCO.loadRes``-ready),
``pr_curve.png``, and the analysis of :mod:`yolov4.evaluation.analysis` at ``analysis.conf`` /
``analysis.iou``: ``confusion_matrix.json`` / ``.png`` (classes + background, counts and
row-normalised, per-class TP / FP / FN) and ``pr_f1.json`` / ``.png`` (precision, recall and F1
against confidence, the best-F1 confidence overall and per class); ``darknet_map.json`` (darknet's
``detector map`` report beside COCOeval's AP50), ``errors.json`` / ``.png`` (the TIDE-style
breakdown of the missed AP50) and ``worst_images.json`` / ``.png`` (the images with most FP + FN
at ``analysis.conf``, drawn); prints COCOeval's 12-line summary and a per-class table.
"""

from __future__ import annotations

import json
import logging
from importlib import resources
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from yolov4.cli.common import build, build_partial, model_config, model_network
from yolov4.cli.sources import model_source
from yolov4.core.checkpoint import load_checkpoint
from yolov4.core.postprocess import DARKNET_VALID
from yolov4.darknet import darknet_file_classes
from yolov4.errors import ConfigError
from yolov4.evaluation import CocoEvaluator, EvaluationResult
from yolov4.evaluation.analysis import CONF, IOU, DetectionAnalysis, analyze_detections
from yolov4.evaluation.coco import DEFAULT_COCO_BACKEND
from yolov4.evaluation.darknet_map import DARKNET_POINTS, DARKNET_THRESH, darknet_map
from yolov4.evaluation.darknet_map import POINTS as DARKNET_POINT_CHOICES
from yolov4.evaluation.errors import TB, error_breakdown
from yolov4.evaluation.plots import plot_confusion_matrix, plot_errors, plot_pr_curves, plot_pr_f1
from yolov4.evaluation.worst import (
    WORST_IMAGES,
    val_image_files,
    worst_gallery,
    worst_images,
    write_png,
)
from yolov4.inference import Predictor
from yolov4.inference.darknet import darknet_resize_mode as resize_mode_of
from yolov4.models import ModelConfig
from yolov4.training.callbacks import METRICS_FILE, write_json
from yolov4.training.module import YoloModule
from yolov4.training.noise import quiet_lightning
from yolov4.training.precision import resolve_precision

__all__ = [
    "evaluate",
    "hydra_main",
    "write_analysis",
    "check_analysis",
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
FALLBACK_DATA = "synthetic"  # configs/data/<this>.yaml: the data of files that record none


def per_class_table(per_class: dict[str, dict[str, float]]) -> str:
    width = max([len(n) for n in per_class] + [5])
    lines = [f"{'class':<{width}}  {'AP':>6}  {'AP50':>6}"]
    lines += [f"{n:<{width}}  {v['AP']:6.3f}  {v['AP50']:6.3f}" for n, v in per_class.items()]
    return "\n".join(lines)


def check_analysis(settings: Any) -> None:
    """``analysis.*`` checked at start-up (a bad value fails before any work, naming the key)."""
    settings = settings or {}
    iou = settings.get("iou", IOU)
    checks = {
        "conf": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
        "iou": (lambda v: 0 < v < 1, "a number in (0, 1)"),
        "darknet_thresh": (lambda v: 0 <= v <= 1, "a number in [0, 1]"),
        "darknet_points": (lambda v: v in DARKNET_POINT_CHOICES, "one of 0, 11, 101"),
        "errors_tb": (lambda v: 0 <= v < iou, f"a number in [0, analysis.iou={iou})"),
        "worst_images": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    }
    for key, (ok, expected) in checks.items():
        if key not in settings:
            continue
        value = settings[key]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or not ok(value):
            raise ConfigError(f"analysis.{key} must be {expected}, got {value!r}")


def write_analysis(
    out: Path,
    coco_gt: Any,
    result: EvaluationResult,
    settings: Any = None,
    image_files: dict[int, str] | None = None,
) -> DetectionAnalysis:
    """The analysis files in ``out``, from the detections and images of ``result`` on
    ``coco_gt``: ``confusion_matrix.json`` / ``.png``, ``pr_f1.json`` / ``.png``,
    ``darknet_map.json``, ``errors.json`` / ``.png``, ``worst_images.json`` / ``.png``.

    ``settings``: ``analysis.*`` (``conf`` 0.25, ``iou`` 0.5, ``darknet_thresh`` 0.25,
    ``darknet_points`` 0, ``errors_tb`` 0.1, ``worst_images`` 16 when missing).
    ``image_files``: ``{image_id: path}`` for the gallery (default: the ground truth's
    ``file_name``). Call it on one process: under DDP ``result`` already holds every rank's
    detections, deduplicated."""
    settings = settings or {}
    cat_ids = sorted(coco_gt.getCatIds())
    names = dict(zip(cat_ids, result.per_class))
    image_ids = result.image_ids or None
    conf, iou = float(settings.get("conf", CONF)), float(settings.get("iou", IOU))
    analysis = analyze_detections(
        coco_gt, result.results, image_ids=image_ids, conf=conf, iou=iou, category_names=names
    )
    write_json(out / f"{CONFUSION_FILE}.json", analysis.confusion_dict())
    write_json(out / f"{PR_F1_FILE}.json", analysis.pr_f1_dict())
    plot_confusion_matrix(analysis, out / f"{CONFUSION_FILE}.png")
    plot_pr_f1(analysis, out / f"{PR_F1_FILE}.png")

    darknet = darknet_map(
        coco_gt,
        result.results,
        image_ids=image_ids,
        thresh=float(settings.get("darknet_thresh", DARKNET_THRESH)),
        iou=iou,
        points=int(settings.get("darknet_points", DARKNET_POINTS)),
        category_names=names,
    )
    coco_ap50 = {n: v["AP50"] for n, v in result.per_class.items()}
    write_json(out / DARKNET_MAP_FILE, darknet.to_dict(coco_ap50, result.metrics["mAP50"]))
    log.info("\n%s", darknet.table(coco_ap50, result.metrics["mAP50"]))

    errors = error_breakdown(
        coco_gt,
        result.results,
        image_ids=image_ids,
        tb=float(settings.get("errors_tb", TB)),
        tf=iou,
        category_names=names,
    )
    write_json(out / f"{ERRORS_FILE}.json", errors.to_dict())
    plot_errors(errors, out / f"{ERRORS_FILE}.png")
    log.info("\n%s", errors.table())

    worst = worst_images(
        analysis, coco_gt, image_files, int(settings.get("worst_images", WORST_IMAGES))
    )
    write_json(out / f"{WORST_IMAGES_FILE}.json", {"conf": conf, "iou": iou, "images": worst})
    gallery = worst_gallery(worst, coco_gt, result.results, analysis.names, conf)
    if gallery is not None:
        write_png(gallery, out / f"{WORST_IMAGES_FILE}.png")
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


def _stats(out: Path, names: list[str]) -> dict[str, tuple[int, int, int] | None]:
    stats = {n: (out / n).stat() if (out / n).is_file() else None for n in names}
    return {n: st and (st.st_ino, st.st_mtime_ns, st.st_size) for n, st in stats.items()}


def _write(
    out: Path,
    result: EvaluationResult,
    coco_gt: Any,
    settings: Any,
    image_files: dict[int, str] | None = None,
    weights: dict[str, str] | None = None,
) -> None:
    """The reports of ``result`` in ``out``; ``weights`` (what was scored: file, backend,
    precision) is recorded in metrics.json. Logs the files written (a plot without data is not)."""
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
    if result.precision is not None:
        plot_pr_curves(result.precision, list(result.per_class), out / PR_CURVE_FILE)
    write_analysis(out, coco_gt, result, settings, image_files)
    print(result.summary)
    print(per_class_table(result.per_class))
    after = _stats(out, names)
    written = [n for n in names if after[n] is not None and after[n] != before[n]]
    skipped = [n for n in names if n not in written]
    log.info(
        "wrote %s in %s%s",
        ", ".join(written),
        out,
        f" (not written, no data for them: {', '.join(skipped)})" if skipped else "",
    )


def _check_classes(what: str, num_classes: int, datamodule: Any) -> None:
    if num_classes != datamodule.num_classes:
        raise ConfigError(
            f"the {what} has num_classes={num_classes} but data has "
            f"{datamodule.num_classes} classes {datamodule.class_names}"
        )


def _evaluate_artifact(
    cfg: DictConfig, eval_cfg: dict[str, Any]
) -> tuple[EvaluationResult, Any, dict[str, str]]:
    """Through the Predictor, from the image files: what the service would answer. Returns the
    result, the (prepared) DataModule of the val split, whose ground truth and image files
    the reports read, and what was scored (``{"file", "backend", "precision"}``)."""
    predictor = Predictor.from_artifact(
        cfg.artifact, backend=cfg.backend, precision=cfg.get("precision")
    )
    weights = {
        "file": str(Path(cfg.artifact) / str(predictor.model_file)),
        "backend": predictor.backend.name,
        "precision": predictor.precision,
    }
    log.info("evaluating %(file)s in %(backend)s, %(precision)s", weights)
    datamodule = build(cfg, "data", augment=None)
    datamodule.prepare_data()
    _check_classes("artifact", len(predictor.class_names), datamodule)
    records = datamodule.split("val").records
    coco_backend = cfg.module.get("coco_backend", DEFAULT_COCO_BACKEND)
    result = evaluate_predictor(
        predictor, datamodule, records, cfg.batch_size, eval_cfg, coco_backend
    )
    return result, datamodule, weights


def evaluate_predictor(
    predictor: Predictor,
    datamodule: Any,
    records: Any,
    batch_size: int,
    eval_cfg: dict[str, Any],
    coco_backend: str = DEFAULT_COCO_BACKEND,
) -> EvaluationResult:
    """COCO metrics of ``predictor`` on ``records`` (of ``datamodule``'s val split), from the
    image files, with the validation postprocess ``eval_cfg`` (darknet's ``valid`` + overrides)
    in place of the predictor's serving thresholds (restored afterwards)."""
    serving = predictor.postprocess
    predictor.postprocess = DARKNET_VALID.update(eval_cfg).resolve(
        ModelConfig.from_dict(predictor.metadata["model"])
    )
    evaluator = CocoEvaluator(
        datamodule.val_coco, datamodule.category_ids, datamodule.class_names, backend=coco_backend
    )
    try:
        for i in range(0, len(records), batch_size):
            chunk = records[i : i + batch_size]
            dets = predictor([r.file for r in chunk])
            rows = [
                torch.from_numpy(
                    np.concatenate(
                        [d.boxes, d.scores[:, None], d.class_ids[:, None].astype(np.float32)], 1
                    )
                )
                for d in dets
            ]
            evaluator.update(rows, [r.image_id for r in chunk])
    finally:
        predictor.postprocess = serving
    return evaluator.compute()


def _val_only(cfg: DictConfig) -> None:
    """Evaluation reads only the val split: drop ``data.train`` so that its mandatory keys
    (``data.train.annotations=???``) need no value on the command line."""
    if cfg.data.get("train", None) is not None:
        with open_dict(cfg):
            cfg.data.train = None


def darknet_resize_mode(cfg: DictConfig) -> str:
    """How ``darknet_weights=`` images are resized: ``cfg.darknet_resize_mode``, or when null as
    darknet trained the network (its cfg's ``[net] letter_box=1``: letterbox, else stretch)."""
    if cfg.darknet_resize_mode:
        return str(cfg.darknet_resize_mode)
    return resize_mode_of(model_network(cfg))


def resolve_data(cfg: DictConfig, recorded: dict[str, Any] | None, source: str) -> None:
    """``cfg.data`` in place: ``data=<option>`` as given; else the data config recorded in the
    checkpoint (``recorded``: :attr:`Checkpoint.data`), with any ``+data.<key>=`` given on top;
    else (darknet weights, artifacts, files without one) ``data=synthetic``, logged."""
    given = cfg.get("data")
    if given is not None and given.get("_target_"):
        return
    if recorded is not None:
        base = OmegaConf.create(recorded)
        log.info("data: the run's data config recorded in %s (%s)", source, recorded["_target_"])
    else:
        default = resources.files("yolov4.configs") / "data" / f"{FALLBACK_DATA}.yaml"
        base = OmegaConf.create(default.read_text())
        log.info(
            "data: %s records no data config; evaluating on data=%s (give data=... for another)",
            source,
            FALLBACK_DATA,
        )
    with open_dict(cfg):
        cfg.data = OmegaConf.merge(base, given) if given is not None else base


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """COCO evaluation of ``checkpoint=``, ``darknet_weights=`` or ``artifact=``; returns the
    ``metrics.json`` payload. Builds the network and the validation only: no loss, no EMA, no
    optimizer."""
    quiet_lightning()
    model_source(cfg)
    if cfg.module.get("pretrained"):
        raise ConfigError(
            f"module.pretrained={cfg.module.pretrained}: evaluate takes its weights from "
            f"checkpoint=..., darknet_weights=... or artifact=..."
        )
    out = Path(cfg.paths.output_dir)
    settings = cfg.get("analysis") or {}
    check_analysis(settings)
    ckpt = load_checkpoint(cfg.checkpoint) if cfg.checkpoint else None
    source = cfg.checkpoint or cfg.darknet_weights or cfg.artifact
    resolve_data(cfg, ckpt.data if ckpt is not None else None, str(source))
    _val_only(cfg)
    if cfg.artifact:
        result, datamodule, weights = _evaluate_artifact(
            cfg, OmegaConf.to_container(cfg.module.eval, resolve=True)
        )
        _write(out, result, datamodule.val_coco, settings, val_image_files(datamodule), weights)
        return {**result.to_dict(), "weights": weights}
    data_overrides: dict[str, Any] = {"augment": None, "val_batch_size": cfg.batch_size}
    if ckpt is not None:
        model_dict, state = ckpt.model.config.to_dict(), ckpt.model.state_dict()
        data_overrides["size_multiple"] = ckpt.model.config.max_stride
        if ckpt.preprocess:  # evaluate exactly as the model was validated in training
            data_overrides.update(
                preprocess=dict(ckpt.preprocess),  # all of it: pad value, colour order, scale
                input_size=ckpt.preprocess["input_size"],
                resize_mode=ckpt.preprocess["mode"],
            )
    else:  # darknet weights: resized as darknet trained them (the cfg's letter_box)
        data_overrides.update(
            resize_mode=darknet_resize_mode(cfg), size_multiple=model_network(cfg).max_stride
        )
    datamodule = build(cfg, "data", **data_overrides)
    datamodule.prepare_data()
    if cfg.darknet_weights:
        model_dict = model_config(cfg, datamodule.num_classes)
        # a file of other classes would load all but its heads (fine-tuning): not evaluable
        network = ModelConfig.from_dict(model_dict)
        found = darknet_file_classes(network, cfg.darknet_weights)
        if found not in (None, network.num_classes):
            raise ConfigError(
                f"darknet_weights={cfg.darknet_weights} holds {network.name} weights for "
                f"{found} classes but data has {datamodule.num_classes} classes "
                f"{datamodule.class_names}; evaluate it on a dataset of its {found} classes"
            )
    else:
        _check_classes("checkpoint", model_dict["num_classes"], datamodule)
    module: YoloModule = build_partial(
        cfg,
        "module",
        model=model_dict,
        class_names=datamodule.class_names,
        category_ids=datamodule.category_ids,
        preprocess=datamodule.preprocess_config.to_dict(),
        ema_decay=None,  # the weights as they are (a .ckpt's EMA was taken by load_checkpoint)
        pretrained=cfg.darknet_weights or None,  # darknet: every layer of the file, checked
        pretrained_backbone_only=False,
    )
    if cfg.checkpoint:
        module.model.load_state_dict(state, strict=True)
    precision = resolve_precision(cfg.trainer.get("precision"), cfg.trainer.get("accelerator"))
    trainer: L.Trainer = build(cfg, "trainer", precision=precision)
    weights = {  # the precision Lightning runs (16-mixed becomes bf16-mixed on a CPU)
        "file": str(cfg.checkpoint or cfg.darknet_weights),
        "backend": "pytorch",
        "precision": str(trainer.precision),
    }
    log.info("evaluating %(file)s in %(backend)s, precision %(precision)s", weights)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    result = module.evaluation
    if trainer.is_global_zero:
        _write(out, result, datamodule.val_coco, settings, val_image_files(datamodule), weights)
    return {**result.to_dict(), "weights": weights}


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate")
def hydra_main(cfg: DictConfig) -> float:
    return float(evaluate(cfg)["mAP"])


if __name__ == "__main__":
    hydra_main()
