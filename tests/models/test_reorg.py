"""Darknet's ``[reorg]`` (reorg_old_layer.c) and ``[reorg3d]`` (reorg_layer.c), with and without
``reverse``: the transcription of blas.c reorg_cpu, OpenCV where it runs the layer, round trip,
training and ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.models.test_cfg import layer_outputs
from tests.models.test_cfg_layers import (
    cfg,
    check_onnx,
    check_round_trips,
    check_trains,
    conv,
    model_of,
    refused,
)
from tests.models.test_zoo import assert_matches_opencv, opencv_net
from tests.oracles import darknet_layers as dk


def reorg_cfg(kind: str, reverse: int, stride: int = 2, filters: int = 32) -> str:
    """A stride-2 conv of ``filters`` channels, the reorg (layer 1), a conv back to stride 4."""
    after = conv(filters=8, size=3, stride=4 if reverse else 1)
    return cfg(
        conv(filters=filters, stride=2),
        f"[{kind}]\nstride={stride}\nreverse={reverse}\n\n",
        after,
    )


@pytest.mark.parametrize("kind", ["reorg", "reorg3d"])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("hw", [(32, 32), (32, 64)])
def test_reorg_matches_darknets_reorg_cpu(kind, reverse, hw):
    model = model_of(reorg_cfg(kind, reverse), seed=3).eval()
    images = torch.rand(2, 3, *hw)
    x, y = layer_outputs(model, images)[1]
    c, h, w = x.shape[1:]
    assert y.shape[1:] == ((c // 4, h * 2, w * 2) if reverse else (c * 4, h // 2, w // 2))
    for b in range(2):
        ref = dk.forward_reorg(x[b].double().numpy(), 2, bool(reverse), kind)
        np.testing.assert_array_equal(y[b].double().numpy(), ref)


def test_reorg3d_is_not_reorg():
    """The two layers give the same shape and values in another order (reorg_cpu's sizes)."""
    x = torch.arange(16 * 4 * 4.0).reshape(16, 4, 4).numpy()
    a, b = (dk.forward_reorg(x, 2, False, kind) for kind in ("reorg", "reorg3d"))
    assert a.shape == b.shape and not np.array_equal(a, b)
    assert np.array_equal(np.sort(a.ravel()), np.sort(b.ravel()))


def test_reorg_stride_3_reorg3d_matches_darknets_reorg_cpu():
    text = reorg_cfg("reorg3d", 0, stride=3, filters=5).replace(
        "width=32\nheight=32", "width=36\nheight=36"
    )
    model = model_of(text, seed=4).eval()
    x, y = layer_outputs(model, torch.rand(1, 3, 36, 36))[1]
    ref = dk.forward_reorg(x[0].double().numpy(), 3, False, "reorg3d")
    np.testing.assert_array_equal(y[0].double().numpy(), ref)


def test_reorg_matches_opencv(tmp_path):
    model = model_of(reorg_cfg("reorg", 0), seed=5)
    net = opencv_net(model, tmp_path, (32, 32))
    assert_matches_opencv(model, net, torch.rand(1, 3, 32, 64))


@pytest.mark.parametrize("reverse", [0, 1])
def test_reorg3d_round_trips_trains_and_exports(tmp_path, reverse):
    model = model_of(reorg_cfg("reorg3d", reverse), seed=6)
    images = torch.rand(1, 3, 32, 32)
    check_round_trips(model.eval(), tmp_path, images)
    check_trains(model, images)
    check_onnx(model, tmp_path, images)


@pytest.mark.parametrize(
    "kind, reverse, filters, message",
    [
        ("reorg", 0, 6, r"2 reorganises 6 input channels as 6 / 4 maps; darknet's "
         r"\[reorg\] needs a channel count divisible by 4 \(stride\^2\)"),
        ("reorg3d", 1, 8, r"2 reorganises 8 input channels as 8 / 16 maps; darknet's "
         r"\[reorg3d\] reverse=1 needs a channel count divisible by 16 \(stride\^4\)"),
    ],
)  # fmt: skip
def test_reorg_of_partial_channel_groups_is_refused(kind, reverse, filters, message, tmp_path):
    refused(reorg_cfg(kind, reverse, filters=filters), tmp_path, 1, "stride", message)


def test_reorg3d_reverse_finer_than_the_image_is_refused(tmp_path):
    text = cfg(conv(filters=16), "[reorg3d]\nstride=2\nreverse=1\n\n", conv(stride=2))
    refused(text, tmp_path, 1, "stride", "gives a fractional stride 0.5")


def test_reorg3d_keys_set_to_darknets_default_are_accepted():
    from tests.models.test_cfg_text import REORG3D_DEFAULTS

    lines = "".join(f"{line}\n" for _, line in REORG3D_DEFAULTS)
    text = reorg_cfg("reorg3d", 0).replace("[reorg3d]\n", f"[reorg3d]\n{lines}")
    model = model_of(text)
    assert model.sections[2].options["learning_rate"] == "1"  # kept
    x, y = layer_outputs(model.eval(), torch.rand(1, 3, 32, 32))[1]
    np.testing.assert_array_equal(
        y[0].double().numpy(), dk.forward_reorg(x[0].double().numpy(), 2, False, "reorg3d")
    )
