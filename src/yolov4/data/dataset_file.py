"""The splits a dataset file names, read for ``data.file=``: darknet's ``.data`` file
(``train =`` / ``valid =`` list files, a relative path read as darknet reads it: from the
working directory, else from the file's folder, :func:`~yolov4.data.data_yaml.file_relative`)
or an ultralytics data yaml (``train:`` / ``val:`` / ``test:`` folders or list files below its
``path:``, a relative ``path:`` read by the same rule; no ``path:``: the yaml's folder).

:func:`fill_splits` writes them into a data config's YOLO txt splits (the values given there
are kept) with the file as each split's ``names`` and, for the images it gives, the split's
name as ``file_split``: the loader names the file's key they came from in its notes and its
message on a missing folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yolov4.core.files import looked_for, posix_form, posix_note
from yolov4.data.data_yaml import (
    DARKNET_DATA_SUFFIX,
    file_relative,
    is_data_yaml,
    read_darknet_data,
    read_data_yaml,
)
from yolov4.data.records import json_kind
from yolov4.errors import ConfigError, DatasetError

__all__ = [
    "DatasetFile",
    "SplitPath",
    "YOLO_SOURCE",
    "clear_splits",
    "dataset_file_of",
    "fill_splits",
    "read_dataset_file",
]

YOLO_SOURCE = "yolov4.data.yolo_txt.YoloSource"  # the _target_ of data=yolo's splits
SPLITS = ("train", "val", "test")
MISSING = "???"  # a mandatory value of the config without one (OmegaConf's, kept as text in a dict)
# darknet's .data keys (src/detector.c): the splits' list files, and the keys read here
DARKNET_SPLITS = {"train": "train", "val": "valid"}
DARKNET_READ = ("classes", "train", "valid", "names")
# an ultralytics data yaml's split keys, first found read (ultralytics reads `validation:` as val)
YAML_SPLITS = {"train": ("train",), "val": ("val", "validation"), "test": ("test",)}
PARENT = "../"  # ultralytics reads a split `../x` that is not there as `x` (Roboflow's exports)


@dataclass(frozen=True)
class SplitPath:
    """The images folder or list file a dataset file gives one split: ``path`` (where it is,
    or where it is looked for first when found nowhere) and ``source`` (the key as written, the
    file, and where a relative path was read from: for notes and messages)."""

    path: Path
    source: str


@dataclass(frozen=True)
class DatasetFile:
    """A dataset file's splits (``train``, ``val``, ``test``: those it gives), the key that
    gives each split (``keys``, for messages), notes on what is not read, and the splits of a
    shape that is not read (``problems``: raised when the split is used, :meth:`split`)."""

    path: Path
    splits: dict[str, SplitPath]
    keys: dict[str, str]
    notes: list[str] = field(default_factory=list)
    problems: dict[str, str] = field(default_factory=dict)
    backup: str | None = None  # darknet's `backup =` folder (its weights'), not read

    def split(self, name: str) -> SplitPath | None:
        """The split ``name``; ``None`` when the file gives none; a DatasetError when the file
        gives it in a shape that is not read."""
        if name in self.problems:
            raise DatasetError(self.problems[name])
        return self.splits.get(name)


def read_dataset_file(path: str | os.PathLike) -> DatasetFile:
    """The splits of darknet's ``.data`` file or an ultralytics data yaml (by suffix, in any
    case): ``data.file``.

    Raises:
        DatasetError: a missing or unreadable file, another suffix, a yaml that is not a
            mapping or whose ``path:`` is not text.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"data.file={path}: no such file{looked_for(path)}; expected darknet's .data file "
            "or an ultralytics data yaml"
        )
    if is_data_yaml(path):
        return _yaml_file(path)
    if path.suffix.lower() == DARKNET_DATA_SUFFIX:
        return _darknet_file(path)
    raise DatasetError(
        f"data.file={path}: expected darknet's .data file or an ultralytics data yaml "
        f"(.yaml / .yml), found the suffix {path.suffix or '(none)'!r}"
    )


def _darknet_file(path: Path) -> DatasetFile:
    """The splits of darknet's ``.data`` file: its ``train =`` and ``valid =`` (without one, its
    train list, on which darknet validates), the keys not read noted."""
    options = read_darknet_data(path)
    splits, notes = {}, []
    for split, key in DARKNET_SPLITS.items():
        if options.get(key):
            splits[split] = _darknet_split(path, key, options[key])
    if "train" in splits and "val" not in splits:
        splits["val"] = splits["train"]
        notes.append(
            f"{path} has no `valid =`: the val split is its `train =` list, on which darknet "
            "validates (give a `valid =` line, or data.val.images=)"
        )
    unread = [f"`{k} = {v}`" for k, v in options.items() if k not in DARKNET_READ]
    if unread:
        notes.append(f"{path}: {', '.join(unread)} not read")
    notes += posix_note(str(path), [options[k] for k in DARKNET_READ[1:] if options.get(k)])
    keys = {split: f"`{key} =`" for split, key in DARKNET_SPLITS.items()}
    return DatasetFile(path, splits, keys, notes, backup=options.get("backup"))


