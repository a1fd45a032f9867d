"""Anchors for a model and a dataset: box sizes at the network input, the fit, its report and
the files it is written to (a Hydra override line, a model yaml, the darknet cfg).

Box sizes are taken after the resize training applies (:func:`yolov4.ops.letterbox.letterbox_params`:
``letterbox`` keeps the aspect ratio, ``stretch`` scales each axis, as darknet does), without
augmentation. Anchors are sorted by area and dealt to the heads in ascending stride, the same
number to each head (``yolov4-tiny``: 3 + 3; ``yolov4``: 3 + 3 + 3; ``yolov4-p6``: 4 + 4 + 4 + 4).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from yolov4.anchors.kmeans import avg_best_iou, closest_anchor, fit_anchors, iou_histogram
from yolov4.errors import ConfigError, DatasetError
from yolov4.models import ModelConfig
from yolov4.ops.letterbox import letterbox_params

__all__ = [
    "POOR_AVG_IOU",
    "POOR_IOU",
    "POOR_SHARE",
    "POOR_UNMASKED_SHARE",
    "AnchorQuality",
    "AnchorReport",
    "box_sizes",
    "deal_masks",
    "anchor_quality",
    "masked_anchors",
    "fit_model_anchors",
    "fitted_config",
    "override_line",
    "model_yaml",
]

# a box whose best anchor overlaps it less than this is poorly served by every head
POOR_IOU = 0.25
# the anchors fit poorly when more than this share of boxes is under POOR_IOU ...
POOR_SHARE = 0.10
# ... or darknet's average best IoU (percent) is under this (darknet's default anchors reach
# about 60 % on COCO at 416, their fitted k-means about 67 %) ...
POOR_AVG_IOU = 45.0
# ... or more than this share of boxes is best matched by an anchor in no head's mask: most boxes
# get no box or class signal. A smaller share is reported, not acted on: on the built-in shapes
# at 128 px, 30.5 % of the boxes best match yolov4-tiny's unmasked anchor 0, and its cfg anchors
# still trained to a higher mAP50 than anchors fitted to every box (0.188 against 0.126,
# docs/anchors.md)
POOR_UNMASKED_SHARE = 0.5


def box_sizes(records: Iterable[Any], input_size: Sequence[int], mode: str) -> np.ndarray:
    """``(N, 2)`` float32 ``(w, h)`` of every box of ``records`` (objects with ``boxes`` ``(M, 4)``
    xyxy pixels, ``height``, ``width``) at the network input ``(H, W)`` after ``mode``'s
    resize; boxes of zero width or height are left out."""
    sizes = []
    for r in records:
        boxes = np.asarray(r.boxes, np.float64).reshape(-1, 4)
        if not len(boxes):
            continue
        p = letterbox_params((r.height, r.width), input_size, mode)
        wh = np.stack(
            [(boxes[:, 2] - boxes[:, 0]) * p.scale_x, (boxes[:, 3] - boxes[:, 1]) * p.scale_y], 1
        )
        sizes.append(wh[(wh > 0).all(1)])
    return np.concatenate(sizes).astype(np.float32) if sizes else np.zeros((0, 2), np.float32)


def deal_masks(num_anchors: int, num_heads: int, key: str = "num_anchors") -> list[list[int]]:
    """Anchor indices per head, ascending stride, for ``num_anchors`` anchors sorted by area:
    head ``h`` gets the ``h``-th run of ``num_anchors / num_heads``; fails naming ``key`` when
    that is not a whole number."""
    if isinstance(num_anchors, bool) or not isinstance(num_anchors, int) or num_anchors < 1:
        raise ConfigError(f"{key}: expected a positive integer, got {num_anchors!r}")
    if num_anchors % num_heads:
        raise ConfigError(
            f"{key}={num_anchors} is not divisible by the model's {num_heads} [yolo] heads: "
            f"each head takes the same number of anchors; use a multiple of {num_heads}, "
            f"e.g. {num_heads * max(1, round(num_anchors / num_heads))}"
        )
    per = num_anchors // num_heads
    return [list(range(h * per, (h + 1) * per)) for h in range(num_heads)]


@dataclass(frozen=True)
class AnchorQuality:
    """How anchors fit box sizes: darknet's average best IoU (percent), the share of boxes whose
    best IoU is under :data:`POOR_IOU`, a histogram of best IoUs (10 bins of ``[0, 1]``), and
    the share of boxes whose best anchor is in no head's mask (darknet's loss gives such a box
    no box or class signal: yolov4-tiny's cfg leaves anchor 0 out of both heads)."""

    avg_iou: float
    poor_share: float
    histogram: list[int]
    unmasked_share: float = 0.0

    @property
    def poor(self) -> bool:
        return (
            self.poor_share > POOR_SHARE
            or self.avg_iou < POOR_AVG_IOU
            or self.unmasked_share > POOR_UNMASKED_SHARE
        )

    def line(self) -> str:
        text = (
            f"avg IoU {self.avg_iou:.2f} %, {100 * self.poor_share:.1f} % of boxes under "
            f"{POOR_IOU} IoU"
        )
        if self.unmasked_share:
            text += (
                f", {100 * self.unmasked_share:.1f} % best matched by an anchor in no head's "
                "mask (no box or class signal)"
            )
        return text


