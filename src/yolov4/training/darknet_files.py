"""A run's darknet files: the network of the weights a run exports as darknet's ``.cfg`` and
``.weights`` and its class names as darknet's ``.names`` (``weights/best.cfg``,
``weights/best.weights``, ``weights/best.names`` beside ``weights/best.pt``), for darknet and
OpenCV's ``cv2.dnn.readNetFromDarknet``. Written by
:func:`yolov4.core.darknet_pair.save_darknet_pair`, the cfg at the checkpoint's input size with
``letter_box`` from its resize mode; a checkpoint letterboxed with another border than
darknet's 0.5 grey gets :func:`~yolov4.core.darknet_pair.pad_warning`'s warning, as export.py's
``darknet`` format gives it."""

from __future__ import annotations

import logging
from contextlib import suppress
from pathlib import Path
from typing import Any

from yolov4.core.checkpoint import load_checkpoint
from yolov4.core.darknet_pair import names_path, pad_warning, save_darknet_pair
from yolov4.errors import ConfigError, YoloError

__all__ = [
    "DARKNET_FILES_AUTO",
    "darknet_files_wanted",
    "images_per_step",
    "images_trained",
    "write_darknet_files",
]

log = logging.getLogger(__name__)

DARKNET_FILES_AUTO = "auto"  # darknet_files=auto: written for a network trained from a user's cfg


def darknet_files_wanted(setting: Any, model_cfg: Any) -> bool:
    """Whether a run writes its darknet files: ``darknet_files`` ``true``, ``false``, or
    ``auto`` (when the network came from a cfg file, ``model.cfg=``, given as ``model_cfg``)."""
    if setting == DARKNET_FILES_AUTO:
        return model_cfg is not None
    if isinstance(setting, bool):
        return setting
    raise ConfigError(f"darknet_files: expected auto, true or false, got {setting!r}")


def images_per_step(trainer: Any, batch_size: int) -> int:
    """Images in one optimizer step of ``trainer`` (``batch_size`` per process and forward pass,
    times ``trainer.accumulate_grad_batches``, times the processes): darknet's ``[net] batch``,
    by which darknet counts ``seen`` per iteration."""
    accumulate = max(1, int(getattr(trainer, "accumulate_grad_batches", 1) or 1))
    return int(batch_size) * accumulate * max(1, int(getattr(trainer, "world_size", 1) or 1))


def images_trained(trainer: Any, since: tuple[int, int] | None = None) -> int | None:
    """The images ``trainer``'s optimizer steps so far trained on, darknet's ``seen``: the
    steps since ``since`` (``(step, seen)`` of the checkpoint a run resumed from; ``None``:
    from step 0) times :func:`images_per_step` at its datamodule's ``batch_size``, plus that
    ``seen`` (a resume may train other images per step than its checkpoint's run); None
    without a datamodule batch size."""
    batch_size = getattr(getattr(trainer, "datamodule", None), "batch_size", None)
    if batch_size is None:
        return None
    step, seen = since if since is not None else (0, 0)
    return int(seen) + (int(trainer.global_step) - int(step)) * images_per_step(trainer, batch_size)


def write_darknet_files(weights: str | Path, seen: int | None = None) -> tuple[Path, Path] | None:
    """``<stem>.cfg``, ``<stem>.weights`` and ``<stem>.names`` beside the project weights file
    ``weights`` (its network, at its preprocessing's input size, ``letter_box`` from its resize
    mode; ``seen`` images trained in the header, by default the checkpoint's, ``trained.seen``;
    its class names). Files whose readers letterbox otherwise than the checkpoint are written
    with :func:`~yolov4.core.darknet_pair.pad_warning`'s warning. A network or file that cannot
    be written as darknet files is logged as a warning naming why, and nothing is left of them:
    ``None``."""
    weights = Path(weights)
    cfg_path, weights_path = weights.with_suffix(".cfg"), weights.with_suffix(".weights")
    try:
        ckpt = load_checkpoint(weights)
        seen = ckpt.model.seen if seen is None else seen
        save_darknet_pair(
            ckpt.model, ckpt.preprocess, cfg_path, weights_path, seen, ckpt.class_names
        )
    except (YoloError, OSError) as e:
        # none of the files left, this run's nor an earlier run's
        for path in (weights_path, cfg_path, names_path(weights_path)):
            if path.is_file():
                with suppress(OSError):
                    path.unlink()
        log.warning(
            "no darknet files for %s (%s): %s; the run's other outputs are written",
            weights, type(e).__name__, e,
        )  # fmt: skip
        return None
    warning = pad_warning(ckpt.preprocess)
    if warning:
        log.warning("darknet files of %s: %s", weights.name, warning)
    log.info(
        "darknet files of %s: %s, %s, %s (seen=%d)",
        weights.name, cfg_path, weights_path, names_path(weights_path), seen,
    )  # fmt: skip
    return cfg_path, weights_path
