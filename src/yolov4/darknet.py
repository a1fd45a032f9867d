"""Darknet interchange: ``.cfg`` text and ``.weights`` files, in both directions.

The network is built from its cfg's sections (``model.sections``: the cfg with the model config
applied), module ``layers.i`` being darknet's layer ``i``, so the cfg written here and the
layer order of the weight files are the same list by construction.

``.weights`` layout (darknet ``src/parser.c``): int32 ``major``, ``minor``, ``revision``, then
``seen`` (images seen in training) as uint64 when ``major * 10 + minor >= 2`` (uint32 before),
then float32s, layer by layer in cfg order: for a ``[convolutional]`` BN ``beta, gamma, mean,
var`` (each ``filters`` long) and the kernel, or ``bias`` and the kernel without BN; for a
weighted ``[shortcut]`` its weights (``load_shortcut_weights``).
"""

from __future__ import annotations

import numbers
import os
import tempfile
from dataclasses import replace
from itertools import accumulate
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from yolov4.errors import CheckpointError, ConfigError
from yolov4.models.budget import MAX_CLASSES, param_count, weight_floats
from yolov4.models.cfg import CONV_DEFAULT_ACTIVATION, ZOO, parse_cfg, resolve_layers
from yolov4.models.config import ModelConfig, config_sections
from yolov4.models.layers import ConvBnAct
from yolov4.models.stride import check_stride_multiple
from yolov4.models.yolov4 import YOLOv4

__all__ = [
    "DarknetHeader",
    "write_darknet_cfg",
    "read_darknet_cfg",
    "darknet_float_count",
    "darknet_file_classes",
    "load_darknet_weights",
    "save_darknet_weights",
]

HEADER_VERSION = (0, 2, 5)  # what darknet (AlexeyAB) writes today: uint64 `seen`
FLOAT = np.dtype("<f4")
# How a torch.save file starts: a zip archive (torch >= 1.6), or the legacy format's pickle
# (protocol 2+, the PROTO opcode first); a darknet file never does (its small version numbers).
ZIP_MAGIC, PICKLE_PROTO = b"PK\x03\x04", b"\x80"
MAX_VERSION = 1000  # a header's major, minor and revision are small version numbers


class DarknetHeader(NamedTuple):
    major: int
    minor: int
    revision: int
    seen: int
    layers_loaded: int  # darknet layers whose weights were read (all, or the `upto` cut-off)


# -- cfg ----------------------------------------------------------------------------------------
def write_darknet_cfg(
    model: YOLOv4, input_size: tuple[int, int] | None = None, letter_box: bool | None = None
) -> str:
    """The model as darknet ``.cfg`` text, readable by darknet and by OpenCV's
    ``cv2.dnn.readNetFromDarknet``: the cfg it was built from (``[net]`` training settings kept)
    with its config applied (size, classes, anchors, masks, ``[yolo]`` keys, head filters).
    ``input_size`` is ``(H, W)``, default the model config's ``input_size``; ``letter_box``
    sets ``[net] letter_box`` (how darknet, and ``darknet_weights=`` here, resize images), default
    the model config's. For a checkpoint, pass its preprocessing:
    ``letter_box=ckpt.preprocess.mode == "letterbox"``. A ``[convolutional]`` without
    ``activation=`` (darknet's default: logistic) is written with ``activation=logistic``, as
    OpenCV reads the key's absence as linear. A section under another of darknet's names
    (``[conv]``, ``[max]``, ``[network]``) is written under the one OpenCV reads
    (:data:`yolov4.models.cfg.SECTION_ALIASES`)."""
    h, w = check_stride_multiple(
        input_size or model.config.input_size, model.config.max_stride, "input_size"
    )
    if letter_box not in (None, True, False, 0, 1):
        raise ConfigError(f"letter_box must be true, false or None, got {letter_box!r}")
    lines = []
    for i, section in enumerate(model.sections):
        options = dict(section.options)
        if section.kind == "convolutional" and "activation" not in options:
            # darknet's default; OpenCV's importer reads a conv without the key as linear
            options["activation"] = CONV_DEFAULT_ACTIVATION
        if i == 0:
            options.update(width=str(w), height=str(h))
            if letter_box is not None:
                options["letter_box"] = str(int(letter_box))
        lines.append(f"[{section.kind}]")
        lines.extend(f"{k}={v}" for k, v in options.items())
        lines.append("")
    return "\n".join(lines)


