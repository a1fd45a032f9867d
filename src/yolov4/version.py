"""The package version, in a module of its own so that any layer can read it without importing
the package root (which imports every layer); :func:`versions`, the library versions every
checkpoint and artifact records; and the warning of a renamed public name
kept as an alias for one release (:func:`warn_renamed`, :func:`renamed_kwargs`)."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping
from typing import Any

__version__ = "0.1.0"


def versions(*packages: str) -> dict[str, str]:
    """``{"yolov4": ..., "torch": ...}`` and the ``__version__`` of each of ``packages`` that
    imports (an optional extra that is not installed is left out)."""
    import torch

    found = {"yolov4": __version__, "torch": str(torch.__version__)}
    for name in packages:
        try:
            found[name] = str(importlib.import_module(name).__version__)
        except ImportError:
            continue
    return found


def warn_renamed(old: str, new: str, stacklevel: int = 3) -> None:
    """The :class:`DeprecationWarning` of a public name kept as an alias for one release."""
    warnings.warn(
        f"{old} is renamed {new}; the old name goes in the next release",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def renamed_kwargs(given: Mapping[str, Any], renames: Mapping[str, str], where: str) -> dict:
    """The values of keyword arguments passed under their old names (``renames``: old -> new),
    by new name, each with :func:`warn_renamed`; any other name is a :class:`TypeError` as
    Python gives for an unknown keyword."""
    unknown = sorted(set(given) - set(renames))
    if unknown:
        raise TypeError(f"{where}() got unexpected keyword argument(s) {unknown}")
    for old in given:
        warn_renamed(f"{where}({old}=)", f"{where}({renames[old]}=)", stacklevel=4)
    return {renames[old]: value for old, value in given.items()}
