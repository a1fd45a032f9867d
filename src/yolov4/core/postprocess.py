"""The postprocess settings, owned once: what turns decoded predictions into detections.

One :class:`PostprocessConfig` (``conf``, ``iou``, ``nms_kind``, ``beta``, ``multi_label``,
``agnostic_nms``, ``max_det``, ``max_candidates``) and its two presets:

* :data:`DARKNET_VALID` — evaluation: darknet's ``detector valid`` / ``map`` keeps every box
  above 0.001 and suppresses at 0.6 (the COCO mAP protocol). ``configs/*.yaml``'s ``eval:``
  block mirrors it (a test keeps them equal).
* :data:`SERVING` — the Predictor, the service and the artifact's defaults: darknet's
  ``detector test`` threshold 0.25 and its hard-coded NMS 0.45.

``nms_kind``: ``"iou"`` (torchvision's NMS), ``"diou"`` (darknet's greedynms with ``beta``), or
``"model"``: the NMS the model's darknet cfg names (``nms_kind``/``beta_nms`` of its config),
resolved by :meth:`PostprocessConfig.resolve` where the model is known.

``agnostic_nms`` (ultralytics' name for the same switch): false is darknet's NMS, per class;
true suppresses across classes, so neighbouring anchors that see one object as different
classes leave one box (what a tracker needs). ``multi_label=false`` alone does not do that: it
keeps each anchor's best class, and anchors whose best classes differ all survive a per-class
NMS. Settings written without the key (older checkpoints and artifacts) read as false.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

from yolov4.errors import ConfigError, shown
from yolov4.ops.postprocess import (
    CONF_THRESH,
    DIOU_BETA,
    MAX_CANDIDATES,
    MAX_DET,
    NMS_KINDS,
    NMS_THRESH,
    postprocess,
)

if TYPE_CHECKING:
    from yolov4.models.config import ModelConfig

__all__ = ["PostprocessConfig", "DARKNET_VALID", "SERVING", "NMS_CHOICES", "SWITCHES"]

NMS_CHOICES = (*NMS_KINDS, "model")
# the settings that are true or false (entry points take each as a key of its own)
SWITCHES = ("multi_label", "agnostic_nms")
# darknet's `detector valid` / `map`: every box above 0.001, NMS 0.6
VALID_CONF_THRESH = 0.001
VALID_NMS_THRESH = 0.6


def _is_number(value: Any) -> bool:
    """A real number, Python's or numpy's (``np.float32(0.5)``); ``bool`` is not one."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


@dataclass(frozen=True)
class PostprocessConfig:
    """Settings of :func:`yolov4.ops.postprocess.postprocess` (see the module docstring).

    Every value is checked on construction: a bad one raises :class:`ConfigError` naming the
    key, the allowed values and what was found.
    """

    conf: float = CONF_THRESH
    iou: float = NMS_THRESH
    nms_kind: str = "iou"
    beta: float = DIOU_BETA
    multi_label: bool = True
    agnostic_nms: bool = False
    max_det: int = MAX_DET
    max_candidates: int = MAX_CANDIDATES

    def __post_init__(self) -> None:
        for key in ("conf", "iou", "beta"):  # numpy numbers as Python's (JSON, comparisons)
            if _is_number(getattr(self, key)):
                object.__setattr__(self, key, float(getattr(self, key)))
        for key in ("max_det", "max_candidates"):
            if isinstance(getattr(self, key), np.integer):
                object.__setattr__(self, key, int(getattr(self, key)))
        for key in ("conf", "iou"):
            value = getattr(self, key)
            if not (_is_number(value) and 0 <= value <= 1):
                raise ConfigError(
                    f"postprocess {key} must be a number in [0, 1], got {shown(value)}"
                )
        if self.nms_kind not in NMS_CHOICES:
            raise ConfigError(
                f"postprocess nms_kind must be one of {list(NMS_CHOICES)}, got {self.nms_kind!r}"
            )
        if not (_is_number(self.beta) and self.beta > 0):
            raise ConfigError(f"postprocess beta must be a number > 0, got {shown(self.beta)}")
        for key in SWITCHES:
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(
                    f"postprocess {key} must be true or false, got {getattr(self, key)!r}"
                )
        for key in ("max_det", "max_candidates"):
            value = getattr(self, key)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ConfigError(f"postprocess {key} must be an integer >= 1, got {value!r}")

    def replace(self, **changes: Any) -> PostprocessConfig:
        """A copy with ``changes`` (``None`` values keep the current one); unknown keys fail."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(
                f"unknown postprocess key(s) {unknown}; expected keys from {sorted(known)}"
            )
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def update(self, values: Mapping[str, Any] | None) -> PostprocessConfig:
        """:meth:`replace` from a mapping (a YAML node, metadata.json's ``thresholds``)."""
        return self.replace(**dict(values or {}))

    def resolve(self, model: ModelConfig) -> PostprocessConfig:
        """``nms_kind="model"`` replaced by the NMS of the model's cfg (``nms_kind``,
        ``beta_nms``); any other setting unchanged."""
        if self.nms_kind != "model":
            return self
        kind, beta = model.default_nms
        return dataclasses.replace(self, nms_kind=kind, beta=beta)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def __call__(
        self,
        predictions: Tensor,
        image_size: tuple[int, int],
        classes: Sequence[int] | Tensor | None = None,
        windows: Tensor | None = None,
    ) -> list[Tensor]:
        """:func:`yolov4.ops.postprocess.postprocess` with these settings: ``predictions
        (B, N, 5 + C)`` -> ``B`` tensors ``(K_i, 6)`` ``[x1, y1, x2, y2, score, class]``
        (``classes``, ``windows``: as there)."""
        if self.nms_kind == "model":
            raise ConfigError("postprocess nms_kind='model' must be resolved with the model first")
        return postprocess(
            predictions,
            image_size,
            conf_thresh=self.conf,
            iou_thresh=self.iou,
            multi_label=self.multi_label,
            agnostic_nms=self.agnostic_nms,
            nms_kind=self.nms_kind,
            beta=self.beta,
            max_candidates=self.max_candidates,
            max_det=self.max_det,
            classes=classes,
            windows=windows,
        )


DARKNET_VALID = PostprocessConfig(conf=VALID_CONF_THRESH, iou=VALID_NMS_THRESH)
SERVING = PostprocessConfig()
