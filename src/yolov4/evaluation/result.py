"""The result of one COCO evaluation: what validation logs, callbacks save and the CLIs write."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["METRIC_KEYS", "METRICS_FILE", "EvaluationResult"]

METRICS_FILE = (
    "metrics.json"  # a run's (and an evaluation's) final metrics: EvaluationResult.to_dict
)

# The 12 numbers of COCOeval.summarize(), in its order; the names used in logs and metrics.json.
METRIC_KEYS = (
    "mAP",
    "mAP50",
    "mAP75",
    "mAP_small",
    "mAP_medium",
    "mAP_large",
    "AR1",
    "AR10",
    "AR100",
    "AR_small",
    "AR_medium",
    "AR_large",
)


@dataclass(frozen=True)
class EvaluationResult:
    """One COCO evaluation (bbox) over ``num_images`` images.

    Attributes:
        metrics: the 12 COCOeval numbers by :data:`METRIC_KEYS` name (plain floats).
        per_class: ``{class name: {"AP": AP@[.5:.95], "AP50": AP@.5}}`` in category id order.
        num_images: images evaluated (after removing the sampler's duplicates).
        summary: COCOeval's 12-line summary text.
        results: the detections in COCO results format (``bbox`` xywh in original pixels,
            original ``category_id``), ready for ``COCO.loadRes`` (``detections.json``).
        precision: COCOeval's ``(T, R, K, A, M)`` precision array, ``None`` without detections.
        image_ids: the ids of the images evaluated, sorted (what the confusion matrix and the
            P / R / F1 curves of :mod:`yolov4.evaluation.analysis` count misses over).
    """

    metrics: dict[str, float]
    per_class: dict[str, dict[str, float]]
    num_images: int
    summary: str
    results: list[dict[str, Any]] = field(default_factory=list, repr=False)
    precision: np.ndarray | None = field(default=None, repr=False)
    image_ids: tuple[int, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        missing = [k for k in METRIC_KEYS if k not in self.metrics]
        if missing:
            raise ValueError(f"EvaluationResult.metrics lacks {missing}")

    def __getitem__(self, key: str) -> float:
        """``result["mAP"]``: one of :data:`METRIC_KEYS`."""
        return self.metrics[key]

    @property
    def scalars(self) -> dict[str, float | int]:
        """The numbers alone (:data:`METRIC_KEYS` and ``num_images``): what weights files keep."""
        return {**{k: float(self.metrics[k]) for k in METRIC_KEYS}, "num_images": self.num_images}

    def to_dict(self) -> dict[str, Any]:
        """``metrics.json``: :data:`METRIC_KEYS`, ``per_class`` and ``num_images`` (builtins)."""
        return {**self.scalars, "per_class": {n: dict(v) for n, v in self.per_class.items()}}
