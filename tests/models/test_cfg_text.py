"""A cfg's text read as darknet reads it (``read_cfg``, ``strip``, ``read_option``, the number
parsers of ``parse_yolo``/``parse_route``; transcribed in ``tests/oracles/darknet_cfg_read.py``):
comments, and what the parser does where darknet's reading and the text's look differ."""

from __future__ import annotations

import re

import cv2
import pytest
import torch

from tests.models.test_cfg import BASE, line_in, nth
from tests.models.test_zoo import assert_matches_opencv, boost_heads_, one_thread  # noqa: F401
from tests.oracles import darknet_cfg_read as dk
from yolov4 import ConfigError, build_model
from yolov4.darknet import save_darknet_weights
from yolov4.models.cfg import parse_cfg

ANCHORS = "anchors=4,6, 8,8, 12,10, 16,20, 30,24, 40,44"

# numbers followed by a comment: (old text, new text, occurrence in BASE)
NUMBER_COMMENTS = [
    ("filters=8\n", "filters=8 # eight\n", 1),
    ("stride=2\n", "stride=2;s\n", 1),
    ("layers=0,-1", "layers=0,-1 # joined", 1),
    ("mask=0,1,2", "mask=0,1,2 ; first head", 1),
    ("classes=1", "classes=1#one", 2),
    (ANCHORS, ANCHORS + " # six", 1),
    (ANCHORS, ANCHORS + " # six, as w,h", 2),  # darknet counts commas up to the '#' only
]


def commented(edits=NUMBER_COMMENTS) -> str:
    text = BASE
    for old, new, n in edits:
        text = nth(text, old, new, n)
    return text


def network_of(text: str) -> dict:
    """The model config a cfg text gives, without the text itself."""
    return {k: v for k, v in build_model(cfg=text).config.to_dict().items() if k != "cfg"}


def darknet_reads(text: str, layer: int, key: str):
    """What darknet's parser takes from ``key`` of darknet layer ``layer`` (-1: [net])."""
    _, options = dk.read_cfg(text)[layer + 1]
    raw = dk.option_find(options, key)
    if key == "mask":
        return dk.parse_yolo_mask(raw)
    if key == "anchors":
        return dk.parse_anchors(raw, dk.atoi(dk.option_find(options, "num")))
    if key in ("layers", "from"):
        return dk.parse_route_layers(raw)
    return dk.atoi(raw)


@pytest.mark.parametrize("old, new, n", NUMBER_COMMENTS)
def test_a_number_with_a_trailing_comment_reads_as_darknet_reads_it(old, new, n):
    text = nth(BASE, old, new, n)
    key = old.split("=")[0]
    sections = parse_cfg(text)
    layer = next(
        i - 1
        for i, s in enumerate(sections)
        if key in s.options and s.lines[key] == text.splitlines().index(new.strip()) + 1
    )
    s = sections[layer + 1]
    ours = s.get_floats(key) if key == "anchors" else s.get_ints(key)
    expected = darknet_reads(text, layer, key)
    assert ours == (expected if isinstance(expected, list) else [expected])
    assert network_of(text) == network_of(BASE)


def test_a_cfg_with_comments_after_numbers_matches_opencv(tmp_path, randomize, one_thread):  # noqa: F811
    """OpenCV's importer reads the commented cfg itself (its number parsing stops at the '#'
    too; OpenCV, unlike darknet, reads an anchors comment's commas, so none here)."""
    text = commented([e for e in NUMBER_COMMENTS if e[1] != ANCHORS + " # six, as w,h"])
    torch.manual_seed(0)
    model = boost_heads_(randomize(build_model(cfg=text), seed=3))
    cfg, weights = tmp_path / "commented.cfg", tmp_path / "commented.weights"
    cfg.write_text(text.replace("[yolo]\n", "[yolo]\nthresh=0\nnms_threshold=0\n"))
    save_darknet_weights(model, weights)
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    assert_matches_opencv(model, net, torch.rand(1, 3, 32, 32))


