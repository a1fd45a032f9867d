"""The fast inference form: Conv+BN folded, eval mode, no autograd state."""

from __future__ import annotations

import copy

from torch import nn

from yolov4.models.layers import ConvBnAct

__all__ = ["fuse_model"]


def fuse_model(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return ``model`` (a copy unless ``inplace``) in eval mode with every BN folded into its
    convolution. Outputs equal the unfused eval-mode model's within float rounding; the
    state_dict keys change (``bn.*`` disappear), so save checkpoints from the unfused model."""
    fused = model if inplace else copy.deepcopy(model)
    fused.eval()
    for m in fused.modules():
        if isinstance(m, ConvBnAct):
            m.fuse()
    return fused
