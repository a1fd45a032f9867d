"""Resume (``ckpt_path=``): local files only, read without running pickled code, checked first.

Lightning's own resume loads ``http(s)://`` paths with ``weights_only=False`` and local ones with
torch's default, which ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` turns off: either way a hostile
``.ckpt`` runs its code. Here the path must be a local file, it is read with
:func:`yolov4.core.checkpoint.read_checkpoint` (``weights_only=True`` passed explicitly, which
that variable cannot override), and it must be a Lightning checkpoint of this project whose
network and class names fit the run's. ``train`` then hands Lightning the checked absolute path
with ``weights_only=True`` as well.

What a resume may change: :func:`config_changes` lists the keys where the run's saved config and
the resumed one differ, :func:`unresumable` those that cannot continue the same training (the
network, the data it is trained and validated on, the optimizer's kind); the rest (epochs, batch
size, workers, logging, ...) are allowed and logged.

:func:`check_lightning_file` is the check ``YoloModule.load_from_checkpoint`` makes of a file
before Lightning reads it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from yolov4.core.checkpoint import check_state_dict, read_checkpoint
from yolov4.errors import CheckpointError, ConfigError
from yolov4.models import YOLOv4

__all__ = [
    "read_resume_checkpoint",
    "check_lightning_file",
    "check_resume_fits",
    "check_saved_cfg_file",
    "saved_cfg_text",
    "config_changes",
    "unresumable",
    "format_changes",
    "restoring_overrides",
]

URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
LIGHTNING_KEYS = ("pytorch-lightning_version", "state_dict", "hyper_parameters")
# the LightningModule attribute that holds the network (YoloModule.model)
NETWORK_PREFIX = "model."
# Config keys a resume cannot change (the network, the optimizer state's kind) and, under
# ``data.``, the only keys it may change: the rest of ``data`` says which images and labels the
# run trains and validates on, and how they are fed to the network.
FIXED = ("model.", "optim.optimizer")
RESUMABLE_MODEL = {"model.input_size"}
RESUMABLE_DATA = {
    "batch_size",
    "val_batch_size",
    "num_workers",
    "persistent_workers",
    "pin_memory",
    "seed",
    "strict",
    "cache_dir",
    "input_size",
    "preprocess.input_size",  # data.input_size's (the config's interpolation, resolved)
}
# keys that differ on every resume by construction
IGNORED = {"ckpt_path"}
ABSENT = "<absent>"


def read_resume_checkpoint(ckpt_path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """The absolute local path of ``ckpt_path`` and its contents, read with
    ``weights_only=True``. :class:`CheckpointError` for a URL (any ``scheme://``), a missing,
    truncated or foreign file, a file holding pickled objects, or a file that is not a Lightning
    checkpoint of a yolov4 run."""
    text = str(ckpt_path)
    url = URL.match(text)
    if url:
        raise CheckpointError(
            f"ckpt_path={text}: resume reads local files only, not {url['scheme']}:// (a "
            f"downloaded checkpoint would be unpickled, which can run code); download it, make "
            f"sure where it comes from, and pass its local path"
        )
    path = Path(text).expanduser().resolve()
    try:
        data = read_checkpoint(path)
    except CheckpointError as e:
        raise CheckpointError(f"ckpt_path: {e}") from e
    missing = [k for k in LIGHTNING_KEYS if k not in data]
    if missing:
        raise CheckpointError(
            f"ckpt_path={path} is not a Lightning checkpoint of a yolov4 run: it has no "
            f"{missing} (found keys {sorted(data)[:8]}); resume takes <run>/checkpoints/last.ckpt, "
            f"and module.pretrained=... starts a new run from a weights file"
        )
    return path, data


def check_lightning_file(path: str | os.PathLike) -> None:
    """``path`` a Lightning checkpoint (what ``YoloModule.load_from_checkpoint`` takes):
    :class:`CheckpointError` for a missing, truncated or foreign file, or a weights file of
    this project (``weights/*.pt``, which ``load_checkpoint`` and the Predictor read)."""
    data = read_checkpoint(path)
    missing = [k for k in LIGHTNING_KEYS if k not in data]
    if missing:
        what = "a yolov4 weights file" if data.get("format") else "not a Lightning checkpoint"
        raise CheckpointError(
            f"{path} is {what} (no {missing}): YoloModule.load_from_checkpoint "
            "takes <run>/checkpoints/*.ckpt; load_checkpoint(path) and "
            "Predictor.from_checkpoint(path) read weights files"
        )


def check_resume_fits(
    path: Path,
    data: Mapping[str, Any],
    model: YOLOv4,
    class_names: Sequence[str] | None = None,
) -> None:
    """The network in a resume checkpoint against the run's ``model`` (keys and shapes) and its
    class names against the run's data (``class_names``: same names, same order), so that a run
    with other overrides fails here naming the difference, not inside Lightning or, for data
    with other names, not at all."""
    saved = (data.get("hyper_parameters") or {}).get("class_names")
    if class_names is not None and saved is not None and list(saved) != list(class_names):
        diff = [
            f"{i}: {a!r} -> {b!r}"
            for i, (a, b) in enumerate(zip(saved, class_names, strict=False))
            if a != b
        ]
        raise ConfigError(
            f"ckpt_path={path} holds a network trained on classes {list(saved)}; this run's data has "
            f"{list(class_names)} ({'; '.join(diff[:5]) or 'other count'}): resume continues "
            f"the same training with the data keys of the run that wrote it; to train on "
            f"these classes start a new run with module.pretrained=<run>/weights/last.pt"
        )
    saved_cfg = saved_cfg_text(data)
    now_cfg = model.config.cfg
    if (
        saved_cfg is not None
        and now_cfg is not None
        and saved_cfg.splitlines() != now_cfg.splitlines()
    ):
        raise ConfigError(
            f"ckpt_path={path}: the darknet cfg this run reads now differs from the one the run "
            f"trained ({_first_difference(saved_cfg, model.config.cfg)}): resume continues the "
            f"run's own network and [yolo] settings. Restore the file (the run's text is in its "
            f"checkpoints, hyper_parameters.model.cfg), or start a new run from the weights with "
            f"module.pretrained=<run>/weights/last.pt"
        )
    sd = {
        k[len(NETWORK_PREFIX) :]: v
        for k, v in data["state_dict"].items()
        if k.startswith(NETWORK_PREFIX)
    }
    try:
        check_state_dict(model, sd)
    except CheckpointError as e:
        raise CheckpointError(
            f"ckpt_path={path} does not fit this run's model; resume with the model and data "
            f"overrides of the run that wrote it. {e}"
        ) from e


def saved_cfg_text(data: Mapping[str, Any] | None) -> str | None:
    """The darknet cfg text a resume checkpoint's network was built from (a user's cfg; ``None``
    for a zoo network, whose cfg ships with the package, or a checkpoint without one)."""
    return (((data or {}).get("hyper_parameters") or {}).get("model") or {}).get("cfg")


def check_saved_cfg_file(cfg_file: Any, data: Mapping[str, Any] | None) -> None:
    """A resume of a run on a user's cfg (``model.cfg=<file>``, its text in the checkpoint
    ``data``) whose file is gone: a :class:`ConfigError` saying where the text is kept, before
    anything is built from the missing file."""
    if saved_cfg_text(data) is None or not cfg_file or "\n" in str(cfg_file):
        return
    if not Path(str(cfg_file)).expanduser().is_file():
        raise ConfigError(
            f"model.cfg={cfg_file}: no such file, and resume builds the run's network from it; "
            "its text is in the run's checkpoints (hyper_parameters.model.cfg): restore the file "
            "from it"
        )


def _first_difference(saved: str, now: str) -> str:
    """The first line where two cfg texts differ, as ``line N: 'now', trained with 'saved'``."""
    a, b = saved.splitlines(), now.splitlines()
    for i, (x, y) in enumerate(zip(a, b), 1):
        if x != y:
            return f"line {i}: {y.strip()!r}, trained with {x.strip()!r}"
    return f"{len(b)} lines, trained with {len(a)}"


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, Mapping) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old value, new value)}`` where two configs (plain containers, as saved:
    interpolations unresolved) differ; a key one of them lacks has :data:`ABSENT` there."""
    a, b = _flatten(old), _flatten(new)
    return {
        k: (a.get(k, ABSENT), b.get(k, ABSENT))
        for k in sorted(a.keys() | b.keys())
        if k not in IGNORED and a.get(k, ABSENT) != b.get(k, ABSENT)
    }


def unresumable(changes: Mapping[str, Any]) -> list[str]:
    """The keys of ``changes`` that cannot continue the run: ``model.*`` (but its input size),
    ``optim.optimizer``, and ``data.*`` but batch sizes, workers, seed, cache and input size (a
    change of ``data`` itself, e.g. ``data=coco``, changes its ``_target_`` and sources)."""
    refused = []
    for key in changes:
        if key.startswith("data."):
            if key.removeprefix("data.") not in RESUMABLE_DATA:
                refused.append(key)
        elif key in IGNORED or key in RESUMABLE_MODEL:
            continue
        elif key.startswith(FIXED) or key in {f.rstrip(".") for f in FIXED}:
            refused.append(key)
    return refused


def format_changes(changes: Mapping[str, tuple[Any, Any]], keys: Sequence[str] = ()) -> str:
    """``key: old -> new`` for ``keys`` (default: all of ``changes``), separated by ``; ``."""
    return "; ".join(f"{k}: {changes[k][0]} -> {changes[k][1]}" for k in (keys or changes))


def _override_value(value: Any) -> str:
    """``value`` as a Hydra override writes it (``null``, ``true``, ``[64,64]``, quoted text)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ",".join(_override_value(v) for v in value) + "]"
    if isinstance(value, str) and (not value or re.search(r"[\s,\[\]{}()=:'\"\\$]", value)):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(value)


def restoring_overrides(
    changes: Mapping[str, tuple[Any, Any]], keys: Sequence[str], config: Mapping[str, Any]
) -> str:
    """The overrides that give ``keys`` of ``changes`` back their old values in ``config`` (the
    new config, as composed): ``key=old``, ``+key=old`` for a key ``config`` lacks, ``~key`` for
    one the old config lacked."""
    present = _flatten(config)
    out = []
    for key in keys:
        old = changes[key][0]
        if old == ABSENT:
            out.append(f"~{key}")
        else:
            out.append(f"{'' if key in present else '+'}{key}={_override_value(old)}")
    return " ".join(out)
