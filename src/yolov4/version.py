"""The package version, in a module of its own so that any layer can read it without importing
the package root (which imports every layer), and :func:`versions`, the one record of the
library versions a checkpoint or an artifact was written with."""

from __future__ import annotations

import importlib

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
