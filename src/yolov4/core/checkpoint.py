"""The strict-loadable weights file (``weights/best.pt``) and the one loader every format passes.

File format ``yolov4.weights/1`` (builtins and tensors only, ``torch.load(weights_only=True)``)::

    {"format": "yolov4.weights/1",
     "model": ModelConfig.to_dict(),          # build_model(**model) rebuilds the network
     "state_dict": {...},                      # keys == build_model(**model).state_dict() keys
     "class_names": [...], "preprocess": {...}, "metrics": {...},
     "trained": {"epoch": ..., "step": ..., "seen": ..., ...},  # seen: images trained on
     "versions": {"yolov4": ..., "torch": ...},
     "data": {...} | None}                     # the run's resolved data config (``_target_`` included)

Files are read by :func:`~yolov4.core.checkpoint_read.read_checkpoint` (re-exported here, as is
:func:`~yolov4.core.checkpoint_read.network_state_dict`). ``load_checkpoint`` also reads
Lightning ``.ckpt`` files written by this project's LightningModule (``hyper_parameters`` with
``model``/``class_names``/``preprocess``, the images trained on under :data:`CKPT_SEEN_KEY`);
for those the EMA weights are used when present. The loaded model keeps the images its weights
trained on as ``model.seen`` (0 when the file does not record them), as
:func:`~yolov4.darknet.load_darknet_weights` keeps a ``.weights`` header's, and
:func:`~yolov4.darknet.save_darknet_weights` writes it back. Every mismatch raises
:class:`CheckpointError` with the missing, unexpected and wrong-shape keys grouped by module and
the likely cause. The model config
stored in a file is checked against the file's own tensors on the meta device before the network
is allocated, so a file cannot make the loader allocate more than it holds.

Writes go to a temporary file ``.<name>.XXXXXXXX.tmp`` in the target folder, locked
(``fcntl.flock``) while it is written, then renamed into place. A write killed with SIGKILL leaves
its temporary file behind; the next write into that folder removes such files when they are older
than :data:`STALE_TMP_AGE_S` and no process holds their lock (a live writer always does).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from yolov4.core.artifact import check_class_names
from yolov4.core.checkpoint_read import network_state_dict, read_checkpoint
from yolov4.core.files import atomic_write
from yolov4.core.mismatch import (
    check_finite,
    check_state_dict,
    clean_state_dict,
    group_keys,
    load_state_dict_checked,
    mismatch_report,
)
from yolov4.core.preprocess import PreprocessConfig
from yolov4.errors import CheckpointError, ConfigError
from yolov4.models import ModelConfig, YOLOv4, build_model
from yolov4.models.budget import check_network
from yolov4.models.cfg import resolve_layers
from yolov4.models.config import config_sections
from yolov4.models.stride import check_stride_multiple
from yolov4.version import versions

__all__ = [
    "FORMAT",
    "Checkpoint",
    "save_checkpoint",
    "load_checkpoint",
    "read_checkpoint",
    "clean_state_dict",
    "check_state_dict",
    "group_keys",
    "mismatch_report",
    "network_state_dict",
    "load_state_dict_checked",
    "check_finite",
    "SEEN",
    "CKPT_SEEN_KEY",
]

log = logging.getLogger(__name__)

FORMAT = "yolov4.weights/1"
# Weights a file must hold per element of the model it describes (1 byte: even an 8-bit file);
# a file below this has tensors of the claimed shapes but not their data (stride-0 views).
MIN_BYTES_PER_ELEMENT = 1
# the images the weights trained on (darknet's ``seen``): a key of a weights file's "trained",
# and of a Lightning .ckpt (written by the LightningModule's on_save_checkpoint)
SEEN = "seen"
CKPT_SEEN_KEY = "yolov4_seen"


@dataclass
class Checkpoint:
    """A loaded checkpoint: the rebuilt model (eval mode) and what came with it.

    ``preprocess`` is given as a :class:`PreprocessConfig`, its dict (the file's form) or
    nothing, and is always a :class:`PreprocessConfig` once built: for a file that stores none,
    letterbox at the network's input size, what every reader (Predictor, export, evaluate,
    sharded predict) runs; :attr:`preprocess_stored` says whether the file stored one. A stored
    dict is validated strictly (unknown keys, bad values, sides that are not multiples of the
    network's largest stride): :class:`CheckpointError` naming the key."""

    model: YOLOv4
    class_names: list[str]
    preprocess: PreprocessConfig | Mapping[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    trained: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    data: dict[str, Any] | None = None  # the training run's data config (None: not recorded)
    preprocess_stored: bool = field(init=False)

    def __post_init__(self) -> None:
        self.preprocess_stored = bool(self.preprocess)
        self.preprocess = preprocess_config(self.preprocess, self.model, self.path or "checkpoint")

    def preprocess_dict(self) -> dict[str, Any]:
        """:attr:`preprocess` in the file's form (:meth:`PreprocessConfig.to_dict`)."""
        return self.preprocess.to_dict()


def preprocess_config(
    preprocess: PreprocessConfig | Mapping[str, Any] | None, model: YOLOv4, source: Any
) -> PreprocessConfig:
    """The :class:`PreprocessConfig` ``model`` runs with: ``preprocess`` (a config or its dict)
    validated, or none given = letterbox at the network's input size. Raises
    :class:`CheckpointError` (``source``: the file or function) naming the key: unknown keys,
    bad values, input sides that are not multiples of the network's largest stride."""
    if isinstance(preprocess, PreprocessConfig):
        config = preprocess
    else:
        try:
            values = _plain(dict(preprocess)) if preprocess else {}
            config = PreprocessConfig.from_dict(
                {"input_size": model.config.input_size, "mode": "letterbox", **values}
            )
        except ConfigError as e:
            raise CheckpointError(f"{source}: {e}") from e
        except (TypeError, ValueError) as e:  # not a mapping
            raise CheckpointError(
                f"{source}: preprocess: expected a mapping of PreprocessConfig keys, "
                f"got {preprocess!r:.60} ({e})"
            ) from e
    check_stride_multiple(  # what the network (and so every reader) accepts
        config.input_size, model.config.max_stride, f"{source}: preprocess.input_size",
        CheckpointError,
    )  # fmt: skip
    return config


def _plain(value: Any) -> Any:
    """Exact builtins only (what ``weights_only=True`` accepts): numbers, str, lists, dicts.
    numpy scalars and arrays and tensors become numbers or (nested) lists; subclasses of builtins
    (``np.float64``, ``np.str_``) their base type; anything else its ``float`` or ``str``."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None:
        return None
    for kind in (bool, int, float, str):  # bool first: it is an int
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, torch.Tensor) or type(value).__module__.split(".")[0] == "numpy":
        return _plain(value.tolist())  # numpy scalar or array, tensor of any shape
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def save_checkpoint(
    path: str | os.PathLike,
    model: YOLOv4,
    class_names: list[str] | None = None,
    preprocess: PreprocessConfig | Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    trained: Mapping[str, Any] | None = None,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    data: Mapping[str, Any] | None = None,
) -> Path:
    """Write a ``yolov4.weights/1`` file atomically (temporary file in the same folder, then
    rename): a crash mid-write leaves any previous file intact. ``state_dict`` (e.g. the EMA
    weights) defaults to ``model.state_dict()``; wrapper prefixes are stripped and the keys are
    checked against ``build_model(**model.config.to_dict())`` before anything is written.

    What it writes, every reader accepts: ``preprocess`` is completed and validated
    (:class:`PreprocessConfig`, sides multiples of the network's largest stride:
    ``model.config.max_stride``), ``metrics`` and ``trained`` become exact
    builtins (tensors and numpy values their numbers, any other value its ``float`` or its
    ``str``); a bad ``preprocess``, class names or weights raise :class:`CheckpointError`, and
    nothing is written. ``data``: the run's resolved
    ``cfg.data`` node (plain builtins, ``_target_`` included), what ``evaluate.py checkpoint=``
    scores by default (:attr:`Checkpoint.data`)."""
    path, model = _save_target(path, model, state_dict is not None)
    config = model.config.to_dict()
    sd = clean_state_dict(state_dict if state_dict is not None else model.state_dict())
    with torch.device("meta"):  # keys and shapes only: no memory, no init cost
        check_state_dict(build_model(**config), sd)
    default = [str(i) for i in range(model.num_classes)]
    names = check_class_names(
        default if class_names is None else class_names,
        model.num_classes,
        "save_checkpoint: class_names",
        CheckpointError,
    )
    check_finite(sd, "save_checkpoint")  # load_checkpoint refuses such weights
    if data is not None and not isinstance(data, Mapping):
        raise CheckpointError(
            f"save_checkpoint: data: expected the run's data config as a mapping, "
            f"got {type(data).__name__}"
        )
    payload = {  # exact builtins and tensors only: what read_checkpoint accepts
        "format": FORMAT,
        "model": _plain(config),
        "state_dict": {k: v.detach().cpu().clone() for k, v in sd.items()},
        "class_names": names,
        "preprocess": preprocess_config(preprocess, model, "save_checkpoint").to_dict(),
        "metrics": _plain(dict(metrics or {})),
        "trained": _plain(dict(trained or {})),
        "versions": versions(),
        "data": _plain(dict(data)) if data is not None else None,
    }
    return atomic_write(path, lambda f: torch.save(payload, f))


def _save_target(path: Any, model: Any, own_state_dict: bool) -> tuple[Path, YOLOv4]:
    """``path`` as a file :class:`Path` and ``model`` as the YOLOv4 network to save (unwrapped
    from DataParallel / DistributedDataParallel); :class:`CheckpointError` for anything else,
    a folder, or a fused model without ``own_state_dict`` (no reader rebuilds a fused one)."""
    if not hasattr(model, "config") and isinstance(getattr(model, "module", None), YOLOv4):
        model = model.module  # DataParallel, DistributedDataParallel
    if not isinstance(path, str | os.PathLike) or not isinstance(
        getattr(model, "config", None), ModelConfig
    ):
        raise CheckpointError(
            f"save_checkpoint(path, model, ...): expected a file path and a YOLOv4 network, got "
            f"{type(path).__name__} and {type(model).__name__}"
        )
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"save_checkpoint: {path} is a folder; give a file, e.g. {path}/best.pt"
        )
    if not own_state_dict and getattr(model, "is_fused", False):
        raise CheckpointError(
            "save_checkpoint: the model is fused (BatchNorm folded into the convolutions), "
            "which no reader rebuilds; save the unfused model, then fuse_model() it to serve"
        )
    return path, model


def _from_lightning(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """A Lightning ``.ckpt`` of this project's LightningModule in the weights-file layout."""
    hp = data.get("hyper_parameters") or {}
    if "model" not in hp:
        raise CheckpointError(
            f"{path} is a Lightning checkpoint without hyper_parameters['model'] (the model "
            f"config); it was not written by yolov4's LightningModule"
        )
    sd = network_state_dict(data)
    return {
        "format": FORMAT,
        "model": hp["model"],
        "state_dict": sd,
        "class_names": hp.get("class_names"),
        "preprocess": hp.get("preprocess") or {},
        "metrics": {},
        "trained": {
            "epoch": data.get("epoch"),
            "step": data.get("global_step"),
            **({SEEN: data[CKPT_SEEN_KEY]} if CKPT_SEEN_KEY in data else {}),
        },
        "data": hp.get("data"),
    }


def _check_before_allocation(
    path: Path, config: ModelConfig, sd: Mapping[str, torch.Tensor]
) -> None:
    """The stored config against the stored tensors, with the network on the meta device (no
    memory): keys and shapes, then the bytes the file really holds (stride-0 tensors claim any
    shape with one number)."""
    with torch.device("meta"):
        shell = YOLOv4(config)
    try:
        check_state_dict(shell, sd)
    except CheckpointError as e:
        raise CheckpointError(
            f"{path}: its tensors do not fit the model config stored with them "
            f"({config.name}, num_classes={config.num_classes}); refusing to build it: {e}"
        ) from e
    needed = sum(t.numel() for t in shell.state_dict().values())
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in sd.values()}
    held = sum(storages.values())
    if held < needed * MIN_BYTES_PER_ELEMENT:
        raise CheckpointError(
            f"{path}: its model config ({config.name}, num_classes={config.num_classes}) has "
            f"{needed:,} weights but the file holds {held:,} bytes of tensor data (tensors of the "
            f"right shapes without their data); refusing to allocate the network"
        )


def _check_preprocess_size(path: Path, config: ModelConfig, preprocess: Any) -> None:
    """The stored preprocess input size against the network's activation budget
    (:mod:`yolov4.models.budget`): every prediction runs at that size."""
    size = preprocess.get("input_size") if isinstance(preprocess, Mapping) else None
    if not (isinstance(size, (list, tuple)) and len(size) == 2):
        return  # absent or malformed: the readers' own validation names it
    if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size):
        return
    try:
        check_network(resolve_layers(config_sections(config)), size, "preprocess.input_size")
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from e


