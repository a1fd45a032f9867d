"""The networks: parameter counts, the forward contract, input errors, config, fusing."""

from __future__ import annotations

import pytest
import torch

from yolov4 import ConfigError, InputError, ModelConfig, build_model, fuse_model
from yolov4.models.layers import BN_EPS

# Learnable parameters with 80 classes, as darknet's yolov4.cfg / yolov4-tiny.cfg define them.
YOLOV4_PARAMS = 64_363_101
TINY_PARAMS = 6_056_606


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(
    "name, expected", [("yolov4", YOLOV4_PARAMS), ("yolov4-tiny", TINY_PARAMS)]
)
def test_parameter_count_matches_darknet(name, expected):
    with torch.device("meta"):
        model = build_model(name, num_classes=80)
    assert n_params(model) == expected


def test_bn_eps_is_darknets():
    model = build_model("yolov4-tiny", num_classes=2)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(bn.eps == BN_EPS == 1e-5 for bn in bns)


@pytest.mark.parametrize("hw", [(64, 64), (96, 160), (160, 96)])
@pytest.mark.parametrize("num_classes", [1, 80])
def test_tiny_output_shapes(hw, num_classes):
    model = build_model("yolov4-tiny", num_classes=num_classes).eval()
    h, w = hw
    with torch.no_grad():
        outs = model(torch.rand(2, 3, h, w))
    assert [tuple(o.shape) for o in outs] == [
        (2, 3 * (5 + num_classes), h // s, w // s) for s in (16, 32)
    ]


def test_yolov4_output_shapes_ascending_stride(yolov4_3cls):
    with torch.no_grad():
        outs = yolov4_3cls(torch.rand(1, 3, 96, 128))
    assert [tuple(o.shape) for o in outs] == [(1, 24, 96 // s, 128 // s) for s in (8, 16, 32)]
    assert yolov4_3cls.strides == (8, 16, 32)


def test_config_is_stored_on_the_model():
    with torch.device("meta"):
        model = build_model("yolov4", num_classes=5)
    c = model.config
    assert c.num_classes == 5 and c.strides == (8, 16, 32)
    assert c.scale_x_y == (1.2, 1.1, 1.05)
    assert c.masks == ((0, 1, 2), (3, 4, 5), (6, 7, 8))
    assert c.anchors[0] == (12.0, 16.0) and c.anchors[-1] == (459.0, 401.0)
    assert c.head_anchors()[0] == [(12.0, 16.0), (19.0, 36.0), (40.0, 28.0)]
    tiny = ModelConfig.load("yolov4-tiny")
    assert tiny.masks == ((1, 2, 3), (3, 4, 5)) and tiny.iou_thresh == (None, None)
    assert tiny.strides == (16, 32) and tiny.scale_x_y == (1.05, 1.05)


def test_rebuild_from_config_dict_gives_same_state_dict_layout():
    model = build_model("yolov4-tiny", num_classes=7, scale_x_y=[1.1, 1.2])
    again = build_model(**model.config.to_dict())
    assert again.config == model.config
    a, b = model.state_dict(), again.state_dict()
    assert list(a) == list(b) and all(a[k].shape == b[k].shape for k in a)
    again.load_state_dict(a, strict=True)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"name": "yolov5"}, "unknown model name 'yolov5'"),
        (
            {"name": "yolov4-tiny", "anchor": [[1, 2]]},
            r"unknown model config key\(s\) \['anchor'\]",
        ),
        (
            {"name": "yolov4-tiny", "strides": [8, 16]},
            "are \\[16, 32\\] \\(fixed by the network\\)",
        ),
        ({"name": "yolov4-tiny", "num_classes": 0}, "num_classes must be >= 1, got 0"),
        ({"name": "yolov4-tiny", "masks": [[0, 1, 9], [3, 4, 5]]}, r"masks\[0\]=\[0, 1, 9\]"),
        ({"name": "yolov4-tiny", "scale_x_y": [1.05]}, "one value per head"),
        ({"name": "yolov4-tiny", "input_size": [416, 400]}, "multiples of 32"),
        ({"name": "yolov4-tiny", "num_classes": 2.5}, "num_classes must be whole numbers, got 2.5"),
        (
            {"name": "yolov4-tiny", "num_classes": True},
            "num_classes must be whole numbers, got True",
        ),
        ({"name": "yolov4-tiny", "input_size": [64.9, 64]}, "input_size must be whole numbers"),
        ({"name": "yolov4-tiny", "masks": [[1.7, 2, 3], [3, 4, 5]]}, "masks must be whole numbers"),
        (
            {"name": "yolov4-tiny", "input_size": [64, 64, 3]},
            r"model.input_size: expected \[height",
        ),
        ({"name": "yolov4-tiny", "input_size": True}, "input_size must be whole numbers, got True"),
    ],
)
def test_config_errors_name_the_key(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build_model(**kwargs)


def test_whole_numbers_of_any_type_are_taken():
    """YAML, JSON and numpy give 4, 4.0 or np.int64(4): the same network."""
    import numpy as np

    for n in (4, 4.0, np.int64(4), "4"):
        config = build_model("yolov4-tiny", num_classes=n, input_size=[64, 64.0]).config
        assert config.num_classes == 4 and config.input_size == (64, 64)
    # one side for a square, as data.input_size takes it (train.py data.input_size=128 failed
    # with "model config has a value of the wrong type: 'int' object is not iterable")
    assert build_model("yolov4-tiny", input_size=128).config.input_size == (128, 128)


@pytest.fixture(scope="module")
def tiny2():
    return build_model("yolov4-tiny", num_classes=2).eval()


@pytest.mark.parametrize(
    "images, match",
    [
        (torch.rand(3, 64, 64), r"shape \(B, 3, H, W\), got \(3, 64, 64\).*add a batch dimension"),
        (torch.rand(1, 1, 64, 64), r"shape \(B, 3, H, W\), got \(1, 1, 64, 64\)"),
        (torch.rand(1, 4, 64, 64), r"got \(1, 4, 64, 64\)"),
        (
            torch.rand(1, 3, 64, 100),
            r"multiples of 32 \(the network's largest stride\), got \(1, 3, 64, 100\).*e\.g\. \[64, 128\]",
        ),
        (
            torch.rand(1, 3, 40, 64),
            r"multiples of 32 \(the network's largest stride\), got \(1, 3, 40, 64\)",
        ),
        (torch.zeros(1, 3, 64, 64, dtype=torch.uint8), r"floating-point.*torch.uint8.*/ 255"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.int64), r"floating-point.*torch.int64"),
        (torch.rand(1, 3, 64, 64, dtype=torch.float64), r"dtype torch.float32.*got torch.float64"),
        (
            torch.rand(1, 3, 64, 64, device="meta"),
            r"images are on meta but the model's weights are on cpu",
        ),
        ([torch.rand(3, 64, 64)], r"torch.Tensor.*got list"),
    ],
)
def test_bad_input_raises_input_error(tiny2, images, match):
    with pytest.raises(InputError, match=match):
        tiny2(images)


