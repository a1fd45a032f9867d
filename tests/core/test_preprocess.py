"""The one preprocessing function: shapes, dtypes, modes, colour order, config round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yolov4.core.preprocess import LETTERBOX_PAD_VALUE, PreprocessConfig, preprocess
from yolov4.errors import ConfigError, InputError
from yolov4.ops.letterbox import map_boxes


def _image(h: int, w: int) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = 200  # red
    img[h // 4 : h // 2, w // 4 : w // 2] = (0, 255, 0)  # a green block at a known place
    return img


def test_letterbox_output_and_params():
    cfg = PreprocessConfig(input_size=(256, 320))
    x, p = preprocess(_image(100, 200), cfg)
    assert x.shape == (3, 256, 320) and x.dtype == torch.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    # padding rows are the named grey, content rows are the image
    pad = LETTERBOX_PAD_VALUE / 255
    assert p.pad_y > 0 and p.pad_x == 0
    torch.testing.assert_close(x[:, 0, 0], torch.full((3,), pad))
    torch.testing.assert_close(x[:, int(p.pad_y) + 2, 0], torch.tensor([200 / 255, 0, 0]))
    # the green block lands where map_boxes says
    box = map_boxes(np.array([[50.0, 25.0, 100.0, 50.0]]), p)[0]
    cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
    torch.testing.assert_close(x[:, cy, cx], torch.tensor([0.0, 1.0, 0.0]))


def test_stretch_has_no_padding_and_bgr_swaps_channels():
    cfg = PreprocessConfig(input_size=(64, 64), mode="stretch", channel_order="bgr")
    x, p = preprocess(_image(30, 90), cfg)
    assert (p.pad_x, p.pad_y) == (0.0, 0.0)
    torch.testing.assert_close(x[:, 0, 0], torch.tensor([0, 0, 200 / 255]))


def test_images_of_different_sizes_come_out_at_the_input_size():
    cfg = PreprocessConfig(input_size=(64, 96))
    for h, w in ((30, 40), (50, 20)):
        x, params = preprocess(_image(h, w), cfg)
        assert x.shape == (3, 64, 96) and x.dtype == torch.float32
        assert (params.pad_x == 0) != (params.pad_y == 0)  # padded along one side only


@pytest.mark.parametrize(
    "bad,found",
    [
        (np.zeros((10, 10), np.uint8), "shape (10, 10) dtype uint8"),
        (np.zeros((10, 10, 4), np.uint8), "shape (10, 10, 4)"),
        (np.zeros((10, 10, 3), np.float32), "dtype float32"),
        ("img.jpg", "got str"),
        (np.zeros((0, 10, 3), np.uint8), "non-empty"),
    ],
)
def test_bad_images_raise_input_error(bad, found):
    with pytest.raises(InputError, match=r"\(H, W, 3\) uint8|non-empty") as e:
        preprocess(bad, PreprocessConfig())
    assert found in str(e.value)


def test_config_round_trip_and_validation():
    cfg = PreprocessConfig(input_size=(320, 416), mode="stretch")
    d = cfg.to_dict()
    assert d == {
        "input_size": [320, 416],
        "mode": "stretch",
        "pad_value": 114,
        "channel_order": "rgb",
        "scale": 1 / 255,
    }
    assert PreprocessConfig.from_dict(d) == cfg
    with pytest.raises(ConfigError, match="unknown preprocess key"):
        PreprocessConfig.from_dict({**d, "size": 3})
    with pytest.raises(ConfigError, match="preprocess.mode"):
        PreprocessConfig(mode="crop")
    assert cfg.with_size((64, 64)).input_size == (64, 64)


@pytest.mark.parametrize(
    "key,value",
    [
        ("input_size", 64),
        ("input_size", "64"),
        ("input_size", [64.5, 64]),
        ("input_size", [64, 0]),
        ("input_size", [True, 64]),
        ("pad_value", 114.5),
        ("pad_value", "114"),
        ("pad_value", -1),
        ("scale", 0.0),
        ("scale", float("nan")),
        ("scale", "1/255"),
        ("channel_order", ["rgb"]),
    ],
)
def test_bad_values_name_the_key(key, value):
    with pytest.raises(ConfigError, match=f"preprocess.{key}"):
        PreprocessConfig(**{key: value})


def test_numeric_values_are_normalised_to_builtins():
    cfg = PreprocessConfig(
        input_size=np.array([64, 96]), pad_value=np.int64(0), scale=np.float32(0.5)
    )
    assert cfg.input_size == (64, 96) and cfg.to_dict()["input_size"] == [64, 96]
    assert type(cfg.pad_value) is int and type(cfg.scale) is float
    assert PreprocessConfig(input_size=(64.0, 96.0), pad_value=7.0).to_dict()["pad_value"] == 7
