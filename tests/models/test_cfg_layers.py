"""Darknet layer types and keys from users' cfgs beyond the zoo's: each builds, loads and saves
darknet ``.weights``, writes its cfg back, gives darknet's outputs (OpenCV's importer where it
runs the layer as darknet does, else the transcriptions in ``tests/oracles/darknet_layers.py``),
trains (gradients reach every weight) and exports to ONNX (onnxruntime agrees)."""

from __future__ import annotations

import re
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests.models.test_cfg import layer_outputs
from tests.models.test_zoo import (
    assert_matches_opencv,
    boost_heads_,
    opencv_net,
)
from tests.oracles import darknet_layers as dk
from yolov4 import ConfigError, InputError, build_model
from yolov4.core.model import DecodedModel
from yolov4.darknet import load_darknet_weights, save_darknet_weights, write_darknet_cfg
from yolov4.export.job import export_onnx

NET = "[net]\nwidth=32\nheight=32\nchannels=3\n\n"
HEAD = """
[convolutional]
size=1
stride=1
pad=1
filters=18
activation=linear

[yolo]
mask=0,1,2
anchors=4,6, 8,8, 12,10
classes=1
num=3
"""


def conv(filters=8, size=3, stride=1, extra="pad=1", act="leaky", bn=True) -> str:
    return (
        "[convolutional]\n" + ("batch_normalize=1\n" if bn else "")
        + f"filters={filters}\nsize={size}\nstride={stride}\n{extra}\nactivation={act}\n\n"
    )  # fmt: skip


def cfg(*layers: str) -> str:
    return NET + "".join(layers) + HEAD


def model_of(text: str, seed: int = 0, gain: float = 50.0):
    """The network of ``text`` with random weights and BN statistics, its head kernels times
    ``gain`` (the image-dependent part of the maps well above the comparisons' tolerance)."""
    torch.manual_seed(seed)
    from tests.conftest import randomize_

    return boost_heads_(randomize_(build_model(cfg=text), seed=seed), gain=gain)


def check_round_trips(model, tmp_path, images: torch.Tensor) -> None:
    """The written cfg and .weights rebuild the same network with the same outputs."""
    cfg_path, weights = tmp_path / "rt.cfg", tmp_path / "rt.weights"
    cfg_path.write_text(write_darknet_cfg(model))
    save_darknet_weights(model, weights)
    again = build_model(cfg=cfg_path).eval()
    load_darknet_weights(again, weights)
    assert (
        weights.read_bytes() == save_darknet_weights(again, tmp_path / "again.weights").read_bytes()
    )
    with torch.no_grad():
        for a, b in zip(model(images), again(images)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def check_onnx(model, tmp_path, images: torch.Tensor) -> None:
    """The decoded model exported to ONNX (the export's own writer) agrees in onnxruntime."""
    decoded = DecodedModel(model).eval()
    path = tmp_path / "model.onnx"
    export_onnx(decoded, path, images, 17)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (ours,) = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        ref = decoded(images).numpy()
    assert np.isfinite(ref).all()  # a box of exp(huge) would compare as anything
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))


