"""Exponential moving average of the weights, with the ramped decay of modern YOLO trainers."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

__all__ = ["ModelEMA"]


class ModelEMA(nn.Module):
    """``ema = d * ema + (1 - d) * model`` after each optimizer step, ``d = decay * (1 -
    exp(-updates / tau))``: early updates follow the model closely, later ones average over
    ~``1 / (1 - decay)`` steps. Buffers (BN statistics) are copied. The average lives in
    ``self.module`` (same class and keys as the model, no gradients), so it is saved and
    restored with the LightningModule's state_dict under ``ema.module.``. It follows its
    parent's train/eval mode like any submodule (Lightning warns about modules left in eval
    mode at fit start); whoever runs it must run it in eval mode, as
    :meth:`YoloModule.predict_batch` does.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0) -> None:
        super().__init__()
        self.module = copy.deepcopy(model)
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.tau = decay, tau
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def current_decay(self) -> float:
        return self.decay * (1 - math.exp(-int(self.updates) / self.tau))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
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
