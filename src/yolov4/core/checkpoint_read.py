"""Reading a checkpoint file of any format safely: :func:`read_checkpoint` (``torch.load`` with
``weights_only=True`` and an error that names what the file is instead) and
:func:`network_state_dict` (the network's weights out of a weights file, a Lightning ``.ckpt``
or a bare or wrapped state_dict). :mod:`yolov4.core.checkpoint` re-exports both and builds the
model from what they return."""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from yolov4.core.artifact import METADATA
from yolov4.core.mismatch import clean_state_dict
from yolov4.darknet import PICKLE_PROTO, ZIP_MAGIC
from yolov4.errors import CheckpointError

__all__ = ["EMA_PREFIXES", "WRAPPING_KEYS", "read_checkpoint", "network_state_dict"]

# Lightning checkpoint keys (state_dict prefixes) that hold EMA weights, most specific first.
EMA_PREFIXES = ("ema_model.", "ema.")
# Keys under which hand-written training loops save the state_dict: torch.save({"model": sd})
WRAPPING_KEYS = ("model", "model_state_dict", "net", "weights")


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with clear errors: missing, truncated, not a
    checkpoint, or holding pickled objects (refused: loading must never execute code)."""
    path = Path(path)
    if path.is_dir():
        what = (
            "an export artifact (artifact= or Predictor.from_artifact reads it)"
            if (path / METADATA).is_file()
            else "a folder"
        )
        raise CheckpointError(
            f"checkpoint {path} is {what}; expected a checkpoint file (weights/best.pt, a "
            "Lightning .ckpt)"
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    with path.open("rb") as f:
        head = f.read(4)
    if not (head.startswith(ZIP_MAGIC) or head[:1] == PICKLE_PROTO):
        raise CheckpointError(
            f"{path} ({path.stat().st_size:,} bytes) is not a PyTorch checkpoint: neither a zip "
            f"archive (torch.save) nor a pickle; it starts with {head!r}"
        )
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise CheckpointError(
                f"{path} holds pickled Python objects, not only tensors and builtins; refusing to "
                f"load it (that could run code). Re-save the weights with yolov4's save_checkpoint. "
                f"({_unpickler_reason(e)})"
            ) from e
        raise CheckpointError(f"{path} is not a PyTorch checkpoint ({e})") from e
    except (RuntimeError, zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
        size = path.stat().st_size
        raise CheckpointError(
            f"{path} ({size:,} bytes) cannot be read as a PyTorch checkpoint: it is truncated "
            f"or not a checkpoint ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        ) from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds a {type(data).__name__}, not a checkpoint dict")
    return data


def _unpickler_reason(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if "Unsupported global" in ln]
    return lines[0].split(" was not")[0] if lines else str(e).splitlines()[0]


def network_state_dict(data: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The network's weights (wrapper prefixes stripped) from a loaded checkpoint of any
    format: a ``yolov4.weights/1`` file, a Lightning ``.ckpt`` (EMA weights when present), a
    bare state_dict, or one under another common key (``{"model": state_dict}``,
    ``model_state_dict``: what hand-written training loops save)."""
    sd = data.get("state_dict", data)
    for key in WRAPPING_KEYS:
        if sd is data and isinstance(data.get(key), Mapping):
            inner = data[key]
            if inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                sd = inner
    if "pytorch-lightning_version" in data:
        for prefix in EMA_PREFIXES:  # EMA weights when the run kept them
            ema = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
            if ema:
                sd = ema
                break
        else:
            sd = {k: v for k, v in sd.items() if k.startswith("model.")} or sd
    return clean_state_dict(sd)
