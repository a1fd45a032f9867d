"""Darknet's own files as a model: a ``.cfg`` (or a zoo name) and a ``.weights`` file, with class
names, turned into a :class:`~yolov4.core.checkpoint.Checkpoint` that the Predictor and the
export read as they read a project checkpoint.

A darknet network is fed as its cfg trained it (:func:`darknet_resize_mode`); the zoo's COCO
weights need no names file (:data:`COCO_NAMES` ships here). Without names given, a
``<weights stem>.names`` or ``<cfg stem>.names`` beside the files (as a train run and export.py
write them) gives them (:func:`~yolov4.core.names_file.names_beside`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from yolov4.core.artifact import check_class_names
from yolov4.core.checkpoint import Checkpoint
from yolov4.core.darknet_pair import DARKNET_PAD_VALUE
from yolov4.core.names_file import NAMES_SUFFIX, names_beside, read_names_file
from yolov4.core.preprocess import RESIZE_MODES
from yolov4.darknet import darknet_file_classes, load_darknet_weights
from yolov4.errors import CheckpointError, ConfigError
from yolov4.models import ModelConfig, build_model
from yolov4.models.cfg import ZOO

__all__ = [
    "COCO_NAMES",
    "DARKNET_PAD_VALUE",
    "darknet_checkpoint",
    "darknet_preprocess",
    "darknet_resize_mode",
    "darknet_class_names",
]

log = logging.getLogger(__name__)

# darknet's data/coco.names: the 80 classes of the zoo's COCO weights, in their index order
COCO_NAMES = (
    "person", "bicycle", "car", "motorbike", "aeroplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "sofa", "pottedplant", "bed",
    "diningtable", "toilet", "tvmonitor", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip


def darknet_resize_mode(config: ModelConfig) -> str:
    """How darknet trained the network: ``[net] letter_box=1`` letterbox, else stretch (darknet's
    ``resize_image``). evaluate.py, predict.py, export.py and :func:`darknet_checkpoint` use it."""
    return "letterbox" if config.letter_box else "stretch"


def darknet_preprocess(
    config: ModelConfig, input_size: Sequence[int] | None = None, mode: str | None = None
) -> dict[str, Any]:
    """The preprocessing darknet feeds the network ``config`` describes: its cfg's size (or
    ``input_size``), :func:`darknet_resize_mode` (or ``mode``), and a letterbox border of
    darknet's 0.5 grey (:data:`DARKNET_PAD_VALUE`)."""
    return {
        "input_size": [int(s) for s in (input_size or config.input_size)],
        "mode": mode or darknet_resize_mode(config),
        "pad_value": DARKNET_PAD_VALUE,
    }


def darknet_class_names(
    config: ModelConfig,
    names: Sequence[str] | None,
    zoo: bool,
    weights: str | os.PathLike | None = None,
) -> list[str]:
    """``names`` checked against the network's class count; without names, COCO's 80 for a zoo
    cfg with 80 classes (the zoo's published weights), else a :class:`ConfigError`. With the
    ``weights`` file, a count that differs names the class count the file fits
    (:func:`_weights_classes`)."""
    n = config.num_classes
    if names is None:
        if zoo and n == len(COCO_NAMES):
            return list(COCO_NAMES)
        beside = (
            ""
            if weights is None
            else f", or {Path(weights).with_suffix(NAMES_SUFFIX).name} beside {weights}"
        )
        raise ConfigError(
            f"{config.name} has {n} classes: give their names (names=[...], a list; on the "
            f"command line names=<file.names or data.yaml>{beside}); only a zoo cfg with "
            f"{len(COCO_NAMES)} classes takes COCO's names by default"
        )
    try:
        return check_class_names(
            names, n, f"names for {config.name} with {n} classes (its cfg's classes= or "
            "model.num_classes)", ConfigError,
        )  # fmt: skip
    except ConfigError as e:
        hint = _weights_classes(config, weights) if len(names) != n else ""
        raise ConfigError(f"{e}{hint}") from None


