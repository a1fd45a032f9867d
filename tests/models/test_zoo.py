"""Every darknet cfg of the zoo (and a user's own) as a first-class model.

OpenCV's darknet importer (``cv2.dnn.readNetFromDarknet``) reads the cfg and ``.weights`` we
write and is the independent reference for the raw head maps and for the decoded ``[yolo]``
outputs; darknet's own files are the reference for the cfg text and the ``.weights`` sizes.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from yolov4 import build_model
from yolov4.core.model import DecodedModel
from yolov4.darknet import (
    darknet_float_count,
    load_darknet_weights,
    read_darknet_cfg,
    save_darknet_weights,
    write_darknet_cfg,
)
from yolov4.models.cfg import CFG_DIR, ZOO
from yolov4.models.layers import ConvBnAct
from yolov4.ops.decode import decode_predictions

HEADER_BYTES = 20

# darknet's .weights files with 80 classes (header + floats), bytes
WEIGHTS_BYTES = {
    "yolov4": 257_717_640,
    "yolov4-tiny": 24_251_276,
    "yolov4-tiny-3l": 25_336_200,
    "yolov4-csp": 211_944_840,
    "yolov4-csp-swish": 211_944_840,
    "yolov4x-mish": 399_388_168,
    "yolov4-csp-x-swish": 399_388_168,
    "yolov4-p5": 283_669_892,
    "yolov4-p6": 510_868_180,
    "yolov3": 248_007_048,
    "yolov3-spp": 252_209_544,
    "yolov3-tiny": 35_434_956,
}

# (square, non-square) inputs, multiples of the largest stride (64 for p6, else 32); the big
# networks at the smallest sizes that keep a 2x2 / 2x3 map at the coarsest stride
SIZES = {name: ((64, 64), (64, 96)) for name in ZOO}
SIZES.update(
    {
        "yolov4-p6": ((128, 128), (128, 192)),
        "yolov4-tiny": ((96, 96), (128, 64)),
        "yolov4-tiny-3l": ((96, 96), (64, 160)),
        "yolov3-tiny": ((96, 96), (96, 160)),
    }
)
CLASSES = dict(zip(ZOO, [1, 2, 3, 4, 5, 6, 7, 2, 3, 4, 5, 6]))


def test_the_zoo_is_every_shipped_cfg():
    assert set(ZOO) == set(WEIGHTS_BYTES) == {p.stem for p in CFG_DIR.glob("*.cfg")}


@functools.cache
def meta_model(name: str, num_classes: int = 80):
    """A zoo model without memory (shapes only): never mutated by the tests using it."""
    with torch.device("meta"):
        return build_model(name, num_classes=num_classes)


# -- OpenCV's darknet importer as the reference ------------------------------------------------
def opencv_net(model, tmp_path: Path, hw: tuple[int, int]):
    """OpenCV's net from our cfg + weights. Its [yolo] layer zeroes class scores <= ``thresh``
    (default 0.2) and runs a per-class NMS (``nms_threshold`` 0.4) on its output: both off, so
    that every decoded row can be compared (these keys are OpenCV's, written for it only)."""
    import cv2

    text = write_darknet_cfg(model, input_size=hw)
    text = text.replace("[yolo]\n", "[yolo]\nthresh=0\nnms_threshold=0\n")
    cfg, weights = tmp_path / "model.cfg", tmp_path / "model.weights"
    cfg.write_text(text)
    save_darknet_weights(model, weights)
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    weights.unlink()  # the big networks' files are hundreds of MB
    return net


def opencv_outputs(model, net, images: torch.Tensor):
    """OpenCV's raw head maps (its ``conv_<i>`` layers: the conv in front of each [yolo], before
    its activation) and its [yolo] outputs (``yolo_<i + 1>``), both in ascending stride."""
    heads = [f"conv_{i}" for i in model.head_layers]
    yolos = [f"yolo_{i + 1}" for i in model.head_layers]
    assert set(net.getUnconnectedOutLayersNames()) == set(yolos)
    net.setInput(images.numpy())
    out = net.forward(heads + yolos)
    return list(out[: len(heads)]), list(out[len(heads) :])


def as_opencv_yolo(model, decoded: torch.Tensor, hw: tuple[int, int]) -> list[np.ndarray]:
    """Our decode (``(1, N, 5 + C)``: pixels, objectness, class probabilities; rows ``(a, j, i)``
    per head) in OpenCV's [yolo] output format: per head ``(H * W * A, 5 + C)`` rows ``(j, i, a)``,
    box relative to the image, objectness, class probability times objectness."""
    h, w = hw
    out, start = [], 0
    for stride in model.strides:
        a, gh, gw = model.config.num_anchors, h // stride, w // stride
        n = a * gh * gw
        d = decoded[0, start : start + n].reshape(a, gh, gw, -1).permute(1, 2, 0, 3)
        d = d.reshape(n, -1).clone()
        start += n
        d[:, [0, 2]] /= w
        d[:, [1, 3]] /= h
        d[:, 5:] *= d[:, 4:5]
        out.append(d.numpy())
    assert start == decoded.shape[1]
    return out


def boost_heads_(model, gain: float = 10.0):
    """Scale the head convs' kernels: with default init the image-dependent part of a head map
    is ~1% of its (randomized) bias; scaled, it dominates, and the comparison resolves it."""
    with torch.no_grad():
        for conv in model.head_convs():
            conv.conv.weight.mul_(gain)
    return model


def assert_matches_opencv(model, net, images: torch.Tensor) -> None:
    hw = tuple(images.shape[-2:])
    cv_maps, cv_yolos = opencv_outputs(model, net, images)
    with torch.no_grad():
        maps = model(images)
        dm = DecodedModel(model)  # decode as every backend runs it (new_coords from the config)
        decoded = decode_predictions(maps, dm.anchors, dm.strides, dm.scale_x_y, dm.new_coords)
    assert len(maps) == len(cv_maps) == len(model.strides)
    for stride, ours, ref in zip(model.strides, maps, cv_maps):
        assert ours.shape == (1, model.config.num_outputs, hw[0] // stride, hw[1] // stride)
        # the image-dependent part of the map, far above the tolerance below
        assert float(ours.std((2, 3)).mean()) > 0.02
        np.testing.assert_allclose(
            ours.numpy(), ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max())
        )
    for ours, ref in zip(as_opencv_yolo(model, decoded, hw), cv_yolos):
        assert ours.shape == ref.shape
        # per column as for the maps: rtol, plus rtol times the column's largest value
        bound = 1e-4 * (np.abs(ref) + np.abs(ref).max(0))
        bad = np.argwhere(np.abs(ours - ref) > bound)
        assert not len(bad), f"{len(bad)} values differ, first (row, column) {bad[:5].tolist()}"


# the default suite's networks (every layer kind and head layout among them: tiny's grouped
# routes, yolov4's mish and SPP, yolov4-csp's new_coords heads, yolov3-tiny's stride-1
# maxpool); the rest of the zoo runs with -m slow
OPENCV_FAST = ("yolov4", "yolov4-tiny", "yolov4-csp", "yolov3-tiny")


@pytest.mark.parametrize(
    "name", [n if n in OPENCV_FAST else pytest.param(n, marks=pytest.mark.slow) for n in ZOO]
)
def test_zoo_matches_opencv(name, tmp_path, randomize):
    """Raw head maps and decoded [yolo] outputs of every zoo network on random weights (random
    BN statistics too), square and non-square inputs, against OpenCV's darknet importer."""
    torch.manual_seed(0)
    square, other = SIZES[name]
    model = build_model(name, num_classes=CLASSES[name], input_size=list(square))
    boost_heads_(randomize(model, seed=len(name)))
    net = opencv_net(model, tmp_path, square)
    for hw in (square, other):
        assert_matches_opencv(model, net, torch.rand(1, 3, *hw))


# -- a user's modified cfg ---------------------------------------------------------------------
EXTRA_CONV = (
    "[convolutional]\nbatch_normalize=1\nfilters={f}\nsize=3\nstride=1\npad=1\nactivation={a}\n\n"
)
USER_ANCHORS = "8,12, 20,30, 44,52, 70,96, 130,150, 300,280"


def user_cfg() -> str:
    """yolov4-tiny with 4 classes, other anchors, and one more conv in each head, right before
    its last conv: in the first head (darknet layer 29) the `[route] layers=-4` behind it then
    needs -5 to reach the same layer; the second head is at the end (nothing refers past it)."""
    text = (CFG_DIR / "yolov4-tiny.cfg").read_text()
    text = re.sub(r"classes=80", "classes=4", text)
    text = re.sub(r"filters=255", "filters=27", text)
    text = re.sub(r"anchors = [0-9, ]+", f"anchors = {USER_ANCHORS}", text)
    head = "[convolutional]\nsize=1\nstride=1\npad=1\nfilters=27\nactivation=linear"
    first, second, rest = text.split(head)  # the two heads' last convs
    assert second.count("layers = -4") == 1
    second = second.replace("layers = -4", "layers = -5")
    return (
        first
        + EXTRA_CONV.format(f=96, a="swish")
        + head
        + second
        + EXTRA_CONV.format(f=64, a="mish")
        + head
        + rest
    )


def test_user_cfg_matches_opencv(tmp_path, randomize):
    text = user_cfg()
    torch.manual_seed(3)
    model = build_model(cfg=text, num_classes=None, input_size=[96, 128])
    c = model.config
    assert c.name == "custom" and c.num_classes == 4 and c.cfg == text
    assert [v for wh in c.anchors for v in wh] == [float(v) for v in USER_ANCHORS.split(",")]
    assert len(model.layers) == 38 + 2 and model.strides == (16, 32)
    assert model.head_layers == (38, 30)  # yolov4-tiny's (36, 29), one and two layers later
    assert [model.layers[i].act_name for i in (29, 37)] == ["swish", "mish"]
    boost_heads_(randomize(model, seed=3))
    net = opencv_net(model, tmp_path, (96, 128))
    for hw in ((96, 128), (64, 64)):
        assert_matches_opencv(model, net, torch.rand(1, 3, *hw))


# -- the cfg written back ----------------------------------------------------------------------
def _token(value: str):
    """A cfg value as comparable tokens: numbers as numbers (``.7 == 0.7``), lists item-wise."""
    out = []
    for v in value.split(","):
        try:
            out.append(float(v))
        except ValueError:
            out.append(v)
    return tuple(out)


def cfg_tokens(text: str) -> list[tuple[str, dict]]:
    return [(kind, {k: _token(v) for k, v in d.items()}) for kind, d in read_darknet_cfg(text)]


@pytest.mark.parametrize("name", ZOO)
def test_written_cfg_is_the_official_file(name):
    official = cfg_tokens((CFG_DIR / f"{name}.cfg").read_text())
    written = cfg_tokens(write_darknet_cfg(meta_model(name)))
    assert [k for k, _ in written] == [k for k, _ in official]
    for i, (w, o) in enumerate(zip(written, official)):
        assert w == o, f"section {i} [{w[0]}]"


@pytest.mark.parametrize("name", ZOO)
def test_written_cfg_with_3_classes_differs_only_in_classes_and_filters(name):
    model = meta_model(name, 3)
    official = cfg_tokens((CFG_DIR / f"{name}.cfg").read_text())
    written = cfg_tokens(write_darknet_cfg(model))
    assert [k for k, _ in written] == [k for k, _ in official]
    changed = []
    for i, ((kind, w), (_, o)) in enumerate(zip(written, official)):
        assert w.keys() == o.keys()
        changed += [(i - 1, kind, k, w[k]) for k in w if w[k] != o[k]]
    filters = (float(model.config.num_anchors * (3 + 5)),)
    want = [(i, "convolutional", "filters", filters) for i in model.head_layers]
    want += [(i + 1, "yolo", "classes", (3.0,)) for i in model.head_layers]
    assert sorted(changed) == sorted(want)


# -- .weights ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ZOO)
def test_weights_size_is_darknets(name):
    assert HEADER_BYTES + 4 * darknet_float_count(meta_model(name)) == WEIGHTS_BYTES[name]


@pytest.mark.parametrize("name", ["yolov3-tiny", "yolov4-tiny-3l"])
def test_weights_save_load_round_trip(name, tmp_path, randomize):
    torch.manual_seed(1)
    model = randomize(build_model(name), seed=1)
    path = save_darknet_weights(model, tmp_path / f"{name}.weights", seen=7)
    assert path.stat().st_size == WEIGHTS_BYTES[name]
    fresh = build_model(name)
    header = load_darknet_weights(fresh, path)
    assert header.seen == 7 and header.layers_loaded == len(model.layers)
    ref = model.state_dict()
    for key, value in fresh.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, ref[key]), key
    again = save_darknet_weights(fresh, tmp_path / "again.weights", seen=7)
    assert again.read_bytes() == path.read_bytes()


