"""Class names and keypoint shape of a dataset: a darknet ``.names`` file (one name a line),
darknet's ``.data`` file (``key = value`` lines: its ``names =`` file is read, its ``classes =``
must count those names), an ultralytics data yaml (``names:`` as a list or an
``{index: name}`` dict, ``kpt_shape:``) or a list of names. Suffixes are matched in any case."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from yolov4.core.files import posix_form
from yolov4.core.names_file import DARKNET_DATA_SUFFIX, read_names_file, read_text
from yolov4.data.records import as_int, json_kind
from yolov4.errors import ConfigError, DatasetError

__all__ = [
    "ClassNames",
    "check_kpt_shape",
    "darknet_names_file",
    "file_relative",
    "is_data_yaml",
    "load_class_names",
    "read_class_names",
    "read_darknet_data",
    "read_data_yaml",
    "read_kpt_shape",
]

KEYPOINT_DIMS = (2, 3)  # ultralytics' kpt_shape [K, D]: x y, or x y visible
YAML_SUFFIXES = (".yaml", ".yml")


def is_data_yaml(path: str | os.PathLike) -> bool:
    """A ``.yaml`` / ``.yml`` file name, its suffix in any case (``Data.YAML``)."""
    return Path(path).suffix.lower() in YAML_SUFFIXES


@dataclass(frozen=True)
class ClassNames:
    """Class names and where they were read (for messages: ``2 names in data.yaml``)."""

    names: list[str]
    source: str


class _NamesLoader(yaml.SafeLoader):
    """YAML whose plain scalars stay text as written, ``null`` aside: YAML 1.1 reads class names
    ``yes``/``no``/``on``/``off`` as booleans, ``010`` as octal 8, ``1_000`` as 1000, ``12:30``
    as base-60 750 and ``007`` as 7."""


_NamesLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag == "tag:yaml.org,2002:null"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def read_data_yaml(path: Path) -> Any:
    """An ultralytics data yaml's document, its plain scalars as written (:class:`_NamesLoader`)."""
    try:
        return yaml.load(read_text(path), Loader=_NamesLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        raise DatasetError(f"{path} is not valid YAML: {e}") from e


def _names_from_yaml(path: Path) -> list[Any]:
    """The ``names:`` of an ultralytics data yaml, a list or an ``{index: name}`` dict whose
    keys are exactly ``0..C-1``, each name the text written; an ``nc:`` beside it must count
    them."""
    data = read_data_yaml(path)
    value = data.get("names") if isinstance(data, dict) else None
    if isinstance(value, dict) and value:
        indices = {}
        for key in value:
            digits = isinstance(key, str) and key.strip().isdecimal()
            index = int(key) if digits else as_int(key)
            if index is None:
                raise DatasetError(
                    f"{path}: `names:` expected integer keys 0..{len(value) - 1}, found key {key!r}"
                )
            indices[index] = value[key]
        if sorted(indices) != list(range(len(value))):
            raise DatasetError(
                f"{path}: `names:` expected integer keys 0..{len(value) - 1} (one per class), "
                f"found {sorted(indices)}"
            )
        value = [indices[i] for i in range(len(value))]
    if not isinstance(value, list) or not value:
        raise DatasetError(
            f"{path}: expected a non-empty `names:` list or {{index: name}} dict, "
            f"found {json_kind(value)}"
        )
    nc = data.get("nc")
    if nc is not None and not (str(nc).strip().isdecimal() and int(nc) == len(value)):
        raise DatasetError(
            f"{path}: `nc: {nc}` but `names:` has {len(value)} names; make them agree"
        )
    return value


def read_class_names(names: str | os.PathLike | Sequence[str] | None) -> list[str]:
    """Class names from a ``.names`` / ``.txt`` file (one per line), darknet's ``.data`` file,
    a data ``.yaml`` or a list (:func:`load_class_names`)."""
    return load_class_names(names).names


def load_class_names(names: str | os.PathLike | Sequence[str] | None) -> ClassNames:
    """Class names from a ``.names`` / ``.txt`` file (one per line), darknet's ``.data`` file
    (its ``names =`` file, :func:`_darknet_data_names`), a data ``.yaml`` or a list, with where
    they were read.

    Raises:
        DatasetError: a missing or non-UTF-8 file, invalid YAML, a ``names:`` that is not a
            non-empty list or a dict with keys ``0..C-1``, an empty (null) name, a ``.data``
            file without a ``names =`` file or whose ``classes =`` does not count its names,
            or a names file of ``key = value`` / ``key: value`` lines.
        ConfigError: no names given (``None``).
    """
    if names is None:
        raise ConfigError(
            "no class names for a YOLO txt split: give data.<split>.names (a .names file, a data "
            "yaml with `names:`, darknet's .data file, or a list); a val-only run needs "
            "data.val.names"
        )
    if not isinstance(names, str | os.PathLike):
        result, source = list(names), "the list given"
    else:
        path = Path(names)
        if not path.is_file():
            raise DatasetError(
                f"class names file not found: {path} (a .names file, a data yaml or darknet's "
                ".data file)"
            )
        source = str(path)
        if is_data_yaml(path):
            result = _names_from_yaml(path)
        elif path.suffix.lower() == DARKNET_DATA_SUFFIX:
            options = read_darknet_data(path)
            names_file, source = _darknet_data_names(path, options)
            result = read_names_file(names_file)
            _check_darknet_classes(path, options.get("classes"), names_file, len(result))
        else:
            result = read_names_file(path)
    where = f"{names}: names" if isinstance(names, str | os.PathLike) else "names"
    for i, name in enumerate(result):
        if name is None or isinstance(name, (dict, list)) or str(name) == "":
            raise DatasetError(f"{where}[{i}]: expected a class name, found {json_kind(name)}")
    return ClassNames([str(n) for n in result], source)


def read_darknet_data(path: Path) -> dict[str, str]:
    """The ``key = value`` lines of darknet's ``.data`` file (``read_data_cfg``: lines starting
    with ``#`` or ``;`` are comments; a line without ``=`` is refused naming it)."""
    options = {}
    for n, line in enumerate(read_text(path).splitlines(), 1):
        text = line.strip()
        if not text or text[0] in "#;":
            continue
        key, sep, value = text.partition("=")
        if not sep or not key.strip():
            raise DatasetError(
                f"{path}: line {n}: expected `key = value` (darknet's .data file), found {text!r}"
            )
        options[key.strip()] = value.strip()
    return options


def file_relative(
    value: str | os.PathLike, file: Path, exists: Callable[[Path], bool] = Path.exists
) -> tuple[Path, bool]:
    """Where a path written in the dataset file ``file`` is read from, as darknet reads the paths
    of its ``.data`` file: from the working directory (darknet runs from its root: ``names =
    data/obj.names``), else from ``file``'s folder when it ``exists`` there only. Returns the
    path (one written on Windows read with ``/``: :func:`~yolov4.core.files.posix_form`) and
    whether it is the one from ``file``'s folder; a path found in neither place is the
    working directory's."""
    given = Path(posix_form(str(value))).expanduser()  # `data\train.txt` written on Windows
    beside = file.parent / given  # `given` itself when absolute
    if not exists(given) and exists(beside):
        return beside, True
    return given, False


def darknet_names_file(path: str | os.PathLike) -> Path:
    """The names file darknet's ``.data`` file ``path`` names (its ``names =``, read as darknet
    reads it: :func:`file_relative`).

    Raises:
        DatasetError: an unreadable file, no ``names =`` line, or a names file found nowhere.
    """
    return _darknet_data_names(Path(path), read_darknet_data(Path(path)))[0]


def _darknet_data_names(path: Path, options: dict[str, str]) -> tuple[Path, str]:
    """The names file of darknet's ``.data`` file ``path`` (its ``options``) and a description
    of where it was found: its ``names =`` path read as darknet reads it
    (:func:`file_relative`)."""
    value = options.get("names")
    if not value:
        raise DatasetError(
            f"{path}: expected a `names = <file>` line (darknet's .data file: the class names "
            f"file, one name a line), found keys {sorted(options)}"
        )
    found, beside = file_relative(value, path, Path.is_file)
    if not found.is_file():
        raise DatasetError(
            f"{path}: `names = {value}`: no such file, neither from the working directory "
            f"({Path.cwd() / found}, where darknet reads it) nor from the .data file's folder "
            f"({(path.parent / found).absolute()})"
        )
    if beside:
        return found, (
            f"{found} (`names = {value}` of {path}, from the .data file's folder: not found "
            f"in the working directory {Path.cwd()})"
        )
    how = "" if found.is_absolute() else f", from the working directory {Path.cwd()}"
    return found, f"{found} (`names =` of {path}{how})"


def _check_darknet_classes(path: Path, classes: str | None, names_file: Path, count: int) -> None:
    """A ``classes =`` of darknet's ``.data`` file ``path`` must count the names of its names
    file."""
    if classes is None:
        return
    if not (classes.isdecimal() and int(classes) == count):
        raise DatasetError(
            f"{path}: `classes = {classes}` but its names file {names_file} has {count} names; "
            "make them agree"
        )


def read_kpt_shape(names: str | os.PathLike | Sequence[str] | None) -> tuple[int, int] | None:
    """``(K, D)`` of the ``kpt_shape: [K, D]`` of an ultralytics pose data yaml (``K``
    keypoints of ``D`` numbers, ``x y`` or ``x y visible``); ``None`` for any other names source.

    Raises:
        DatasetError: a ``kpt_shape`` that is not two integers ``K >= 1`` and ``D`` in (2, 3).
    """
    if not isinstance(names, str | os.PathLike) or not is_data_yaml(names):
        return None
    data = read_data_yaml(Path(names))
    value = data.get("kpt_shape") if isinstance(data, dict) else None
    return None if value is None else check_kpt_shape(value, f"{names}: `kpt_shape:`")


def check_kpt_shape(value: Any, where: str) -> tuple[int, int]:
    """``value`` as ``(K, D)``: two integers, ``K >= 1`` keypoints of ``D`` in (2, 3) numbers."""
    items = list(value) if isinstance(value, list | tuple) else []
    shape = [int(v) if isinstance(v, str) and v.strip().isdecimal() else as_int(v) for v in items]
    if len(shape) != 2 or None in shape or shape[0] < 1 or shape[1] not in KEYPOINT_DIMS:
        raise DatasetError(
            f"{where} expected [K, D], K >= 1 keypoints of D in {KEYPOINT_DIMS} "
            f"numbers each, found {value!r}"
        )
    return shape[0], shape[1]
