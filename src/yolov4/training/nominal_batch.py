"""Images per optimizer step, the same on any number of processes.

Darknet's ``[net] batch`` is the images of one iteration (one optimizer step), whatever
``subdivisions`` splits it into. Here one step is ``data.batch_size`` (per process) x
``trainer.accumulate_grad_batches`` x the processes (``trainer.world_size``: devices x nodes).
The top-level ``nominal_batch`` holds darknet's ``batch``; a run that sets it gets
``accumulate_grad_batches = nominal_batch / (data.batch_size x processes)``, derived once the
Trainer knows its world size (DDP, torchrun, SLURM, the submitit launcher alike), so a recipe
trains the same images per step on one GPU and on sixteen.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, open_dict

from yolov4.errors import ConfigError, shown
from yolov4.training.noise import rank_zero_logger

__all__ = ["accumulation", "set_accumulation"]

log = rank_zero_logger(__name__)  # the same in every process: rank 0's


def _count(value: Any, key: str, allow_null: bool = True) -> int | None:
    """``value`` as a whole number >= 1 (``None`` where ``allow_null``), else :class:`ConfigError`
    naming ``key``."""
    if value is None and allow_null:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        null = " or null" if allow_null else ""
        raise ConfigError(f"{key}: expected a whole number >= 1{null}, got {shown(value)}")
    return value


def _batch_sizes_that_fit(nominal: int, world: int, batch_size: int) -> str:
    """The ``data.batch_size`` to suggest: the divisors of ``nominal / world`` nearest
    ``batch_size`` below it (which fits in the memory ``batch_size`` was chosen for) and above
    it (none when ``world`` does not divide ``nominal``)."""
    if nominal % world:
        return (
            f"no data.batch_size fits: {world} processes do not divide {nominal} images; run a "
            f"process count that divides it, or give another nominal_batch"
        )
    share = nominal // world
    divisors = [d for d in range(1, share + 1) if share % d == 0]
    below = [d for d in divisors if d <= batch_size][-1:]
    nearest = below + [d for d in divisors if d >= batch_size][:1]
    sizes = " or ".join(str(d) for d in nearest)
    accumulated = " or ".join(str(share // d) for d in nearest)
    return f"data.batch_size={sizes} fits ({accumulated} accumulated)"


def accumulation(
    nominal_batch: Any, batch_size: Any, world_size: int, accumulate: Any = None
) -> int:
    """``trainer.accumulate_grad_batches`` for ``batch_size`` images per process on
    ``world_size`` processes: ``nominal_batch / (batch_size x world_size)`` where
    ``nominal_batch`` is set, else ``accumulate`` (``None``: 1). :class:`ConfigError` when the
    quotient is not a whole number >= 1 (naming a ``data.batch_size`` that works), or when
    ``accumulate`` is given and differs from it (two settings of one quantity)."""
    accumulate = _count(accumulate, "trainer.accumulate_grad_batches")
    nominal = _count(nominal_batch, "nominal_batch")
    if nominal is None:
        return accumulate or 1
    batch_size = _count(batch_size, "data.batch_size", allow_null=False)
    per_step = batch_size * world_size
    if nominal % per_step:
        raise ConfigError(
            f"nominal_batch={nominal} images per optimizer step is not a whole number of "
            f"data.batch_size={batch_size} x {world_size} processes ({per_step} images a "
            f"batch): {_batch_sizes_that_fit(nominal, world_size, batch_size)}"
        )
    derived = nominal // per_step
    if accumulate is not None and accumulate != derived:
        raise ConfigError(
            f"trainer.accumulate_grad_batches={accumulate} disagrees with nominal_batch={nominal}"
            f", which gives {derived} (data.batch_size={batch_size} x {world_size} processes x "
            f"{derived} = {nominal}); leave trainer.accumulate_grad_batches out, or set "
            f"nominal_batch=null to accumulate {accumulate} batches"
        )
    return derived


def set_accumulation(cfg: DictConfig, trainer: Any) -> int:
    """:func:`accumulation` for ``cfg`` on ``trainer.world_size`` processes, set on ``trainer``
    and in ``cfg.trainer`` (what the run's checks and logs read); logs the images per optimizer
    step. Returns the accumulation."""
    world = int(getattr(trainer, "world_size", 1) or 1)
    batch_size = _count(cfg.data.get("batch_size"), "data.batch_size", allow_null=False)
    accumulate = accumulation(
        cfg.get("nominal_batch"), batch_size, world, cfg.trainer.get("accumulate_grad_batches")
    )
    trainer.accumulate_grad_batches = accumulate
    with open_dict(cfg):
        cfg.trainer.accumulate_grad_batches = accumulate
    log.info(
        "%d images per optimizer step: %s per process x %d process%s x %d accumulated",
        batch_size * world * accumulate, batch_size, world, "" if world == 1 else "es", accumulate,
    )  # fmt: skip
    return accumulate
