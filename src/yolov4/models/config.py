"""The model's configuration: which network, its classes, and darknet's ``[net]``/``[yolo]`` keys.

Values come from the Hydra model configs (``configs/model/<name>.yaml``, shipped inside the
package) with keyword overrides on top. The resulting :class:`ModelConfig` is stored on the
model as ``model.config`` and is the one place decode, loss and export read anchors, masks,
strides and ``scale_x_y`` from. ``build_model(**config.to_dict())`` rebuilds the same network.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from yolov4.errors import ConfigError

__all__ = ["ModelConfig", "MODEL_CONFIG_DIR", "available_models", "IOU_LOSSES", "NMS_KINDS"]

MODEL_CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs" / "model"


# [yolo] iou_loss values the loss computes (darknet's `mse`, its default when a cfg has no
# iou_loss, is not implemented: every YOLOv4 cfg sets ciou).
IOU_LOSSES = ("iou", "giou", "diou", "ciou")
# [yolo] nms_kind values and the NMS of ops.postprocess each one means by default: darknet's
# greedynms and diounms both suppress by DIoU with the distance term to the power beta_nms;
# `default` (no nms_kind in the cfg) is plain IoU NMS.
NMS_KINDS = {"default": "iou", "greedynms": "diou", "diounms": "diou"}


def available_models() -> list[str]:
    return sorted(p.stem for p in MODEL_CONFIG_DIR.glob("*.yaml"))


def _pairs(value: Any) -> tuple[tuple[float, float], ...]:
    return tuple((float(w), float(h)) for w, h in value)


@dataclass(frozen=True)
class ModelConfig:
    """Darknet's description of a YOLO network (see ``configs/model/yolov4.yaml``)."""

    name: str
    num_classes: int
    input_size: tuple[int, int]
    strides: tuple[int, ...]
    anchors: tuple[tuple[float, float], ...]
    masks: tuple[tuple[int, ...], ...]
    scale_x_y: tuple[float, ...]
    ignore_thresh: float = 0.7
    truth_thresh: float = 1.0
    iou_thresh: float | None = None
    iou_normalizer: float = 0.07
    cls_normalizer: float = 1.0
    obj_normalizer: float = 1.0
    max_delta: float | None = None
    iou_loss: str = "ciou"
    nms_kind: str = "greedynms"
    beta_nms: float = 0.6
    # [yolo] new_coords=1 (Scaled-YOLOv4): sizes 4 * sigmoid(t)^2 * anchor, see ops.decode
    new_coords: bool = False

    @classmethod
    def load(cls, name: str, **overrides: Any) -> ModelConfig:
        """Read ``configs/model/<name>.yaml`` and apply ``overrides``; unknown keys fail."""
        path = MODEL_CONFIG_DIR / f"{name}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown model name {name!r}; expected one of {available_models()}")
        values = {
            k: v for k, v in yaml.safe_load(path.read_text()).items() if not k.startswith("_")
        }
        values.update(overrides)
        return cls.from_dict(values)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown model config key(s) {unknown}; expected keys from {sorted(known)}"
            )
        missing = sorted(
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.name not in values
        )
        if missing:
            raise ConfigError(f"model config is missing key(s) {missing}")
        v = dict(values)
        try:
            v["num_classes"] = int(v["num_classes"])
            v["input_size"] = tuple(int(s) for s in v["input_size"])
            v["strides"] = tuple(int(s) for s in v["strides"])
            v["anchors"] = _pairs(v["anchors"])
            v["masks"] = tuple(tuple(int(i) for i in m) for m in v["masks"])
            v["scale_x_y"] = tuple(float(s) for s in v["scale_x_y"])
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model config has a value of the wrong type: {e}") from e
        config = cls(**v)
        config.validate()
        return config

    def validate(self) -> None:
        if self.num_classes < 1:
            raise ConfigError(f"model.num_classes must be >= 1, got {self.num_classes}")
        if len(self.input_size) != 2 or any(s <= 0 or s % 32 for s in self.input_size):
            raise ConfigError(
                f"model.input_size must be [H, W], multiples of 32, got {list(self.input_size)}"
            )
        n = len(self.strides)
        if len(self.masks) != n or len(self.scale_x_y) != n:
            raise ConfigError(
                f"model.masks and model.scale_x_y need one entry per stride ({n}), "
                f"got {len(self.masks)} masks and {len(self.scale_x_y)} scale_x_y"
            )
        for i, mask in enumerate(self.masks):
            bad = [a for a in mask if not 0 <= a < len(self.anchors)]
            if bad or not mask:
                raise ConfigError(
                    f"model.masks[{i}]={list(mask)} must be non-empty indices into the "
                    f"{len(self.anchors)} anchors"
                )
            if len(mask) != len(self.masks[0]):
                raise ConfigError(
                    f"every head needs the same number of anchors; model.masks = {self.masks}"
                )
        if any(w <= 0 or h <= 0 for w, h in self.anchors):
            raise ConfigError(f"model.anchors must be positive (w, h) pairs, got {self.anchors}")
        if self.iou_loss not in IOU_LOSSES:
            raise ConfigError(
                f"model.iou_loss must be one of {list(IOU_LOSSES)}, got {self.iou_loss!r}"
            )
        if self.nms_kind not in NMS_KINDS:
            raise ConfigError(
                f"model.nms_kind must be one of {list(NMS_KINDS)}, got {self.nms_kind!r}"
            )
        ranges = {  # key: (low, high, low inclusive)
            "ignore_thresh": (0.0, 1.0, True),
            "truth_thresh": (0.0, float("inf"), False),
            "iou_thresh": (0.0, 1.0, False),
            "iou_normalizer": (0.0, float("inf"), True),
            "cls_normalizer": (0.0, float("inf"), True),
            "obj_normalizer": (0.0, float("inf"), True),
            "max_delta": (0.0, float("inf"), False),
            "beta_nms": (0.0, float("inf"), False),
        }
        for key, (lo, hi, inclusive) in ranges.items():
            value = getattr(self, key)
            if value is None and key in ("iou_thresh", "max_delta"):
                continue
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = ok and (lo <= value if inclusive else lo < value) and value <= hi
            if not ok:
                bound = f"{'[' if inclusive else '('}{lo:g}, {hi:g}]"
                raise ConfigError(f"model.{key} must be a number in {bound}, got {value!r}")
        if not isinstance(self.new_coords, bool):
            raise ConfigError(f"model.new_coords must be true or false, got {self.new_coords!r}")
        if any(not s >= 1.0 for s in self.scale_x_y):
            raise ConfigError(f"model.scale_x_y must be >= 1 per head, got {list(self.scale_x_y)}")

    @property
    def default_nms(self) -> tuple[str, float]:
        """The NMS darknet runs for this model (``nms_kind``, ``beta_nms``) in the vocabulary of
        :func:`yolov4.ops.postprocess.postprocess`: ``(nms_kind, beta)``."""
        return NMS_KINDS[self.nms_kind], self.beta_nms

    @property
    def num_anchors(self) -> int:
        """Anchors per head (``A``)."""
        return len(self.masks[0])

    @property
    def num_outputs(self) -> int:
        """Channels of each raw head map: ``A * (5 + C)``."""
        return self.num_anchors * (5 + self.num_classes)

    def head_anchors(self) -> list[list[tuple[float, float]]]:
        """Anchor ``(w, h)`` in input pixels for each head, ascending stride."""
        return [[self.anchors[a] for a in mask] for mask in self.masks]

    def to_dict(self) -> dict[str, Any]:
        """Builtins only (lists, not tuples): safe for JSON, YAML and ``torch.load(weights_only=True)``."""

        def plain(x: Any) -> Any:
            return [plain(i) for i in x] if isinstance(x, (tuple, list)) else x

        return {k: plain(v) for k, v in dataclasses.asdict(self).items()}
