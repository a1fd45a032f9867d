"""The export artifact's contract: file names, ``metadata.json`` and how it is validated.

Written by :func:`yolov4.export.artifact.export_artifact`, read by the Predictor and the
service; both sides import these names from here. The formats an artifact may hold are one
registry, :data:`FORMATS` (name -> :class:`ArtifactFormat`), kept in
:mod:`yolov4.core.artifact_formats` (re-exported here) and filled by the table in
:mod:`yolov4.export.formats` (imported with the package); validation, backend loading and the
choice of a model file read it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections import Counter
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from yolov4.core.artifact_formats import (
    AUTO_PRECISION,
    FORMATS,
    MODEL_INT8_BIN,
    MODEL_INT8_XML,
    MODEL_NMS_ONNX,
    MODEL_ONNX,
    MODEL_TORCHSCRIPT,
    PRECISIONS,
    ArtifactFormat,
    artifact_precisions,
    backend_names,
    model_file,
    precision_backends,
    register_format,
)
from yolov4.core.postprocess import SERVING
from yolov4.core.preprocess import PreprocessConfig
from yolov4.errors import ConfigError, ExportError, YoloError
from yolov4.models.stride import check_stride_multiple

__all__ = [
    "ARTIFACT_FORMAT",
    "MODEL_ONNX",
    "MODEL_TORCHSCRIPT",
    "MODEL_NMS_ONNX",
    "METADATA",
    "FORMATS",
    "ArtifactFormat",
    "register_format",
    "backend_names",
    "precision_backends",
    "model_file",
    "MODEL_INT8_XML",
    "MODEL_INT8_BIN",
    "PRECISIONS",
    "AUTO_PRECISION",
    "artifact_precisions",
    "check_class_names",
    "sha256",
    "validate_metadata",
    "read_metadata",
    "verify_files",
]

ARTIFACT_FORMAT = "yolov4.artifact/1"
METADATA = "metadata.json"


def check_class_names(
    names: Any, num_classes: int, where: str, error: type[YoloError] = ExportError
) -> list[str]:
    """``names`` as a list of strings, one per class of the model and each once (detections,
    reports and class filters name classes by name); anything else raises ``error`` naming
    ``where``. A string is refused: it is not a list of names (read a ``.names`` file or data
    yaml with :func:`yolov4.data.data_yaml.read_class_names`)."""
    if isinstance(names, (str, bytes)) or not isinstance(names, Iterable):
        raise error(
            f"{where}: expected a list of class names, got {type(names).__name__} {names!r:.60}"
            + (
                " (a .names file or data yaml: read_class_names(path))"
                if isinstance(names, str)
                else ""
            )
        )
    names = list(names)
    if len(names) != num_classes:
        raise error(
            f"{where}: {len(names)} class names for a model with num_classes={num_classes}; "
            "a detection of a class without a name could not be reported"
        )
    repeated = sorted(n for n, k in Counter(str(n) for n in names).items() if k > 1)
    if repeated:
        raise error(
            f"{where}: class names must be unique, {repeated} repeat (a class filter or report by "
            "name would mix the classes)"
        )
    return [str(n) for n in names]


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_HEX = set("0123456789abcdef")
DEFAULT_STRIDE = 32  # metadata without model.strides: the largest stride of most networks


def _positive_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def _key_error(path: Path, key: str, expected: str, found: Any = ...) -> ExportError:
    if found is ...:
        return ExportError(f"{path}: key {key!r} is missing (expected {expected})")
    text = repr(found)
    text = text if len(text) <= 80 else text[:77] + "..."
    return ExportError(f"{path}: key {key!r}: expected {expected}, found {text}")


def _inside(name: Any) -> bool:
    """Is ``name`` a relative ``/``-separated path that stays inside the artifact?"""
    if not isinstance(name, str) or not name or "\\" in name:
        return False
    parts = PurePosixPath(name).parts
    return not name.startswith("/") and all(p not in ("", ".", "..") for p in parts)


def _validate_formats(meta: dict[str, Any], path: Path) -> None:
    """``formats`` (optional): names of :data:`FORMATS`, each with all its files listed."""
    if "formats" not in meta:
        return
    names = meta["formats"]
    if not isinstance(names, list) or not names:
        raise _key_error(path, "formats", "a non-empty list of format names", names)
    for name in names:
        if name not in FORMATS:
            raise _key_error(path, "formats", f"names among {list(FORMATS)}", name)
        missing = [f for f in FORMATS[name].files if f not in meta["files"]]
        if missing:
            raise ExportError(
                f"{path}: format {name!r} is listed under 'formats' but its files {missing} "
                "are not under 'files'"
            )


def _validate_files(meta: dict[str, Any], path: Path) -> None:
    """``files``: ``{relative name: {"sha256": 64 hex digits, ...}}``."""
    files = meta.get("files", ...)
    if not isinstance(files, dict) or not files:
        raise _key_error(path, "files", "an object {file name: {sha256, bytes}}", files)
    for name, info in files.items():
        if not _inside(name):
            raise _key_error(path, "files", "relative paths inside the artifact", name)
        if not isinstance(info, dict):
            raise _key_error(path, f"files.{name}", "an object {sha256, bytes}", info)
        digest = info.get("sha256", ...)
        if not (isinstance(digest, str) and len(digest) == 64 and set(digest) <= _HEX):
            raise _key_error(path, f"files.{name}.sha256", "64 hex digits", digest)


def _validate_classes(meta: dict[str, Any], path: Path) -> dict[str, Any]:
    """``class_names``: one string per ``model.num_classes``, each once; returns ``model``."""
    names = meta.get("class_names", ...)
    if not isinstance(names, list) or not names:
        raise _key_error(path, "class_names", "a non-empty list of strings", names)
    for i, n in enumerate(names):
        if not isinstance(n, str):
            raise _key_error(path, f"class_names[{i}]", "a string", n)
    model = meta.get("model", ...)
    if not isinstance(model, dict):
        raise _key_error(path, "model", "an object with num_classes", model)
    num_classes = model.get("num_classes", ...)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise _key_error(path, "model.num_classes", "an integer >= 1", num_classes)
    if len(names) != num_classes:
        raise ExportError(
            f"{path}: {len(names)} class names for a model with {num_classes} classes "
            "(keys 'class_names' and 'model.num_classes' disagree)"
        )
    check_class_names(names, num_classes, f"{path}: class_names")  # each once
    return model


def _validate_input(meta: dict[str, Any], path: Path, model: dict[str, Any]) -> None:
    """``input_size``: multiples of the largest of ``model.strides``; ``preprocess``: a
    :class:`PreprocessConfig` of that size."""
    strides = model.get("strides", [DEFAULT_STRIDE])
    if not (isinstance(strides, list) and strides and all(_positive_int(s) for s in strides)):
        raise _key_error(path, "model.strides", "a non-empty list of integers >= 1", strides)
    multiple = max(strides)  # the network's largest stride: ModelConfig.max_stride
    size = meta.get("input_size", ...)
    if size is ...:
        raise _key_error(path, "input_size", f"[H, W], positive multiples of {multiple}")
    check_stride_multiple(size, multiple, f"{path}: key 'input_size'", ExportError)
    preprocess = meta.get("preprocess", ...)
    if not isinstance(preprocess, dict):
        raise _key_error(
            path, "preprocess", "an object (input_size, mode, pad_value, ...)", preprocess
        )
    try:
        config = PreprocessConfig.from_dict(preprocess)
    except (ValueError, TypeError) as e:  # ConfigError is a ValueError
        raise ExportError(f"{path}: key 'preprocess': {e}") from None
    if list(config.input_size) != size:
        raise _key_error(
            path,
            "preprocess.input_size",
            f"the artifact's input_size {size}",
            preprocess.get("input_size"),
        )


def validate_metadata(meta: Any, path: str | os.PathLike) -> dict[str, Any]:
    """Check what a Predictor reads from ``metadata.json``; :class:`ExportError` naming the key,
    what was expected and what was found, for the first thing that is wrong."""
    path = Path(path)
    if not isinstance(meta, dict):
        raise ExportError(f"{path}: expected a JSON object, found {type(meta).__name__}")
    if meta.get("format") != ARTIFACT_FORMAT:
        raise ExportError(
            f"{path}: format {meta.get('format')!r} is not {ARTIFACT_FORMAT!r}; re-export with this version"
        )
    _validate_files(meta, path)
    model = _validate_classes(meta, path)
    _validate_input(meta, path, model)
    _validate_formats(meta, path)
    _validate_precisions(meta, path)
    thresholds = meta.get("thresholds", {})
    if not isinstance(thresholds, dict):
        raise _key_error(path, "thresholds", "an object (conf, iou, max_det, ...)", thresholds)
    try:
        SERVING.update(thresholds)
    except ConfigError as e:
        raise ExportError(f"{path}: key 'thresholds': {e}") from None
    return meta


def _validate_precisions(meta: dict[str, Any], path: Path) -> None:
    """``precisions`` (optional): each key one of :data:`PRECISIONS`, its ``file`` listed in
    ``files``, its ``backends`` runtimes that can run it; ``default_precision`` one of them."""
    if "precisions" not in meta:
        if meta.get("default_precision", "fp32") != "fp32":
            raise _key_error(
                path,
                "default_precision",
                "'fp32' (no 'precisions' listed)",
                meta["default_precision"],
            )
        return
    precisions = meta["precisions"]
    if not isinstance(precisions, dict) or not precisions:
        raise _key_error(path, "precisions", "an object {precision: {file, backends}}", precisions)
    for name, entry in precisions.items():
        if name not in PRECISIONS:
            raise _key_error(path, "precisions", f"keys among {list(PRECISIONS)}", name)
        if not isinstance(entry, dict):
            raise _key_error(path, f"precisions.{name}", "an object {file, backends}", entry)
        file = entry.get("file", ...)
        if file not in meta["files"]:
            raise _key_error(
                path, f"precisions.{name}.file", f"one of the files {sorted(meta['files'])}", file
            )
        backends = entry.get("backends", ...)
        allowed = precision_backends(name)
        if not (isinstance(backends, list) and backends and set(backends) <= set(allowed)):
            raise _key_error(
                path,
                f"precisions.{name}.backends",
                f"a non-empty subset of {list(allowed)}",
                backends,
            )
    default = meta.get("default_precision", "fp32")
    if default not in precisions and default != AUTO_PRECISION:
        raise _key_error(
            path,
            "default_precision",
            f"{AUTO_PRECISION!r} or one of the precisions {sorted(precisions)}",
            default,
        )


def _regular_file(d: Path, name: str) -> None:
    """:class:`ExportError` unless ``d / name`` is a regular file of ``d`` itself (not a link
    out of it, a folder or a device): an artifact is read from its own folder only."""
    parts = PurePosixPath(name).parts
    for i in range(1, len(parts)):  # the folders on the way: real folders of the artifact
        sub = d.joinpath(*parts[:i])
        if stat.S_ISLNK(os.lstat(sub).st_mode):
            raise ExportError(
                f"{d}: {'/'.join(parts[:i])} is a symbolic link; an artifact's files must be "
                "regular files inside its folder (re-export)"
            )
    f = d / name
    mode = os.lstat(f).st_mode
    if stat.S_ISLNK(mode):
        raise ExportError(
            f"{d}: {name} is a symbolic link (to {os.readlink(f)}); an artifact's files must be "
            "regular files inside its folder (copy the file in, or re-export)"
        )
    if not stat.S_ISREG(mode):
        raise ExportError(f"{d}: {name} is not a regular file; expected the file export.py wrote")


def read_metadata(artifact_dir: str | os.PathLike, verify: bool = True) -> dict[str, Any]:
    """``metadata.json`` of an artifact, validated (:func:`validate_metadata`); with ``verify``,
    every listed file must exist and match its sha256. Raises :class:`ExportError` naming what
    is wrong."""
    d = Path(artifact_dir)
    path = d / METADATA
    if not path.is_file():
        if d.is_file() and (d.parent / METADATA).is_file():  # a model file of an artifact
            raise ExportError(
                f"{d} is a file of the artifact {d.parent}: give the folder ({d.parent}); its "
                f"{METADATA} says which file each precision and runtime uses"
            )
        raise ExportError(
            f"{d} is not an export artifact: no {METADATA} (export one with export.py)"
        )
    _regular_file(d, METADATA)
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ExportError(f"{path} is not valid JSON: {e}") from e
    validate_metadata(meta, path)
    for name in meta["files"]:
        if os.path.lexists(d / name):
            _regular_file(d, name)
    if verify:
        verify_files(d, meta, meta["files"])
    return meta


def verify_files(artifact_dir: str | os.PathLike, meta: dict[str, Any], names: Any) -> None:
    """Each of ``names`` (files the validated ``meta`` lists) exists in ``artifact_dir`` and
    matches its sha256; :class:`ExportError` naming the first that does not."""
    d = Path(artifact_dir)
    for name in names:
        f = d / name
        if not f.is_file():
            raise ExportError(f"{d}: {name} is listed in {METADATA} but missing")
        if sha256(f) != meta["files"][name]["sha256"]:
            raise ExportError(
                f"{d}: {name} does not match its sha256 in {METADATA} (altered or corrupt file)"
            )
