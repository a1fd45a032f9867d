"""Darknet cfg semantics: what the builder refuses (naming file, line, section and key) and the
darknet rules it follows (maxpool padding, grouped and absolute routes, [yolo] order, 4-anchor
heads, ``[net] letter_box``, ``stopbackward``), on small hand-made cfgs and the zoo."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.models.test_zoo import (
    assert_matches_opencv,
    boost_heads_,
    meta_model,
    opencv_net,
)
from yolov4 import ConfigError, build_model
from yolov4.darknet import read_darknet_cfg, write_darknet_cfg
from yolov4.models.cfg import CFG_DIR, ZOO

# Darknet layer indices in the comments. Two heads (stride 2 and 4), every rule under test:
# [maxpool] size 2 stride 1, a grouped route with an absolute index, a route mixing absolute and
# relative indices.
BASE = """\
[net]
width=32
height=32
channels=3

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=leaky

[maxpool]
size=2
stride=1

[route]
layers=1
groups=2
group_id=1

[convolutional]
batch_normalize=1
filters=4
size=3
stride=1
pad=1
activation=mish

[route]
layers=0,-1

[convolutional]
size=1
stride=1
pad=1
filters=18
activation=linear

[yolo]
mask=0,1,2
anchors=4,6, 8,8, 12,10, 16,20, 30,24, 40,44
classes=1
num=6

[route]
layers=4

[convolutional]
batch_normalize=1
filters=8
size=3
stride=2
pad=1
activation=swish

[convolutional]
size=1
stride=1
pad=1
filters=18
activation=linear

[yolo]
mask=3,4,5
anchors=4,6, 8,8, 12,10, 16,20, 30,24, 40,44
classes=1
num=6
"""


def nth(text: str, old: str, new: str, n: int = 1) -> str:
    """``text`` with the ``n``-th occurrence of ``old`` replaced by ``new``."""
    parts = text.split(old)
    assert len(parts) > n, f"{old!r} occurs {len(parts) - 1} times"
    return old.join(parts[:n]) + new + old.join(parts[n:])


def line_in(text: str, layer: int, key: str | None = None) -> int:
    """Line of ``key`` (its last) in darknet layer ``layer``'s section of ``text``, else the
    section's header line (``layer=-1``: ``[net]``)."""
    lines = text.splitlines()
    headers = [n for n, line in enumerate(lines, 1) if line.startswith("[")]
    start = headers[layer + 1]
    if key is None:
        return start
    end = headers[layer + 2] if layer + 2 < len(headers) else len(lines) + 1
    found = [n for n in range(start, end) if lines[n - 1].split("=")[0].strip() == key]
    return found[-1] if found else start  # a key the section lacks: its header


def test_base_cfg_builds():
    model = build_model(cfg=BASE, num_classes=None)
    assert model.config.name == "custom" and model.strides == (2, 4)
    assert model.head_layers == (5, 9) and model.config.masks == ((0, 1, 2), (3, 4, 5))
    assert model.config.letter_box is False and model.stop_backward == ()


def test_a_users_cfg_keeps_its_classes_unless_num_classes_is_given(tmp_path):
    """The cfg is the source of truth: build_model(cfg=...) without num_classes has the cfg's
    3 classes (and so loads weights trained with it); num_classes=... overrides it."""
    text = BASE.replace("classes=1", "classes=3").replace("filters=18", "filters=24")
    path = tmp_path / "mine.cfg"
    path.write_text(text)
    for cfg in (path, str(path), text):
        model = build_model(cfg=cfg)
        assert model.num_classes == 3 and model.head_convs()[0].conv.out_channels == 24
    assert build_model(cfg=path, num_classes=5).num_classes == 5
    assert build_model("yolov4-tiny").num_classes == 80  # the zoo cfgs' own classes


