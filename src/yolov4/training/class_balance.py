"""``module.class_balance``: darknet's ``counters_per_class`` computed from the training split.

``darknet`` counts the boxes of each class in the training split (what darknet's ``detector
calc_anchors`` counts and prints as ``counters_per_class = ...``), puts the counts in every head's
``model.counters_per_class`` (so the loss applies darknet's class multipliers ``max(N) / N_c``,
see :mod:`yolov4.models.class_balance`) and keeps them in the model config, which every
checkpoint, artifact and written darknet cfg carries. ``off`` (the default) leaves the model
config as it is (a cfg's own ``counters_per_class`` still acts).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from yolov4.errors import ConfigError, DatasetError
from yolov4.models import ModelConfig
from yolov4.models.class_balance import class_multipliers
from yolov4.models.config import config_sections

__all__ = [
    "CLASS_BALANCE",
    "balance_models",
    "balanced_config",
    "check_class_balance",
    "class_counts",
]

log = logging.getLogger(__name__)

CLASS_BALANCE = ("off", "darknet")


def check_class_balance(value: str | bool | None) -> str:
    """``module.class_balance`` checked: one of :data:`CLASS_BALANCE` (``None`` and YAML's
    ``off`` read as ``false`` are ``off``)."""
    value = "off" if value is None or value is False else value
    if value not in CLASS_BALANCE:
        raise ConfigError(
            f"module.class_balance must be one of {list(CLASS_BALANCE)}, got {value!r}"
        )
    return value


def class_counts(labels: Iterable[Any], num_classes: int) -> list[int]:
    """Boxes per class index ``0..C-1``; ``labels``: per image, its boxes' class indices."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for image_labels in labels:
        counts += np.bincount(np.asarray(image_labels, dtype=np.int64), minlength=num_classes)
    return counts.tolist()


def balanced_config(config: ModelConfig, data: Any) -> ModelConfig:
    """``config`` with every head's ``counters_per_class`` set to the box counts of ``data``, a
    loaded split (:class:`yolov4.data.records.DetectionData`: ``records``, ``class_names``).

    A class without boxes counts as 1, as darknet's parser counts it (logged); a split without
    any box raises :class:`DatasetError`. A config that already holds other counts (its cfg's
    ``counters_per_class`` or ``model.counters_per_class``) raises :class:`ConfigError`."""
    counts = class_counts((r.labels for r in data.records), len(data.class_names))
    if not any(counts):
        raise DatasetError("module.class_balance=darknet: the training split has no boxes to count")
    empty = [data.class_names[c] for c, n in enumerate(counts) if n == 0]
    if empty:
        log.warning(
            "module.class_balance=darknet: no training box of class(es) %s; counted as 1 "
            "(darknet's rule for counters_per_class)",
            empty,
        )
    counts = tuple(max(n, 1) for n in counts)
    heads = len(config.strides)
    present = [c for c in config.counters_per_class if c is not None]
    if (present and any(tuple(c) != counts for c in present)) or 0 < len(present) < heads:
        raise ConfigError(
            f"module.class_balance=darknet computes model.counters_per_class={list(counts)} "
            f"from the training split, but the model already has "
            f"{[None if c is None else list(c) for c in config.counters_per_class]} (its cfg's "
            "[yolo] counters_per_class or model.counters_per_class): keep one of them"
        )
    _log_multipliers(counts, config, data.class_names)
    return dataclasses.replace(config, counters_per_class=(counts,) * heads)


def balance_models(trainer: Any, models: Sequence[Any]) -> ModelConfig:
    """``class_balance=darknet``: the counts of the training split (``data.train`` of the
    ``trainer``'s DataModule) put into the config and sections of each of ``models`` (the network
    and its EMA copy); returns that config. A :class:`ConfigError` without such a split."""
    dm = trainer.datamodule if trainer is not None else None
    train = dm.split("train") if dm is not None and hasattr(dm, "split") else None
    if train is None:
        raise ConfigError(
            "module.class_balance=darknet counts the boxes of the training split: it needs "
            "a DataModule with data.train"
        )
    config = balanced_config(models[0].config, train)
    for model in models:
        model.config, model.sections = config, config_sections(config)
    return config


def _log_multipliers(counts: Sequence[int], config: ModelConfig, names: Sequence[str]) -> None:
    mult = class_multipliers(counts, config.max_delta[0])
    log.info(
        "class balance (darknet counters_per_class): %s",
        ", ".join(
            f"{name} {n} boxes x{m:.2f}" for name, n, m in zip(names, counts, mult, strict=True)
        ),
    )
