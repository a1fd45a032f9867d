"""Optimiser and learning-rate schedule: darknet's policy (burn-in, then steps) or cosine.

Parameter groups as darknet decays them: weight decay on convolution weights only, none on BN
weights and biases. The schedule is per iteration (optimizer step), like darknet's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from yolov4.errors import ConfigError

__all__ = [
    "OptimConfig",
    "param_groups",
    "build_optimizer",
    "apply_settings",
    "resume_settings",
    "lr_factor",
]

log = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("steps", "cosine")


@dataclass
class OptimConfig:
    """``configs/optim/*.yaml``.

    Args:
        optimizer: ``sgd`` (darknet) or ``adamw``.
        lr: base learning rate (darknet ``learning_rate``).
        momentum: SGD momentum / AdamW beta1 (darknet ``momentum``).
        weight_decay: on convolution weights only (darknet ``decay``).
        nesterov: SGD Nesterov momentum.
        schedule: ``steps`` (darknet ``policy=steps``) or ``cosine`` (to ``lr * final_lr_ratio``).
        burn_in: warm-up iterations, ``lr * (i / burn_in) ** burn_in_power`` (darknet ``burn_in``,
            ``power=4``).
        steps: fractions of the total iterations where the lr is multiplied by ``scales``
            (darknet ``steps=400000,450000`` of ``max_batches=500500`` -> 0.7992, 0.8991; the
            recipes give darknet's exactly).
        scales: the multipliers (darknet ``scales=.1,.1``).
        final_lr_ratio: cosine's end point.
    """

    optimizer: str = "sgd"
    lr: float = 0.0013
    momentum: float = 0.949
    weight_decay: float = 0.0005
    nesterov: bool = False
    schedule: str = "steps"
    burn_in: int = 1000
    burn_in_power: float = 4.0
    steps: Sequence[float] = field(default_factory=lambda: [0.8, 0.9])
    scales: Sequence[float] = field(default_factory=lambda: [0.1, 0.1])
    final_lr_ratio: float = 0.01

    def __post_init__(self) -> None:
        for name in (
            "lr",
            "momentum",
            "weight_decay",
            "burn_in",
            "burn_in_power",
            "final_lr_ratio",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"optim.{name} must be a number, got {value!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"optim.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}"
            )
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not self.lr > 0:
            raise ConfigError(f"optim.lr must be > 0, got {self.lr}")
        if self.burn_in < 0:
            raise ConfigError(f"optim.burn_in must be >= 0, got {self.burn_in}")
        if not 0 <= self.momentum < 1:  # torch's own refusal comes at fit start, 45 lines long
            raise ConfigError(
                f"optim.momentum must be in [0, 1) (SGD's momentum, AdamW's beta1), got "
                f"{self.momentum}"
            )
        if self.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        if getattr(self, "nesterov", False) and self.optimizer == "sgd" and self.momentum == 0:
            raise ConfigError("optim.nesterov=true needs optim.momentum > 0 (SGD's rule)")
        self.steps, self.scales = list(self.steps), list(self.scales)
        if len(self.steps) != len(self.scales) or any(not 0 < s < 1 for s in self.steps):
            raise ConfigError(
                f"optim.steps (fractions in (0, 1)) and optim.scales need equal lengths, "
                f"got steps={self.steps} scales={self.scales}"
            )


DECAYED = "weights"  # the parameter group weight decay applies to (param_groups)
ADAMW_BETA2 = 0.999  # AdamW's second-moment decay (torch's default); beta1 is optim.momentum


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Three groups: conv/linear weights (decayed), BN weights, biases (both not decayed)."""
    decay, bn, bias = [], [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if name == "bias":
                bias.append(p)
            elif isinstance(module, nn.modules.batchnorm._NormBase):
                bn.append(p)
            else:
                decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "name": DECAYED},
        {"params": bn, "weight_decay": 0.0, "name": "bn"},
        {"params": bias, "weight_decay": 0.0, "name": "bias"},
    ]


def _momentum(cfg: OptimConfig) -> dict[str, Any]:
    """``optim.momentum`` (and ``nesterov``) as the optimizer kind names them."""
    if cfg.optimizer == "sgd":
        return {"momentum": cfg.momentum, "nesterov": cfg.nesterov}
    return {"betas": (cfg.momentum, ADAMW_BETA2)}


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    kind = torch.optim.SGD if cfg.optimizer == "sgd" else torch.optim.AdamW
    return kind(groups, lr=cfg.lr, **_momentum(cfg))


def apply_settings(
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    cfg: OptimConfig,
    lr: float,
) -> None:
    """``cfg``'s lr, weight decay and momentum on an optimizer and its :func:`lr_factor`
    scheduler restored from a checkpoint of other settings (a resume restores them as saved):
    every group's lr becomes ``lr`` (the schedule's value at the step the run goes on from)
    and its base lr ``cfg.lr``, the decayed group's weight decay ``cfg.weight_decay``."""
    for group in optimizer.param_groups:
        group.update(lr=lr, initial_lr=cfg.lr, **_momentum(cfg))
        if group.get("name") == DECAYED:
            group["weight_decay"] = cfg.weight_decay
    scheduler.base_lrs = [cfg.lr] * len(optimizer.param_groups)
    scheduler._last_lr = [lr] * len(optimizer.param_groups)  # what get_last_lr() reports


def resume_settings(
    step: int,
    saved: tuple[OptimConfig, int],
    run: tuple[OptimConfig, int],
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LambdaLR | None = None,
    resumed: tuple[int, int] | None = None,
) -> None:
    """A resume at optimizer step ``step`` whose optimizer and lr scheduler Lightning restored
    as saved (``saved``: the checkpoint's settings and the steps its schedule spans): this
    run's settings and length (``run``; ``resumed``: :func:`lr_factor`'s, when the rest of
    the checkpoint's schedule is laid over this run's steps) applied to them when either
    differs, so that the optimizer follows the config the log names (:func:`apply_settings`;
    ``optimizer`` ``None``: nothing to apply). Changed settings are logged, a schedule laid
    over another length warned about (:func:`_warn_stretched_schedule`)."""
    (old, old_total), (new, total) = saved, run
    before = old.lr * lr_factor(step, old_total, old)
    after = new.lr * lr_factor(step, total, new, resumed)
    if (vars(old) != vars(new) or old_total != total) and optimizer is not None:
        apply_settings(optimizer, scheduler, new, after)
    if vars(old) != vars(new):
        log.info(
            "resume: the optimizer restored from the checkpoint follows this run's optim "
            "settings (%s): at step %d the lr is %.3g (the checkpoint's settings: %.3g)",
            ", ".join(f"{k} {getattr(old, k)} -> {v}" for k, v in vars(new).items()
                      if getattr(old, k) != v),
            step, after, before,
        )  # fmt: skip
    if resumed is not None:
        log.info(
            "resume: this run takes another number of optimizer steps per epoch than the "
            "checkpoint's (%d steps left of %d, the checkpoint's schedule had %d): the rest of "
            "the lr schedule is laid over the steps left, from lr %.3g at step %d to its end",
            total - step, total, old_total - step, after, step,
        )  # fmt: skip
        return
    _warn_stretched_schedule(new.schedule, step, (old_total, total), before, after)


def _warn_stretched_schedule(
    schedule: str, step: int, totals: tuple[int, int], before: float, after: float
) -> None:
    """A resume with another length (``totals``: the checkpoint's and this run's; raised
    ``trainer.max_epochs`` to train longer) lays the lr schedule, fractions of the run's
    optimizer steps, over the new length: a decayed lr goes back up (darknet's ``steps`` are
    absolute iterations). Said with the numbers (``before``: the lr the checkpoint's schedule
    gives at ``step``, ``after``: this run's) when they differ."""
    old, new = totals
    if not old or not new or old == new or math.isclose(before, after, rel_tol=1e-9):
        return
    advice = (
        f"To keep training at the decayed lr, start a new run from the weights "
        f"(module.pretrained=<run>/weights/last.pt, optim.lr={before:.3g} optim.burn_in=0)"
        if after > before
        else "The checkpoint's trainer.max_epochs (or max_steps) keeps its schedule"
    )
    log.warning(
        "resume: the lr schedule (optim.schedule=%s) spans the run's optimizer steps, %d when "
        "the checkpoint was saved and %d now: at step %d the lr is %.3g (it was %.3g), the "
        "schedule's decay laid over the new length. %s",
        schedule, old, new, step, after, before, advice,
    )  # fmt: skip


def lr_factor(
    step: float, total_steps: int, cfg: OptimConfig, resumed: tuple[int, int] | None = None
) -> float:
    """Multiplier of ``cfg.lr`` at optimizer step ``step`` (0-based) of ``total_steps``:
    darknet's ``get_current_rate`` at its update ``step + 1``.

    ``resumed``: ``(start, saved_total)`` of a run of the same length as the checkpoint it
    resumed at step ``start``, whose schedule spanned ``saved_total`` steps, with another
    number of steps per epoch (another batch size or process count): the schedule is the
    checkpoint's, and its rest, from ``start`` to ``saved_total``, is laid over this run's
    steps from ``start`` to ``total_steps``, so the lr goes on from the checkpoint's and
    reaches the schedule's end with the run's last step."""
    if resumed is not None and total_steps > resumed[0]:
        start, saved_total = resumed
        if step > start:
            step = start + (step - start) * (saved_total - start) / (total_steps - start)
        total_steps = saved_total
    if step < cfg.burn_in:
        return ((step + 1) / cfg.burn_in) ** cfg.burn_in_power
    total = max(total_steps, 1)
    if cfg.schedule == "cosine":
        span = max(total - cfg.burn_in, 1)
        t = min((step - cfg.burn_in) / span, 1.0)
        return cfg.final_lr_ratio + (1 - cfg.final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
    # darknet counts updates from 1 (its batch_num) and scales from update steps[i] on: the
    # update of 0-based step s is number s + 1 (as in the burn-in above)
    factor = 1.0
    for frac, scale in zip(cfg.steps, cfg.scales):
        boundary = frac * total
        if abs(boundary - round(boundary)) < 1e-3:  # a fraction of darknet's whole steps
            boundary = round(boundary)
        if step + 1 >= boundary:
            factor *= scale
    return factor