def _weights_classes(config: ModelConfig, weights: str | os.PathLike | None) -> str:
    """What the darknet ``weights`` file says of the class count (``"; ..."``): the one of
    ``config``'s network it fits (:func:`yolov4.darknet.darknet_file_classes`) and how to
    give it; ``""`` without a readable file or when no other count fits."""
    if weights is None or not Path(weights).is_file():
        return ""
    try:
        found = darknet_file_classes(config, weights)
    except CheckpointError:  # not darknet weights: the load names it
        return ""
    if found is None or found == config.num_classes:
        return ""
    return (
        f"; {weights} fits this cfg with classes={found}: give num_classes={found} "
        f"(Predictor.from_darknet(..., num_classes={found}); on the command line "
        f"model.num_classes={found}), or classes={found} in the cfg"
    )


def _names_beside(weights: str | os.PathLike, cfg: str | os.PathLike | None) -> list[str] | None:
    """The names of ``<weights stem>.names`` or ``<cfg stem>.names`` (the first that exists),
    logged with the file they came from; ``None`` without either."""
    found = names_beside(weights, cfg)
    if found is None:
        return None
    names = read_names_file(found)
    log.info("class names from %s (beside the darknet files; names= gives others)", found)
    return names


def darknet_checkpoint(
    model: str | os.PathLike,
    weights: str | os.PathLike,
    names: Sequence[str] | None = None,
    num_classes: int | None = None,
    input_size: Sequence[int] | None = None,
    resize_mode: str | None = None,
    **overrides: Any,
) -> Checkpoint:
    """A darknet network with its ``.weights`` loaded, as a :class:`Checkpoint`.

    Args:
        model: a zoo name (``yolov4-tiny``, ``yolov3-tiny``, ...) or a path to a darknet ``.cfg``.
        weights: the darknet ``.weights`` file; it must hold exactly the network's weights.
        names: one class name per class; default the ``.names`` file beside ``weights`` or
            the cfg (:func:`_names_beside`), else COCO's for a zoo cfg with 80 classes.
        num_classes: default the cfg's ``classes``; for a zoo name ``len(names)`` when given
            (the zoo's cfg trained on the user's classes).
        input_size: ``(H, W)``; default the cfg's ``[net] height, width``.
        resize_mode: ``letterbox`` or ``stretch``; default :func:`darknet_resize_mode`.
        overrides: model config keys over the cfg's (``anchors``, ``scale_x_y``, ...).

    Raises:
        ConfigError: unknown zoo name / unusable cfg, names that do not fit.
        CheckpointError: a missing weights file or one that does not fit the network.
        DatasetError: a ``.names`` file beside them that is not one name a line.
    """
    zoo = str(model) in ZOO
    if names is None:
        names = _names_beside(weights, None if zoo else model)
    if not zoo and not Path(model).is_file():
        raise ConfigError(
            f"model: {str(model)!r} is neither a zoo network ({', '.join(ZOO)}) nor a cfg file"
        )
    if resize_mode is not None and resize_mode not in RESIZE_MODES:
        raise ConfigError(f"resize_mode must be one of {list(RESIZE_MODES)}, got {resize_mode!r}")
    if names is not None:
        listed = names if isinstance(names, str | bytes) else list(names)  # a generator once
        names = check_class_names(listed, len(listed), "names", ConfigError)  # types, repeats
        if num_classes is None and zoo:  # a zoo cfg trained on the user's classes
            num_classes = len(names)
    if input_size is not None:
        overrides["input_size"] = [int(s) for s in input_size]
    net = (
        build_model(str(model), num_classes=num_classes, **overrides)
        if zoo
        else build_model(cfg=Path(model), num_classes=num_classes, **overrides)
    )
    class_names = darknet_class_names(net.config, names, zoo, weights)
    if not Path(weights).is_file():
        raise CheckpointError(f"darknet weights file not found: {weights}")
    header = load_darknet_weights(net, weights)
    preprocess = darknet_preprocess(net.config, mode=resize_mode)
    return Checkpoint(
        model=net.eval(),
        class_names=class_names,
        preprocess=preprocess,
        trained={"darknet_weights": str(weights), "seen": int(header.seen)},
        path=Path(weights),
    )
