"""What a resume reads from the checkpoint file itself (``ckpt_path=``), memory-mapped and with
``weights_only=True``, before Hydra starts: how far it trained, whether an early-stopping
callback stopped it, and where the config it records (``hyper_parameters``) differs from the
composed one. :mod:`yolov4.cli.resume` and :mod:`yolov4.cli.resume_refusals` decide what to
refuse."""

from __future__ import annotations

from typing import Any

import torch
from omegaconf import OmegaConf

from yolov4.cli.common import to_builtin
from yolov4.cli.data_config import recorded_data, recorded_form
from yolov4.training.early_stop import stopped_state
from yolov4.training.optim import OptimConfig
from yolov4.training.resume import ABSENT, config_changes

__all__ = ["read_state", "trained_so_far", "early_stopped", "recorded_changes"]


def read_state(ckpt_path: str) -> dict[str, Any] | None:
    """A Lightning checkpoint's contents, memory-mapped (the tensors are not read); ``None``
    when the file cannot be read (``train.py`` names what is wrong with it)."""
    try:
        data = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - any unreadable file is read_resume_checkpoint's to report
        return None
    return data if isinstance(data, dict) else None


def trained_so_far(ckpt_path: str) -> tuple[int, int] | None:
    """``(epochs processed, optimizer steps)`` of a Lightning checkpoint, as its fit loop counts
    them when it restores; ``None`` when the file cannot say."""
    try:
        data = read_state(ckpt_path) or {}
        epochs = data["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]
        return int(epochs), int(data["global_step"])
    except (KeyError, TypeError, ValueError):
        return None


def early_stopped(ckpt_path: str) -> tuple[str, int, str] | None:
    """``(callback, epoch, reason)`` when a Lightning checkpoint's state of an early-stopping
    callback (Lightning's ``EarlyStopping`` or a subclass) says it stopped the run
    (:func:`~yolov4.training.early_stop.stopped_state`); else ``None``."""
    for key, state in ((read_state(ckpt_path) or {}).get("callbacks") or {}).items():
        if stopped_state(state):
            message = str(state.get("stopping_reason_message") or "").strip()
            return str(key).split("{")[0], int(state["stopped_epoch"]), message
    return None


def recorded_changes(hparams: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Where the composed config ``new`` (unresolved, as Hydra's ``compose`` gives it) differs
    from the config a checkpoint records (its ``hyper_parameters``: the run's resolved ``data``, its
    ``optim``, the network's model config, the ``module`` keys), as :func:`config_changes`
    names them. The model keys train.py resolves at start-up from the data (``num_classes:
    null``, ``anchors: auto|fit``, ``class_balance: darknet``'s counts) are the checkpoint's."""
    cfg = OmegaConf.create(new)
    old_view: dict[str, Any] = {}
    new_view: dict[str, Any] = {}
    if hparams.get("data") is not None:
        # compared in recorded_data's form: a .data file as names is its names file, and a
        # list file without list_root reads its paths from the working directory
        old_view["data"], new_view["data"] = recorded_form(hparams["data"]), recorded_data(cfg.data)
    if hparams.get("optim") is not None:
        optim = {k: v for k, v in to_builtin(cfg.optim).items() if k != "_target_"}
        old_view["optim"] = hparams["optim"]
        new_view["optim"] = {**vars(OptimConfig()), **optim}  # its defaults where not given
    changes = config_changes(old_view, new_view)
    if isinstance(hparams.get("model"), dict):
        balanced = to_builtin(cfg.module).get("class_balance") == "darknet"
        now = _model_now(to_builtin(cfg.model), hparams["model"], balanced)
        model = config_changes({"model": hparams["model"]}, {"model": now})
        model.pop("model.cfg", None)  # a user's cfg text: train.py names its first other line
        if "model.name" in model:  # another network: its every [yolo] key differs
            model = {"model.name": model["model.name"]}
        changes.update(model)
    module = {k: v for k, v in to_builtin(cfg.module).items() if k in hparams}
    old_module = {k: hparams[k] for k in module}
    for key, (a, b) in config_changes({"module": old_module}, {"module": module}).items():
        if ABSENT not in (a, b):  # a key of one version's module only: nothing to compare
            changes[key] = (a, b)
    return dict(sorted(changes.items()))


def _model_now(model: dict[str, Any], recorded: dict[str, Any], balanced: bool) -> Any:
    """The model config the composed ``model`` node builds, with what train.py resolves from
    the data at start-up taken from the checkpoint's ``recorded`` one (``balanced``:
    ``module.class_balance=darknet``, whose counts come from the data)."""
    from yolov4.models import ModelConfig

    values = dict(model)
    if values.get("num_classes") is None:
        values["num_classes"] = recorded.get("num_classes")
    if values.get("anchors") in ("auto", "fit"):
        values["anchors"], values["masks"] = recorded.get("anchors"), recorded.get("masks")
    if balanced:
        values["counters_per_class"] = recorded.get("counters_per_class")
    return ModelConfig.from_dict(values).to_dict()