def _darknet_split(path: Path, key: str, value: str) -> SplitPath:
    """A split path of darknet's ``.data`` file ``path``, read as its ``names =`` is."""
    found, beside = file_relative(value, path)
    written, cwd = f"`{key} = {value}` of {path}", Path.cwd()
    if not found.exists():
        root = next((d for d in path.absolute().parents if (d / found).exists()), None)
        run = f"; run from {root}, where it is" if root is not None else ""
        beside_path = (path.parent / found).absolute()
        return SplitPath(found, (
            f"{written}, found neither from the working directory ({cwd / found}, where "
            f"darknet reads it) nor from the .data file's folder ({beside_path}){run}"
        ))  # fmt: skip
    if beside:
        how = (
            f", from the .data file's folder ({found.absolute()}): not found in the working "
            f"directory {cwd}"
        )
    else:
        how = "" if found.is_absolute() else f", from the working directory {cwd}"
    return SplitPath(found, written + how)


def _yaml_file(path: Path) -> DatasetFile:
    """The splits of an ultralytics data yaml below its ``path:``."""
    data = read_data_yaml(path)
    if not isinstance(data, dict):
        raise DatasetError(
            f"{path}: expected a data yaml of keys (path:, train:, val:, names:), "
            f"found {json_kind(data)}"
        )
    root, below, other = _yaml_root(path, data.get("path"))
    splits, problems, keys = {}, {}, {}
    root_value = data.get("path")
    written = [root_value] if isinstance(root_value, str) else []  # as written, for the note
    for split, options in YAML_SPLITS.items():
        key = next((k for k in options if data.get(k) not in (None, "")), options[0])
        keys[split] = f"`{key}:`"
        if data.get(key) in (None, ""):
            continue
        try:
            value = _one_path(path, key, data[key])
        except DatasetError as e:
            problems[split] = str(e)
            continue
        splits[split] = _yaml_split(path, key, value, (root, below, other), data.get("download"))
        written.append(value)
    notes = posix_note(str(path), written)  # `path:` / a split written on Windows: read with `/`
    return DatasetFile(path, splits, keys, notes, problems)


def _yaml_root(path: Path, value: Any) -> tuple[Path, str, Path | None]:
    """The folder a data yaml's splits are below, how it was found, and the other folder a
    relative ``path:`` may mean: its ``path:``, a relative one from the working directory (where
    ultralytics reads it), else from the yaml's folder; without ``path:``, the yaml's folder."""
    if value in (None, ""):
        return path.parent, f"the yaml's folder {path.parent.absolute()}", None
    if not isinstance(value, str):
        raise DatasetError(f"{path}: `path:` expected a folder, found {json_kind(value)}")
    root, beside = file_relative(value, path, Path.is_dir)
    root = Path(os.path.normpath(root))
    if Path(value).expanduser().is_absolute():
        return root, f"`path: {value}`", None
    other = None if beside else path.parent / root
    where = "the yaml's folder" if beside else "the working directory"
    return root, f"`path: {value}` ({root.absolute()}, from {where})", other


def _one_path(path: Path, key: str, value: Any) -> str:
    """A split key's folder or list file: text, or a list of one; several folders are not read."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, list):
        raise DatasetError(
            f"{path}: `{key}:` lists {len(value)} folders; one folder or list file per split is "
            "read: give one, e.g. a list file (.txt, one image path a line) of their images"
        )
    if not isinstance(value, str):
        raise DatasetError(
            f"{path}: `{key}:` expected a folder or list file path, found {json_kind(value)}"
        )
    return value


def _yaml_split(
    path: Path, key: str, value: str, root: tuple[Path, str, Path | None], download: Any
) -> SplitPath:
    """``value`` below the ``root`` of :func:`_yaml_root` (``../x`` not there read as ``x``, as
    ultralytics does), a missing one with where it is below the other folder ``path:`` may
    mean, and what ``download:`` would fetch. A ``value`` written on Windows (``images\\train``)
    is read with ``/`` (:func:`~yolov4.core.files.posix_form`)."""
    folder, below, other = root
    read = posix_form(value)
    found = folder / Path(read).expanduser()
    stripped = folder / read[len(PARENT) :]
    if not found.exists() and read.startswith(PARENT) and stripped.exists():
        found = stripped
    source = f"`{key}: {value}` of {path}, below {below}"
    if found.exists():
        return SplitPath(found, source)
    source += f": not found ({found.absolute()})"
    if other is not None and (other / read).exists():
        source += _found_beside(path, key, read, other)
    if download not in (None, ""):
        source += (
            f"; its `download: {download}` is not run here: download and unpack the dataset "
            "yourself"
        )
    return SplitPath(found, source)


def _found_beside(path: Path, key: str, read: str, other: Path) -> str:
    """Where split ``read`` of the yaml ``path`` is when its relative ``path:`` is read from the
    yaml's folder (``other``), and the fixes: run from there, or a ``path:`` that says it."""
    there = Path(os.path.normpath((other / read).absolute()))
    folder = path.parent.absolute()
    root = Path(os.path.normpath(other.absolute()))
    fixes = f"run from {folder}, or write `path: {root}` (an absolute path)"
    if root == Path(os.path.normpath(folder)):  # `path: .`: no path: reads the yaml's folder
        fixes = fixes.replace(", or", ",") + (
            ", or remove `path:` (the splits are then read from the yaml's folder)"
        )
    return (
        f"; with `path:` read from the yaml's folder `{key}:` exists ({there}), but a relative "
        f"`path:` is read from there only when the working directory has no such folder: {fixes}"
    )