def masked_anchors(
    anchors: Sequence[Sequence[float]], masks: Sequence[Sequence[int]]
) -> list[Sequence[float]]:
    """The anchors some head uses (in ``masks``), in anchor order."""
    used = {i for mask in masks for i in mask}
    return [a for i, a in enumerate(anchors) if i in used]


def anchor_quality(
    wh: np.ndarray,
    anchors: Sequence[Sequence[float]],
    masks: Sequence[Sequence[int]] | None = None,
) -> AnchorQuality:
    """:class:`AnchorQuality` of ``anchors`` ``(K, 2)`` for box sizes ``wh`` ``(N, 2)``, N >= 1;
    with the heads' ``masks``, the share of boxes whose best anchor no head uses."""
    anchors = np.asarray(anchors, np.float32)
    index, best = closest_anchor(wh, anchors)
    unmasked = 0.0
    if masks is not None:
        used = np.zeros(len(anchors), bool)
        used[[i for mask in masks for i in mask]] = True
        unmasked = float((~used[index]).mean())
    return AnchorQuality(
        avg_best_iou(wh, anchors),
        float((best < POOR_IOU).mean()),
        iou_histogram(best),
        unmasked,
    )


@dataclass(frozen=True)
class AnchorReport:
    """A fit: the anchors and masks written, their quality and that of the model's anchors."""

    anchors: list[list[float]]
    masks: list[list[int]]
    fitted: AnchorQuality
    current: AnchorQuality
    num_boxes: int
    input_size: list[int]
    resize_mode: str
    restart_ious: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "anchors": self.anchors,
            "masks": self.masks,
            "avg_iou": self.fitted.avg_iou,
            "poor_share": self.fitted.poor_share,
            "histogram": self.fitted.histogram,
            "current_avg_iou": self.current.avg_iou,
            "current_poor_share": self.current.poor_share,
            "current_histogram": self.current.histogram,
            "current_unmasked_share": self.current.unmasked_share,
            "num_boxes": self.num_boxes,
            "input_size": self.input_size,
            "resize_mode": self.resize_mode,
            "restart_ious": self.restart_ious,
            "histogram_bins": [round(i / 10, 1) for i in range(11)],
        }

    def text(self) -> str:
        """What the command prints: anchors, masks, both figures and both histograms."""
        h, w = self.input_size
        lines = [
            f"{self.num_boxes} boxes at {w}x{h} ({self.resize_mode}), "
            f"{len(self.anchors)} anchors, best of {len(self.restart_ious)} k-means starts",
            "anchors = " + ", ".join(f"{_num(a)},{_num(b)}" for a, b in self.anchors),
            "masks (ascending stride) = " + " | ".join(",".join(map(str, m)) for m in self.masks),
            f"fitted anchors:  {self.fitted.line()}",
            f"current anchors: {self.current.line()}",
            "best IoU     fitted   current",
        ]
        for i, (a, b) in enumerate(zip(self.fitted.histogram, self.current.histogram, strict=True)):
            lines.append(
                f"[{i / 10:.1f}, {(i + 1) / 10:.1f}{']' if i == 9 else ')'}  {a:8d}  {b:8d}"
            )
        return "\n".join(lines)


