"""The DataModule's preprocessing argument read where it enters: ``data.preprocess`` with its
``data.input_size`` / ``data.resize_mode`` shorthands.

:class:`~yolov4.data.datamodule.DetectionDataModule`'s constructor calls it; a bad value is a
:class:`~yolov4.errors.ConfigError` naming the key, the expected and the found.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from yolov4.core.preprocess import PreprocessConfig
from yolov4.data.collate import SIZE_MULTIPLE
from yolov4.errors import ConfigError
from yolov4.models.stride import check_stride_multiple
from yolov4.ops.letterbox import RESIZE_MODES

__all__ = ["preprocess_config"]


def preprocess_config(
    preprocess: PreprocessConfig | Mapping[str, Any] | None,
    input_size: int | Sequence[int] | None,
    resize_mode: str | None,
    multiple: int = SIZE_MULTIPLE,
) -> PreprocessConfig:
    """``data.preprocess`` with the ``data.input_size`` / ``data.resize_mode`` shorthands
    applied; a shorthand that contradicts an explicit ``preprocess`` value is refused; sides
    must be multiples of ``multiple`` (the network's largest stride)."""
    if resize_mode is not None and resize_mode not in RESIZE_MODES:  # as the user typed it
        raise ConfigError(f"data.resize_mode: expected one of {RESIZE_MODES}, got {resize_mode!r}")
    if isinstance(preprocess, PreprocessConfig):
        config, given = preprocess, set(preprocess.to_dict())
    else:
        values = {} if preprocess is None else dict(preprocess)
        if "input_size" in values:
            values["input_size"] = _size(values["input_size"], "data.preprocess.input_size")
        config, given = PreprocessConfig.from_dict(values), set(values)
    shorthands = {"input_size": ("input_size", input_size), "mode": ("resize_mode", resize_mode)}
    for field, (key, value) in shorthands.items():
        if value is None:
            continue
        value = _size(value, f"data.{key}") if field == "input_size" else value
        if field in given and getattr(config, field) != value:
            show = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
            raise ConfigError(
                f"data.{key}={show(value)} contradicts data.preprocess.{field}="
                f"{show(getattr(config, field))}; set data.{key} (model.input_size follows it)"
            )
        config = PreprocessConfig(**{**config.to_dict(), field: value})
    check_stride_multiple(config.input_size, multiple, "data.input_size")
    return config


def _size(value: int | Sequence[int], key: str) -> tuple[int, ...]:
    size = (int(value), int(value)) if isinstance(value, int) else tuple(int(s) for s in value)
    if len(size) != 2 or min(size) <= 0:
        raise ConfigError(f"{key}: expected (H, W) positive integers, got {value}")
    return size