def test_input_error_is_a_value_error(tiny2):
    with pytest.raises(ValueError):
        tiny2(torch.rand(1, 3, 33, 64))


def test_autocast_accepts_float32_input(tiny2):
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        outs = tiny2(torch.rand(1, 3, 64, 64))
    assert outs[0].dtype == torch.bfloat16


def test_gradients_flow_in_training_mode():
    model = build_model("yolov4-tiny", num_classes=2).train()
    outs = model(torch.rand(2, 3, 64, 64))
    sum(o.square().mean() for o in outs).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("fixture, hw", [("tiny80", (96, 128)), ("yolov4_3cls", (64, 96))])
def test_fused_equals_unfused(request, fixture, hw):
    model = request.getfixturevalue(fixture)
    fused = fuse_model(model)
    assert fused.is_fused and not model.is_fused
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    x = torch.rand(2, 3, *hw)
    with torch.no_grad():
        ref, got = model(x), fused(x)
    for r, o in zip(ref, got):
        assert r.std() > 0.1  # a comparison of non-trivial maps
        torch.testing.assert_close(o, r, rtol=1e-4, atol=1e-4 * r.abs().max().item())


def test_size_multiple_is_the_deepest_layer_stride_not_the_heads():
    """A cfg whose only head is at stride 16 over a stride-32 backbone still needs inputs that
    are multiples of 32 (the route joining the stride-16 map with the upsampled one)."""
    from yolov4.models.cfg import read_zoo_cfg

    text = read_zoo_cfg("yolov4-tiny")
    first_yolo = text.index("[yolo]")
    after = text.index("[route]", first_yolo)
    model = build_model(cfg=text[:first_yolo] + "[route]\nlayers=-1\n\n" + text[after:]).eval()
    assert model.config.strides == (16,) and model.config.max_stride == 32
    with pytest.raises(
        InputError, match=r"multiples of 32 \(the network's largest stride\), got \(1, 3, 48, 48\)"
    ):
        model(torch.rand(1, 3, 48, 48))
    with pytest.raises(ConfigError, match="multiples of 32"):
        build_model(
            cfg=text[:first_yolo] + "[route]\nlayers=-1\n\n" + text[after:], input_size=[48, 48]
        )


def test_training_one_image_with_one_by_one_maps_is_refused_at_the_door():
    """BatchNorm's ValueError ('Expected more than 1 value per channel') from deep inside."""
    from yolov4 import InputError

    model = build_model("yolov4-tiny", num_classes=2, input_size=[32, 32]).train()
    with pytest.raises(InputError, match=r"training a batch of 1 at 32x32 \(WxH\) gives 1x1 maps"):
        model(torch.rand(1, 3, 32, 32))
    assert len(model(torch.rand(2, 3, 32, 32))) == 2  # two images: BatchNorm has two values
    assert len(model(torch.rand(1, 3, 64, 32))) == 2  # 2x1 maps
    assert len(model.eval()(torch.rand(1, 3, 32, 32))) == 2  # predicting one is fine
