"""The settings of the analysis reports, owned once: :class:`AnalysisConfig`.

Its fields are the keys of the Hydra group ``configs/analysis/`` (``analysis.*`` of
``train.yaml`` and ``evaluate.yaml``) and the defaults of :mod:`yolov4.evaluation.analysis`,
:mod:`~yolov4.evaluation.darknet_map`, :mod:`~yolov4.evaluation.tide` and
:mod:`~yolov4.evaluation.worst`. Every value is checked on construction: a bad one raises
:class:`~yolov4.errors.ConfigError` naming the key, what it must be and what was found.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from yolov4.errors import ConfigError, shown

__all__ = ["AnalysisConfig", "DARKNET_POINT_CHOICES", "ap_label"]

# darknet's `detector map -points`: 0 area under the curve, 11 VOC2007, 101 COCO
DARKNET_POINT_CHOICES = (0, 11, 101)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class AnalysisConfig:
    """What the reports beside the mAP are computed at.

    Attributes:
        conf: the confusion matrix's (and per-class TP / FP / FN's) confidence threshold:
            darknet's serving threshold (``detector test`` / ``map -thresh``).
        iou: IoU of a match: the matrix, P/R/F1 curves, ``darknet_map`` (``>``), TIDE's
            foreground threshold ``t_f``.
        darknet_thresh: ``darknet_map.json``: TP / FP / FN at ``conf > thresh`` (darknet's
            ``detector map -thresh`` default, ``thresh_calc_avg_iou``).
        darknet_points: ``darknet_map.json`` AP50: 0 area under the curve (darknet's
            ``-points`` default), 11 VOC2007, 101 COCO.
        errors_tb: ``errors.json``: TIDE's background threshold ``t_b`` (paper, section 2.2).
        worst_images: how many images ``worst_images.json`` / ``.png`` list and draw.
        plots: draw the report figures (every ``.png``); ``False`` writes the JSON reports
            only, without matplotlib's drawing time (ultralytics' ``plots=False``).
    """

    conf: float = 0.25
    iou: float = 0.5
    darknet_thresh: float = 0.25
    darknet_points: int = 0
    errors_tb: float = 0.1
    worst_images: int = 16
    plots: bool = True

    def __post_init__(self) -> None:
        def require(key: str, ok: bool, expected: str) -> None:
            if not ok:
                raise ConfigError(
                    f"analysis.{key} must be {expected}, got {shown(getattr(self, key))}"
                )

        conf, iou, thresh, points = self.conf, self.iou, self.darknet_thresh, self.darknet_points
        require("conf", _number(conf) and 0 <= conf <= 1, "a number in [0, 1]")
        require("iou", _number(iou) and 0 < iou < 1, "a number in (0, 1)")
        require("darknet_thresh", _number(thresh) and 0 <= thresh <= 1, "a number in [0, 1]")
        choices = ", ".join(map(str, DARKNET_POINT_CHOICES))
        require(
            "darknet_points",
            _number(points) and points in DARKNET_POINT_CHOICES,
            f"one of {choices}",
        )
        require(
            "errors_tb",
            _number(self.errors_tb) and 0 <= self.errors_tb < iou,
            f"a number in [0, analysis.iou={iou})",
        )
        worst = self.worst_images
        require(
            "worst_images",
            _number(worst) and isinstance(worst, int) and worst >= 0,
            "an integer >= 0",
        )
        require("plots", isinstance(self.plots, bool), "true or false")

    @classmethod
    def from_config(cls, settings: AnalysisConfig | Mapping[str, Any] | None) -> AnalysisConfig:
        """From ``analysis.*`` (a mapping such as Hydra's node, missing keys at their defaults;
        ``None``: every default). An unknown key is a :class:`ConfigError` naming it."""
        if isinstance(settings, cls):
            return settings
        values = dict(settings or {})
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"analysis has no key(s) {unknown}; the keys are {known}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def ap_label(iou: float) -> str:
    """How a report names AP at IoU ``iou``: ``AP50`` for 0.5, ``AP75`` for 0.75."""
    return f"AP{100 * iou:g}"
