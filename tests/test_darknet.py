"""Darknet interchange: cfg text, .weights files, and OpenCV's darknet importer as the reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from yolov4 import CheckpointError, build_model, fuse_model
from yolov4.darknet import (
    darknet_float_count,
    load_darknet_weights,
    read_darknet_cfg,
    save_darknet_weights,
    write_darknet_cfg,
)
from yolov4.models.layers import Route

# darknet's yolov4.cfg and yolov4-tiny.cfg, one token per layer, routes/shortcuts as absolute
# layer indices: C<filters>/<size>/<stride><act> conv with BN (c: no BN, bias), m/l/x =
# mish/leaky/linear; R routes (g<groups>.<group_id>); S shortcut from; M maxpool size/stride;
# U upsample; Y yolo mask.
YOLOV4_LAYERS = (
    "C32/3/1m C64/3/2m C64/1/1m R1 C64/1/1m C32/1/1m C64/3/1m S4 C64/1/1m R8,2 C64/1/1m "
    "C128/3/2m C64/1/1m R11 C64/1/1m C64/1/1m C64/3/1m S14 C64/1/1m C64/3/1m S17 C64/1/1m "
    "R21,12 C128/1/1m C256/3/2m C128/1/1m R24 C128/1/1m C128/1/1m C128/3/1m S27 C128/1/1m "
    "C128/3/1m S30 C128/1/1m C128/3/1m S33 C128/1/1m C128/3/1m S36 C128/1/1m C128/3/1m S39 "
    "C128/1/1m C128/3/1m S42 C128/1/1m C128/3/1m S45 C128/1/1m C128/3/1m S48 C128/1/1m R52,25 "
    "C256/1/1m C512/3/2m C256/1/1m R55 C256/1/1m C256/1/1m C256/3/1m S58 C256/1/1m C256/3/1m "
    "S61 C256/1/1m C256/3/1m S64 C256/1/1m C256/3/1m S67 C256/1/1m C256/3/1m S70 C256/1/1m "
    "C256/3/1m S73 C256/1/1m C256/3/1m S76 C256/1/1m C256/3/1m S79 C256/1/1m R83,56 C512/1/1m "
    "C1024/3/2m C512/1/1m R86 C512/1/1m C512/1/1m C512/3/1m S89 C512/1/1m C512/3/1m S92 "
    "C512/1/1m C512/3/1m S95 C512/1/1m C512/3/1m S98 C512/1/1m R102,87 C1024/1/1m C512/1/1l "
    "C1024/3/1l C512/1/1l M5/1 R107 M9/1 R107 M13/1 R112,110,108,107 C512/1/1l C1024/3/1l "
    "C512/1/1l C256/1/1l U2 R85 C256/1/1l R120,118 C256/1/1l C512/3/1l C256/1/1l C512/3/1l "
    "C256/1/1l C128/1/1l U2 R54 C128/1/1l R130,128 C128/1/1l C256/3/1l C128/1/1l C256/3/1l "
    "C128/1/1l C256/3/1l c255/1/1x Y0.1.2 R136 C256/3/2l R141,126 C256/1/1l C512/3/1l "
    "C256/1/1l C512/3/1l C256/1/1l C512/3/1l c255/1/1x Y3.4.5 R147 C512/3/2l R152,116 "
    "C512/1/1l C1024/3/1l C512/1/1l C1024/3/1l C512/1/1l C1024/3/1l c255/1/1x Y6.7.8 "
)
TINY_LAYERS = (
    "C32/3/2l C64/3/2l C64/3/1l R2g2.1 C32/3/1l C32/3/1l R5,4 C64/1/1l R2,7 M2/2 C128/3/1l "
    "R10g2.1 C64/3/1l C64/3/1l R13,12 C128/1/1l R10,15 M2/2 C256/3/1l R18g2.1 C128/3/1l "
    "C128/3/1l R21,20 C256/1/1l R18,23 M2/2 C512/3/1l C256/1/1l C512/3/1l c255/1/1x Y3.4.5 "
    "R27 C128/1/1l U2 R33,23 C256/3/1l c255/1/1x Y1.2.3 "
)

# Sizes of the official files: yolov4.weights is 257,717,640 bytes (64,429,405 floats),
# yolov4-tiny.weights 24,251,276 bytes; both carry the 20-byte header.
HEADER_BYTES = 20
YOLOV4_FLOATS = 64_429_405
YOLOV4_BYTES = 257_717_640
TINY_BYTES = 24_251_276


def layer_tokens(cfg_text: str) -> str:
    tokens = []
    for i, (kind, d) in enumerate(read_darknet_cfg(cfg_text)[1:]):
        if kind == "convolutional":
            act = {"mish": "m", "leaky": "l", "linear": "x"}[d["activation"]]
            bn = "C" if d.get("batch_normalize", "0") == "1" else "c"
            tokens.append(f"{bn}{d['filters']}/{d['size']}/{d.get('stride', '1')}{act}")
        elif kind == "route":
            srcs = [int(x) + i if int(x) < 0 else int(x) for x in d["layers"].split(",")]
            group = f"g{d['groups']}.{d['group_id']}" if "groups" in d else ""
            tokens.append("R" + ",".join(map(str, srcs)) + group)
        elif kind == "shortcut":
            tokens.append(f"S{int(d['from']) + i}")
        elif kind == "maxpool":
            tokens.append(f"M{d['size']}/{d['stride']}")
        elif kind == "upsample":
            tokens.append(f"U{d['stride']}")
        elif kind == "yolo":
            tokens.append("Y" + d["mask"].replace(",", "."))
    return " ".join(tokens)


# -- cfg ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, expected", [("yolov4", YOLOV4_LAYERS), ("yolov4-tiny", TINY_LAYERS)]
)
def test_written_cfg_has_darknets_layers(name, expected):
    with torch.device("meta"):
        model = build_model(name)
    assert layer_tokens(write_darknet_cfg(model)).split() == expected.split()


def test_written_cfg_yolo_and_net_sections():
    with torch.device("meta"):
        model = build_model("yolov4", num_classes=3)
    sections = read_darknet_cfg(write_darknet_cfg(model, input_size=(320, 416)))
    net = sections[0][1]
    assert sections[0][0] == "net" and (net["width"], net["height"], net["channels"]) == (
        "416",
        "320",
        "3",
    )
    yolos = [d for kind, d in sections if kind == "yolo"]
    assert [d["mask"] for d in yolos] == ["0,1,2", "3,4,5", "6,7,8"]
    assert [d["scale_x_y"] for d in yolos] == ["1.2", "1.1", "1.05"]
    assert all(d["classes"] == "3" and d["num"] == "9" for d in yolos)
    assert yolos[0]["anchors"] == "12,16,19,36,40,28,36,75,76,55,72,146,142,110,192,243,459,401"
    assert yolos[0]["iou_thresh"] == "0.213" and yolos[0]["max_delta"] == "5"
    heads = [d for kind, d in sections if kind == "convolutional" and d["activation"] == "linear"]
    assert [d["filters"] for d in heads] == ["24"] * 3


def test_read_cfg_ignores_comments_and_spaces():
    text = "[net]\n# c\nwidth = 416 # w\n\n[route]\nlayers = -1, 23\n"
    assert read_darknet_cfg(text) == [("net", {"width": "416"}), ("route", {"layers": "-1,23"})]


# -- weights ------------------------------------------------------------------------------------
def read_header(path: Path) -> tuple[np.ndarray, int]:
    data = path.read_bytes()
    return np.frombuffer(data, "<i4", 3), int(np.frombuffer(data, "<u8", 1, 12)[0])


def test_yolov4_float_count_and_file_size(tmp_path):
    with torch.device("meta"):
        assert darknet_float_count(build_model("yolov4")) == YOLOV4_FLOATS
    assert HEADER_BYTES + 4 * YOLOV4_FLOATS == YOLOV4_BYTES
    path = save_darknet_weights(build_model("yolov4"), tmp_path / "yolov4.weights", seen=123)
    assert path.stat().st_size == YOLOV4_BYTES
    (major, minor, revision), seen = read_header(path)
    assert (major * 10 + minor >= 2) and seen == 123


def test_tiny_file_size(tmp_path):
    path = save_darknet_weights(build_model("yolov4-tiny"), tmp_path / "tiny.weights")
    assert path.stat().st_size == TINY_BYTES
    assert not list(tmp_path.glob("*.tmp"))  # written atomically: no temporary left behind


def test_save_load_round_trip_is_exact(tmp_path, tiny80):
    path = save_darknet_weights(tiny80, tmp_path / "t.weights", seen=64_000)
    fresh = build_model("yolov4-tiny")
    header = load_darknet_weights(fresh, path)
    assert header.seen == 64_000 and header.layers_loaded == 38
    ref = tiny80.state_dict()
    for key, value in fresh.state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(value, ref[key]), key


def test_old_header_with_uint32_seen(tmp_path, tiny80):
    new = save_darknet_weights(tiny80, tmp_path / "new.weights")
    floats = new.read_bytes()[HEADER_BYTES:]
    old = tmp_path / "old.weights"
    old.write_bytes(np.array([0, 1, 0], "<i4").tobytes() + np.array([77], "<u4").tobytes() + floats)
    fresh = build_model("yolov4-tiny")
    header = load_darknet_weights(fresh, old)
    assert (header.major, header.minor, header.seen) == (0, 1, 77)
    assert torch.equal(fresh.layers[37 - 1].conv.weight, tiny80.layers[36].conv.weight)


def test_wrong_num_classes_names_counts_and_cause(tmp_path):
    path = save_darknet_weights(build_model("yolov4-tiny", num_classes=80), tmp_path / "t.weights")
    model = build_model("yolov4-tiny", num_classes=3)
    expected, found = darknet_float_count(model), (TINY_BYTES - HEADER_BYTES) // 4
    msg = rf"need {expected:,} floats after the header, found {found:,}.*yolov4-tiny with num_classes=80"
    with pytest.raises(CheckpointError, match=msg):
        load_darknet_weights(model, path)


def test_wrong_model_names_the_right_one(tmp_path):
    path = save_darknet_weights(build_model("yolov4-tiny", num_classes=20), tmp_path / "t.weights")
    with torch.device("meta"):
        model = build_model("yolov4", num_classes=20)
    with pytest.raises(CheckpointError, match="it fits yolov4-tiny with num_classes=20"):
        load_darknet_weights(model, path)


@pytest.mark.parametrize("cut", [3, 4 * 1000, 11])
def test_truncated_file(tmp_path, cut):
    path = save_darknet_weights(build_model("yolov4-tiny", num_classes=2), tmp_path / "t.weights")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - cut])
    with pytest.raises(CheckpointError, match="truncated|found"):
        load_darknet_weights(build_model("yolov4-tiny", num_classes=2), path)


@pytest.mark.parametrize("extra", [6, -6])
def test_a_file_longer_than_the_network_is_not_called_truncated(tmp_path, extra):
    """24 bytes more than yolov4-tiny's floats: "or it is truncated" was said of it too."""
    path = save_darknet_weights(build_model("yolov4-tiny", num_classes=2), tmp_path / "t.weights")
    data = path.read_bytes()
    path.write_bytes(data + bytes(4 * extra) if extra > 0 else data[: 4 * extra])
    model = build_model("yolov4-tiny", num_classes=2)
    expected = darknet_float_count(model)
    with pytest.raises(CheckpointError) as e:
        load_darknet_weights(model, path)
    message = str(e.value)
    assert f"need {expected:,} floats after the header, found {expected + extra:,}: " in message
    if extra > 0:
        assert message.endswith(
            f"it is {extra} floats longer than the network needs; usually the file is for "
            "another model or num_classes"
        )
        assert "truncated" not in message
    else:
        assert message.endswith("for another model or num_classes, or it is truncated")