def _num(v: float) -> str:
    return f"{v:g}"


def fit_model_anchors(
    wh: np.ndarray,
    config: ModelConfig,
    num_anchors: int | None = None,
    restarts: int = 10,
    seed: int = 0,
    input_size: Sequence[int] | None = None,
    resize_mode: str = "letterbox",
    split: str = "data.train",
) -> AnchorReport:
    """Fit ``num_anchors`` (default: the model's count) anchors to box sizes ``wh`` ``(N, 2)``
    for ``config``'s heads; bad values fail naming ``num_anchors``, ``restarts`` or ``split``."""
    num_anchors = len(config.anchors) if num_anchors is None else num_anchors
    masks = deal_masks(num_anchors, len(config.strides))
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 1:
        raise ConfigError(f"restarts: expected an integer >= 1, got {restarts!r}")
    if len(wh) == 0:
        raise DatasetError(
            f"{split} has no boxes: anchors are fitted to the training boxes (boxes the loader "
            "dropped, e.g. of zero width or outside their image, are listed in its problem "
            "report above and by yolov4-check-data)"
        )
    if len(wh) < num_anchors:
        raise ConfigError(
            f"num_anchors={num_anchors} but {split} has only {len(wh)} boxes to fit them to"
        )
    fit = fit_anchors(wh, num_anchors, restarts=restarts, seed=seed)
    anchors = [[round(float(a), 4), round(float(b), 4)] for a, b in fit.anchors]
    return AnchorReport(
        anchors=anchors,
        masks=masks,
        fitted=anchor_quality(wh, anchors, masks),
        current=anchor_quality(wh, config.anchors, config.masks),
        num_boxes=len(wh),
        input_size=list(input_size or config.input_size),
        resize_mode=resize_mode,
        restart_ious=list(fit.restart_ious),
    )


def fitted_config(config: ModelConfig, report: AnchorReport) -> ModelConfig:
    """``config`` with the report's anchors, masks and input size (checked like any config)."""
    values = config.to_dict()
    values.update(anchors=report.anchors, masks=report.masks, input_size=report.input_size)
    return ModelConfig.from_dict(values)


def _hydra_list(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_hydra_list(v) for v in value) + "]"
    return _num(value) if isinstance(value, float) else str(value)


def override_line(report: AnchorReport) -> str:
    """``model.anchors=[[w,h],...] model.masks=[[...],...]`` for ``train.py`` (shell-quoted)."""
    return (
        f"'model.anchors={_hydra_list(report.anchors)}' 'model.masks={_hydra_list(report.masks)}'"
    )


def model_yaml(model: dict[str, Any], report: AnchorReport) -> str:
    """A ``configs/model/`` file: the model group's ``name``/``cfg``/``num_classes`` and the
    fitted ``anchors`` and ``masks``."""
    lines = [
        f"# anchors fitted by python -m yolov4.anchors: {report.num_boxes} boxes at "
        f"{report.input_size[1]}x{report.input_size[0]} ({report.resize_mode}), "
        f"avg IoU {report.fitted.avg_iou:.2f} % (the model's own: {report.current.avg_iou:.2f} %)"
    ]
    for key in ("name", "cfg", "num_classes"):
        if key in model:
            value = model[key]
            lines.append(f"{key}: {'null' if value is None else value}")
    lines.append(f"anchors: {_hydra_list(report.anchors)}")
    lines.append(f"masks: {_hydra_list(report.masks)}")
    return "\n".join(lines) + "\n"
