"""Initial weights for a network (``module.pretrained=``): darknet files and project checkpoints.

One function, :func:`load_pretrained`, takes what users start from:

- a darknet ``.weights`` file (all layers), or a partial ``.conv.N`` file whose layer cut-off is
  read from its name (``yolov4.conv.137`` -> layers 0-136, darknet's ``partial``);
- a project checkpoint (``weights/*.pt``, a Lightning ``.ckpt``, a bare state_dict), read with
  ``weights_only=True`` through :mod:`yolov4.core.checkpoint`.

A file is darknet weights when its name says so (``.weights``, ``.conv.N``) or when it is neither
a zip (``torch.save``) nor a pickle; everything else is a checkpoint.
"""

from __future__ import annotations

import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from yolov4.core.checkpoint import read_checkpoint, transfer_state_dict
from yolov4.darknet import load_darknet_weights
from yolov4.errors import CheckpointError
from yolov4.models import YOLOv4

__all__ = ["Pretrained", "load_pretrained", "is_darknet_weights", "conv_cutoff"]

log = logging.getLogger(__name__)

# pickle's PROTO opcode: the first byte of every pickle of protocol >= 2 (legacy torch.save)
PICKLE_PROTO = 0x80
# the config keys that name these options, quoted in errors (configs/module/default.yaml)
STRICT_KEY = "module.pretrained_strict"


@dataclass
class Pretrained:
    """What :func:`load_pretrained` did: the ``source`` kind (``darknet`` or ``checkpoint``) and a
    one-line ``summary`` (layers loaded, or tensors loaded / kept / ignored)."""

    path: Path
    source: str
    summary: str


def conv_cutoff(path: str | os.PathLike) -> int | None:
    """``yolov4.conv.137`` -> 137 (darknet's partial files name their layer cut-off); else None."""
    name = Path(path).name
    if ".conv." not in name:
        return None
    tail = name.rsplit(".conv.", 1)[-1]
    return int(tail) if tail.isdigit() else None


def is_darknet_weights(path: str | os.PathLike) -> bool:
    """A darknet weights file by its name (``.weights``, ``.conv.N``) or, failing that, by its
    first bytes (not a ``torch.save`` zip, not a pickle)."""
    p = Path(path)
    if p.suffix == ".weights" or ".conv." in p.name:
        return True
    if not p.is_file() or zipfile.is_zipfile(p):
        return False
    with p.open("rb") as f:
        head = f.read(1)
    return bool(head) and head[0] != PICKLE_PROTO


def load_pretrained(
    model: YOLOv4,
    path: str | os.PathLike,
    *,
    strict: bool = True,
    backbone_only: bool = False,
) -> Pretrained:
    """Initialise ``model`` (in place) from ``path``; returns what was loaded.

    Darknet files: all layers, or layers ``0..N-1`` of a ``.conv.N`` file, or with
    ``backbone_only`` the backbone's layers of any file. Project checkpoints: with ``strict`` the
    file must be of the model's architecture (only the head prediction layers, which follow
    ``num_classes``, may differ); ``strict=False`` loads every tensor that matches by name and
    shape and logs the rest at WARNING; ``backbone_only`` takes only ``backbone.`` tensors.
    Raises :class:`CheckpointError` naming the file, the mismatch and ``module.pretrained_strict``.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"pretrained file {p} does not exist")
    if is_darknet_weights(p):
        upto = None if backbone_only else conv_cutoff(p)
        header = load_darknet_weights(model, p, upto=upto, backbone_only=backbone_only)
        summary = f"{header.layers_loaded} darknet layers (seen={header.seen})"
        log.info("loaded darknet weights %s: %s", p, summary)
        return Pretrained(p, "darknet", summary)
    try:
        report = transfer_state_dict(
            model,
            read_checkpoint(p),
            strict=strict,
            prefix="backbone." if backbone_only else "",
            source=f"pretrained={p}",
        )
    except CheckpointError as e:
        if not strict:
            raise
        raise CheckpointError(
            f"{e}\n  {STRICT_KEY}=false loads the tensors that match "
            f"and leaves the others as initialised"
        ) from e
    # another architecture (allowed with strict=False): say loudly what was not loaded
    other = report.ignored or any(not k.startswith("heads.") for k in report.kept)
    log.log(
        logging.WARNING if other else logging.INFO,
        "initialised from %s: %s",
        p,
        report.summary(),
    )
    return Pretrained(p, "checkpoint", report.summary())