def test_a_user_cfgs_file_for_other_classes_names_the_classes_it_fits(tmp_path):
    """A user's cfg with its weights trained for 5 classes, built with 1: the file fits this
    cfg with classes=5 (before, only "usually the file is for another model or num_classes")."""
    from tests.models.test_cfg import BASE

    path = save_darknet_weights(build_model(cfg=BASE, num_classes=5), tmp_path / "five.weights")
    model = build_model(cfg=BASE)
    assert model.num_classes == 1
    with pytest.raises(CheckpointError, match=r"found [\d,]+: it fits this cfg with classes=5 "):
        load_darknet_weights(model, path)
    from yolov4.darknet import darknet_file_classes

    assert darknet_file_classes(model.config, path) == 5  # evaluate.py's check, same count


@pytest.mark.parametrize("content", [b"", b"hello", b"not a weights file at all, just text\n" * 3])
def test_not_a_weights_file(tmp_path, content):
    path = tmp_path / "x.weights"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="truncated|not darknet weights|found"):
        load_darknet_weights(build_model("yolov4-tiny", num_classes=2), path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="cannot read darknet weights"):
        load_darknet_weights(build_model("yolov4-tiny", num_classes=2), tmp_path / "nope.weights")


def test_partial_backbone_file(tmp_path, tiny80):
    cut = tiny80.backbone_layer_count()
    assert cut == 29  # darknet's yolov4-tiny.conv.29: layers 0-28, all but the head convs
    path = save_darknet_weights(tiny80, tmp_path / "tiny.partial", upto=cut)
    assert path.stat().st_size == HEADER_BYTES + 4 * darknet_float_count(tiny80, upto=cut)

    fresh = build_model("yolov4-tiny", num_classes=5)  # another class count: heads are not read
    with pytest.raises(
        CheckpointError,
        match=r"first 17 convolutional layers \(darknet layers 0-28\).*upto=29 or backbone_only=True",
    ):
        load_darknet_weights(fresh, path)
    head_before = fresh.layers[29].conv.weight.clone()
    header = load_darknet_weights(fresh, path, backbone_only=True)
    assert header.layers_loaded == cut
    ref = tiny80.state_dict()
    for key, value in fresh.state_dict().items():
        index = int(key.split(".")[1])
        if index < cut:
            assert torch.equal(value, ref[key]), key
    assert torch.equal(fresh.layers[29].conv.weight, head_before)