# -- round trips -------------------------------------------------------------------------------
def shapes(model) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", ZOO)
def test_config_round_trip(name):
    model = meta_model(name, CLASSES[name])
    with torch.device("meta"):
        again = build_model(**model.config.to_dict())
    assert again.config == model.config
    assert shapes(again) == shapes(model)
    assert write_darknet_cfg(again) == write_darknet_cfg(model)


@pytest.mark.parametrize("name", ZOO)
def test_written_cfg_builds_the_same_network(name):
    model = meta_model(name, CLASSES[name])
    text = write_darknet_cfg(model)
    with torch.device("meta"):
        again = build_model(cfg=text, num_classes=None)
    assert shapes(again) == shapes(model)
    assert again.head_layers == model.head_layers
    assert write_darknet_cfg(again) == text
    mine = {k: v for k, v in again.config.to_dict().items() if k not in ("name", "cfg")}
    assert mine == {k: v for k, v in model.config.to_dict().items() if k not in ("name", "cfg")}


def test_user_cfg_round_trip_without_the_file(tmp_path):
    path = tmp_path / "mine.cfg"
    path.write_text(user_cfg())
    with torch.device("meta"):
        model = build_model(cfg=path, num_classes=2, anchors=[[10, 12], [20, 24], [40, 48]] * 2)
    path.unlink()  # the config carries the cfg text
    assert model.config.name == "mine" and model.config.cfg == user_cfg()
    with torch.device("meta"):
        again = build_model(**model.config.to_dict())
    assert again.config == model.config
    assert shapes(again) == shapes(model)
    assert write_darknet_cfg(again) == write_darknet_cfg(model)
    with torch.device("meta"):
        written = build_model(cfg=write_darknet_cfg(model), num_classes=None)
    assert shapes(written) == shapes(model)


# -- new_coords: the logistic of the conv in front of the [yolo] layer --------------------------
def test_new_coords_heads_keep_their_logistic_for_decode(randomize):
    """The cfg's `activation=logistic` before a new_coords [yolo] is applied once, by decode (and
    the loss): the raw map is the conv's output before it, so the objectness prior holds."""
    for name in ("yolov4-csp", "yolov4-p6"):
        model = meta_model(name)
        assert model.config.new_coords
        sections = model.sections
        for i in model.head_layers:
            assert sections[i + 1].options["activation"] == "logistic"
            assert isinstance(model.layers[i], ConvBnAct) and model.layers[i].act_name == "linear"
    torch.manual_seed(0)
    model = build_model("yolov4-tiny", num_classes=2, new_coords=True).eval()
    assert "activation=logistic" in write_darknet_cfg(model)
    with torch.no_grad():
        decoded = DecodedModel(model)(torch.rand(1, 3, 64, 64))
    assert float(decoded[..., 4].median()) < 0.05  # sigmoid(prior bias) = 0.01, not 0.5
