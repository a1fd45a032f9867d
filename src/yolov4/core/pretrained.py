"""Initial weights for a network (``module.pretrained=``): darknet files and project checkpoints.

One function, :func:`load_pretrained`, takes what users start from:

- a darknet ``.weights`` file (all layers; a file of the network for other classes loads all
  but the ``[yolo]`` head convolutions), or a partial ``.conv.N`` file whose layer cut-off is
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
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from yolov4.core.checkpoint import check_finite, network_state_dict, read_checkpoint
from yolov4.core.mismatch import group_keys, mismatch_report
from yolov4.darknet import PICKLE_PROTO, ZIP_MAGIC, darknet_file_classes, load_darknet_weights
from yolov4.errors import CheckpointError
from yolov4.models import YOLOv4
from yolov4.models.layers import ConvBnAct

__all__ = [
    "Pretrained",
    "Transfer",
    "load_pretrained",
    "transfer_state_dict",
    "is_darknet_weights",
    "conv_cutoff",
]

log = logging.getLogger(__name__)


def _layer(key: str) -> int:
    """``layers.159.conv.weight`` -> 159 (darknet's layer index); -1 for any other key."""
    parts = key.split(".")
    return int(parts[1]) if len(parts) > 2 and parts[0] == "layers" and parts[1].isdigit() else -1


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
    """``yolov4.conv.137`` (or ``yolov4.conv.137.weights``) -> 137: darknet's partial files
    name their layer cut-off; else None."""
    name = Path(path).name.removesuffix(".weights")
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
        head = f.read(len(ZIP_MAGIC))
    # a torch.save zip cut short (no central directory) still starts as a zip
    return bool(head) and head[:1] != PICKLE_PROTO and not head.startswith(ZIP_MAGIC)


def load_pretrained(
    model: YOLOv4,
    path: str | os.PathLike,
    *,
    strict: bool = True,
    backbone_only: bool = False,
) -> Pretrained:
    """Initialise ``model`` (in place) from ``path``; returns what was loaded.

    Darknet files: all layers, or layers ``0..N-1`` of a ``.conv.N`` file (which must hold
    exactly those layers of ``model``'s network), or with
    ``backbone_only`` the backbone's layers of any file; a file of the same network for another
    ``num_classes`` loads every layer but the convolutions before the ``[yolo]`` layers, which
    keep their initialisation (logged by layer). Project checkpoints: with ``strict`` the
    file must be of the model's architecture (only the head prediction layers, which follow
    ``num_classes``, may differ); ``strict=False`` loads every tensor that matches by name and
    shape and logs the rest at WARNING; ``backbone_only`` takes only the tensors of the layers in
    darknet's partial file for the network (``yolov4.conv.137``: layers 0-136).
    Raises :class:`CheckpointError` naming the file, the mismatch and ``module.pretrained_strict``.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"pretrained file {p} does not exist")
    if is_darknet_weights(p):
        upto = None if backbone_only else conv_cutoff(p)
        if upto is None and not backbone_only:
            classes = darknet_file_classes(model.config, p)
            if classes is not None and classes != model.num_classes:
                return _darknet_other_classes(model, p, classes)
        header = load_darknet_weights(
            model, p, upto=upto, backbone_only=backbone_only, exact=upto is not None
        )
        summary = f"{header.layers_loaded} darknet layers (seen={header.seen})"
        log.info("loaded darknet weights %s: %s", p, summary)
        return Pretrained(p, "darknet", summary)
    data = read_checkpoint(p)  # an unreadable file: its own error, no strictness hint
    try:
        report = transfer_state_dict(
            model,
            data,
            strict=strict,
            upto=model.backbone_layer_count() if backbone_only else None,
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
    heads = set(model.head_layers)
    other = report.ignored or any(_layer(k) not in heads for k in report.kept)
    log.log(
        logging.WARNING if other else logging.INFO,
        "initialised from %s: %s",
        p,
        report.summary(),
    )
    return Pretrained(p, "checkpoint", report.summary())


def _ranges(layers: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``0-2, 5, 7-8``."""
    spans: list[list[int]] = []
    for i in layers:
        if spans and i == spans[-1][1] + 1:
            spans[-1][1] = i
        else:
            spans.append([i, i])
    return ", ".join(f"{a}-{b}" if b > a else f"{a}" for a, b in spans)


def _darknet_other_classes(model: YOLOv4, path: Path, classes: int) -> Pretrained:
    """Fine-tuning darknet weights of ``classes`` classes (darknet's ``-clear``): every
    layer with weights (convolutions, weighted shortcuts) whose tensors all have the model's
    shapes is loaded, the others (the
    convolutions in front of each ``[yolo]`` layer, which follow ``num_classes``) keep their
    initialisation; the layers of both kinds are logged."""
    source = YOLOv4(replace(model.config, num_classes=classes))
    header = load_darknet_weights(source, path)
    theirs, own = source.state_dict(), model.state_dict()
    by_layer: dict[int, list[str]] = {}
    for key in own:
        by_layer.setdefault(_layer(key), []).append(key)
    loaded, reset = [], []
    for i, _ in model.darknet_layers():
        keys = by_layer.get(i, [])
        fits = all(k in theirs and theirs[k].shape == own[k].shape for k in keys)
        (loaded if fits else reset).append(i)
    take = {k: theirs[k] for i in loaded for k in by_layer.get(i, [])}
    model.load_state_dict({**own, **take}, strict=True)
    model.seen = header.seen
    heads = set(model.head_layers)
    why = "the [yolo] head convolutions" if set(reset) <= heads else "shapes differ"
    convs = all(isinstance(m, ConvBnAct) for _, m in model.darknet_layers())
    noun = "convolutional layers" if convs else "layers with weights"
    summary = (
        f"darknet weights of {model.config.name} with {classes} classes (seen={header.seen}) "
        f"for {model.num_classes} classes: {len(loaded)} of {len(loaded) + len(reset)} "
        f"{noun} loaded (layers {_ranges(loaded)}), re-initialised: layers "
        f"{_ranges(reset)} ({why})"
    )
    log.log(logging.INFO if set(reset) <= heads else logging.WARNING, "%s: %s", path, summary)
    return Pretrained(path, "darknet", summary)


@dataclass
class Transfer:
    """What :func:`transfer_state_dict` took from a file: model keys ``loaded``, model keys
    ``kept`` as initialised (absent from the file or of another shape), file keys ``ignored``."""

    loaded: list[str]
    kept: list[str]
    ignored: list[str]

    def summary(self) -> str:
        parts = [f"{len(self.loaded)} of {len(self.loaded) + len(self.kept)} tensors loaded"]
        if self.kept:
            parts.append(f"kept their initial values: {group_keys(self.kept)}")
        if self.ignored:
            parts.append(f"ignored from the file: {group_keys(self.ignored)}")
        return "; ".join(parts)


def _file_model(data: Mapping[str, Any]) -> str:
    """``yolov4 (num_classes=80)`` from a weights file or Lightning ``.ckpt``; ``""`` if unknown."""
    model = data.get("model")
    if not isinstance(model, Mapping):
        model = (data.get("hyper_parameters") or {}).get("model")
    if not isinstance(model, Mapping) or "name" not in model:
        return ""
    return f"{model['name']} (num_classes={model.get('num_classes')})"


def transfer_state_dict(
    model: YOLOv4,
    data: Mapping[str, Any],
    *,
    strict: bool = True,
    upto: int | None = None,
    source: str = "the file",
) -> Transfer:
    """Initialise ``model`` (transfer learning) from a loaded checkpoint of any format (see
    :func:`network_state_dict`); with ``upto`` only darknet layers ``0 .. upto-1``.

    ``strict=True``: the file must be of the model's architecture: every model key present, no
    other keys, the same shapes except the convolutions in front of the ``[yolo]`` layers
    (``model.head_layers``, which follow ``num_classes`` and the anchors per head). Otherwise :class:`CheckpointError` lists
    the missing, unexpected and wrong-shape keys by module. ``strict=False``: every tensor whose
    name and shape match is loaded, whatever the rest. Either way the returned :class:`Transfer`
    lists what was loaded, kept and ignored.
    """

    def wanted(key: str) -> bool:
        return upto is None or 0 <= _layer(key) < upto

    sd = {k: v for k, v in network_state_dict(data).items() if wanted(k)}
    own = model.state_dict()
    own_keys = [k for k in own if wanted(k)]
    heads = set(model.head_layers)
    usable = {k: v for k, v in sd.items() if k in own and v.shape == own[k].shape}
    report = Transfer(
        loaded=[k for k in own_keys if k in usable],
        kept=[k for k in own_keys if k not in usable],
        ignored=[k for k in sd if k not in own],
    )
    if strict:
        missing = [k for k in own_keys if k not in sd]
        shapes = [
            k for k in sd if k in own and sd[k].shape != own[k].shape and _layer(k) not in heads
        ]
        if missing or report.ignored or shapes:
            found = _file_model(data)
            parts = [
                f"{source} does not fit {model.config.name}"
                + (f": it holds {found} weights" if found else "")
                + f"; only {len(usable)} of {len(own_keys)} tensors"
                + (f" of layers 0-{upto - 1}" if upto is not None else "")
                + " match by name and shape"
            ]
            parts += mismatch_report(own, sd, missing, report.ignored, shapes)
            raise CheckpointError("\n  ".join(parts))
    check_finite(usable, source)
    model.load_state_dict({**own, **usable}, strict=True)
    return report