def test_upto_reads_a_prefix_of_a_full_file(tmp_path, tiny80):
    path = save_darknet_weights(tiny80, tmp_path / "t.weights")
    fresh = build_model("yolov4-tiny")
    load_darknet_weights(fresh, path, upto=29)  # like darknet's yolov4-tiny.conv.29
    assert torch.equal(fresh.layers[28].conv.weight, tiny80.layers[28].conv.weight)
    assert not torch.equal(fresh.layers[29].conv.weight, tiny80.layers[29].conv.weight)


def test_exact_upto_refuses_a_longer_file(tmp_path, tiny80):
    full = save_darknet_weights(tiny80, tmp_path / "t.weights")
    with pytest.raises(CheckpointError, match="it fits yolov4-tiny with num_classes=80"):
        load_darknet_weights(build_model("yolov4-tiny"), full, upto=29, exact=True)
    partial = save_darknet_weights(tiny80, tmp_path / "t.conv.29", upto=29)
    fresh = build_model("yolov4-tiny")
    load_darknet_weights(fresh, partial, upto=29, exact=True)
    assert torch.equal(fresh.layers[28].conv.weight, tiny80.layers[28].conv.weight)


def test_fused_model_is_refused(tmp_path, tiny80):
    with pytest.raises(CheckpointError, match="unfused"):
        save_darknet_weights(fuse_model(tiny80), tmp_path / "f.weights")