TEXT_COMMENTS = {
    # id: (old, new, darknet layer, key)
    "activation": ("activation=mish", "activation=mish # the CSP block", 3, "activation"),
    "head activation": ("activation=linear", "activation=linear;head", 5, "activation"),
    "iou_loss": ("classes=1\nnum=6\n", "classes=1\nnum=6\niou_loss=ciou # box\n", 6, "iou_loss"),
    "nms_kind": ("classes=1\nnum=6\n", "classes=1\nnum=6\nnms_kind=greedynms#x\n", 6, "nms_kind"),
}


@pytest.mark.parametrize("case", TEXT_COMMENTS)
def test_a_text_value_with_a_trailing_comment_is_refused_saying_what_darknet_reads(case, tmp_path):
    """darknet reads ``activation=mish # the CSP block`` as the activation ``mish#theCSPblock``:
    one it does not know, so it warns and trains ReLU there; ``iou_loss=ciou # box`` as an
    unknown loss (IoU). The weights of such a cfg are not what the text says: refused."""
    old, new, layer, key = TEXT_COMMENTS[case]
    text = nth(BASE, old, new)
    path = tmp_path / "mine.cfg"
    path.write_text(text)
    raw = dk.option_find(dk.read_cfg(text)[layer + 1][1], key)
    with pytest.raises(ConfigError) as e:
        build_model(cfg=path)
    message = str(e.value)
    head = (
        f"{path}:{line_in(text, layer, key)}: [{'convolutional' if layer != 6 else 'yolo'}] {key}"
    )
    assert message.startswith(f"{head}: darknet reads {raw!r} (# and ; start a comment only")
    if key == "activation":
        assert dk.get_activation(raw) == "relu"  # darknet's fallback, which the message names
        assert "it warns and uses relu" in message and "activation=relu" in message
        with pytest.raises(cv2.error, match="Unsupported activation"):
            cv2.dnn.readNetFromDarknet(str(path))  # "OpenCV refuses the cfg"
    else:
        assert f"not {raw.split('#')[0].split(';')[0]!r}" in message


def test_route_layers_whose_comment_has_commas_are_refused_naming_darknets_layers(tmp_path):
    """parse_route counts every comma of ``layers``, a comment's too: ``0,-1 # a, b`` is three
    layers for darknet (the third ``atoi("b")``: layer 0)."""
    text = nth(BASE, "layers=0,-1", "layers=0,-1 # a, b")
    path = tmp_path / "mine.cfg"
    path.write_text(text)
    layers = dk.parse_route_layers(dk.option_find(dk.read_cfg(text)[5][1], "layers"))
    assert layers == [0, -1, 0]
    where = f"{path}:{line_in(text, 4, 'layers')}: [route] layers"
    with pytest.raises(ConfigError, match=re.escape(f"{where}: darknet reads '0,-1#a,b'")) as e:
        build_model(cfg=path)
    assert "the layers 0,-1,0;" in str(e.value)


def test_a_section_header_with_a_trailing_comment_is_refused(tmp_path):
    text = nth(BASE, "[yolo]\n", "[yolo]   # the first head\n")
    assert dk.read_cfg(text)[7][0] == "[yolo]#thefirsthead"  # a type darknet does not know
    path = tmp_path / "mine.cfg"
    path.write_text(text)
    with pytest.raises(
        ConfigError,
        match=re.escape(
            f"{path}:{line_in(text, 6)}: darknet reads the section header "
            "'[yolo]#thefirsthead' whole"
        ),
    ):
        build_model(cfg=path)


def test_comment_lines_and_blanks_as_darknet():
    """A line is a comment when its first non-blank character is # or ;; blanks anywhere in a
    line are dropped (``fil ters = 8`` is ``filters=8`` for darknet's strip too)."""
    text = nth(BASE, "filters=8\n", "  ; a comment\n\t# another\nfil ters = 8\n")
    assert dk.option_find(dk.read_cfg(text)[1][1], "filters") == "8"
    assert network_of(text) == network_of(BASE)
