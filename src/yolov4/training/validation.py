"""Validation of the :class:`~yolov4.training.module.YoloModule`: its detections in input
pixels, scored in the original images' pixels by the COCO evaluator against the DataModule's
ground truth, and the first batch kept for the validation image grid."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch

from yolov4.core.model import DecodedModel
from yolov4.core.postprocess import PostprocessConfig
from yolov4.evaluation import CocoEvaluator, EvaluationResult
from yolov4.evaluation.coco import DEFAULT_COCO_BACKEND
from yolov4.models import YOLOv4
from yolov4.ops.letterbox import image_windows, unmap_detections

__all__ = [
    "ValidationSample",
    "batch_detections",
    "validation_evaluator",
    "score_batch",
    "log_validation",
]

log = logging.getLogger(__name__)


class ValidationSample(NamedTuple):
    """The first validation batch and its detections, for the image grid callback. ``images``
    ``(B, 3, H, W)``; ``targets`` ``(M, 6)`` and ``detections[i]`` ``(K_i, 6)`` in input pixels."""

    images: torch.Tensor
    targets: torch.Tensor
    detections: list[torch.Tensor]


def batch_detections(
    model: YOLOv4, batch: Mapping[str, torch.Tensor], val_postprocess: Mapping[str, Any]
) -> list[torch.Tensor]:
    """Detections per image ``(K_i, 6)`` ``[x1, y1, x2, y2, score, class]`` in INPUT pixels
    (the network's letterboxed image) of ``batch["images"]`` ``(B, 3, H, W)``, postprocessed
    with ``val_postprocess`` (:class:`~yolov4.core.postprocess.PostprocessConfig` keys).
    ``model`` runs in eval mode (BN statistics) and, on the CPU, in float32 whatever the
    training precision (bf16-mixed), so that validation scores what ``evaluate.py`` and the
    Predictor score; its train/eval mode is restored."""
    images = batch["images"]
    was_training = model.training
    model.eval()  # BN statistics, never batch statistics
    try:
        with torch.autocast("cpu", enabled=False):  # a CUDA autocast is left as it is
            preds = DecodedModel(model)(images)
    finally:
        model.train(was_training)
    settings = PostprocessConfig(**val_postprocess).resolve(model.config)
    windows = None  # where the images lie inside the padding: no box of the padding counts
    if "letterbox" in batch and "original_sizes" in batch:
        windows = image_windows(batch["letterbox"].cpu(), batch["original_sizes"].cpu())
    return settings(preds.float(), tuple(images.shape[-2:]), windows=windows)


def validation_evaluator(datamodule: Any, hparams: Mapping[str, Any]) -> CocoEvaluator:
    """The COCO evaluator of one validation: the DataModule's ``val_coco`` ground truth, the
    module's ``category_ids``, ``class_names`` and ``coco_backend`` (``hparams``)."""
    if datamodule is None or not hasattr(datamodule, "val_coco"):
        raise RuntimeError("validation needs a DataModule with val_coco (the COCO ground truth)")
    return CocoEvaluator(
        datamodule.val_coco,
        hparams["category_ids"],
        hparams["class_names"],
        backend=hparams.get("coco_backend", DEFAULT_COCO_BACKEND),
    )


def score_batch(
    evaluator: CocoEvaluator, batch: Mapping[str, torch.Tensor], dets: Sequence[torch.Tensor]
) -> None:
    """``dets`` (:func:`batch_detections`, input pixels) mapped to the original images and
    added to ``evaluator``; the images the loader could not decode (``batch["decoded"]``
    false) are not scored."""
    original = unmap_detections(dets, batch["letterbox"], batch["original_sizes"])
    ids = batch["image_ids"].tolist()
    if "decoded" in batch and not bool(batch["decoded"].all()):  # unreadable: not scored
        kept = batch["decoded"].tolist()
        original = [d for d, k in zip(original, kept, strict=True) if k]
        ids = [i for i, k in zip(ids, kept, strict=True) if k]
    evaluator.update(original, ids)


def log_validation(trainer: Any, epoch: int, step: int, result: EvaluationResult) -> None:
    """Rank 0's line for a validation the epoch's line does not report: one run mid-epoch
    (``trainer.val_check_interval``), or one outside a fit (the weights loaded, whatever
    epoch)."""
    if not trainer.is_global_zero:
        return
    fitting = trainer.state.fn == "fit"
    if fitting and not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
        log.info(
            "epoch %d step %d: mAP %.4f mAP50 %.4f",
            epoch + 1,  # 1-based, as the epoch's line
            step,
            result["mAP"],
            result["mAP50"],
        )
    elif not fitting:
        log.info("validation: mAP %.4f mAP50 %.4f", result["mAP"], result["mAP50"])