# -- OpenCV's darknet importer as an independent implementation ---------------------------------
def opencv_head_maps(model, tmp_path: Path, images: torch.Tensor) -> list[np.ndarray]:
    """Raw head maps from OpenCV's DNN module reading our cfg + weights, ascending stride."""
    import cv2

    h, w = images.shape[-2:]
    cfg, weights = tmp_path / "model.cfg", tmp_path / "model.weights"
    cfg.write_text(write_darknet_cfg(model, input_size=(h, w)))
    save_darknet_weights(model, weights)
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    # OpenCV names a darknet conv layer conv_<layer index>; take the conv before each [yolo]
    # (model.head_layers: ascending stride, whatever the cfg's order).
    names = [f"conv_{i}" for i in model.head_layers]
    net.setInput(images.numpy())
    return list(net.forward(names))


def assert_maps_equal(model, maps: list[np.ndarray], images: torch.Tensor) -> None:
    with torch.no_grad():
        ours = model(images)
    assert len(ours) == len(maps)
    for o, ref in zip(ours, maps):
        assert o.std() > 0.1
        np.testing.assert_allclose(o.numpy(), ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))


def test_a_conv_without_activation_is_written_as_darknets_logistic(tmp_path, randomize):
    """darknet's parse_convolutional defaults activation to logistic (so does the builder);
    OpenCV's importer reads a conv without the key as linear, so the written cfg says it."""
    from tests.models.test_cfg import BASE, nth
    from tests.models.test_zoo import assert_matches_opencv, boost_heads_, opencv_net

    text = nth(BASE, "activation=mish\n", "")  # darknet layer 3
    model = boost_heads_(randomize(build_model(cfg=text), seed=4))
    assert model.layers[3].act_name == "logistic"
    written = read_darknet_cfg(write_darknet_cfg(model))
    given = read_darknet_cfg(text)
    assert written[4] == ("convolutional", {**given[4][1], "activation": "logistic"})
    assert [s for i, s in enumerate(written) if i != 4] == [
        s for i, s in enumerate(given) if i != 4
    ]
    net = opencv_net(model, tmp_path, (32, 32))  # the written cfg and weights
    assert_matches_opencv(model, net, torch.rand(1, 3, 32, 32))


