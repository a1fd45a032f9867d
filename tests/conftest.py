"""Shared fixtures: small, seeded models whose every tensor matters in a comparison."""

from __future__ import annotations

import pytest
import torch

from yolov4 import build_model


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give BN statistics/affine and head biases non-trivial random values (in place), so that a
    comparison against another implementation exercises every weight a file carries."""
    g = torch.Generator().manual_seed(seed)

    def rand(t: torch.Tensor, lo: float, hi: float) -> None:
        t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                rand(m.weight, 0.5, 1.5)
                rand(m.bias, -0.2, 0.2)
                rand(m.running_mean, -0.2, 0.2)
                rand(m.running_var, 0.5, 1.5)
            elif isinstance(m, torch.nn.Conv2d) and m.bias is not None:
                rand(m.bias, -1.0, 1.0)
    return model.eval()


@pytest.fixture(scope="session")
def randomize():
    """The :func:`randomize_` helper, for tests that build their own models."""
    return randomize_


@pytest.fixture(scope="session")
def tiny80() -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_(build_model("yolov4-tiny"))


@pytest.fixture(scope="session")
def yolov4_3cls() -> torch.nn.Module:
    torch.manual_seed(1)
    return randomize_(build_model("yolov4", num_classes=3), seed=1)
