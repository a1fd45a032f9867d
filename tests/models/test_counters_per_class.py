"""``[yolo] counters_per_class`` in a cfg and ``model.counters_per_class``: parsed per head,
refused with the key and line when malformed, written back, round-tripped."""

from __future__ import annotations

import re

import cv2
import pytest

from yolov4 import build_model
from yolov4.darknet import write_darknet_cfg
from yolov4.errors import ConfigError
from yolov4.models import ModelConfig
from yolov4.models.class_balance import normalize_counters


def tiny_cfg(counters: list[str | None]) -> str:
    """yolov4-tiny with 3 classes as cfg text, ``counters_per_class=<v>`` after each ``[yolo]``
    header (file order), none where ``v`` is None."""
    text = write_darknet_cfg(build_model("yolov4-tiny", num_classes=3))
    parts = text.split("[yolo]\n")
    assert len(parts) == 3
    out = parts[0]
    for value, rest in zip(counters, parts[1:], strict=True):
        out += "[yolo]\n" + (f"counters_per_class={value}\n" if value is not None else "") + rest
    return out


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith(needle))


def test_cfg_key_is_read_per_head_and_written_back(tmp_path):
    text = tiny_cfg(["120, 35,8", "120,35,8"])
    config = ModelConfig.load(cfg=text)
    assert config.counters_per_class == ((120, 35, 8), (120, 35, 8))
    model = build_model(**config.to_dict())
    written = write_darknet_cfg(model)
    assert written.count("counters_per_class=120,35,8") == 2
    # the written cfg reads back the same, and OpenCV's darknet importer accepts it
    assert ModelConfig.load(cfg=written).counters_per_class == config.counters_per_class
    path = tmp_path / "model.cfg"
    path.write_text(written)
    net = cv2.dnn.readNetFromDarknet(str(path))
    assert not net.empty()
    assert ModelConfig.from_dict(config.to_dict()) == config


def test_a_head_without_the_key_has_none():
    # file order: the first [yolo] of yolov4-tiny is the stride-32 head (head 1 ascending)
    config = ModelConfig.load(cfg=tiny_cfg(["5,6,7", None]))
    assert config.counters_per_class == (None, (5, 6, 7))
    written = write_darknet_cfg(build_model(**config.to_dict()))
    assert written.count("counters_per_class") == 1


@pytest.mark.parametrize(
    "value,message",
    [
        ("120,35", r"one count per class \(3 classes\), got 2"),
        ("120,35,8,4", r"one count per class \(3 classes\), got 4"),
        ("120,0,8", r"positive integers .* got 0 at index 1"),
        ("120,-3,8", r"positive integers .* got -3 at index 1"),
        ("120,3.5,8", r"comma-separated positive integers, got '120,3.5,8'"),
        ("120,,8", r"comma-separated positive integers"),
    ],
)
def test_bad_cfg_values_fail_naming_the_key_and_line(value, message):
    text = tiny_cfg([value, "1,2,3"])
    line = line_of(text, f"counters_per_class={value}")
    with pytest.raises(ConfigError, match=message) as e:
        ModelConfig.load(cfg=text)
    assert f"<cfg>:{line}: [yolo] counters_per_class" in str(e.value)


def test_config_override_forms_and_refusals():
    config = ModelConfig.load("yolov4-tiny", num_classes=3, counters_per_class=[9, 3, 1])
    assert config.counters_per_class == ((9, 3, 1), (9, 3, 1))
    per_head = ModelConfig.load("yolov4-tiny", num_classes=3, counters_per_class=[None, [9, 3, 1]])
    assert per_head.counters_per_class == (None, (9, 3, 1))
    assert ModelConfig.load("yolov4-tiny", num_classes=3).counters_per_class == (None, None)
    bad = [
        ([9, 3], r"model.counters_per_class: expected one count per class \(3 classes\), got 2"),
        ([9, 0, 1], r"model.counters_per_class: expected positive integers .* got 0"),
        ([9, 2.5, 1], r"model.counters_per_class: expected positive integers .* got 2.5"),
        ([[9, 3, 1]], r"model.counters_per_class: expected one entry per head \(2"),
        ([None, [9, 3]], r"model.counters_per_class\[1\]: expected one count per class"),
        ("9,3,1", r"model.counters_per_class: expected a list of 3 counts"),
    ]
    for value, message in bad:
        with pytest.raises(ConfigError, match=message):
            ModelConfig.load("yolov4-tiny", num_classes=3, counters_per_class=value)


def test_cfg_counts_must_follow_a_changed_num_classes():
    with pytest.raises(ConfigError, match=re.escape("(5 classes), got 3")):
        ModelConfig.load(cfg=tiny_cfg(["1,2,3", "1,2,3"]), num_classes=5)


def test_normalize_counters_is_per_head():
    assert normalize_counters(None, 2, 3) == (None, None, None)
    assert normalize_counters((4, 2), 2, 3) == ((4, 2),) * 3