def dataset_file_of(names: str | os.PathLike | Sequence[str] | None) -> DatasetFile | None:
    """The :class:`DatasetFile` of a split's ``names`` when they are darknet's ``.data`` file or a
    data yaml (as ``data.file=`` gives each split its names); ``None`` for other names or a
    file that is not read (the names loader reports it)."""
    if not isinstance(names, str | os.PathLike):
        return None
    if not (is_data_yaml(names) or Path(names).suffix.lower() == DARKNET_DATA_SUFFIX):
        return None
    try:
        return read_dataset_file(names)
    except DatasetError:
        return None


def _missing(node: Mapping, key: str) -> bool:
    """``node[key]`` has no value: null, or ``???`` (a config's ``get`` gives ``None`` for it,
    a plain dict of the config the text)."""
    value = node.get(key)
    return value is None or value == MISSING


def _yolo_splits(data: Mapping, file: Any) -> dict[str, MutableMapping]:
    """The split nodes of the data config ``data``, all of them YOLO txt sources."""
    splits = {s: data.get(s) for s in SPLITS if data.get(s) is not None}
    others = {s: n.get("_target_") for s, n in splits.items() if n.get("_target_") != YOLO_SOURCE}
    if not splits or others:
        found = ", ".join(f"data.{s} {t}" for s, t in others.items()) or "no split"
        raise ConfigError(
            f"data.file={file}: a dataset file fills the splits of a YOLO txt dataset "
            f"(data=yolo), found {found}: give data=yolo data.file={file}"
        )
    return splits


def fill_splits(data: MutableMapping, writes_weights: bool = False) -> list[str]:
    """The data config ``data`` (``cfg.data``, or its plain dict) with each split's missing
    ``images`` and ``names`` (null or ``???``) taken from its dataset file ``data["file"]``, in
    place: the images of the file's split (:func:`read_dataset_file`, the split's name as its
    ``file_split``), the file itself as the names (its ``names:``, or its ``names =`` file).
    Values given are kept. Returns the notes to log once: the file's keys that are not read
    (``backup =``, a ``test:`` no command uses), and for a command that ``writes_weights``
    (train.py) where they go instead of ``backup =``.

    Raises:
        ConfigError: splits that are not YOLO txt, or a split the config has and the file
            does not give.
        DatasetError: the file missing or unreadable, or its split of a shape not read.
    """
    file = data.get("file")
    if _missing(data, "file"):
        return []
    dataset = None
    for split, node in _yolo_splits(data, file).items():
        if _missing(node, "images"):
            dataset = dataset or read_dataset_file(file)
            found = dataset.split(split)
            if found is None:
                given = ", ".join(dataset.keys[s] for s in dataset.splits) or "none"
                raise ConfigError(
                    f"data.{split}.images: {file} has no {dataset.keys[split]} (its splits: "
                    f"{given}); give data.{split}.images=<images folder or list file>"
                )
            node["images"] = str(found.path)
            node["file_split"] = split
        if _missing(node, "names"):
            node["names"] = str(file)
    if dataset is None:
        return []
    test = dataset.splits.get("test")
    unused = [] if test is None or data.get("test") is not None else [
        f"{file}'s {dataset.keys['test']} {test.path.absolute()} is not read: no command uses a "
        f"test split (evaluate.py scores data.val: data.val.images={test.path.absolute()})"
    ]  # fmt: skip
    weights = [] if not (writes_weights and dataset.backup) else [
        f"{file}: the weights go into the run's folder (hydra.run.dir: weights/, checkpoints/), "
        f"not `backup = {dataset.backup}`"
    ]  # fmt: skip
    return [*dataset.notes, *unused, *weights]


def clear_splits(data: MutableMapping) -> None:
    """The ``images`` and ``names`` of the YOLO txt splits of the data config ``data`` made
    ``???`` (and their ``file_split`` null), in place: a checkpoint's recorded data under a ``data.file`` given anew, whose
    splits the new file fills (:func:`fill_splits`)."""
    for split in SPLITS:
        node = data.get(split)
        if node is not None and node.get("_target_") == YOLO_SOURCE:
            node["images"] = node["names"] = MISSING
            node["file_split"] = None