def read_darknet_cfg(text: str, source: str = "<cfg>") -> list[tuple[str, dict[str, str]]]:
    """Parse cfg text into ``[(section, {key: raw value})]``, ``[net]`` included; comments and
    whitespace are dropped (:func:`yolov4.models.cfg.parse_cfg`, which the builder reads too;
    a malformed line raises :class:`~yolov4.errors.ConfigError` naming it)."""
    return [(s.kind, dict(s.options)) for s in parse_cfg(text, source, warn=True)]


# -- weights ------------------------------------------------------------------------------------
def _floats(m: nn.Module) -> int:
    """Floats of one layer in the ``.weights`` file (a fused convolution counted unfused)."""
    if isinstance(m, ConvBnAct):
        n = m.conv.out_channels
        return m.conv.weight.numel() + (4 * n if m.has_bn else n)
    return sum(t.numel() for _, t in m.darknet_tensors())


def _weighted_layers(model: YOLOv4, cutoff: int | None) -> list[tuple[int, nn.Module]]:
    """The layers with ``.weights`` tensors (``model.darknet_layers()``) of darknet layers
    ``< cutoff`` (``None``: all), with their indices."""
    n = len(model.layers)
    if cutoff is not None and (
        isinstance(cutoff, bool) or not isinstance(cutoff, numbers.Integral) or not 1 <= cutoff <= n
    ):
        raise CheckpointError(
            f"upto must be a darknet layer count in 1..{n} ({model.config.name} has {n} layers), "
            f"got {cutoff!r}"
        )
    return [(i, m) for i, m in model.darknet_layers() if cutoff is None or i < cutoff]


def darknet_float_count(model: YOLOv4, upto: int | None = None) -> int:
    """Float32s in the model's ``.weights`` file (after the header), for layers ``< upto``."""
    return sum(_floats(m) for _, m in _weighted_layers(model, upto))


def _read_header(data: bytes, path: Path) -> tuple[int, int, int, int, int]:
    if len(data) < 16:
        raise CheckpointError(
            f"{path}: {len(data)} bytes is too short for a darknet .weights header (16-20 bytes); the file is truncated or not darknet weights"
        )
    if data.startswith(ZIP_MAGIC) or data[:1] == PICKLE_PROTO:  # how torch.save's files start
        raise CheckpointError(
            f"{path} is a PyTorch file (it starts as torch.save's zip or pickle does), not darknet "
            "weights; a checkpoint torch cannot read is truncated or corrupt"
        )
    major, minor, revision = (int(v) for v in np.frombuffer(data, "<i4", 3))
    if not all(0 <= v < MAX_VERSION for v in (major, minor, revision)):
        raise CheckpointError(
            f"{path}: header major {major}, minor {minor}, revision {revision} is not darknet's "
            f"(version numbers 0-{MAX_VERSION - 1}, e.g. 0, 2, 5); the file is not darknet weights"
        )
    wide = major * 10 + minor >= 2
    if wide:
        if len(data) < 20:
            raise CheckpointError(f"{path}: truncated darknet header ({len(data)} bytes)")
        seen, offset = int(np.frombuffer(data, "<u8", 1, 12)[0]), 20
    else:
        seen, offset = int(np.frombuffer(data, "<u4", 1, 12)[0]), 16
    return int(major), int(minor), int(revision), seen, offset


def _zoo_float_count(name: str, num_classes: int) -> int:
    """Floats in zoo network ``name``'s ``.weights`` file, from its layer list alone (building
    the twelve networks' modules, even on the meta device, took ~2.5 s per error message)."""
    return _config_float_count(ModelConfig.load(name, num_classes=num_classes))


def _config_float_count(config: ModelConfig) -> int:
    """Floats in the ``.weights`` file of the network ``config`` describes (no modules built)."""
    return param_count(resolve_layers(config_sections(config)))


def _fit_hint(model: YOLOv4, found: int, expected: int) -> str:
    """Explain a float count that does not fit: which model/num_classes or prefix it fits."""
    hints = []
    for name in ZOO:
        counts = [_zoo_float_count(name, c) for c in (1, 2)]
        base, per_class = counts[0] - (counts[1] - counts[0]), counts[1] - counts[0]
        classes, rest = divmod(found - base, per_class)
        if rest == 0 and 1 <= classes <= MAX_CLASSES:
            hints.append(f"it fits {name} with num_classes={classes}")
    if model.config.cfg is not None:  # a user's cfg: the same network with other classes
        classes = _classes_of(model.config, found)
        if classes is not None:
            hints.append(f"it fits this cfg with classes={classes} (num_classes={classes})")
    layers = model.darknet_layers()
    total = 0
    for k, (i, m) in enumerate(layers):
        total += _floats(m)
        if total == found and k + 1 < len(layers):
            convs = all(isinstance(m, ConvBnAct) for _, m in layers[: k + 1])
            what = "convolutional layers" if convs else "layers with weights"
            hints.append(
                f"it holds exactly the first {k + 1} {what} (darknet layers 0-{i}) "
                f"of this model, like darknet's partial backbone files (*.conv.N): load it with "
                f"upto={layers[k + 1][0]} or backbone_only=True (train.py: name it *.conv."
                f"{layers[k + 1][0]}, or module.pretrained_backbone_only=true)"
            )
            break
    hints += _zoo_prefix_hints(model, found)
    if not hints and found > expected:
        hints.append(
            f"it is {found - expected:,} floats longer than the network needs; usually the file "
            "is for another model or num_classes"
        )
    elif not hints:
        hints.append("usually the file is for another model or num_classes, or it is truncated")
    return "; ".join(hints)


