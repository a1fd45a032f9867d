"""Exponential moving average of the weights: the ramped decay of modern YOLO trainers, or
darknet's ``ema_alpha`` window (constant decay from a start step, copied into the weights at an
apply step)."""

from __future__ import annotations

import copy
import logging
import math

import torch
from torch import nn

__all__ = ["ModelEMA", "set_run_window"]

log = logging.getLogger(__name__)


class ModelEMA(nn.Module):
    """``ema = d * ema + (1 - d) * model`` after each optimizer step, ``d = decay * (1 -
    exp(-updates / tau))``: early updates follow the model closely, later ones average over
    ~``1 / (1 - decay)`` steps. Buffers (BN statistics) are copied. The average lives in
    ``self.module`` (same class and keys as the model, no gradients), so it is saved and
    restored with the LightningModule's state_dict under ``ema.module.``. It follows its
    parent's train/eval mode like any submodule (Lightning warns about modules left in eval
    mode at fit start); whoever runs it must run it in eval mode, as
    :meth:`YoloModule.predict_batch` does.

    The window (:meth:`set_window`, optimizer steps counted from 1): up to ``start`` the average
    is the weights themselves (decay 0), from there it averages (ramped over ``tau`` steps from
    ``start``; ``tau=None`` a constant ``decay``); at step ``apply_at`` the average is copied
    into the model, which trains on, the average following it (decay 0) to the end. darknet's
    ``ema_alpha``: ``start = max_batches / 2``, ``apply_at = max_batches - 1000``, constant decay.
    """

    def __init__(
        self,
        model: nn.Module,
        decay: float = 0.9999,
        tau: float | None = 2000.0,
        start: int = 0,
        apply_at: int | None = None,
    ) -> None:
        super().__init__()
        self.module = copy.deepcopy(model)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.tau = decay, tau
        self.set_window(start, apply_at)
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def set_window(self, start: int = 0, apply_at: int | None = None) -> None:
        """Average after optimizer step ``start``; copy the average into the model at step
        ``apply_at`` (``None``: never). Steps count from 1, as :attr:`updates`."""
        self.start, self.apply_at = int(start), apply_at

    def current_decay(self) -> float:
        k = int(self.updates)
        if k <= self.start or (self.apply_at is not None and k >= self.apply_at):
            return 0.0
        if not self.tau:
            return self.decay
        return self.decay * (1 - math.exp(-(k - self.start) / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """After an optimizer step of ``model``: average it in (or, at ``apply_at``, copy the
        average into it, in place: an optimizer's references to its parameters stay valid)."""
        self.updates += 1
        if self.apply_at is not None and int(self.updates) == self.apply_at:
            model.load_state_dict(self.module.state_dict())
            return
        d = self.current_decay()
        model_state = model.state_dict()
        for key, ema_value in self.module.state_dict().items():  # tensors share storage
            value = model_state[key].detach()
            if ema_value.dtype.is_floating_point:
                ema_value.lerp_(value.to(ema_value.dtype), 1 - d)
            else:
                ema_value.copy_(value)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


def set_run_window(ema: ModelEMA, total: int, start: float, before_end: int | None) -> None:
    """``ema``'s window over a run of ``total`` optimizer steps: averaging after the fraction
    ``start`` of them (``module.ema_start``), copied into the weights ``before_end`` steps
    before the end (``module.ema_apply_before_end``; ``None``: never), said in the log when it
    is not the whole run. A copy that would come before the start is dropped, with a warning."""
    first = int(total * start)
    apply_at = total - before_end if before_end else None
    if apply_at is not None and apply_at <= first:
        log.warning(
            "module.ema_apply_before_end=%d: the run's %d optimizer steps leave no average "
            "to copy into the weights (the EMA starts after step %d): the EMA is kept, "
            "validated and saved as it is",
            before_end, total, first,
        )  # fmt: skip
        apply_at = None
    ema.set_window(first, apply_at)
    if first or apply_at is not None:
        log.info(
            "EMA (module.ema_decay=%g): averages after optimizer step %d of %d%s",
            ema.decay, first, total,
            f", copied into the weights at step {apply_at}" if apply_at is not None else "",
        )  # fmt: skip
