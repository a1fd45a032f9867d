"""``[yolo] anchors`` with more numbers than ``num * 2``: darknet's parse_yolo reads the first
``num * 2`` and ignores the rest (cspx-p7-mish.cfg); so does the builder, with one warning, and
the cfg it writes back has those numbers only. Fewer stay refused."""

from __future__ import annotations

import re

import pytest

from tests.models.test_cfg_layers import cfg, conv
from tests.models.test_cfg_text import build_quietly
from yolov4 import ConfigError, build_model
from yolov4.darknet import write_darknet_cfg

ANCHORS = "anchors=4,6, 8,8, 12,10"
EXTRA = "anchors=4,6, 8,8, 12,10, 30,40, 50,60"  # 10 numbers, num=3 reads 6


def two_heads(first: str, second: str) -> str:
    """A stride-2 head reading layer 0 and a stride-4 head reading layer 3."""
    text = cfg(conv(stride=2)).replace(ANCHORS, first)
    head = text[text.index("[convolutional]\nsize=1") :].replace(first, second)
    return text + "\n[route]\nlayers=-3\n\n" + conv(stride=2) + head


def line_of(text: str, needle: str, nth: int = 1) -> int:
    starts = [m.start() for m in re.finditer(re.escape(needle), text)]
    return text[: starts[nth - 1]].count("\n") + 1


def test_anchors_after_num_times_2_are_ignored_with_one_warning(tmp_path):
    text = two_heads(EXTRA, EXTRA)
    path = tmp_path / "user.cfg"
    path.write_text(text)
    model, seen = build_quietly(str(path))
    plain = build_model(cfg=two_heads(ANCHORS, ANCHORS))
    assert model.config.anchors == plain.config.anchors == ((4, 6), (8, 8), (12, 10))
    assert tuple(model.strides) == (2, 4)
    assert seen == [
        f"{path}:{line_of(text, EXTRA)}: [yolo] anchors: has 10 numbers, num=3 reads the first 6 "
        "(darknet's parse_yolo ignores the rest, and so does yolov4; a cfg written back has "
        f"those 6); so have the [yolo] anchors at lines {line_of(text, EXTRA, 2)}"
    ]


def test_the_cfg_written_back_has_the_anchors_darknet_reads():
    model, _ = build_quietly(two_heads(EXTRA, ANCHORS))
    written = write_darknet_cfg(model)
    assert written.count("\nanchors=4,6,8,8,12,10\n") == 2, written
    again, seen = build_quietly(written)
    assert seen == []
    assert (again.config.anchors, again.config.masks) == (model.config.anchors, model.config.masks)
    assert write_darknet_cfg(again) == written


def test_heads_differing_in_ignored_anchors_only_agree():
    """darknet reads the same anchors in both: one network."""
    model, _ = build_quietly(two_heads(EXTRA, ANCHORS + ", 1,1"))
    assert model.config.anchors == ((4, 6), (8, 8), (12, 10))


def test_heads_differing_in_read_anchors_are_refused():
    text = two_heads(EXTRA, "anchors=4,6, 8,8, 12,11, 30,40")
    with pytest.raises(ConfigError, match=r"\[yolo\] anchors: differs from .*every \[yolo\]"):
        build_quietly(text)


def test_fewer_anchors_than_num_times_2_are_refused_naming_darknets_default(tmp_path):
    text = cfg(conv()).replace(ANCHORS, "anchors=4,6, 8,8, 12")
    path = tmp_path / "user.cfg"
    path.write_text(text)
    expected = (
        f"{path}:{line_of(text, 'anchors=')}: [yolo] anchors: has 5 numbers, num=3 needs 6 "
        "(darknet would leave the missing 1 at make_yolo_layer's 0.5 and run with them)"
    )
    with pytest.raises(ConfigError, match=re.escape(expected)):
        build_model(cfg=path)