def check_trains(model, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """One backward pass in training mode: every parameter gets a finite, non-zero gradient."""
    model.train()
    model.zero_grad()
    sum(m.square().mean() for m in model(images)).backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    for name, g in grads.items():
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, name
    model.eval()
    return grads


def refused(text: str, tmp_path, layer: int, key: str | None, message: str) -> None:
    from tests.models.test_cfg import line_in

    path = tmp_path / "user.cfg"
    path.write_text(text)
    header = text.splitlines()[line_in(text, layer) - 1]
    where = f"{path}:{line_in(text, layer, key)}: {header}" + (f" {key}" if key else "")
    with pytest.raises(ConfigError, match=re.escape(where) + ":? .*" + message):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            build_model(cfg=path)


# -- [convolutional] padding -------------------------------------------------------------------
PADDINGS = cfg(
    conv(size=2, stride=2, extra="pad=0"),  # valid padding: 16x16, darknet's (H - 2) / 2 + 1
    conv(size=4, stride=2, extra="padding=1"),  # padding= without pad: 8x8
    conv(size=5, stride=1, extra="padding=2"),
    conv(size=3, stride=2, extra="pad=1\npadding=0"),  # pad=1 wins: size // 2
    conv(size=1, stride=1, extra="pad=0"),
)


def test_conv_paddings_match_opencv(tmp_path):
    """darknet's padding = pad ? size / 2 : padding (default 0), at any size and stride whose map
    is H / stride (size - stride <= 2 * padding <= size - 1)."""
    model = model_of(PADDINGS, seed=1)
    assert model.strides == (8,)
    convs = [m.conv for _, m in model.conv_layers()]
    assert [c.padding for c in convs] == [(0, 0), (1, 1), (2, 2), (1, 1), (0, 0), (0, 0)]
    net = opencv_net(model, tmp_path, (32, 32))
    for hw in ((32, 32), (24, 40)):
        assert_matches_opencv(model, net, torch.rand(1, 3, *hw))


@pytest.mark.parametrize(
    "layer, found",
    [
        (conv(size=3, stride=1, extra="pad=0"), r"padding 0 with size 3 stride 1 gives darknet's "
         r"map of \(H \+ 2 \* 0 - 3\) / 1 \+ 1 rows, not H / 1"),
        (conv(size=3, stride=1, extra="padding=2"), r"padding 2 with size 3 stride 1"),
        (conv(size=2, stride=1, extra="pad=1"), r"padding 1 with size 2 stride 1"),
    ],
)  # fmt: skip
def test_a_padding_whose_map_is_not_h_over_stride_is_refused(layer, found, tmp_path):
    text = cfg(conv(), layer)
    key = "padding" if "padding=" in layer else "pad"
    refused(text, tmp_path, 1, key, found)


# -- [convolutional] dilation ------------------------------------------------------------------
DILATED = cfg(
    conv(size=3, stride=1, extra="pad=1\ndilation=2"),
    conv(size=5, stride=2, extra="padding=2\ndilation=3\ngroups=2", bn=False),
    conv(size=3, stride=2, extra="pad=1\ndilation=2", act="logistic"),
    conv(size=1, stride=1, extra="pad=1\ndilation=4"),  # darknet: dilation 1 for size 1
)


def darknet_conv(module, x: torch.Tensor, **geometry) -> np.ndarray:
    """darknet's forward of ``module``'s weights (the transcription) on ``x (1, c, h, w)``."""
    m, c = module, module.conv
    bn = None
    if m.bn is not None:
        bn = (m.bn.weight, m.bn.running_mean, m.bn.running_var)
        bn = tuple(v.detach().double().numpy() for v in bn)
    biases = (m.bn.bias if m.bn is not None else c.bias).detach().double().numpy()
    return dk.forward_convolutional(
        x[0].double().numpy(), c.weight.detach().double().numpy(), size=c.kernel_size[0],
        groups=c.groups, biases=biases, bn=bn, activation=m.act_name, **geometry,
    )  # fmt: skip


@pytest.mark.parametrize("hw", [(32, 32), (16, 24)])
def test_dilation_matches_darknets_forward(hw):
    """darknet pads ``pad * dilation`` and spaces the taps by ``dilation`` (im2col_cpu_ext), the
    map sized as if undilated (OpenCV's importer does not read the key: the transcription is
    the reference)."""
    model = model_of(DILATED, seed=3)
    seen = layer_outputs(model, torch.rand(1, 3, *hw))
    geometry = [(1, 1, 2), (2, 2, 3), (1, 2, 2)]  # (pad, stride, dilation) of layers 0-2
    for i, (pad, stride, dilation) in enumerate(geometry):
        x, out = seen[i]
        ref = darknet_conv(model.layers[i], x, pad=pad, stride_x=stride, stride_y=stride,
                           dilation=dilation)  # fmt: skip
        np.testing.assert_allclose(out[0].double().numpy(), ref, rtol=1e-5, atol=1e-5)
    assert model.layers[3].conv.dilation == (1, 1)


def test_dilation_without_half_kernel_padding_is_refused(tmp_path):
    """darknet sizes the map without the dilation but runs the dilated kernel: with pad=0 the
    two disagree (its columns would not fit its output), so no darknet weights exist for it."""
    text = cfg(conv(), conv(size=2, stride=2, extra="pad=0\ndilation=2"))
    refused(text, tmp_path, 1, "dilation", "darknet sizes the map as if undilated")


# -- [convolutional] stride_x / stride_y -------------------------------------------------------
STRIDES_XY = cfg(
    conv(size=3, extra="pad=1\nstride_x=2"),  # stride_y: stride (1): H x W/2
    conv(size=3, stride=2, extra="pad=1\nstride_x=1"),  # stride_y 2, stride_x 1: H/2 x W/2
    conv(size=1, stride=5, extra="pad=1\nstride_x=2\nstride_y=2", act="logistic", bn=False),
)
# (stride_y, stride_x) of layers 0-2 as darknet's parse_convolutional reads them
XY = [(1, 2), (2, 1), (2, 2)]


@pytest.mark.parametrize("hw", [(32, 32), (16, 24)])
def test_stride_x_and_y_match_darknets_forward(hw):
    """darknet strides rows by stride_y and columns by stride_x (each given >= 1 wins, the
    other takes stride); OpenCV's importer does not read the keys: the transcription is the
    reference. The maps between are H x W/2, then square again: the head has stride 4."""
    model = model_of(STRIDES_XY, seed=5)
    assert model.strides == (4,) and model.config.max_stride == 4
    seen = layer_outputs(model, torch.rand(1, 3, *hw))
    for i, (sy, sx) in enumerate(XY):
        x, out = seen[i]
        ref = darknet_conv(model.layers[i], x, pad=model.layers[i].conv.padding[0],
                           stride_x=sx, stride_y=sy)  # fmt: skip
        assert out.shape[2:] == ref.shape[1:] == (x.shape[2] // sy, x.shape[3] // sx)
        np.testing.assert_allclose(out[0].double().numpy(), ref, rtol=1e-5, atol=1e-5)


def test_a_head_on_a_map_of_two_strides_is_refused(tmp_path):
    """decode and loss scale a head's x and y by one stride"""
    text = cfg(conv(extra="pad=1\nstride_y=2"))
    refused(text, tmp_path, 2, None, "reads a map of stride 2 along y and 1 along x")


def test_a_route_of_maps_of_other_strides_names_both_axes(tmp_path):
    text = cfg(conv(extra="pad=1\nstride_y=2"), conv(stride=2), "[route]\nlayers=-1,-2\n\n")
    refused(text, tmp_path, 2, "layers", r"joins maps of different strides \[2 x 1, 4 x 2\]")


# -- [dropout] ---------------------------------------------------------------------------------
DROPOUT = cfg(
    conv(size=3, stride=2),
    "[dropout]\nprobability=.5\n\n",
    conv(size=3, stride=1),
    "[dropout]\n\n",  # darknet's default probability .2
    "[route]\nlayers=-1,-4\n\n",  # -4: the layer before the first dropout, dropped in darknet
)


def test_dropout_is_the_identity_at_inference_as_in_opencv(tmp_path):
    model = model_of(DROPOUT, seed=7)
    assert [m.p for m in model.layers if isinstance(m, torch.nn.Dropout)] == [0.5, 0.2]
    net = opencv_net(model, tmp_path, (32, 32))
    for hw in ((32, 32), (24, 40)):
        assert_matches_opencv(model, net, torch.rand(1, 3, *hw))


def test_dropout_in_training_drops_in_the_previous_layers_output():
    """darknet's forward_dropout_layer: each value zeroed with the probability, the others
    scaled by 1 / (1 - p), in place in the previous layer's output, which a [route] to that
    layer then reads; its backward passes the gradient through the same mask."""
    model = model_of(DROPOUT, seed=8).train()
    seen: dict[int, torch.Tensor] = {}
    for i in range(4):
        model.layers[i].register_forward_hook(lambda m, a, out, i=i: seen.__setitem__(i, out))
    torch.manual_seed(0)
    model(torch.rand(2, 3, 32, 32))
    for before, drop, p in ((0, 1, 0.5), (2, 3, 0.2)):
        x, out = seen[before], seen[drop]
        kept = out != 0
        assert abs(1 - kept.float().mean().item() - p) < 0.05
        torch.testing.assert_close(out[kept], x[kept] / (1 - p))
    route = model.layers[4]
    got = {}
    route.register_forward_hook(lambda m, a, out: got.__setitem__("in", a[0]))
    model(torch.rand(2, 3, 32, 32))
    assert got["in"][0] is seen[3] and got["in"][1] is seen[1]  # layer 0 read as dropped
    grads = check_trains(model, torch.rand(2, 3, 32, 32))
    assert all(torch.isfinite(g).all() for g in grads.values())


def test_dropout_round_trips_and_exports(tmp_path):
    model = model_of(DROPOUT, seed=9)
    images = torch.rand(2, 3, 32, 32)
    check_round_trips(model, tmp_path, images)
    check_onnx(model, tmp_path, images)


@pytest.mark.parametrize(
    "section, key, message",
    [
        ("[dropout]\nprobability=1.5\n\n", "probability", r"must be a probability in \[0, 1\]"),
        ("[dropout]\ndropblock=1\n\n", "dropblock", "key not supported for"),
    ],
)
def test_a_dropout_darknet_would_not_run_as_dropout_is_refused(section, key, message, tmp_path):
    refused(cfg(conv(), section), tmp_path, 1, key, message)


def test_dropout_as_the_first_layer_is_refused(tmp_path):
    refused(cfg("[dropout]\n\n", conv()), tmp_path, 0, None, "cannot be the first layer")


# -- [local_avgpool], [maxpool] windows ---------------------------------------------------------
LOCAL_AVG = cfg(
    conv(size=3, stride=1),
    "[local_avgpool]\nsize=4\nstride=4\n\n",  # padding 3: the last column no window reaches
    "[local_avg]\nsize=3\nstride=1\n\n",  # darknet's other name; padding 2, 1 on each side
    "[local_avgpool]\nsize=2\nstride=2\n\n",
    "[local_avgpool]\nsize=2\nstride=1\nstride_x=2\n\n",  # rows padded 1 at the bottom
    conv(size=3, extra="pad=1\nstride_y=2"),
)
# (size, stride_y, stride_x, padding) of layers 1-4
POOLS = [(4, 4, 4, 3), (3, 1, 1, 2), (2, 2, 2, 1), (2, 1, 2, 1)]


@pytest.mark.parametrize("hw", [(32, 32), (16, 48)])
def test_local_avgpool_matches_darknets_forward(hw):
    """forward_local_avgpool_layer: the mean of the window's cells inside the map (OpenCV's
    importer does not know the layer: the transcription is the reference)."""
    model = model_of(LOCAL_AVG, seed=10)
    assert model.strides == (16,)
    seen = layer_outputs(model, torch.rand(1, 3, *hw) * 4 - 2)
    for i, (size, sy, sx, padding) in enumerate(POOLS, 1):
        x, out = seen[i]
        ref = dk.forward_pool(x[0].double().numpy(), size=size, stride_x=sx, stride_y=sy,
                              padding=padding, average=True)  # fmt: skip
        np.testing.assert_allclose(out[0].double().numpy(), ref, rtol=1e-6, atol=1e-6)


MAX_CROP = cfg(conv(size=3, stride=1), "[maxpool]\nsize=4\nstride=4\n\n")


@pytest.mark.parametrize("hw", [(32, 32), (16, 24)])
def test_maxpool_whose_windows_leave_the_last_cells_matches_opencv(hw, tmp_path):
    """size=4 stride=4 with darknet's default padding 3: windows start 1 cell before the map
    and the last column and row are in none (OpenCV and the transcription agree)."""
    model = model_of(MAX_CROP, seed=12)
    x, out = layer_outputs(model, torch.rand(1, 3, *hw))[1]
    ref = dk.forward_pool(x[0].double().numpy(), size=4, stride_x=4, stride_y=4, padding=3,
                          average=False)  # fmt: skip
    np.testing.assert_allclose(out[0].double().numpy(), ref, rtol=0, atol=0)
    net = opencv_net(model, tmp_path, (32, 32))
    assert_matches_opencv(model, net, torch.rand(1, 3, *hw))
    check_onnx(model, tmp_path, torch.rand(2, 3, *hw))


MAX_XY = cfg(
    conv(size=3, stride=1),
    "[maxpool]\nsize=2\nstride=1\nstride_x=2\n\n",  # padding 1: rows padded at the bottom
    "[max]\nsize=3\nstride_y=2\nstride_x=1\n\n",  # size 3 (stride's default 1), padding 2
    conv(size=3, stride=2),
)


@pytest.mark.parametrize("hw", [(32, 32), (16, 24)])
def test_maxpool_stride_x_and_y_match_darknets_forward(hw, tmp_path):
    """parse_maxpool: stride_x and stride_y default to stride (OpenCV's importer does not read
    them: the transcription of forward_maxpool_layer is the reference)."""
    model = model_of(MAX_XY, seed=13)
    assert model.strides == (4,)
    seen = layer_outputs(model, torch.rand(1, 3, *hw))
    for i, (size, sy, sx, padding) in ((1, (2, 1, 2, 1)), (2, (3, 2, 1, 2))):
        x, out = seen[i]
        ref = dk.forward_pool(x[0].double().numpy(), size=size, stride_x=sx, stride_y=sy,
                              padding=padding, average=False)  # fmt: skip
        np.testing.assert_allclose(out[0].double().numpy(), ref, rtol=0, atol=0)
    images = torch.rand(2, 3, *hw)
    check_round_trips(model, tmp_path, images)
    check_trains(model, images)
    check_onnx(model, tmp_path, images)


# -- [upsample] scale, negative stride ---------------------------------------------------------
UPSAMPLES = cfg(
    conv(size=3, stride=1),
    "[upsample]\nstride=-2\nscale=0.25\n\n",  # darknet's downsample: 2 x 2 blocks summed
    conv(size=3, stride=2),
    "[upsample]\nstride=2\nscale=0.5\n\n",
    "[upsample]\nstride=-4\n\n",
)
# (stride, scale) of layers 1, 3, 4
UPS = {1: (-2, 0.25), 3: (2, 0.5), 4: (-4, 1.0)}


@pytest.mark.parametrize("hw", [(32, 32), (16, 24)])
def test_upsample_scale_and_downsample_match_darknets_forward_and_backward(hw):
    """upsample_cpu: nearest neighbour times scale, and for a negative stride each block
    summed times scale (OpenCV's importer refuses a negative stride and ignores scale: the
    transcription is the reference). The gradient of each is darknet's backward."""
    model = model_of(UPSAMPLES, seed=14)
    assert model.strides == (8,)
    seen = layer_outputs(model, torch.rand(1, 3, *hw))
    for i, (stride, scale) in UPS.items():
        x, out = seen[i]
        ref = dk.forward_upsample(x[0].double().numpy(), stride, scale)
        np.testing.assert_allclose(out[0].double().numpy(), ref, rtol=1e-6, atol=1e-6)
        x = x.detach().requires_grad_()
        delta = torch.randn_like(out)
        model.layers[i](x).backward(delta)
        ref = dk.backward_upsample(delta[0].double().numpy(), x.shape[1:], stride, scale)
        np.testing.assert_allclose(x.grad[0].double().numpy(), ref, rtol=1e-6, atol=1e-6)


def test_upsample_stride_0_is_refused(tmp_path):
    refused(cfg(conv(), "[upsample]\nstride=0\n\n"), tmp_path, 1, "stride", "non-zero")


# -- [route] onlyforward -----------------------------------------------------------------------
ONLY_FORWARD = cfg(
    conv(size=3, stride=2),
    conv(size=3, stride=1),
    "[route]\nlayers=0\nonlyforward=1\n\n",  # yolov4-tiny_contrastive.cfg's use
    conv(size=3, stride=1),  # layer 3: read only through the route below
    "[route]\nlayers=-1,-3\nonlyforward=1\n\n",
    conv(size=1, stride=1),
    "[route]\nlayers=-1,1\n\n",
)


def test_route_onlyforward_is_unchanged_at_inference_as_in_opencv(tmp_path):
    model = model_of(ONLY_FORWARD, seed=16)
    net = opencv_net(model, tmp_path, (32, 32))
    for hw in ((32, 32), (24, 40)):
        assert_matches_opencv(model, net, torch.rand(1, 3, *hw))


def test_route_onlyforward_passes_no_gradient_back():
    """darknet's backward_network skips a layer with onlyforward=1: nothing reaches the layers
    it reads through it (layer 3 here), while the same network without the key trains them."""
    images = torch.rand(2, 3, 32, 32)
    plain = model_of(ONLY_FORWARD.replace("onlyforward=1\n", ""), seed=17).train()
    model = model_of(ONLY_FORWARD, seed=17).train()
    model.load_state_dict(plain.state_dict())
    sum(m.square().mean() for m in plain(images)).backward()
    assert plain.layers[3].conv.weight.grad.abs().sum() > 0
    sum(m.square().mean() for m in model(images)).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(grads[n] is None for n in grads if n.startswith("layers.3."))
    for n, g in grads.items():
        if not n.startswith("layers.3."):
            assert g is not None and g.abs().sum() > 0, n
    with torch.no_grad():
        model.eval(), plain.eval()
        for a, b in zip(model(images), plain(images)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_route_onlyforward_round_trips_and_exports(tmp_path):
    model = model_of(ONLY_FORWARD, seed=18)
    images = torch.rand(2, 3, 32, 32)
    check_round_trips(model, tmp_path, images)
    check_onnx(model, tmp_path, images)


# -- [sam] ---------------------------------------------------------------------------------------
SAM = cfg(
    conv(size=3, stride=2),
    conv(size=1, stride=1, act="logistic"),  # the attention map, as yolov4-sam-mish-csp's
    "[sam]\nfrom=-2\n\n",
    conv(size=3, stride=2),
    conv(size=3, stride=1, act="linear", bn=False),
    "[sam]\nfrom=-2\nactivation=leaky\n\n",
)


def test_sam_matches_opencv(tmp_path):
    """forward_sam_layer: the previous layer times layer ``from``, element by element, then the
    activation (OpenCV's importer runs both)."""
    model = model_of(SAM, seed=19)
    net = opencv_net(model, tmp_path, (32, 32))
    for hw in ((32, 32), (24, 40)):
        assert_matches_opencv(model, net, torch.rand(1, 3, *hw))


def test_sam_gradients_reach_both_inputs_and_it_round_trips_and_exports(tmp_path):
    """The gradient of ``x * from`` reaches both (darknet's GPU backward_sam_kernel adds both;
    its CPU backward_sam_layer writes the from layer's instead of adding to it)."""
    model = model_of(SAM, seed=20)
    images = torch.rand(2, 3, 32, 32)
    check_trains(model, images)
    check_round_trips(model, tmp_path, images)
    check_onnx(model, tmp_path, images)


@pytest.mark.parametrize(
    "section, message",
    [
        ("[sam]\nfrom=-2\nactivation=mish\n\n", r"darknet's \[sam\] does not apply mish"),
        ("[sam]\nfrom=-1,-2\n\n", r"darknet's \[sam\] reads one layer"),
        ("[sam]\nfrom=0\n\n", "only equal shapes can be multiplied"),
    ],
)
def test_a_sam_darknet_would_not_run_is_refused(section, message, tmp_path):
    text = cfg(conv(stride=2), conv(filters=4), conv(filters=4), section)
    key = "activation" if "activation" in section else "from"
    refused(text, tmp_path, 3, key, message)


@pytest.mark.parametrize(
    "section, rule",
    [
        ("[shortcut]\nfrom=0\n\n", "only maps of equal size can be added"),
        ("[sam]\nfrom=0\n\n", "only equal shapes can be multiplied"),
    ],
)
def test_a_shortcut_or_sam_of_unequal_maps_names_both_maps_alike(section, rule, tmp_path):
    """A [shortcut] adds maps of equal size, a [sam] multiplies equal shapes: either refusal
    names the from layer's and the previous layer's channels and strides in one wording."""
    text = cfg(conv(stride=2), conv(filters=4, stride=2), section)
    both = "layer 0 gives 8 channels at stride 2, layer 1 4 at stride 4: "
    refused(text, tmp_path, 2, "from", re.escape(both + rule) + "$")


# -- [shortcut] weights_type / weights_normalization -------------------------------------------
WEIGHTED = cfg(
    conv(size=3, stride=2),
    conv(size=3, stride=1),
    "[shortcut]\nfrom=-2\nweights_type=per_feature\nweights_normalization=relu\n\n",
    conv(size=3, stride=1),
    "[shortcut]\nfrom=-2,-3\nweights_type=per_channel\nweights_normalization=softmax\n"
    "activation=leaky\n\n",
    "[shortcut]\nfrom=0\nweights_type=per_layer\n\n",  # darknet's other name of per_feature
)
# darknet layer: (weights shape, normalization, activation)
SHORTCUTS = {
    2: ((2,), "relu", "linear"),
    4: ((3, 8), "softmax", "leaky"),
    5: ((2,), "none", "linear"),
}


def weighted_model(seed: int):
    model = model_of(WEIGHTED, seed=seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for i, (shape, _, _) in SHORTCUTS.items():
            assert model.layers[i].weights.shape == shape  # darknet's nweights
            model.layers[i].weights.copy_(torch.rand(shape, generator=g) * 2 - 0.5)
    return model


def shortcut_inputs(model, seen, i) -> list[np.ndarray]:
    spec = model._specs[i]
    return [seen[j][1][0].double().numpy() for j in spec.inputs]


@pytest.mark.parametrize("hw", [(32, 32), (16, 24)])
def test_weighted_shortcut_matches_darknets_forward(hw):
    """shortcut_multilayer_cpu: input k times its weight (per input, or per input and
    channel), normalised over the inputs by relu or softmax with darknet's eps (OpenCV's
    importer reads no shortcut weights: the transcription is the reference)."""
    model = weighted_model(21)
    seen = layer_outputs(model, torch.rand(1, 3, *hw))
    for i, (_, normalization, act) in SHORTCUTS.items():
        weights = model.layers[i].weights.detach().double().numpy().ravel()
        ref = dk.forward_shortcut(shortcut_inputs(model, seen, i), weights, normalization, act)
        np.testing.assert_allclose(seen[i][1][0].double().numpy(), ref, rtol=1e-5, atol=1e-6)


def test_weighted_shortcut_weight_gradient_is_darknets_without_normalization():
    """Without normalization the weights' gradient is darknet's weight_updates (delta times
    input); with relu or softmax darknet leaves the normalization's derivative out, autograd
    keeps it (docs/guides/networks.md)."""
    model = weighted_model(22)
    seen = layer_outputs(model, torch.rand(1, 3, 32, 32))
    for i in (2, 5):  # the linear ones: darknet's delta is the gradient of the weighted sum
        normalization = SHORTCUTS[i][1]
        xs = [seen[j][1].detach() for j in model._specs[i].inputs]
        delta = torch.randn_like(xs[0])
        model.zero_grad()
        model.layers[i](xs[0], xs[1:]).backward(delta)
        ours = model.layers[i].weights.grad.double().numpy().ravel()
        weights = model.layers[i].weights.detach().double().numpy().ravel()
        theirs = dk.shortcut_weight_updates(
            [x[0].double().numpy() for x in xs], weights, normalization, delta[0].numpy()
        )
        if normalization == "none":
            np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
        else:
            assert not np.allclose(ours, theirs, rtol=1e-3)


def test_weighted_shortcut_loads_and_saves_its_weights_in_darknets_order(tmp_path):
    """load_shortcut_weights: the weights right after the layers before, in file order; the
    file is darknet's size (the convs' floats plus 2 + 24 + 2)."""
    from yolov4.darknet import darknet_float_count

    model = weighted_model(23)
    convs = sum(sum(t.numel() for _, t in m.darknet_tensors()) for _, m in model.conv_layers())
    assert darknet_float_count(model) == convs + 2 + 3 * 8 + 2
    images = torch.rand(2, 3, 32, 32)
    check_round_trips(model, tmp_path, images)
    floats = np.fromfile(tmp_path / "rt.weights", "<f4", offset=20)
    pos = sum(sum(t.numel() for _, t in model.layers[i].darknet_tensors()) for i in (0, 1))
    np.testing.assert_array_equal(floats[pos : pos + 2], model.layers[2].weights.detach().numpy())
    check_trains(model, images)
    check_onnx(model, tmp_path, images)


@pytest.mark.parametrize(
    "line, key",
    [
        ("weights_type=per_pixel", "weights_type"),
        ("weights_normalization=max", "weights_normalization"),
    ],
)
def test_a_shortcut_weight_setting_darknet_refuses_is_refused(line, key, tmp_path):
    text = cfg(conv(), conv(), f"[shortcut]\nfrom=-2\nweights_type=per_feature\n{line}\n\n")
    text = text.replace(
        "weights_type=per_feature\nweights_type=per_pixel", "weights_type=per_pixel"
    )
    refused(text, tmp_path, 2, key, "expected one of")


# -- [avgpool] -----------------------------------------------------------------------------------
AVGPOOL = cfg(
    conv(size=3, stride=2),
    "[avgpool]\n\n",  # 1 x 1 whatever the input
    conv(filters=4, size=1, bn=False, act="linear"),
    conv(filters=4, size=3, stride=2),  # stays 1 x 1
    "[avg]\n\n",  # darknet's other name
    "[route]\nlayers=0\n\n",
    conv(size=3, stride=2),
)


@pytest.mark.parametrize("hw", [(32, 32), (24, 40)])
def test_avgpool_matches_opencv(hw, tmp_path):
    """forward_avgpool_layer: each channel's mean over the map, then layers on the 1 x 1 map;
    OpenCV's importer runs both (its layers avgpool_1 and conv_2)."""
    model = model_of(AVGPOOL, seed=24)
    images = torch.rand(1, 3, *hw)
    seen = layer_outputs(model, images)
    net = opencv_net(model, tmp_path, (32, 32))
    net.setInput(images.numpy())
    head = model.head_layers[0]
    pooled, conv2, twice, ref = net.forward(["avgpool_1", "conv_2", "avgpool_4", f"conv_{head}"])
    assert seen[1][1].shape == (1, 8, 1, 1) and seen[3][1].shape == (1, 4, 1, 1)
    np.testing.assert_allclose(seen[1][1].numpy(), pooled, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(seen[2][1].numpy(), conv2, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(seen[4][1].numpy(), twice, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # the head, after the [route] back to layer 0 (the branch is unread)
        np.testing.assert_allclose(model(images)[0].numpy(), ref, rtol=1e-4, atol=1e-4)


def test_avgpool_round_trips_trains_and_exports(tmp_path):
    model = model_of(AVGPOOL, seed=25)
    images = torch.rand(2, 3, 32, 32)
    check_round_trips(model, tmp_path, images)
    check_onnx(model, tmp_path, images)
    model.train()
    sum(m.square().mean() for m in model(images)).backward()
    for name, p in model.named_parameters():  # layers 2-3: a branch nothing reads
        assert (p.grad is None) == name.startswith(("layers.2.", "layers.3.")), name
    with pytest.raises(InputError, match=r"layer 3 normalises a global \(1 x 1\) map"):
        model(images[:1])


@pytest.mark.parametrize(
    "layer, key, message",
    [
        ("[maxpool]\nsize=2\nstride=2\n\n", None, r"reads the global \(1 x 1\) map of layer 1"),
        ("[upsample]\nstride=2\n\n", None, r"a \[upsample\] on maps of H / stride only"),
        (conv(size=2, stride=2, extra="pad=0"), "pad", r"padding 0 with size 2 on a global"),
        ("[route]\nlayers=-1,0\n\n", "layers", r"different strides \[global \(1 x 1\), 2\]"),
    ],
)
def test_what_would_not_keep_a_global_map_1_x_1_is_refused(layer, key, message, tmp_path):
    refused(cfg(conv(stride=2), "[avgpool]\n\n", layer), tmp_path, 2, key, message)


# -- [scale_channels] ------------------------------------------------------------------------------
SE = (  # squeeze-and-excitation, as enet-coco.cfg's blocks
    conv(size=3, stride=2),
    "[avgpool]\n\n",
    conv(filters=2, size=1, bn=False, act="leaky"),
    conv(filters=8, size=1, bn=False, act="logistic"),
    "[scale_channels]\nfrom=-4\n\n",
)
SCALE_CHANNELS = cfg(
    *SE,
    conv(size=3, stride=2),
    conv(filters=1, size=1, act="logistic"),  # one value per cell
    "[scale_channels]\nfrom=-2\nscale_wh=1\nactivation=leaky\n\n",
)


def test_scale_channels_matches_opencv(tmp_path):
    """forward_scale_channels_layer: layer from's map times the previous layer's value per
    channel (a 1 x 1 map), then the activation (OpenCV runs it; not scale_wh, below)."""
    model = model_of(cfg(*SE, conv(size=3, stride=2)), seed=26)
    net = opencv_net(model, tmp_path, (32, 32))
    for hw in ((32, 32), (24, 40)):
        assert_matches_opencv(model, net, torch.rand(1, 3, *hw))


@pytest.mark.parametrize("hw", [(32, 32), (16, 24)])
def test_scale_channels_match_darknets_forward(hw):
    """Per channel and, with scale_wh=1, per cell (OpenCV's importer sizes scale_wh's output
    wrong and refuses the net: the transcription is the reference)."""
    model = model_of(SCALE_CHANNELS, seed=28)
    assert model.strides == (4,)
    seen = layer_outputs(model, torch.rand(1, 3, *hw))
    for i, scale_wh, act in ((4, False, "linear"), (7, True, "leaky")):
        scales, src = (seen[j][1][0].double().numpy() for j in model._specs[i].inputs)
        ref = dk.forward_scale_channels(scales, src, scale_wh, act)
        np.testing.assert_allclose(seen[i][1][0].double().numpy(), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "layers, message",
    [
        ((conv(filters=4, size=1), "[scale_channels]\nfrom=-2\n\n"), "darknet needs 8 channels"),
        (("[avgpool]\n\n", "[scale_channels]\nfrom=-2\nscale_wh=1\n\n"), "darknet needs 1 channel"),
        (("[avgpool]\n\n", "[scale_channels]\nfrom=-2\nactivation=swish\n\n"), "does not apply"),
    ],
)
def test_a_scale_channels_darknet_would_not_run_is_refused(layers, message, tmp_path):
    text = cfg(conv(stride=2), *layers)
    key = "activation" if "swish" in layers[1] else "from"
    refused(text, tmp_path, 2, key, message)


# -- [shortcut] of maps of other channels ----------------------------------------------------------
CHANNEL_SHORTCUTS = cfg(
    conv(filters=8, size=3, stride=2),
    conv(filters=4, size=3),
    "[shortcut]\nfrom=-2\n\n",  # 4 + 8: the first 4 of layer 0's channels (yolov3-tiny-prn)
    conv(filters=12, size=1),
    "[shortcut]\nfrom=-2\nactivation=leaky\n\n",  # 12 + 4: onto the first 4
    "[shortcut]\nfrom=0,2\nweights_type=per_channel\n\n",
)


def test_shortcut_of_other_channels_matches_opencv(tmp_path):
    """shortcut_multilayer_cpu adds element k of a from map to element k of the sum as far as
    the map has elements: of equal size, its first channels onto the first ones (OpenCV's
    importer reads one from layer only: the shortcuts of one here)."""
    model = model_of(CHANNEL_SHORTCUTS.split("[shortcut]\nfrom=0,2")[0] + HEAD, seed=29, gain=10.0)
    net = opencv_net(model, tmp_path, (32, 32))
    for hw in ((32, 32), (24, 40)):
        assert_matches_opencv(model, net, torch.rand(1, 3, *hw))


@pytest.mark.parametrize("hw", [(32, 32), (16, 24)])
def test_shortcut_of_other_channels_matches_darknets_forward(hw, tmp_path):
    """The transcription: several from layers, weighted too (OpenCV reads neither)."""
    model = model_of(CHANNEL_SHORTCUTS, seed=30, gain=10.0)
    with torch.no_grad():
        model.layers[5].weights.copy_(torch.rand(3, 12) + 0.5)
    seen = layer_outputs(model, torch.rand(1, 3, *hw))
    for i, act in ((2, "linear"), (4, "leaky"), (5, "linear")):
        weights = model.layers[i].weights
        weights = None if weights is None else weights.detach().double().numpy().ravel()
        ref = dk.forward_shortcut(shortcut_inputs(model, seen, i), weights, "none", act)
        np.testing.assert_allclose(seen[i][1][0].double().numpy(), ref, rtol=1e-5, atol=1e-6)
    images = torch.rand(2, 3, *hw)
    check_round_trips(model, tmp_path, images)
    check_trains(model, images)
    check_onnx(model, tmp_path, images)


@pytest.mark.parametrize(
    "cfg, seed, shape",
    [
        (PADDINGS, 2, (2, 3, 32, 40)),
        (DILATED, 4, (2, 3, 32, 32)),
        (STRIDES_XY, 6, (2, 3, 16, 24)),
        (LOCAL_AVG, 11, (2, 3, 32, 32)),
        (UPSAMPLES, 15, (2, 3, 32, 32)),
        (SCALE_CHANNELS, 27, (2, 3, 32, 32)),
    ],
    ids=["paddings", "dilated", "strides-xy", "local-avg", "upsamples", "scale-channels"],
)
def test_layers_round_trip_train_and_export(tmp_path, cfg, seed, shape):
    """Each network of the new layer kinds: .weights/.cfg round trips, a training step and
    onnxruntime agree with the model."""
    model = model_of(cfg, seed=seed)
    images = torch.rand(*shape)
    check_round_trips(model, tmp_path, images)
    check_trains(model, images)
    check_onnx(model, tmp_path, images)