def _zoo_prefix_hints(model: YOLOv4, found: int) -> list[str]:
    """Zoo networks (other than ``model``'s own) whose first layers hold exactly ``found``
    floats, as another network's partial ``.conv.N`` file does."""
    own = model.config.name if model.config.cfg is None else None
    prefixes: dict[str, list[str]] = {}  # what the file holds -> the networks it starts
    for name in ZOO:
        if name == own:
            continue
        specs = resolve_layers(config_sections(ModelConfig.load(name, num_classes=1)))
        weighted = [s for s in specs if weight_floats(s)]
        totals = list(accumulate(weight_floats(s) for s in weighted[:-1]))
        if found not in totals:
            continue
        k = totals.index(found)
        spec = weighted[k]
        convs = all(s.kind == "convolutional" for s in weighted[: k + 1])
        what = "convolutional layers" if convs else "layers with weights"
        held = f"the first {k + 1} {what} (darknet layers 0-{spec.index})"
        prefixes.setdefault(held, []).append(name)
    return [
        f"it holds exactly {held} of {' / '.join(names)}: a partial file for "
        f"{names[0]}, not for {model.config.name}"
        for held, names in prefixes.items()
    ]


def _classes_of(config: ModelConfig, found: int) -> int | None:
    """The ``num_classes`` of ``config``'s network whose ``.weights`` file holds ``found``
    floats after the header; None when no class count fits."""
    one, two = (_config_float_count(replace(config, num_classes=c)) for c in (1, 2))
    per_class = two - one
    classes, left = divmod(found - (one - per_class), per_class) if per_class else (0, 1)
    return int(classes) if left == 0 and 1 <= classes <= MAX_CLASSES else None


def darknet_file_classes(config: ModelConfig, path: str | os.PathLike) -> int | None:
    """The ``num_classes`` of ``config``'s network whose ``.weights`` file is the one at
    ``path`` (read from its float count, the header only is read); None when no class count fits
    (another network, a partial ``.conv.N`` file, a truncated file)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(20)
        size = path.stat().st_size
    except OSError as e:
        raise CheckpointError(f"cannot read darknet weights {path}: {e}") from e
    offset = _read_header(head, path)[4]
    found, rest = divmod(size - offset, FLOAT.itemsize)
    return _classes_of(config, found) if rest == 0 else None


def _check_finite(floats: np.ndarray, layers: list[tuple[int, nn.Module]], path: Path) -> None:
    """Refuse NaN/inf in the floats that will be loaded, naming the first tensor holding one."""
    bad = ~np.isfinite(floats)
    if not bad.any():
        return
    first, count = int(np.flatnonzero(bad)[0]), int(bad.sum())
    pos = 0
    for i, m in layers:
        for key, tensor in m.darknet_tensors():
            n = tensor.numel()
            if pos <= first < pos + n:
                raise CheckpointError(
                    f"{path}: {count:,} non-finite floats (NaN or inf), the first ({floats[first]}) "
                    f"at float {first:,} after the header, in layers.{i}.{key} (darknet layer {i}, "
                    f"element {first - pos:,}); the file is corrupt or its training diverged"
                )
            pos += n


def _read_weights_file(path: Path) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """``(major, minor, revision, seen)`` of a darknet ``.weights`` file and the float32s after
    its header (a read-only view of the file's bytes); :class:`CheckpointError` when it cannot
    be read or its body is not whole float32s."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read darknet weights {path}: {e}") from e
    major, minor, revision, seen, offset = _read_header(data, path)
    body = len(data) - offset
    if body % FLOAT.itemsize:
        raise CheckpointError(
            f"{path}: {body} bytes after the header is not a whole number of float32s; the file is truncated or not darknet weights"
        )
    return (major, minor, revision, seen), np.frombuffer(
        data, FLOAT, body // FLOAT.itemsize, offset
    )


