"""COCO evaluation of a Predictor on the val images as validation reads them: what the service
would answer for each image in its ground truth's frame and size."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from yolov4.core.postprocess import DARKNET_VALID
from yolov4.errors import ConfigError
from yolov4.evaluation.coco import DEFAULT_COCO_BACKEND, CocoEvaluator, check_category_ids
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
) -> EvaluationResult:
    """COCO metrics of ``predictor`` (a :class:`yolov4.inference.Predictor`) on ``records``
    (of ``datamodule``'s val split: ``.image_id``), with the validation postprocess (darknet's
    ``valid``, :data:`DARKNET_VALID`, with ``eval_cfg``'s ``module.eval.*`` keys on top) passed
    to each call in place of the predictor's serving thresholds, which stay as they are.
    ``category_ids``: the category id each of the predictor's class indices is scored as
    (default: the split's, index for index), one per class, each a category of the split
    (else a :class:`ConfigError`, :func:`~yolov4.evaluation.coco.check_category_ids`).

    Each image is read as validation reads it, by ``datamodule.val_image``
    (:meth:`yolov4.data.datamodule.DetectionDataModule.val_image`): an image annotated in the
    frame its file stores, before its EXIF rotation, is read without the rotation; one whose
    annotated size differs from the file's is resized to the annotated size; each reported
    in the val dataset's report as validation reports it. The Predictor gets those pixels, so
    its boxes are in the ground truth's frame. An image that does not decode is reported there
    and not scored, as validation leaves it out."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    model = ModelConfig.from_dict(predictor.metadata["model"])
    settings = DARKNET_VALID.update(eval_cfg).resolve(model)
    ids = check_category_ids(
        datamodule.val_coco,
        category_ids if category_ids is not None else datamodule.category_ids,
        model.num_classes,
    )
    names = dict(zip(datamodule.category_ids, datamodule.class_names, strict=True))
    evaluator = CocoEvaluator(
        datamodule.val_coco, ids, [names[i] for i in ids], backend=coco_backend
    )
    for i in range(0, len(records), batch_size):
        chunk, images = [], []
        for r in records[i : i + batch_size]:
            image = datamodule.val_image(r.image_id)
            if image is not None:
                chunk.append(r)
                # (3, H, W): a tensor's layout is unambiguous, where an (H, W, 3) array 1, 3 or
                # 4 pixels high also reads as (C, H, W) and is refused; a read-only array (PIL's
                # decode of a repaired JPEG) is copied, as torch takes only writable ones
                pixels = image if image.flags.writeable else image.copy()
                images.append(torch.from_numpy(pixels).permute(2, 0, 1))
        if not chunk:
            continue
        dets = predictor(images, postprocess=settings)
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
