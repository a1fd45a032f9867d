"""The data config as the commands build and record it: the splits a dataset file gives
(``data.file=``: darknet's ``.data`` file or an ultralytics data yaml) filled in before the
DataModule is built (:func:`build_data`), the config a checkpoint records, its paths
absolute (:func:`recorded_data`), and for the apps whose ``data`` defaults to a checkpoint's
record (evaluate.py, export.py) the ``data.<key>=`` options laid over it (:func:`data_argv`,
:func:`resolve_data`)."""

from __future__ import annotations

import copy
import os
from contextlib import suppress
from importlib import resources
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from yolov4.cli.common import build, to_builtin
from yolov4.errors import YoloError

__all__ = [
    "DATA_PATH_KEYS",
    "FALLBACK_DATA",
    "build_data",
    "check_data_file",
    "data_argv",
    "fill_data_file",
    "recorded_data",
    "recorded_form",
    "resolve_data",
]

# data config keys that hold file or folder paths (recorded absolute: see recorded_data)
DATA_PATH_KEYS = ("images", "annotations", "labels", "names", "cache_dir", "file", "list_root")
FALLBACK_DATA = "synthetic"  # configs/data/<this>.yaml: the data of files that record none


def build_data(cfg: DictConfig, writes_weights: bool = False, **kwargs: Any) -> Any:
    """The DataModule of ``cfg.data`` (:func:`~yolov4.cli.common.build`). With a dataset file
    (``data.file``) the missing ``images`` and ``names`` of its YOLO txt splits are filled from
    it first, in ``cfg.data`` (what a checkpoint then records: :func:`fill_data_file`), and
    the file's notes logged once (with where the weights go for a command that
    ``writes_weights``)."""
    notes = fill_data_file(cfg.get("data"), writes_weights)
    if notes:
        from yolov4.training.noise import rank_zero_logger

        for note in notes:
            rank_zero_logger(__name__).info("data.file: %s", note)
    return build(cfg, "data", **kwargs)


def fill_data_file(node: Any, writes_weights: bool = False) -> list[str]:
    """The data config ``node`` (``cfg.data``) with the missing ``images`` and ``names`` of its
    YOLO txt splits filled from its dataset file ``data.file``, in place
    (:func:`~yolov4.data.dataset_file.fill_splits`); the file's notes (the keys not read), said
    once (with where the weights go for a command that ``writes_weights``): none when there is
    no file or the splits are filled already."""
    if node is None or node.get("file") is None:
        return []
    from yolov4.data.dataset_file import fill_splits

    return fill_splits(node, writes_weights)


def check_data_file(cfg: DictConfig) -> None:
    """``data.file``'s dataset file read when one is given, before a command loads its model (a
    missing or unreadable file is a :class:`~yolov4.errors.DatasetError` at start); its splits
    fill the data config later (:func:`build_data`), once the data a checkpoint records is
    known."""
    node = cfg.get("data")
    if node is not None and node.get("file") is not None:
        from yolov4.data.dataset_file import read_dataset_file

        read_dataset_file(node.file)


def data_argv(argv: list[str]) -> list[str]:
    """``argv`` for an app whose ``data`` group defaults to null (evaluate.py, export.py: the
    data a checkpoint records): without a ``data=`` option, ``data.<key>=value`` becomes
    ``+data.<key>=value`` (Hydra refuses a key of an absent node: "Key 'data' is not in
    struct"); :func:`resolve_data` lays it over the recorded data."""
    args = argv[1:]
    if any(a.lstrip("+~").startswith("data=") for a in args):
        return argv
    return [argv[0], *("+" + a if a.startswith("data.") else a for a in args)]


def resolve_data(cfg: DictConfig, recorded: dict[str, Any] | None, source: str) -> None:
    """``cfg.data`` in place: ``data=<option>`` as given; else the data config recorded in the
    checkpoint (``recorded``: :attr:`Checkpoint.data`), with any ``+data.<key>=`` given on top
    (a ``data.file`` given fills the splits, not their recorded paths);
    else (darknet weights, artifacts, files without one) ``data=synthetic``, logged."""
    given = cfg.get("data")
    if given is not None and given.get("_target_"):
        return
    # rank 0's lines; imported here, as it imports Lightning (which export.py does without)
    from yolov4.training.noise import rank_zero_logger

    say = rank_zero_logger(__name__)
    if recorded is not None:
        base = OmegaConf.create(recorded)
        if given is not None and given.get("file") is not None:
            from yolov4.data.dataset_file import clear_splits  # the data layer imports Lightning

            clear_splits(base)  # the file given fills the splits, not the recorded paths
        say.info("data: the run's data config recorded in %s (%s)", source, recorded["_target_"])
    else:
        default = resources.files("yolov4.configs") / "data" / f"{FALLBACK_DATA}.yaml"
        base = OmegaConf.create(default.read_text())
        say.info(
            "data: %s records no data config; evaluating on data=%s (give data=... for another)",
            source,
            FALLBACK_DATA,
        )
    with open_dict(cfg):
        cfg.data = OmegaConf.merge(base, given) if given is not None else base


def recorded_data(node: Any) -> Any:
    """The data config as a checkpoint records it: builtins, the splits a dataset file gives
    (``data.file``) filled in (a file that cannot fill them is the build's to report), and
    relative paths that exist made absolute (``data.train.images=mydata/images`` typed in one
    folder is found by ``evaluate.py checkpoint=`` run from another), and what the YOLO txt
    splits read from the working directory recorded (:func:`_recorded_yolo_splits`)."""
    data = to_builtin(node)
    if isinstance(data, dict) and data.get("file") is not None:
        from yolov4.data.dataset_file import fill_splits

        with suppress(YoloError):
            fill_splits(data)
    if isinstance(data, dict):
        _recorded_yolo_splits(data)
    return _absolute_paths(data)


def recorded_form(data: Any) -> Any:
    """A checkpoint's recorded data config (builtins) as :func:`recorded_data` records it, for
    comparing with one recorded now: a YOLO txt split whose names are darknet's ``.data`` file
    with the names file it names, and a list file's ``list_root`` null (a record that reads
    its relative paths from the list's folder, else the working directory) as the working
    directory, which reads them from the same files (:func:`_recorded_yolo_splits`). A copy;
    ``data`` is left as it is."""
    data = copy.deepcopy(data)
    if isinstance(data, dict):
        _recorded_yolo_splits(data)
    return data


def _recorded_yolo_splits(data: dict[str, Any]) -> None:
    """The YOLO txt splits of the data config ``data`` (builtins) made readable from any
    folder, in place: names that are darknet's ``.data`` file become the names file it names
    (its ``names =`` is read from the working directory), and a list file of images gets the
    working directory as its ``list_root`` (where its relative paths may be read from)."""
    from yolov4.data.data_yaml import DARKNET_DATA_SUFFIX, darknet_names_file
    from yolov4.data.dataset_file import SPLITS, YOLO_SOURCE

    for split in SPLITS:
        node = data.get(split)
        if not isinstance(node, dict) or node.get("_target_") != YOLO_SOURCE:
            continue
        names = node.get("names")
        if isinstance(names, str) and names.lower().endswith(DARKNET_DATA_SUFFIX):
            with suppress(YoloError):  # a .data file that names none is the build's to report
                node["names"] = str(darknet_names_file(names).absolute())
        images = node.get("images")
        if isinstance(images, str) and os.path.isfile(images) and node.get("list_root") is None:
            node["list_root"] = os.getcwd()


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
