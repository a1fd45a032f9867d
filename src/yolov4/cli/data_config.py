"""The data config as the commands build and record it: the splits a dataset file gives
(``data.file=``: darknet's ``.data`` file or an ultralytics data yaml) filled in before the
DataModule is built (:func:`build_data`), and the config a checkpoint records, its paths
absolute (:func:`recorded_data`)."""

from __future__ import annotations

import os
from contextlib import suppress
from typing import Any

from omegaconf import DictConfig

from yolov4.cli.common import build, to_builtin
from yolov4.errors import YoloError

__all__ = ["DATA_PATH_KEYS", "build_data", "check_data_file", "recorded_data"]

# data config keys that hold file or folder paths (recorded absolute: see recorded_data)
DATA_PATH_KEYS = ("images", "annotations", "labels", "names", "cache_dir", "file")


def build_data(cfg: DictConfig, **kwargs: Any) -> Any:
    """The DataModule of ``cfg.data`` (:func:`~yolov4.cli.common.build`). With a dataset file
    (``data.file``) the missing ``images`` and ``names`` of its YOLO txt splits are filled from
    it first, in ``cfg.data`` (what a checkpoint then records:
    :func:`~yolov4.data.dataset_file.fill_splits`), and the file's notes logged once."""
    node = cfg.get("data")
    if node is not None and node.get("file") is not None:
        from yolov4.data.dataset_file import fill_splits
        from yolov4.training.noise import rank_zero_logger

        for note in fill_splits(node):
            rank_zero_logger(__name__).info("data.file: %s", note)
    return build(cfg, "data", **kwargs)


def check_data_file(cfg: DictConfig) -> None:
    """``data.file``'s dataset file read when one is given, before a command loads its model (a
    missing or unreadable file is a :class:`~yolov4.errors.DatasetError` at start); its splits
    fill the data config later (:func:`build_data`), once the data a checkpoint records is
    known."""
    node = cfg.get("data")
    if node is not None and node.get("file") is not None:
        from yolov4.data.dataset_file import read_dataset_file

        read_dataset_file(node.file)


def recorded_data(node: Any) -> Any:
    """The data config as a checkpoint records it: builtins, the splits a dataset file gives
    (``data.file``) filled in (a file that cannot fill them is the build's to report), and
    relative paths that exist made absolute (``data.train.images=mydata/images`` typed in one
    folder broke ``evaluate.py checkpoint=`` run from another)."""
    data = to_builtin(node)
    if isinstance(data, dict) and data.get("file") is not None:
        from yolov4.data.dataset_file import fill_splits

        with suppress(YoloError):
            fill_splits(data)
    return _absolute_paths(data)


def _absolute_paths(node: Any) -> Any:
    """``node`` (builtins) with the relative paths of :data:`DATA_PATH_KEYS` that exist made
    absolute."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            relative = isinstance(value, str) and value and not os.path.isabs(value)
            if key in DATA_PATH_KEYS and relative and "://" not in value:
                expanded = os.path.expanduser(value)
                out[key] = os.path.abspath(expanded) if os.path.exists(expanded) else value
            else:
                out[key] = _absolute_paths(value)
        return out
    if isinstance(node, list):
        return [_absolute_paths(v) for v in node]
    return node