@torch.no_grad()
def load_darknet_weights(
    model: YOLOv4,
    path: str | os.PathLike,
    upto: int | None = None,
    backbone_only: bool = False,
    exact: bool = False,
) -> DarknetHeader:
    """Read a darknet ``.weights`` file into ``model`` (in place) and return its header.

    By default the file must hold exactly the model's weights. ``upto=K`` loads darknet layers
    ``0..K-1`` only (darknet's ``partial``: e.g. ``upto=137`` for ``yolov4.conv.137``);
    ``backbone_only=True`` loads the backbone's layers only. Either way the file may hold more
    layers than are loaded (a full file's backbone), but not fewer; with ``exact=True`` it must
    hold exactly the layers loaded (a ``.conv.N`` file, which darknet's ``partial`` writes with
    layers ``0..N-1`` only). Raises :class:`CheckpointError` on any mismatch,
    naming the float counts expected and found and what the file fits instead, or the first
    tensor holding a NaN or inf (the model keeps its weights). The header's ``seen`` is kept as
    ``model.seen``, which :func:`save_darknet_weights` writes back.
    """
    path = Path(path)
    if model.is_fused:
        raise CheckpointError(
            "load darknet weights into an unfused model (build_model), then fuse it"
        )
    if backbone_only:
        if upto is not None:
            raise CheckpointError("pass either upto or backbone_only, not both")
        upto = model.backbone_layer_count()
    (major, minor, revision, seen), floats = _read_weights_file(path)
    found = len(floats)
    layers = _weighted_layers(model, upto)
    expected = sum(_floats(m) for _, m in layers)
    what = f"{model.config.name} with {model.num_classes} classes" + (
        f", layers 0-{upto - 1}" if upto is not None else ""
    )
    if found < expected or ((upto is None or exact) and found != expected):
        raise CheckpointError(
            f"{path}: darknet weights for {what} need {expected:,} floats after the header, "
            f"found {found:,}: {_fit_hint(model, found, expected)}"
        )
    _check_finite(floats[:expected], layers, path)
    pos = 0
    for _, m in layers:
        for _, t in m.darknet_tensors():
            n = t.numel()
            t.copy_(torch.from_numpy(floats[pos : pos + n].copy()).view_as(t))
            pos += n
    model.seen = seen
    model.darknet_version = (major, minor, revision)  # written back by save_darknet_weights
    return DarknetHeader(major, minor, revision, seen, len(model.layers) if upto is None else upto)


@torch.no_grad()
def save_darknet_weights(
    model: YOLOv4, path: str | os.PathLike, seen: int | None = None, upto: int | None = None
) -> Path:
    """Write ``model`` (layers ``< upto``, default all) as a darknet ``.weights`` file, atomically
    (temporary file + rename). Pair it with :func:`write_darknet_cfg` to run in darknet/OpenCV.
    ``seen`` (images seen in training, darknet's burn-in counter) defaults to the ``seen`` of
    the file the model was loaded from (:func:`load_darknet_weights`), 0 for a new model. The
    header's version is that file's too (an official YOLOv2 file's 0.1.0 with a uint32 ``seen``
    writes back byte for byte), :data:`HEADER_VERSION` for a new model or a ``seen`` the old
    header's uint32 cannot hold."""
    if seen is None:
        seen = int(getattr(model, "seen", 0))
    if isinstance(seen, bool) or not isinstance(seen, numbers.Integral) or not 0 <= seen < 2**64:
        raise CheckpointError(f"seen (images seen in training) must be an int >= 0, got {seen!r}")
    if model.is_fused:
        raise CheckpointError(
            "save darknet weights from the unfused model: a fused model has no BN statistics to write"
        )
    path = Path(path)
    version = tuple(getattr(model, "darknet_version", HEADER_VERSION))
    wide = version[0] * 10 + version[1] >= 2  # darknet's parser.c: uint64 seen from 0.2 on
    if not wide and seen >= 2**32:
        version, wide = HEADER_VERSION, True
    seen_bytes = np.array([seen], "<u8" if wide else "<u4").tobytes()
    chunks = [np.array(version, "<i4").tobytes(), seen_bytes]
    for _, m in _weighted_layers(model, upto):
        for _, t in m.darknet_tensors():
            chunks.append(t.detach().float().cpu().numpy().astype(FLOAT).tobytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    mask = os.umask(0o077)  # the umask, restored at once: the mode open() gives, not mkstemp's 0600
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    try:
        with os.fdopen(fd, "wb") as f:
            for c in chunks:
                f.write(c)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