def load_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> Checkpoint:
    """Rebuild the model from the file alone (``yolov4.weights/1`` or Lightning ``.ckpt``) and load
    its weights with ``strict=True``. Returns a :class:`Checkpoint` with the model in eval mode."""
    if not isinstance(path, str | os.PathLike):
        raise CheckpointError(f"load_checkpoint: expected a file path, got {type(path).__name__}")
    device = torch.device(map_location)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CheckpointError(
            f"load_checkpoint(map_location={str(map_location)!r}): this machine has no CUDA GPU; "
            "load on the CPU (map_location='cpu')"
        )
    path = Path(path)
    data = read_checkpoint(path)
    if "state_dict" in data and "format" not in data and "pytorch-lightning_version" in data:
        data = _from_lightning(data, path)
    fmt = data.get("format")
    if fmt != FORMAT:
        known = "a yolov4 weights file" if "state_dict" in data else "a checkpoint"
        raise CheckpointError(
            f"{path} has format {fmt!r}, expected {FORMAT!r} (found keys {sorted(data)[:8]}); "
            f"is it {known} from another tool? Darknet .weights load with yolov4.darknet.load_darknet_weights"
        )
    try:
        config = ModelConfig.from_dict(dict(data["model"]))
    except (ConfigError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: the stored model config is unusable: {e}") from e
    if not isinstance(data.get("state_dict"), Mapping):
        raise CheckpointError(f"{path}: 'state_dict' is a {type(data.get('state_dict')).__name__}")
    sd = clean_state_dict(data["state_dict"])
    _check_before_allocation(path, config, sd)
    check_finite(sd, str(path))
    _check_preprocess_size(path, config, data.get("preprocess"))
    names = data.get("class_names")
    names = [str(i) for i in range(config.num_classes)] if names is None else names
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise CheckpointError(f"{path}: class_names must be a list of strings, found {names!r:.80}")
    if len(names) != config.num_classes:
        raise CheckpointError(
            f"{path} has {len(names)} class names for a model with num_classes="
            f"{config.num_classes}; expected one name per class"
        )
    with torch.device("meta"):  # the strict load below sets every tensor: no random init
        model = YOLOv4(config)
    model.to_empty(device="cpu")
    load_state_dict_checked(model, sd)
    trained = dict(data.get("trained") or {})
    model.seen = _seen(path, trained)
    return Checkpoint(
        model=model.to(map_location).eval(),
        class_names=list(names),
        preprocess=data.get("preprocess"),
        metrics=dict(data.get("metrics") or {}),
        trained=trained,
        path=path,
        data=dict(data["data"]) if isinstance(data.get("data"), Mapping) else None,
    )


def _seen(path: Path, trained: Mapping[str, Any]) -> int:
    """The images a checkpoint's weights trained on, ``trained["seen"]``: 0 when not recorded;
    :class:`CheckpointError` for a value that is not an int >= 0."""
    seen = trained.get(SEEN)
    if seen is None:
        return 0
    if isinstance(seen, bool) or not isinstance(seen, int) or seen < 0:
        raise CheckpointError(
            f"{path}: trained.{SEEN} (the images trained on) must be an int >= 0, found {seen!r}"
        )
    return seen
