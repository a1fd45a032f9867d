"""COCO evaluation of a Predictor from the image files: what the service would answer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from yolov4.core.postprocess import DARKNET_VALID
from yolov4.evaluation.coco import DEFAULT_COCO_BACKEND, CocoEvaluator
from yolov4.evaluation.result import EvaluationResult
from yolov4.models import ModelConfig

__all__ = ["evaluate_predictor"]


def evaluate_predictor(
    predictor: Any,
    datamodule: Any,
    records: Sequence[Any],
    batch_size: int,
    eval_cfg: Mapping[str, Any] | None = None,
    coco_backend: str = DEFAULT_COCO_BACKEND,
) -> EvaluationResult:
    """COCO metrics of ``predictor`` (a :class:`yolov4.inference.Predictor`) on ``records``
    (of ``datamodule``'s val split: ``.file``, ``.image_id``), from the image files, with the
    validation postprocess (darknet's ``valid``, :data:`DARKNET_VALID`, with ``eval_cfg``'s
    ``module.eval.*`` keys on top) passed to each call in place of the predictor's serving
    thresholds, which stay as they are."""
    settings = DARKNET_VALID.update(eval_cfg).resolve(
        ModelConfig.from_dict(predictor.metadata["model"])
    )
    evaluator = CocoEvaluator(
        datamodule.val_coco, datamodule.category_ids, datamodule.class_names, backend=coco_backend
    )
    for i in range(0, len(records), batch_size):
        chunk = records[i : i + batch_size]
        dets = predictor([r.file for r in chunk], postprocess=settings)
        rows = [
            torch.from_numpy(
                np.concatenate(
                    [d.boxes, d.scores[:, None], d.class_ids[:, None].astype(np.float32)], 1
                )
            )
            for d in dets
        ]
        evaluator.update(rows, [r.image_id for r in chunk])
    return evaluator.compute()