# -- what the builder refuses --------------------------------------------------------------------
YOLO1 = "classes=1\nnum=6\n"
CASES = {
    # id: (cfg text, darknet layer, section, key, message)
    "unknown layer type crop": (
        nth(BASE, "[maxpool]\nsize=2\nstride=1", "[crop]\ncrop_height=8"),
        1,
        "crop",
        None,
        r"layer type \[crop\] is not supported",
    ),
    "unknown layer type softmax": (
        nth(BASE, "[maxpool]\nsize=2\nstride=1", "[softmax]\ngroups=1"),
        1,
        "softmax",
        None,
        r"layer type \[softmax\] is not supported",
    ),
    "unknown key": (
        nth(BASE, "activation=mish", "activation=mish\nantialiasing=1"),
        3,
        "convolutional",
        "antialiasing",
        "key not supported for",
    ),
    "unsupported activation": (
        nth(BASE, "activation=mish", "activation=ramp"),
        3,
        "convolutional",
        "activation",
        r"'ramp' is not supported",
    ),
    "route to a later layer": (
        nth(BASE, "layers=0,-1", "layers=0,5"),
        4,
        "route",
        "layers",
        r"refers to layer 5 \(from 5\); layer 4 can use layers 0-3",
    ),
    "route to itself": (
        nth(BASE, "layers=0,-1", "layers=0,4"),
        4,
        "route",
        "layers",
        "refers to layer 4",
    ),
    "shortcut of other strides": (
        nth(BASE, "activation=swish\n", "activation=swish\n\n[shortcut]\nfrom=0\n"),
        9,
        "shortcut",
        "from",
        "layer 0 gives 8 channels at stride 2, layer 8 8 at stride 4: only maps of equal size",
    ),
    "wrong filters before yolo": (
        nth(BASE, "filters=18", "filters=17"),
        5,
        "convolutional",
        "filters",
        r"gives 17 channels; 3 anchors x \(classes=1 \+ 5\) needs filters=18",
    ),
    "anchors count": (
        BASE.replace(", 40,44\n", "\n"),
        6,
        "yolo",
        "anchors",
        r"has 10 numbers, num=6 needs 12 \(darknet would leave the missing 2 at "
        r"make_yolo_layer's 0.5 and run with them\)",
    ),
    "classes differ": (
        nth(BASE, YOLO1, "classes=2\nnum=6\n", 2),
        10,
        "yolo",
        "classes",
        r"differs from .*:\d+: \[yolo\] classes: every \[yolo\] layer must agree",
    ),
    "mixed new_coords": (
        nth(nth(BASE, YOLO1, YOLO1 + "new_coords=1\n"), "activation=linear", "activation=logistic"),
        10,
        "yolo",
        "new_coords",
        "differs from .* one value for every",
    ),
    "new_coords without the logistic": (
        BASE.replace(YOLO1, YOLO1 + "new_coords=1\n"),
        5,
        "convolutional",
        "activation",
        r"new_coords=1 needs a \[convolutional\] with activation=logistic",
    ),
    # darknet builds heads of different anchor counts; here every head has the same
    "heads with different anchor counts": (
        nth(nth(BASE, "filters=18", "filters=12", 2), "mask=3,4,5", "mask=4,5"),
        10,
        "yolo",
        "mask",
        rf"2 anchors where .*user.cfg:{line_in(BASE, 6, 'mask')}: \[yolo\] mask has 3: every "
        r"head needs the same number of anchors here",
    ),
    "net width not a multiple of the largest stride": (
        BASE.replace("width=32", "width=30"),
        -1,
        "net",
        "width",
        r"expected \(H, W\) positive multiples of 4 \(the network's largest stride\), got "
        r"\[32, 30\] \(resize or letterbox to e.g. \[32, 32\]\)",
    ),
    "not 3 channels": (
        BASE.replace("channels=3", "channels=1"),
        -1,
        "net",
        "channels",
        "only 3-channel",
    ),
    "empty route": (
        nth(BASE, "layers=0,-1", "layers="),
        4,
        "route",
        "layers",
        r"is empty; expected one or more layer indices",
    ),
    "duplicate key": (
        nth(BASE, "filters=4\n", "filters=4\nsize=3\n"),
        3,
        "convolutional",
        "size",
        r"set twice \(first on line \d+: size=3\); darknet reads the first",
    ),
    # a [net] typo built the network at darknet's default size (widht=) or stretched the
    # images of a letterboxed network (letterbox=), silently
    "net key typo": (
        BASE.replace("channels=3", "channels=3\nwidht=96"),
        -1,
        "net",
        "widht",
        r"darknet does not read this key in \[net\]; did you mean width\?",
    ),
    "net key typo letterbox": (
        BASE.replace("channels=3", "channels=3\nletterbox=1"),
        -1,
        "net",
        "letterbox",
        "did you mean letter_box",
    ),
    # [yolo] values the loss does not take named the config key, not the cfg's line
    "iou_loss typo in one layer": (
        nth(BASE, YOLO1, YOLO1 + "iou_loss=cio\n", 2),
        10,
        "yolo",
        "iou_loss",
        r"must be one of \['mse', 'iou', 'giou', 'diou', 'ciou'\], got 'cio'",
    ),
    "yolo value out of range": (
        nth(BASE, YOLO1, YOLO1 + "ignore_thresh=1.7\n", 2),
        10,
        "yolo",
        "ignore_thresh",
        r"model.ignore_thresh must be a number in \[0, 1\], got 1.7",
    ),
    "truth_thresh below 1": (
        nth(BASE, YOLO1, YOLO1 + "truth_thresh=.9\n"),
        6,
        "yolo",
        "truth_thresh",
        r"darknet's truth_thresh < 1, .* is not implemented\), got 0.9",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_unsupported_cfg_names_file_line_section_and_key(case, tmp_path):
    text, layer, section, key, message = CASES[case]
    path = tmp_path / "user.cfg"
    path.write_text(text)
    where = f"{path}:{line_in(text, layer, key)}: [{section}]" + (f" {key}" if key else "")
    with pytest.raises(ConfigError, match=re.escape(where) + r":? .*" + message):
        build_model(cfg=path, num_classes=None)


def test_filters_for_other_classes_name_every_head_and_both_fixes(tmp_path):
    """filters=24 in both heads (3 classes) under an unedited classes=80: the message names
    both heads and offers filters=255 for 80 classes or classes=3 for the filters as they are."""
    text = BASE.replace("classes=1", "classes=80").replace("filters=18", "filters=24")
    path = tmp_path / "obj.cfg"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        build_model(cfg=path, num_classes=None)
    heads = [
        f"{path}:{line_in(text, layer, 'filters')}: [convolutional] filters" for layer in (5, 9)
    ]
    message = str(e.value)
    for where in heads:
        assert f"{where}: the layer before" in message
    assert message.count("gives 24 channels; 3 anchors x (classes=80 + 5) needs filters=255") == 2
    assert message.endswith(
        "either set filters=255 for classes=80, or set classes=3 in every [yolo] if 3 classes "
        "are meant (24 = 3 x (3 + 5))"
    )
    one = nth(BASE, "filters=18", "filters=24", 2)  # the second head only, no whole class count
    with pytest.raises(ConfigError) as e:
        build_model(cfg=one, num_classes=None)
    assert str(e.value).count("gives 24 channels") == 1
    assert str(e.value).endswith("set filters=18 for classes=1")


YOLO_HEADER = line_in(BASE, 6)  # darknet layer 6: the first [yolo]
READS_YOLO = {
    # id: (text inserted before the [route] of darknet layer 7, reading layer, its line's key)
    "route": ("[route]\nlayers=6", 7, "layers=6"),
    "route -1": ("[route]\nlayers=-1", 7, "layers=-1"),
    "shortcut from": ("[route]\nlayers=5\n\n[shortcut]\nfrom=6", 8, "from=6"),
    "conv after it": ("[convolutional]\nfilters=4\nactivation=leaky", 7, None),
    "maxpool after it": ("[maxpool]\nsize=1\nstride=1", 7, None),
}


@pytest.mark.parametrize("case", READS_YOLO)
def test_a_layer_reading_a_yolo_layer_is_refused(case, tmp_path):
    """darknet's forward_yolo_layer hands the next layers its output, the logistic of x, y,
    objectness and classes (x, y shifted by scale_x_y), and passes its delta straight back; the
    network here builds [yolo] as the identity (decode and loss live outside it), so a layer
    reading it would get the raw conv map: refused, naming the reading line and the [yolo]."""
    inserted, layer, key = READS_YOLO[case]
    text = nth(BASE, "[route]\nlayers=4", inserted + "\n\n[route]\nlayers=4")
    path = tmp_path / "user.cfg"
    path.write_text(text)
    kind = inserted.rsplit("[", 1)[1].split("]")[0]  # the reading layer: the last inserted
    where = f"{path}:{line_in(text, layer, key and key.split('=')[0])}: [{kind}]"
    where += f" {key}" if key else ""
    after = "" if key else ", the layer before it"
    message = (
        f"{where} reads the [yolo] layer at {path}:{YOLO_HEADER} (layer 6{after}); yolov4 does "
        "not build a layer that reads a [yolo] layer's output (darknet passes its "
        "logistic-activated map on)"
    )
    with pytest.raises(ConfigError) as e:
        build_model(cfg=path)
    assert str(e.value) == message


def test_overrides_of_a_cfgs_size_and_masks_are_named_as_model_keys():
    """The cfg's lines are named for the cfg's own values; an override replaces them (and is
    named as the model config key when it is the one at fault)."""
    narrow = BASE.replace("width=32", "width=30")
    assert build_model(cfg=narrow, input_size=[32, 36]).config.input_size == (32, 36)
    with pytest.raises(ConfigError, match=r"^model.input_size: expected \(H, W\) positive"):
        build_model(cfg=BASE, input_size=[32, 30])
    with pytest.raises(ConfigError, match=r"^every head needs the same number of anchors; model"):
        build_model(cfg=BASE, masks=[[0, 1, 2], [3, 4]])


def test_scale_x_y_below_1_on_one_head_matches_opencv(tmp_path, randomize):
    """darknet (and OpenCV's importer) read any scale_x_y; 0.5 on one head was refused as
    "must be >= 1 per head". Decoded outputs against OpenCV's [yolo] layer."""
    text = nth(BASE, YOLO1, YOLO1 + "scale_x_y=1.05\n")
    text = nth(text, YOLO1, YOLO1 + "scale_x_y=0.5\n", 2)
    torch.manual_seed(0)
    model = boost_heads_(randomize(build_model(cfg=text), seed=2))
    assert model.config.scale_x_y == (1.05, 0.5)
    net = opencv_net(model, tmp_path, (32, 32))
    assert_matches_opencv(model, net, torch.rand(1, 3, 32, 32))


def test_a_bad_scale_x_y_names_only_its_heads_line(tmp_path):
    text = nth(BASE, YOLO1, YOLO1 + "scale_x_y=1.05\n")
    text = nth(text, YOLO1, YOLO1 + "scale_x_y=-0.5\n", 2)
    path = tmp_path / "mine.cfg"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        build_model(cfg=path)
    assert str(e.value) == (
        f"{path}:{line_in(text, 10, 'scale_x_y')}: [yolo] scale_x_y: model.scale_x_y of head 1 "
        "(stride 4) must be a finite number > 0, got -0.5"
    )


def test_values_are_compared_as_darknet_reads_them():
    """A tab inside anchors (darknet strips every blank) or 10.0 for 10 made two [yolo] layers
    "differ"; a line before [net] said only that it could not be parsed."""
    text = nth(BASE, "anchors=4,6, 8,8", "anchors =\t4.0,6,\t8,8", 2)
    assert build_model(cfg=text).config.anchors == build_model(cfg=BASE).config.anchors
    with pytest.raises(ConfigError, match=r":1: 'batch=1' comes before any section; a darknet"):
        build_model(cfg="batch=1\n" + BASE)


def test_no_yolo_layer_names_the_file(tmp_path):
    text = BASE.split("[yolo]")[0]
    path = tmp_path / "backbone.cfg"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: has no [yolo] layer")):
        build_model(cfg=path, num_classes=None)


def test_duplicate_key_points_at_both_lines(tmp_path):
    text = CASES["duplicate key"][0]
    first = line_in(BASE, 3, "size")
    with pytest.raises(
        ConfigError, match=rf"\[convolutional\] size: set twice \(first on line {first}: size=3\)"
    ):
        build_model(cfg=text, num_classes=None)


# -- darknet's rules, against OpenCV and direct computations -------------------------------------
def layer_outputs(model, images: torch.Tensor) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Darknet layer index -> (its first input, its output) in one forward pass."""
    seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    hooks = [
        layer.register_forward_hook(
            lambda m, args, out, i=i: seen.__setitem__(
                i, (args[0][0] if isinstance(args[0], list) else args[0], out)
            )
        )
        for i, layer in enumerate(model.layers)
    ]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for h in hooks:
            h.remove()
    return seen


def test_base_cfg_matches_opencv(tmp_path, randomize):
    torch.manual_seed(0)
    model = boost_heads_(randomize(build_model(cfg=BASE, num_classes=None), seed=5))
    net = opencv_net(model, tmp_path, (32, 32))
    for hw in ((32, 32), (24, 40)):
        assert_matches_opencv(model, net, torch.rand(1, 3, *hw))


@pytest.mark.parametrize("hw", [(16, 16), (12, 20)])
def test_maxpool_size_2_stride_1_pads_right_and_bottom(hw, randomize):
    """darknet: padding = size - 1 = 1, the window starting at the cell itself (offset
    -padding / 2 = 0), cells past the right/bottom edge never win: the map keeps its size."""
    model = randomize(build_model(cfg=BASE, num_classes=None), seed=1)
    x, out = layer_outputs(model, torch.rand(1, 3, *hw) * 2 - 1)[1]
    assert out.shape == x.shape
    x = x[0].numpy()
    c, h, w = x.shape
    padded = np.full((c, h + 1, w + 1), -np.inf, dtype=x.dtype)
    padded[:, :h, :w] = x
    want = np.max([padded[:, dy : dy + h, dx : dx + w] for dy in (0, 1) for dx in (0, 1)], 0)
    np.testing.assert_array_equal(out[0].numpy(), want)
    assert not np.array_equal(want[:, -1], x[:, -1])  # the last row is not a copy: max of 2


def test_grouped_and_absolute_routes(randomize):
    model = randomize(build_model(cfg=BASE, num_classes=None), seed=2)
    seen = layer_outputs(model, torch.rand(1, 3, 16, 16))
    pool = seen[1][1]
    torch.testing.assert_close(seen[2][1], pool[:, 4:], rtol=0, atol=0)  # groups=2 group_id=1
    torch.testing.assert_close(seen[4][1], torch.cat((seen[0][1], seen[3][1]), 1), rtol=0, atol=0)
    torch.testing.assert_close(seen[7][1], seen[4][1], rtol=0, atol=0)  # layers=4: absolute


# darknet's other section names (parser.c string_to_layer_type): [network], [conv], [max]
ALIASED = nth(nth(BASE, "[net]", "[network]"), "[convolutional]", "[conv]", 2).replace(
    "[maxpool]", "[max]"
)


def test_darknets_other_section_names_build_the_same_network(tmp_path, randomize):
    """[conv], [max] and [network] are darknet's [convolutional], [maxpool] and [net]: the same
    modules and outputs; written back under the names OpenCV's importer reads (it refuses the
    others), where it agrees with the model."""
    canonical = randomize(build_model(cfg=BASE), seed=4)
    model = build_model(cfg=ALIASED)
    model.load_state_dict(canonical.state_dict())
    model.eval()
    assert [type(m) for m in model.layers] == [type(m) for m in canonical.layers]
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        for ours, ref in zip(model(images), canonical(images)):
            torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    written = write_darknet_cfg(model)
    assert [s for s, _ in read_darknet_cfg(written)] == [s for s, _ in read_darknet_cfg(BASE)]
    assert "[conv]" not in written and "[max]" not in written and "[network]" not in written
    boost_heads_(model)
    net = opencv_net(model, tmp_path, (32, 32))
    assert_matches_opencv(model, net, images)


def test_an_aliased_section_is_named_as_written(tmp_path):
    text = ALIASED.replace("size=2\nstride=1", "size=2\nstride=1\nmaxpool_depth=1")
    path = tmp_path / "user.cfg"
    path.write_text(text)
    where = f"{path}:{line_in(text, 1, 'maxpool_depth')}: [max] maxpool_depth: key not supported"
    with pytest.raises(ConfigError, match=re.escape(where)):
        build_model(cfg=path)


# -- [yolo] layers in any order, 4-anchor heads --------------------------------------------------
@pytest.mark.parametrize(
    "name", ["yolov3", "yolov3-spp", "yolov3-tiny", "yolov4-tiny-3l", "yolov4"]
)
def test_yolo_layers_in_any_order(name):
    """yolov3's first [yolo] is its stride-32 head: the model's heads are in ascending stride,
    each with the mask its own [yolo] section has in the file."""
    model = meta_model(name, 3)
    sections = read_darknet_cfg((CFG_DIR / f"{name}.cfg").read_text())[1:]
    file_masks = {
        i: tuple(int(v) for v in d["mask"].split(","))
        for i, (kind, d) in enumerate(sections)
        if kind == "yolo"
    }
    assert list(model.strides) == sorted(model.strides)
    assert len(model.head_layers) == len(file_masks)
    assert model.config.masks == tuple(file_masks[i + 1] for i in model.head_layers)
    with torch.device("meta"):  # shapes only
        maps = model(torch.rand(1, 3, 64, 96))
    assert [(64 // m.shape[-2], 96 // m.shape[-1]) for m in maps] == [(s, s) for s in model.strides]
    if name == "yolov3":
        assert next(iter(file_masks.values())) == (6, 7, 8) and model.strides == (8, 16, 32)
        assert model.head_layers == (105, 93, 81)


@pytest.mark.parametrize("name, heads", [("yolov4-p5", 3), ("yolov4-p6", 4)])
def test_four_anchor_heads(name, heads):
    model = meta_model(name, 3)
    c = model.config
    assert c.num_anchors == 4 and len(c.anchors) == 4 * heads
    assert c.masks == tuple(tuple(range(4 * h, 4 * h + 4)) for h in range(heads))
    assert [conv.conv.out_channels for conv in model.head_convs()] == [4 * (3 + 5)] * heads
    assert model.strides == (8, 16, 32, 64)[:heads]


# -- [net] letter_box, stopbackward --------------------------------------------------------------
def test_letter_box_is_read_from_net():
    boxed = build_model(
        cfg=BASE.replace("channels=3", "channels=3\nletter_box=1"), num_classes=None
    )
    assert boxed.config.letter_box is True
    assert "letter_box=1" in write_darknet_cfg(boxed)
    assert build_model(cfg=BASE, num_classes=None).config.letter_box is False
    for name in ZOO:
        model = meta_model(name)
        text = (CFG_DIR / f"{name}.cfg").read_text()
        assert model.config.letter_box is bool(re.search(r"^letter_box=1", text, re.M)), name
    assert meta_model("yolov4-csp").config.letter_box is True
    assert meta_model("yolov4").config.letter_box is False


@pytest.mark.parametrize("name", ZOO)
def test_zoo_stopbackward(name):
    model = meta_model(name)
    sections = read_darknet_cfg((CFG_DIR / f"{name}.cfg").read_text())[1:]
    want = tuple(
        (i, int(d["stopbackward"])) for i, (_, d) in enumerate(sections) if "stopbackward" in d
    )
    assert model.stop_backward == want
    if name in ("yolov4x-mish", "yolov4-csp-swish", "yolov4-csp-x-swish"):
        assert len(want) == 1 and want[0][1] in (800, 900)


def grads_after_backward(model, iteration: int) -> dict[int, bool]:
    """Darknet layer index -> whether its conv got a (non-zero) gradient in one training step."""
    model.train()
    model.iteration = iteration
    model.zero_grad(set_to_none=True)
    maps = model(torch.rand(2, 3, 16, 16))
    sum(m.square().mean() for m in maps).backward()
    return {
        i: m.conv.weight.grad is not None and bool(m.conv.weight.grad.abs().sum() > 0)
        for i, m in model.conv_layers()
    }


def test_stopbackward_freezes_layers_up_to_it_for_n_iterations():
    """darknet (backward_network_gpu): at a layer with stopbackward=N > current iteration the
    backward pass stops: that layer and every one before it get no gradient, also through a
    later route to an earlier layer (layer 4 routes layer 0)."""
    text = nth(BASE, "activation=mish", "activation=mish\nstopbackward=3")
    torch.manual_seed(0)
    model = build_model(cfg=text, num_classes=None)
    assert model.stop_backward == ((3, 3),)
    frozen = grads_after_backward(model, iteration=0)
    assert frozen == {0: False, 3: False, 5: True, 8: True, 9: True}
    assert grads_after_backward(model, iteration=2) == frozen
    assert all(grads_after_backward(model, iteration=3).values())
    model.eval()  # inference: nothing to stop
    assert all(o.requires_grad for o in model(torch.rand(1, 3, 16, 16)))


def test_stopbackward_1_freezes_for_good():
    text = nth(BASE, "activation=leaky", "activation=leaky\nstopbackward=1")
    model = build_model(cfg=text, num_classes=None)
    assert model.stop_backward == ((0, 1),)
    grads = grads_after_backward(model, iteration=10**6)
    assert grads[0] is False and grads[3] is True


def test_cfg_path_and_text_give_the_same_network(tmp_path):
    path = tmp_path / "net.cfg"
    path.write_text(BASE)
    with torch.device("meta"):
        from_path = build_model(cfg=path, num_classes=None)
        from_text = build_model(cfg=BASE, num_classes=None)
    assert from_path.config.name == "net" and from_text.config.name == "custom"
    assert {k: v.shape for k, v in from_path.state_dict().items()} == {
        k: v.shape for k, v in from_text.state_dict().items()
    }
    assert Path(path).read_text() == from_path.config.cfg


def layer_params(model) -> list:
    return [(s.kind, s.inputs, s.channels, s.stride, s.params) for s in model._specs]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("[maxpool]\nsize=2\nstride=2", "[maxpool]\nstride=2"),  # darknet: size = stride
        ("size=3\nstride=2\npad=1", "size=3\nstride=2\npad=1\npadding=0"),  # pad=1 wins
    ],
)
def test_darknets_defaults_where_a_key_is_left_out_or_overridden(old, new):
    """darknet's parser: [maxpool] size defaults to its stride; [convolutional] pad=1 pads
    size // 2 whatever padding= says. The edited yolov4-tiny is yolov4-tiny."""
    text = (CFG_DIR / "yolov4-tiny.cfg").read_text()
    assert old in text
    with torch.device("meta"):
        zoo = build_model("yolov4-tiny", num_classes=80)
        edited = build_model(cfg=text.replace(old, new, 1), num_classes=80)
    assert layer_params(edited) == layer_params(zoo)


def test_cfg_files_of_any_line_end_or_with_a_bom_read_as_the_text(tmp_path):
    """Windows (CRLF), old Mac (CR) and a UTF-8 byte-order mark (Notepad); bytes as text."""
    with torch.device("meta"):
        want = layer_params(build_model(cfg=BASE, num_classes=None))
        for name, data in {
            "crlf": BASE.replace("\n", "\r\n").encode(),
            "cr": BASE.replace("\n", "\r").encode(),
            "bom": b"\xef\xbb\xbf" + BASE.encode(),
        }.items():
            (tmp_path / f"{name}.cfg").write_bytes(data)
            model = build_model(cfg=tmp_path / f"{name}.cfg", num_classes=None)
            assert layer_params(model) == want, name
            assert model.config.cfg == BASE, name
        assert layer_params(build_model(cfg=BASE.encode(), num_classes=None)) == want


@pytest.mark.parametrize("cfg", ["", "  ", 5])
def test_a_cfg_that_is_neither_a_path_nor_text_is_named(cfg):
    with pytest.raises(ConfigError, match=r"cfg must be a path to a darknet cfg file or its text"):
        build_model(cfg=cfg, num_classes=None)
