"""A network as darknet's two files, ``.cfg`` and ``.weights``, fed as a preprocessing says:
the cfg at its input size with ``letter_box`` from its resize mode
(:func:`yolov4.darknet.write_darknet_cfg`), the weights by
:func:`yolov4.darknet.save_darknet_weights`. What a train run writes beside its weights
(:mod:`yolov4.training.darknet_files`) and export.py's ``darknet`` format writes into an
artifact (:mod:`yolov4.export.darknet_format`); darknet and OpenCV's
``cv2.dnn.readNetFromDarknet`` read them.

Darknet (and OpenCV's importer, with ``blobFromImage(..., 1 / 255, swapRB=True)``) feed a
network RGB values scaled to ``[0, 1]``: a network trained on other inputs (``channel_order``
bgr, another ``scale``) has no darknet equivalent and is refused. Darknet's letterbox border is
its 0.5 grey, where the project's default is 114 of 255.
"""

from __future__ import annotations

import math
from pathlib import Path

from yolov4.core.files import atomic_write
from yolov4.core.preprocess import UINT8_SCALE, PreprocessConfig
from yolov4.darknet import save_darknet_weights, write_darknet_cfg
from yolov4.errors import CheckpointError, ConfigError
from yolov4.models import YOLOv4

__all__ = ["darknet_cfg", "save_darknet_pair"]


def darknet_cfg(model: YOLOv4, preprocess: PreprocessConfig) -> str:
    """The cfg text of ``model`` fed as ``preprocess`` says; :class:`ConfigError` for a
    preprocessing darknet does not feed, :class:`CheckpointError` for a fused model (no BN
    statistics to write), before anything is written."""
    p = preprocess
    if p.channel_order != "rgb" or not math.isclose(p.scale, UINT8_SCALE):
        raise ConfigError(
            f"{model.config.name} takes channel_order={p.channel_order}, scale={p.scale:g}: no "
            f"darknet equivalent (darknet and OpenCV's importer feed a network rgb values "
            f"scaled by 1/255)"
        )
    if model.is_fused:
        raise CheckpointError(
            f"{model.config.name} is fused (BN folded into its convolutions): darknet files "
            "are written from the unfused network, whose BN statistics darknet reads"
        )
    return write_darknet_cfg(
        model, input_size=tuple(p.input_size), letter_box=p.mode == "letterbox"
    )


def save_darknet_pair(
    model: YOLOv4,
    preprocess: PreprocessConfig,
    cfg_path: str | Path,
    weights_path: str | Path,
    seen: int | None = None,
) -> tuple[Path, Path]:
    """Write ``model`` as ``cfg_path`` (:func:`darknet_cfg`) and ``weights_path``, each
    atomically; ``seen`` (images trained on, the weights header's) defaults to the model's
    (:func:`~yolov4.darknet.save_darknet_weights`). Refusals come before either file is
    written."""
    text = darknet_cfg(model, preprocess)
    weights_path = save_darknet_weights(model, weights_path, seen=seen)
    cfg_path = atomic_write(cfg_path, lambda f: f.write(text.encode()))
    return cfg_path, weights_path
