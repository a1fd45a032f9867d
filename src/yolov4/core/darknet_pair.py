"""A network as darknet's two files, ``.cfg`` and ``.weights``, fed as a preprocessing says:
the cfg at its input size with ``letter_box`` from its resize mode
(:func:`yolov4.darknet.write_darknet_cfg`), the weights by
:func:`yolov4.darknet.save_darknet_weights`; with the class names, darknet's ``.names`` file
beside the weights (:mod:`yolov4.core.names_file`). What a train run writes beside its weights
(:mod:`yolov4.training.darknet_files`) and export.py's ``darknet`` format writes into an
artifact (:mod:`yolov4.export.darknet_format`); darknet and OpenCV's
``cv2.dnn.readNetFromDarknet`` read them.

Darknet (and OpenCV's importer, with ``blobFromImage(..., 1 / 255, swapRB=True)``) feed a
network RGB values scaled to ``[0, 1]``: a network trained on other inputs (``channel_order``
bgr, another ``scale``) has no darknet equivalent and is refused. Darknet's letterbox border is
its 0.5 grey (:data:`DARKNET_PAD_VALUE`), where the project's default is 114 of 255: the files
of a network letterboxed with another border come with :func:`pad_warning`'s note.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from yolov4.core.artifact import check_class_names
from yolov4.core.files import atomic_write
from yolov4.core.names_file import NAMES_SUFFIX, names_file_text
from yolov4.core.preprocess import UINT8_SCALE, PreprocessConfig
from yolov4.darknet import save_darknet_weights, write_darknet_cfg
from yolov4.errors import CheckpointError, ConfigError
from yolov4.models import YOLOv4

__all__ = [
    "DARKNET_PAD_VALUE",
    "darknet_cfg",
    "darknet_names",
    "names_path",
    "pad_warning",
    "save_darknet_pair",
]

# darknet's letterbox fills the border with 0.5 (its images are floats in [0, 1]): 127.5 / 255,
# whose nearest uint8 is 127 (the project's own letterbox pads with 114)
DARKNET_PAD_VALUE = 127


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


def pad_warning(preprocess: PreprocessConfig) -> str | None:
    """What the files' readers do otherwise than the checkpoint when it letterboxes with a
    border other than darknet's 0.5 grey; None when they pad alike (or it stretches)."""
    pad = preprocess.pad_value
    if preprocess.mode != "letterbox" or pad == DARKNET_PAD_VALUE:
        return None
    return (
        f"the checkpoint letterboxes with pad_value {pad}, the files' letter_box=1 with "
        f"darknet's 0.5 grey: darknet pads with 127.5 of 255 and darknet_weights= with "
        f"{DARKNET_PAD_VALUE}, so their detections near the image borders differ from the "
        f"checkpoint's (OpenCV's readNetFromDarknet gives the checkpoint's on images "
        f"letterboxed with {pad})"
    )


def darknet_names(model: YOLOv4, class_names: Sequence[str]) -> str:
    """The ``.names`` text of ``class_names``, one per class of ``model``; a
    :class:`ConfigError` for another count or a name a ``.names`` line cannot hold
    (:func:`~yolov4.core.names_file.names_file_text`)."""
    where = f"class names of {model.config.name}"
    names = check_class_names(class_names, model.num_classes, where, ConfigError)
    return names_file_text(names, where)


def names_path(weights_path: str | Path) -> Path:
    """Where :func:`save_darknet_pair` writes the class names of ``weights_path``:
    ``<stem>.names`` beside it (``best.weights``: ``best.names``)."""
    return Path(weights_path).with_suffix(NAMES_SUFFIX)


def save_darknet_pair(
    model: YOLOv4,
    preprocess: PreprocessConfig,
    cfg_path: str | Path,
    weights_path: str | Path,
    seen: int | None = None,
    class_names: Sequence[str] | None = None,
) -> tuple[Path, Path]:
    """Write ``model`` as ``cfg_path`` (:func:`darknet_cfg`) and ``weights_path``, and
    ``class_names`` (one per class; ``None``: no names file) as :func:`names_path`, each
    atomically; ``seen`` (images trained on, the weights header's) defaults to the model's
    (:func:`~yolov4.darknet.save_darknet_weights`). Refusals (:func:`darknet_cfg`,
    :func:`darknet_names`) come before any file is written."""
    text = darknet_cfg(model, preprocess)
    names = None if class_names is None else darknet_names(model, class_names)
    weights_path = save_darknet_weights(model, weights_path, seen=seen)
    cfg_path = atomic_write(cfg_path, lambda f: f.write(text.encode()))
    if names is not None:
        atomic_write(names_path(weights_path), lambda f: f.write(names.encode()))
    return cfg_path, weights_path
