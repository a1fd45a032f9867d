"""COCO evaluation of a Predictor from the image files: what the service would answer."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from yolov4.core.images import ImageDecodeError
from yolov4.core.postprocess import DARKNET_VALID
from yolov4.errors import ConfigError
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
    category_ids: Sequence[int] | None = None,
    on_unreadable: Callable[[str, Exception], None] | None = None,
) -> EvaluationResult:
    """COCO metrics of ``predictor`` (a :class:`yolov4.inference.Predictor`) on ``records``
    (of ``datamodule``'s val split: ``.file``, ``.image_id``), from the image files, with the
    validation postprocess (darknet's ``valid``, :data:`DARKNET_VALID`, with ``eval_cfg``'s
    ``module.eval.*`` keys on top) passed to each call in place of the predictor's serving
    thresholds, which stay as they are. ``category_ids``: the category id each of the
    predictor's class indices is scored as (default: the split's, index for index).
    ``on_unreadable(file, error)``: an image that cannot be decoded is passed to it and not
    scored, as validation leaves such an image out (default: the error is raised)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    settings = DARKNET_VALID.update(eval_cfg).resolve(
        ModelConfig.from_dict(predictor.metadata["model"])
    )
    ids = list(category_ids if category_ids is not None else datamodule.category_ids)
    names = dict(zip(datamodule.category_ids, datamodule.class_names, strict=True))
    evaluator = CocoEvaluator(
        datamodule.val_coco, ids, [names[i] for i in ids], backend=coco_backend
    )
    for i in range(0, len(records), batch_size):
        chunk = records[i : i + batch_size]
        try:
            dets = predictor([r.file for r in chunk], postprocess=settings)
        except ImageDecodeError:  # one by one: each unreadable one goes to on_unreadable
            kept, dets = [], []
            for r in chunk:
                try:
                    dets.append(predictor(r.file, postprocess=settings)[0])
                except ImageDecodeError as e:
                    if on_unreadable is None:
                        raise
                    on_unreadable(r.file, e)
                else:
                    kept.append(r)
            chunk = kept
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
