"""Darknet's pointwise activations beyond the zoo's (relu6, elu, selu, gelu, hard_mish, hardtan,
loggy): forward and training gradient against the transcription of activations.h, and a cfg
using them exported to ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.models.test_cfg_layers import cfg, check_onnx, check_trains, conv, model_of, refused
from tests.oracles import darknet_layers as dk
from yolov4.models.layers import make_activation

NAMES = ["relu6", "elu", "selu", "gelu", "hard_mish", "hardtan", "loggy"]
# negatives, the kinks' neighbourhoods, large magnitudes; no point on a kink
GRID = np.concatenate([np.linspace(-30, 30, 601) + 0.0137, [-1e4, -88.5, 87.5, 1e4]])


@pytest.mark.parametrize("name", NAMES)
def test_forward_is_darknets(name):
    x = torch.tensor(GRID, dtype=torch.float64)
    ours, ref = make_activation(name)(x).numpy(), dk.activate(GRID, name)
    assert np.isfinite(ours).all()
    # elu/selu: darknet's (x < 0) * (exp(x) - 1) is 0 * inf = NaN once exp overflows (x > 88
    # in its float32); the value meant there is the x >= 0 branch, which ours gives
    finite = np.isfinite(ref)
    assert finite.sum() >= len(GRID) - 1
    np.testing.assert_allclose(ours[finite], ref[finite], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "gelu"])
def test_gradient_is_darknets(name):
    x = torch.tensor(GRID, dtype=torch.float64, requires_grad=True)
    y = make_activation(name)(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    at = GRID if name == "hard_mish" else y.detach().numpy()  # darknet's gradient reads y
    np.testing.assert_allclose(
        grad.numpy(), np.vectorize(dk.GRADIENT[name], otypes=[float])(at), atol=1e-6
    )


def test_darknets_gelu_gradient_reads_the_output_where_autograd_reads_the_input():
    """darknet's gelu_gradient is the derivative at x, called on the output: at x = 1 (y =
    0.841) it gives 1.03 where the derivative is 1.08; autograd gives the derivative."""
    x = torch.tensor(GRID, dtype=torch.float64, requires_grad=True)
    y = make_activation("gelu")(x)
    (grad,) = torch.autograd.grad(y.sum(), x)
    np.testing.assert_allclose(
        grad.numpy(), np.vectorize(dk.GRADIENT["gelu"], otypes=[float])(GRID), atol=1e-4
    )
    assert not np.allclose(
        grad.numpy(), np.vectorize(dk.GRADIENT["gelu"], otypes=[float])(y.detach().numpy())
    )


def test_a_cfg_of_them_trains_and_exports_to_onnx(tmp_path):
    text = cfg(*(conv(filters=8, act=name) for name in NAMES))
    model = model_of(text, seed=7)
    images = torch.rand(1, 3, 32, 32)
    check_trains(model, images)
    check_onnx(model.eval(), tmp_path, images)


@pytest.mark.parametrize("name", ["normalize_channels", "normalize_channels_softmax", "ramp"])
def test_the_others_are_refused_naming_them(name, tmp_path):
    refused(cfg(conv(act=name)), tmp_path, 0, "activation", f"'{name}' is not supported")
