"""Darknet's ``.names`` file as the darknet files carry it: names written with the ``.cfg`` and
``.weights`` read back as themselves (one a line), names a line cannot hold refused before
anything is written, and the file found beside the weights or the cfg."""

from __future__ import annotations

import pytest
import torch

from yolov4 import build_model
from yolov4.core.darknet_pair import names_path, save_darknet_pair
from yolov4.core.names_file import names_beside, names_file_text, read_names_file
from yolov4.core.preprocess import PreprocessConfig
from yolov4.errors import ConfigError, DatasetError

PRE = PreprocessConfig(input_size=(64, 64), mode="letterbox")


def _model(num_classes: int):
    torch.manual_seed(0)
    return build_model("yolov4-tiny", num_classes=num_classes)


def test_the_names_are_written_beside_the_weights_and_read_back_as_given(tmp_path):
    names = ["traffic light", "Verkehrsschild", "猫", "a=b"]  # spaces, unicode, an `=` inside
    cfg, weights = save_darknet_pair(
        _model(4), PRE, tmp_path / "best.cfg", tmp_path / "best.weights", class_names=names
    )
    assert names_path(weights) == tmp_path / "best.names"
    assert read_names_file(tmp_path / "best.names") == names
    assert (tmp_path / "best.names").read_text(encoding="utf-8") == "".join(f"{n}\n" for n in names)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.cfg", "best.names", "best.weights"]
    # no names given: no names file
    save_darknet_pair(_model(4), PRE, tmp_path / "m.cfg", tmp_path / "m.weights")
    assert not (tmp_path / "m.names").exists()


@pytest.mark.parametrize(
    "names, message",
    [
        (["a", "", "c"], r"class 1 '' cannot be a line of a .names file"),
        (["a", " b", "c"], r"class 1 ' b' cannot be a line"),
        (["a", "b\nc", "d"], r"class 1 'b\\nc' cannot be a line"),
        (["a", "b", "names: x"], r"class 2 'names: x' reads as a `key: value` setting"),
        (["a", "b"], r"2 class names for a model with num_classes=3"),
    ],
)
def test_names_a_line_cannot_hold_are_refused_before_any_file_is_written(tmp_path, names, message):
    with pytest.raises(ConfigError, match=message):
        save_darknet_pair(
            _model(3), PRE, tmp_path / "best.cfg", tmp_path / "best.weights", class_names=names
        )
    assert list(tmp_path.iterdir()) == []


def test_a_name_like_a_setting_among_other_names_reads_back_as_itself(tmp_path):
    """Only a dataset key (``names:``, ``train =``...) or a file of settings alone is refused
    by the reader, so a name such as ``x: y`` among names is written."""
    names = ["person", "x: y", "cat"]
    path = tmp_path / "n.names"
    path.write_text(names_file_text(names, "names"), encoding="utf-8")
    assert read_names_file(path) == names


def test_the_names_beside_the_weights_come_before_those_beside_the_cfg(tmp_path):
    weights, cfg = tmp_path / "run" / "w.weights", tmp_path / "nets" / "net.cfg"
    assert names_beside(weights, cfg) is None
    cfg.parent.mkdir()
    (tmp_path / "nets" / "net.names").write_text("a\n")
    assert names_beside(weights, cfg) == tmp_path / "nets" / "net.names"
    weights.parent.mkdir()
    (tmp_path / "run" / "w.names").write_text("b\n")
    assert names_beside(weights, cfg) == tmp_path / "run" / "w.names"
    assert names_beside(tmp_path / "zoo.weights", None) is None  # a zoo name: no cfg file


@pytest.mark.parametrize(
    "text, blank, after",
    [("box\n\nball\n", 2, 3), ("\n\nbox\nball\n", 1, 3), ("box\n  \r\n\nball\n\n", 2, 4)],
)
def test_a_blank_line_before_a_name_is_refused_naming_it(tmp_path, text, blank, after):
    """Darknet (get_labels: one class a line) reads ``box, '', ball``: 3 classes, ball at index
    2; left out, ball would read as class 1 and every later index shift by one."""
    path = tmp_path / "obj.names"
    path.write_bytes(text.encode())
    with pytest.raises(DatasetError) as info:
        read_names_file(path)
    assert str(info.value).startswith(
        f"{path}: line {blank} is blank, before the class name on line {after}: darknet reads "
        f"each line as a class (class {blank - 1} here, unnamed)"
    )


def test_blank_lines_at_the_end_are_no_classes(tmp_path):
    path = tmp_path / "obj.names"
    path.write_bytes(b"box\r\nball\r\n\r\n \n")
    assert read_names_file(path) == ["box", "ball"]