@pytest.mark.parametrize("num_classes, hw", [(80, (416, 416)), (3, (160, 288)), (7, (224, 96))])
def test_tiny_matches_opencv(tmp_path, randomize, num_classes, hw):
    torch.manual_seed(num_classes)
    model = randomize(build_model("yolov4-tiny", num_classes=num_classes), seed=num_classes)
    images = torch.rand(2, 3, *hw)
    assert_maps_equal(model, opencv_head_maps(model, tmp_path, images), images)


def test_tiny_takes_the_second_half_of_grouped_routes(tmp_path, tiny80, monkeypatch):
    """The known port bug (the first half for `groups=2 group_id=1`) disagrees with OpenCV."""
    images = torch.rand(1, 3, 128, 128)
    maps = opencv_head_maps(tiny80, tmp_path, images)
    assert_maps_equal(tiny80, maps, images)

    def first_half_forward(self, xs):
        if self.groups > 1:
            xs = [x.chunk(self.groups, 1)[0] for x in xs]
        return xs[0] if len(xs) == 1 else torch.cat(xs, 1)

    monkeypatch.setattr(Route, "forward", first_half_forward)
    with torch.no_grad():
        buggy = tiny80(images)
    assert not np.allclose(buggy[0].numpy(), maps[0], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("hw", [(256, 352)])
def test_yolov4_matches_opencv(tmp_path, yolov4_3cls, hw):
    images = torch.rand(1, 3, *hw)
    assert_maps_equal(yolov4_3cls, opencv_head_maps(yolov4_3cls, tmp_path, images), images)


def test_fit_hint_counts_equal_the_built_networks():
    """The error hint counts each zoo network's floats from its layer list, without modules."""
    from yolov4.darknet import _zoo_float_count
    from yolov4.models import available_models

    for name in available_models():
        for classes in (1, 80):
            with torch.device("meta"):
                model = build_model(name, num_classes=classes)
            assert _zoo_float_count(name, classes) == darknet_float_count(model), (name, classes)


def test_seen_is_kept_through_a_load_save_round_trip(tmp_path):
    """darknet reads ``seen`` for its burn-in when fine-tuning: a loaded file writes it back."""
    path = save_darknet_weights(
        build_model("yolov4-tiny", num_classes=2), tmp_path / "a.weights", seen=123456
    )
    model = build_model("yolov4-tiny", num_classes=2)
    assert load_darknet_weights(model, path).seen == 123456
    again = save_darknet_weights(model, tmp_path / "b.weights")
    assert again.read_bytes() == path.read_bytes()
    assert load_darknet_weights(model, again).seen == 123456
    fresh = save_darknet_weights(build_model("yolov4-tiny", num_classes=2), tmp_path / "c.weights")
    assert load_darknet_weights(model, fresh).seen == 0  # a new model has seen nothing
    assert save_darknet_weights(model, tmp_path / "d.weights", seen=9) and (
        load_darknet_weights(model, tmp_path / "d.weights").seen == 9
    )


@pytest.mark.parametrize(
    "key, index, value",
    [("bn.running_var", 7, float("nan")), ("conv.weight", 100, float("-inf"))],
)
def test_non_finite_floats_are_refused_naming_the_tensor(tmp_path, tiny80, key, index, value):
    """NaN/inf in a .weights file: CheckpointError naming the first tensor that holds one (its
    darknet layer and element), and the model keeps the weights it had."""
    bad = build_model("yolov4-tiny")
    bad.load_state_dict(tiny80.state_dict())
    bad.state_dict()[f"layers.12.{key}"].view(-1)[index] = value  # shares the storage
    path = save_darknet_weights(bad, tmp_path / "nan.weights")
    fresh = build_model("yolov4-tiny")
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(CheckpointError) as e:
        load_darknet_weights(fresh, path)
    msg = str(e.value)
    assert "nan.weights: 1 non-finite floats" in msg and f"({value})" in msg
    assert f"in layers.12.{key} (darknet layer 12, element {index})" in msg
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())
    # a partial load that stops before the bad layer reads only finite floats
    assert load_darknet_weights(fresh, path, upto=12).layers_loaded == 12


