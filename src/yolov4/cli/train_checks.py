"""The checks ``train.py`` makes of a run's config before any work: what would train or
validate nothing, an export request or a monitor that fails only after training
(:func:`check_limits`), and what a run too short for its settings gets (:func:`log_short_runs`:
fewer steps than ``trainer.log_every_n_steps``, ``trainer.accumulate_grad_batches`` or
``optim.burn_in``)."""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig, open_dict

from yolov4.errors import ConfigError, ExportError, shown
from yolov4.export.artifact import DEFAULT_OPSET, check_export_request
from yolov4.training.noise import rank_zero_logger
from yolov4.training.sweep import TRAIN_METRICS, VAL_METRICS, check_monitor

__all__ = ["check_limits", "log_short_runs"]

log = rank_zero_logger(__name__)  # the same in every process: rank 0's


def check_limits(cfg: DictConfig) -> None:
    """What makes a run train or validate nothing, and monitors no metric is logged under, as
    :class:`ConfigError` before any work (they failed after training, or after an epoch)."""
    _check_trainer_numbers(cfg.trainer)
    for key in ("max_epochs", "max_steps", "limit_train_batches"):
        if cfg.trainer.get(key) == 0:
            raise ConfigError(
                f"trainer.{key}=0 trains nothing; give a number >= 1 (evaluate.py scores "
                "weights without training)"
            )
    if cfg.trainer.get("limit_val_batches") == 0:
        raise ConfigError(
            "trainer.limit_val_batches=0 validates nothing, and the run ends by evaluating its "
            "weights (metrics.json, the export); to validate less often during training set "
            "trainer.check_val_every_n_epoch=N"
        )
    export = cfg.get("export")
    if export:  # checked now: a typo would export best.pt, or fail after the whole run
        if export.get("weights") not in ("best", "last"):
            raise ConfigError(f"export.weights must be best or last, got {export.get('weights')!r}")
        try:  # export.py's own check of the request (the run exports fp32 at the default opset)
            check_export_request(list(export.get("formats") or []), DEFAULT_OPSET, ["fp32"], None)
        except ExportError as e:
            skip = "" if export.get("formats") else "; export=null skips the run's export"
            raise ConfigError(f"export.{e}{skip}") from None
    for name, node in (cfg.get("callbacks") or {}).items():  # a typo failed after epoch 1
        if isinstance(node, DictConfig) and node.get("monitor") is not None:
            check_monitor(node.monitor, f"callbacks.{name}.monitor", VAL_METRICS + TRAIN_METRICS)


def _check_trainer_numbers(trainer: DictConfig) -> None:
    """The counts Lightning asserts on deep in the fit (``max_epochs=1.5``): an epoch or step
    count is a whole number (-1 or null: no limit), a batch limit a count or a fraction."""
    for key in ("max_epochs", "max_steps"):
        v = trainer.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < -1):
            raise ConfigError(
                f"trainer.{key}: expected a whole number >= 1 (-1 or null: no limit), got "
                f"{shown(v)}"
            )
    for key in ("limit_train_batches", "limit_val_batches"):
        v = trainer.get(key)
        count = isinstance(v, int) and not isinstance(v, bool) and v >= 0
        if not (v is None or count or (isinstance(v, float) and 0 <= v <= 1)):
            raise ConfigError(
                f"trainer.{key}: expected a number of batches (an integer >= 0) or a fraction "
                f"of the epoch in [0.0, 1.0], got {shown(v)}"
            )


def _epoch_batches(cfg: DictConfig, datamodule: Any, world_size: int = 1) -> int | None:
    """The training batches of one epoch in one of ``world_size`` processes (each reads its
    share of the split), within ``limit_train_batches``."""
    per_epoch = datamodule.train_batches(world_size)
    limit = cfg.trainer.get("limit_train_batches")  # Lightning's rule: a count or a fraction
    if not per_epoch:
        return per_epoch
    if isinstance(limit, int) and not isinstance(limit, bool):
        return min(per_epoch, limit)
    if isinstance(limit, float):
        return int(per_epoch * limit)
    return per_epoch


def _run_steps(cfg: DictConfig, datamodule: Any, world_size: int = 1) -> int | None:
    """The optimizer steps of the whole run (Lightning's count, which ``max_steps`` and
    ``log_every_n_steps`` use): ``ceil(batches / accumulate_grad_batches)`` an epoch (a last
    partial window steps too) times ``max_epochs``, within ``max_steps`` (alone when
    ``max_epochs`` is null, as the recipes set it); ``None`` when the config cannot say."""
    per_epoch = _epoch_batches(cfg, datamodule, world_size)
    if not per_epoch:
        return None
    accumulate = cfg.trainer.get("accumulate_grad_batches") or 1
    steps_per_epoch = (
        math.ceil(per_epoch / accumulate) if isinstance(accumulate, int) else per_epoch
    )
    epochs, max_steps = cfg.trainer.get("max_epochs"), cfg.trainer.get("max_steps")
    bounded = isinstance(max_steps, int) and max_steps > 0
    if isinstance(epochs, int) and epochs >= 1:
        steps = steps_per_epoch * epochs
        return min(steps, max_steps) if bounded else steps
    return max_steps if bounded else None


def log_short_runs(cfg: DictConfig, datamodule: Any, trainer: Any) -> None:
    """``trainer.log_every_n_steps`` lowered to a run's whole number of optimizer steps when the
    run is shorter (a first check of 1 epoch of 4 batches logged no loss at all), logged; a
    warning when the learning rate's warm-up (``optim.burn_in``) is longer than the run (a first
    run on 64 images trained 32 steps of a 100-step warm-up and learnt nothing). Steps are one
    process's of ``trainer.world_size`` (DDP: each reads its share of the split)."""
    world = getattr(trainer, "world_size", 1) or 1
    accumulate, per_epoch = (
        cfg.trainer.get("accumulate_grad_batches"),
        _epoch_batches(cfg, datamodule, world),
    )
    if isinstance(accumulate, int) and per_epoch and accumulate > per_epoch:
        log.warning(
            "trainer.accumulate_grad_batches=%d is more than an epoch's %d batches: each epoch "
            "makes one optimizer step of %d batches, its gradient scaled as %d (%.2g of it); "
            "lower trainer.accumulate_grad_batches (or raise data.batch_size) to keep the "
            "nominal batch",
            accumulate, per_epoch, per_epoch, accumulate, per_epoch / accumulate,
        )  # fmt: skip
    updates, every = _run_steps(cfg, datamodule, world), cfg.trainer.get("log_every_n_steps")
    if updates is None:
        return
    if isinstance(every, int) and 0 < updates < every:
        log.info(
            "trainer.log_every_n_steps=%d: the run's %d steps (it was %d)", updates, updates, every
        )
        with open_dict(cfg):
            cfg.trainer.log_every_n_steps = updates
        trainer.log_every_n_steps = updates
    burn_in, power = cfg.optim.get("burn_in", 0), cfg.optim.get("burn_in_power", 4.0)
    if isinstance(burn_in, int) and burn_in > updates:  # its last step reaches optim.lr
        reached = (updates / burn_in) ** power
        log.warning(
            "optim.burn_in=%d warm-up steps, but the run makes %d optimizer steps: the learning "
            "rate ends at %.2g of optim.lr and the network may learn nothing; lower "
            "optim.burn_in (e.g. optim.burn_in=%d) or train longer",
            burn_in,
            updates,
            reached,
            max(1, updates // 10),
        )
