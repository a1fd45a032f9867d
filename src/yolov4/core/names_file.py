"""Darknet's ``.names`` file: the class names in class index order, one a line (darknet's
``data/coco.names``), blank lines at its end left out; a blank line before a name is refused
(darknet reads it as a class, and the later classes by their line).

Read for a dataset's class names (:mod:`yolov4.data.data_yaml`) and for darknet's files given
as a model (:func:`names_beside`, :mod:`yolov4.inference.darknet`); written beside the ``.cfg``
and ``.weights`` of a train run and of export.py's ``darknet`` format
(:func:`yolov4.core.darknet_pair.save_darknet_pair`), each name checked to read back as itself.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from yolov4.errors import ConfigError, DatasetError, not_utf8

__all__ = [
    "NAMES_SUFFIX",
    "names_beside",
    "names_file_text",
    "read_names_file",
    "read_text",
]

NAMES_SUFFIX = ".names"
DARKNET_DATA_SUFFIX = ".data"  # darknet's obj.data / coco.data: `key = value` lines
# darknet's .data keys (src/detector.c, src/option_list.c) and an ultralytics data yaml's: a
# line starting with one of them marks a file that is not a list of class names
DATASET_KEYS = ("classes", "train", "valid", "val", "test", "names", "backup", "nc", "path")
KEY_VALUE = re.compile(r"\s*([A-Za-z_][\w.-]*)\s*(=|:(?=\s|$))")


def read_text(path: Path) -> str:
    """A names file's text; not UTF-8 (a leading BOM is allowed) is a DatasetError."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: expected UTF-8 text, found {not_utf8(e)}") from e
    except OSError as e:
        raise DatasetError(f"cannot read the class names file {path}: {e}") from e


def _settings_line(lines: list[str]) -> tuple[int, str, re.Match] | None:
    """The first line (1-based among ``lines``) that marks a file of settings rather than of
    names: a line of a dataset key (:data:`DATASET_KEYS`), or any when every line is
    ``key = value`` / ``key: value``; ``None`` for a list of names."""
    pairs = [(n, line, m) for n, line in enumerate(lines, 1) if (m := KEY_VALUE.match(line))]
    keyed = [p for p in pairs if p[2].group(1).lower() in DATASET_KEYS]
    if keyed or (pairs and len(pairs) == len(lines)):
        return (keyed or pairs)[0]
    return None


def read_names_file(path: str | os.PathLike) -> list[str]:
    """The names of a darknet ``.names`` file, one a line (blank lines at the end left out); a
    blank line before a name (darknet reads each line as a class), or a file of ``key = value``
    or ``key: value`` lines (a ``.data`` file or a data yaml under another suffix) is refused."""
    path = Path(path)
    lines = [line.strip() for line in read_text(path).splitlines()]
    while lines and not lines[-1]:  # blank lines at the end: no class
        lines.pop()
    if "" in lines:
        n = lines.index("") + 1
        after = next(i for i in range(n, len(lines)) if lines[i]) + 1
        raise DatasetError(
            f"{path}: line {n} is blank, before the class name on line {after}: darknet "
            f"reads each line as a class (class {n - 1} here, unnamed) and the classes after it "
            f"by their line; expected one name a line: give class {n - 1} a name, or remove the "
            "line if no label uses its index and the later ones count from it"
        )
    if not lines:
        raise DatasetError(f"{path}: expected one class name per line, found none")
    found = _settings_line(lines)
    if found is not None:
        n, line, match = found
        if match.group(2) == "=":
            looks = (
                "`key = value` lines, as darknet's .data file has: give the file its `names =` "
                f"line names, or the .data file itself under a {DARKNET_DATA_SUFFIX} suffix"
            )
        else:
            looks = (
                "`key: value` lines, as a data yaml has: give it a .yaml suffix (its `names:` "
                "is read)"
            )
        raise DatasetError(
            f"{path}: expected one class name per line (a .names file), found {looks} "
            f"(line {n}: {line!r})"
        )
    return lines


def names_file_text(names: Sequence[str], where: str) -> str:
    """The ``.names`` text of ``names``; a :class:`ConfigError` naming the class when a name
    would not read back as itself (:func:`read_names_file`): empty, with a line break or
    surrounding spaces, or read as a dataset file's ``key: value`` setting."""
    for i, name in enumerate(names):
        if not name or name != name.strip() or len(name.splitlines()) != 1:
            raise ConfigError(
                f"{where}: class {i} {name!r} cannot be a line of a {NAMES_SUFFIX} file (one "
                "name a line, read without surrounding spaces): expected a non-empty name "
                "without line breaks or leading and trailing spaces"
            )
    found = _settings_line(list(names))
    if found is not None:
        n, line, _ = found
        raise ConfigError(
            f"{where}: class {n - 1} {line!r} reads as a `key: value` setting; a "
            f"{NAMES_SUFFIX} file of these names would be refused as a dataset file"
        )
    return "".join(f"{name}\n" for name in names)


def names_beside(*files: str | os.PathLike | None) -> Path | None:
    """The first ``<stem>.names`` that exists beside one of ``files`` (``None`` entries
    skipped): the class names written with darknet's ``.cfg`` and ``.weights``."""
    for file in files:
        if file is not None:
            candidate = Path(file).with_suffix(NAMES_SUFFIX)
            if candidate.is_file():
                return candidate
    return None