def test_a_letterbox_checkpoint_written_as_darknet_files_is_read_back_letterboxed(tmp_path):
    from yolov4 import load_checkpoint, save_checkpoint
    from yolov4.inference.darknet import darknet_checkpoint

    model = build_model("yolov4-tiny", num_classes=2, input_size=[64, 64])
    path = save_checkpoint(tmp_path / "m.pt", model, ["a", "b"], {"mode": "letterbox"})
    ckpt = load_checkpoint(path)
    cfg = tmp_path / "run.cfg"
    cfg.write_text(write_darknet_cfg(ckpt.model, letter_box=ckpt.preprocess.mode == "letterbox"))
    assert read_darknet_cfg(cfg.read_text())[0][1]["letter_box"] == "1"
    weights = save_darknet_weights(ckpt.model, tmp_path / "run.weights")
    back = darknet_checkpoint(cfg, weights, ["a", "b"])
    assert back.preprocess.mode == "letterbox" and back.preprocess.input_size == (64, 64)
    assert "letter_box" not in read_darknet_cfg(write_darknet_cfg(ckpt.model))[0][1]  # as built


@pytest.mark.parametrize("head", [b"PK\x03\x04", b"\x80\x02}q\x00"])
def test_a_pytorch_file_named_weights_is_named_as_one(tmp_path, head):
    """torch.save's zip (or a legacy pickle), renamed .weights or cut short: not read as floats."""
    path = tmp_path / "x.weights"
    path.write_bytes(head + bytes(4 * 1000))
    with pytest.raises(CheckpointError, match="is a PyTorch file .* not darknet weights"):
        load_darknet_weights(build_model("yolov4-tiny", num_classes=2), path)


@pytest.mark.parametrize("header", [(-1, 2, 0), (0, 2, 10**6), (70000, 0, 0)])
def test_a_header_that_is_not_darknets_is_refused(tmp_path, header):
    model = build_model("yolov4-tiny", num_classes=2)
    path = save_darknet_weights(model, tmp_path / "t.weights")
    data = bytearray(path.read_bytes())
    data[:12] = np.array(header, "<i4").tobytes()
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"header major {header[0]}, .* is not darknet's"):
        load_darknet_weights(model, path)


@pytest.mark.parametrize("upto", [0, -1, 5.5, True, 10**3])
def test_upto_outside_the_networks_layers_is_refused(tmp_path, upto):
    model = build_model("yolov4-tiny", num_classes=2)
    path = save_darknet_weights(model, tmp_path / "t.weights")
    for call in (
        lambda: load_darknet_weights(model, path, upto=upto),
        lambda: save_darknet_weights(model, tmp_path / "u.weights", upto=upto),
    ):
        with pytest.raises(CheckpointError, match=r"upto must be a darknet layer count in 1\.\.38"):
            call()
    assert not (tmp_path / "u.weights").exists()


@pytest.mark.parametrize("seen", [-1, 2**64, 1.5])
def test_seen_must_fit_the_header(tmp_path, seen):
    with pytest.raises(CheckpointError, match=r"seen .* must be an int >= 0"):
        save_darknet_weights(
            build_model("yolov4-tiny", num_classes=2), tmp_path / "t.weights", seen
        )


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"input_size": (100, 100)}, r"input_size: expected \(H, W\) positive multiples of 32"),
        ({"input_size": 64}, r"input_size: expected \(H, W\)"),
        ({"letter_box": "no"}, r"letter_box must be true, false or None, got 'no'"),
    ],
)
def test_write_darknet_cfg_refuses_what_no_reader_takes(kwargs, named):
    """A cfg of width=100 was written, and build_model refused it on the way back."""
    from yolov4 import ConfigError

    with pytest.raises(ConfigError, match=named):
        write_darknet_cfg(build_model("yolov4-tiny", num_classes=2), **kwargs)
