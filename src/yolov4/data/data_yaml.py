"""Class names and keypoint shape of a dataset: a darknet ``.names`` file (one name a line),
an ultralytics data yaml (``names:`` as a list or an ``{index: name}`` dict, ``kpt_shape:``)
or a list of names."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from yolov4.data.records import as_int, json_kind
from yolov4.errors import ConfigError, DatasetError

__all__ = ["check_kpt_shape", "read_class_names", "read_kpt_shape"]

KEYPOINT_DIMS = (2, 3)  # ultralytics' kpt_shape [K, D]: x y, or x y visible


def _read_text(path: Path) -> str:
    """A names file's text; not UTF-8 (a leading BOM is allowed) is a DatasetError."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(
            f"{path}: expected UTF-8 text, found byte {e.object[e.start]:#04x} at offset {e.start}"
        ) from e
    except OSError as e:
        raise DatasetError(f"cannot read the class names file {path}: {e}") from e


class _NamesLoader(yaml.SafeLoader):
    """YAML whose plain scalars stay text as written, ``null`` aside: YAML 1.1 reads class names
    ``yes``/``no``/``on``/``off`` as booleans, ``010`` as octal 8, ``1_000`` as 1000, ``12:30``
    as base-60 750 and ``007`` as 7."""


_NamesLoader.yaml_implicit_resolvers = {
    first: [(tag, regex) for tag, regex in resolvers if tag == "tag:yaml.org,2002:null"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _data_yaml(path: Path) -> Any:
    """An ultralytics data yaml's document, its plain scalars as written (:class:`_NamesLoader`)."""
    try:
        return yaml.load(_read_text(path), Loader=_NamesLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        raise DatasetError(f"{path} is not valid YAML: {e}") from e


def _names_from_yaml(path: Path) -> list[Any]:
    """The ``names:`` of an ultralytics data yaml, a list or an ``{index: name}`` dict whose
    keys are exactly ``0..C-1``, each name the text written; an ``nc:`` beside it must count
    them."""
    data = _data_yaml(path)
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
    """Class names from a ``.names`` / ``.txt`` file (one per line), a data ``.yaml`` or a list.

    Raises:
        DatasetError: a missing or non-UTF-8 file, invalid YAML, a ``names:`` that is not a
            non-empty list or a dict with keys ``0..C-1``, or an empty (null) name.
        ConfigError: no names given (``None``).
    """
    if names is None:
        raise ConfigError(
            "no class names for a YOLO txt split: give data.<split>.names (a .names file, a data "
            "yaml with `names:`, or a list); a val-only run needs data.val.names"
        )
    if not isinstance(names, str | os.PathLike):
        result = list(names)
        where = "names"
    else:
        path = Path(names)
        if not path.is_file():
            raise DatasetError(f"class names file not found: {path} (a .names file or a data yaml)")
        where = f"{path}: names"
        if path.suffix in (".yaml", ".yml"):
            result = _names_from_yaml(path)
        else:
            result = [line.strip() for line in _read_text(path).splitlines() if line.strip()]
            if not result:
                raise DatasetError(f"{path}: expected one class name per line, found none")
    for i, name in enumerate(result):
        if name is None or isinstance(name, (dict, list)) or str(name) == "":
            raise DatasetError(f"{where}[{i}]: expected a class name, found {json_kind(name)}")
    return [str(n) for n in result]


def read_kpt_shape(names: str | os.PathLike | Sequence[str] | None) -> tuple[int, int] | None:
    """``(K, D)`` of the ``kpt_shape: [K, D]`` of an ultralytics pose data yaml (``K``
    keypoints of ``D`` numbers, ``x y`` or ``x y visible``); ``None`` for any other names source.

    Raises:
        DatasetError: a ``kpt_shape`` that is not two integers ``K >= 1`` and ``D`` in (2, 3).
    """
    if not isinstance(names, str | os.PathLike) or Path(names).suffix not in (".yaml", ".yml"):
        return None
    data = _data_yaml(Path(names))
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
