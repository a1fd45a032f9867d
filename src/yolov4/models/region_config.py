"""The model config of a ``[region]`` (YOLOv2) network: its checks and its cfg sections (no torch).

A ``[region]`` network (:mod:`yolov4.models.region`) is held as one head of every anchor with
``region=True``. It is built for inference, so the ``[yolo]`` loss keys (:data:`YOLO_LOSS_KEYS`)
stay at darknet's defaults: :func:`check_region_config` refuses others, and
:meth:`yolov4.models.config.ModelConfig.to_dict` leaves them out.
"""

from __future__ import annotations

from typing import Any

from yolov4.errors import ConfigError
from yolov4.models.cfg import Section
from yolov4.models.config_checks import per_head
from yolov4.models.gaussian import GAUSSIAN_KIND
from yolov4.models.region import region_anchors_in_cells
from yolov4.models.yolo_keys import CPC, GLOBAL_YOLO_KEYS, PER_HEAD_KEYS, put_option

__all__ = ["YOLO_LOSS_KEYS", "check_head_kind", "check_region_config", "head_kind", "put_region"]

# the [yolo] loss keys (darknet's [yolo] training): a [region] network, built for inference, has
# none, and its to_dict leaves them out
YOLO_LOSS_KEYS = (*(k for k in PER_HEAD_KEYS if k != "scale_x_y"), CPC, "iou_loss")


def check_region_config(config: Any) -> None:
    """A ``[region]`` model config (:class:`~yolov4.models.config.ModelConfig`): one head of
    every anchor, and the ``[yolo]`` loss keys (:data:`YOLO_LOSS_KEYS`) at darknet's defaults,
    as it has no such loss."""
    if config.masks != (tuple(range(len(config.anchors))),):
        raise ConfigError(
            "model.masks of a [region] (YOLOv2) network: one head of every anchor, "
            f"[{list(range(len(config.anchors)))}], got {[list(m) for m in config.masks]}"
        )
    heads = len(config.strides)
    defaults = {k: per_head(k, v, heads) for k, v in PER_HEAD_KEYS.items() if k in YOLO_LOSS_KEYS}
    defaults |= {CPC: (None,) * heads, "iou_loss": GLOBAL_YOLO_KEYS["iou_loss"]}
    for key, default in defaults.items():
        if (value := getattr(config, key)) != default:
            got = (
                value
                if isinstance(value, str)
                else [list(v) if isinstance(v, tuple) else v for v in value]
            )
            raise ConfigError(
                f"model.{key} is a [yolo] loss key; a [region] (YOLOv2) network is built for "
                f"inference and has no such loss: leave it out, got {got}"
            )


def head_kind(config: Any) -> str:
    """The cfg section type of ``config``'s heads: ``region``, ``Gaussian_yolo`` or ``yolo``
    (from ``config.region`` and ``config.gaussian``), or :class:`ConfigError` for a config that
    sets both, or ``gaussian`` with ``new_coords`` (``parse_gaussian_yolo`` does not read it)."""
    if config.region and config.gaussian:
        raise ConfigError(
            "model.region=True and model.gaussian=True: a network's heads are [region] or "
            "[Gaussian_yolo], not both"
        )
    if config.gaussian and config.new_coords:
        raise ConfigError(
            "model.new_coords=True with model.gaussian=True: darknet's [Gaussian_yolo] decodes "
            "sizes as exp(tw) * anchor and has no new_coords"
        )
    return "region" if config.region else GAUSSIAN_KIND if config.gaussian else "yolo"


def check_head_kind(sections: list[Section], heads: list[int], config: Any, source: str) -> None:
    """The cfg's head sections (``sections[i]`` for ``i`` in ``heads``) are of
    :func:`head_kind` of ``config``; ``source`` names the cfg in the message."""
    kind = head_kind(config)
    kinds = {sections[i].kind for i in heads}
    if kinds != {kind}:
        flags = f"model.region={config.region}, model.gaussian={config.gaussian}"
        raise ConfigError(
            f"{flags} (a [{kind}] head) does not fit {source}, whose head is "
            f"{', '.join(f'[{k}]' for k in sorted(kinds))}"
        )


def put_region(sections: list[Section], i: int, config: Any) -> None:
    """``config``'s classes and anchors (grid cells) into the ``[region]`` ``sections[i]``, and
    the filters of the convolution in front of it."""
    y, feeder = sections[i], sections[i - 1]
    put_option(y, "anchors", region_anchors_in_cells(config.anchors, config.strides[0]))
    put_option(y, "classes", config.num_classes)
    put_option(y, "num", len(config.anchors))
    if feeder.kind == "convolutional":
        put_option(feeder, "filters", config.num_outputs)
