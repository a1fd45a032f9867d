"""Where class names come from: darknet's ``.data`` file (read by its ``names =`` line, from the
working directory as darknet reads it, else from the ``.data`` file's folder), a data yaml of any
suffix case, and a ``.names`` file that is really something else."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolov4.data.check import split_statistics
from yolov4.data.data_yaml import load_class_names, read_class_names, read_kpt_shape
from yolov4.data.datamodule import DetectionDataModule
from yolov4.data.yolo_txt import YoloSource, load_yolo
from yolov4.errors import DatasetError

OBJ_DATA = "classes = 2\ntrain = data/train.txt\nvalid = data/valid.txt\nnames = data/obj.names\nbackup = backup/\n"  # noqa: E501


def _darknet_root(root: Path, n: int = 2) -> Path:
    """darknet's layout below ``root``: data/obj.data, obj.names, train.txt listing
    data/obj/img<i>.jpg (relative to ``root``) with their labels beside them."""
    data = root / "data"
    (data / "obj").mkdir(parents=True)
    (data / "obj.data").write_text(OBJ_DATA)
    (data / "obj.names").write_text("person\ncar\n")
    for i in range(n):
        cv2.imwrite(str(data / "obj" / f"img{i}.jpg"), np.full((40, 50, 3), 120, np.uint8))
        (data / "obj" / f"img{i}.txt").write_text(f"{i % 2} 0.5 0.5 0.4 0.5\n")
    (data / "train.txt").write_text("".join(f"data/obj/img{i}.jpg\n" for i in range(n)))
    return data


def test_a_darknet_data_file_gives_the_names_of_its_names_line(tmp_path, monkeypatch):
    _darknet_root(tmp_path)
    monkeypatch.chdir(tmp_path)  # darknet runs from its root
    loaded = load_class_names("data/obj.data")
    assert loaded.names == ["person", "car"]
    assert "data/obj.names" in loaded.source and "working directory" in loaded.source
    data = load_yolo("data/train.txt", "data/obj.data", file_split="train")  # as data.file= gives
    assert data.class_names == ["person", "car"] and data.num_boxes == 2
    # where the images and the names came from: logged at INFO, not a warning
    images, info = data.info
    assert images.startswith("images from `train = data/train.txt` of data/obj.data")
    assert info.startswith("class names: 2 from data/obj.names (`names =` of data/obj.data")
    assert not data.notes
    assert f"  note: {info}" in split_statistics(data).splitlines()  # check-data shows it


def test_where_the_names_came_from_is_logged_at_info(tmp_path, monkeypatch, caplog):
    _darknet_root(tmp_path)
    monkeypatch.chdir(tmp_path)
    source = YoloSource(images="data/train.txt", names="data/obj.data")
    with caplog.at_level(logging.INFO, logger="yolov4"):
        DetectionDataModule(train=source, input_size=64, num_workers=0).split("train")
    (record,) = [r for r in caplog.records if "class names: 2 from" in r.message]
    assert record.levelno == logging.INFO and record.message.startswith("data.train: class names")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_darknet_data_file_run_from_elsewhere_reads_names_beside_it(tmp_path, monkeypatch):
    """`names = obj.names` written relative to the .data file's folder, the run elsewhere."""
    data = _darknet_root(tmp_path / "root")
    (data / "obj.data").write_text("classes = 2\nnames = obj.names\n")
    monkeypatch.chdir(tmp_path)
    loaded = load_class_names(data / "obj.data")
    assert loaded.names == ["person", "car"]
    assert str(data / "obj.names") in loaded.source and "the .data file's folder" in loaded.source


def test_a_darknet_data_file_must_name_an_existing_file_counted_by_classes(tmp_path, monkeypatch):
    data = _darknet_root(tmp_path)
    monkeypatch.chdir(tmp_path / "data")  # not darknet's root: data/obj.names is nowhere
    with pytest.raises(DatasetError, match=r"`names = data/obj.names`: no such file") as info:
        read_class_names("obj.data")
    assert str(tmp_path / "data" / "data" / "obj.names") in str(info.value)
    monkeypatch.chdir(tmp_path)
    (data / "obj.data").write_text(OBJ_DATA.replace("classes = 2", "classes = 3"))
    with pytest.raises(DatasetError, match=r"`classes = 3` but its names file .* has 2 names"):
        read_class_names("data/obj.data")
    (data / "obj.data").write_text("classes = 2\ntrain = data/train.txt\n")
    with pytest.raises(DatasetError, match=r"expected a `names = <file>` line"):
        read_class_names("data/obj.data")


def test_a_darknet_data_file_given_as_images_says_where_it_goes(tmp_path, monkeypatch):
    _darknet_root(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        DatasetError,
        match=r"darknet's .data file, not a list of images: give it alone as "
        r"data.file=data/obj.data \(its `train =` / `valid =` lists are the splits\)",
    ):
        load_yolo("data/obj.data", "data/obj.data")


@pytest.mark.parametrize("name", ["Data.YAML", "data.Yml"])
def test_a_data_yaml_is_read_as_yaml_whatever_its_suffix_case(tmp_path, name):
    path = tmp_path / name
    path.write_text("names: [cat, dog]\nkpt_shape: [3, 2]\n")
    assert read_class_names(path) == ["cat", "dog"]
    assert read_kpt_shape(str(path)) == (3, 2)


@pytest.mark.parametrize(
    ("text", "looks"),
    [
        (OBJ_DATA, "`key = value` lines, as darknet's .data file has"),
        ("path: .\ntrain: images/train\nnames:\n  - cat\n  - dog\n", "as a data yaml has"),
        ("nc: 2\nnames: [cat, dog]\n", "as a data yaml has"),
    ],
)
def test_a_names_file_of_key_value_lines_is_refused_saying_what_it_looks_like(
    tmp_path, text, looks
):
    path = tmp_path / "obj.names"
    path.write_text(text)
    with pytest.raises(DatasetError) as info:
        read_class_names(path)
    message = str(info.value)
    assert message.startswith(f"{path}: expected one class name per line") and looks in message
    assert "(line 1: " in message


def test_names_with_colons_or_equals_inside_a_list_of_names_are_kept(tmp_path):
    path = tmp_path / "obj.names"
    path.write_text("person\nsign: stop\nx=y\n")  # not every line a pair, no dataset key
    assert read_class_names(path) == ["person", "sign: stop", "x=y"]


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        ("data.yaml", "expected 0..1: 2 names in {root}/data.yaml"),
        ("data/obj.data", "expected 0..1: 2 names in data/obj.names (`names =` of data/obj.data"),
        (["only"], "expected 0: 1 name in the list given"),
    ],
)
def test_a_class_index_outside_the_names_says_which_indices_and_names(
    tmp_path, monkeypatch, names, expected
):
    from yolov4.data.problems import Problem, ProblemReport

    data = _darknet_root(tmp_path)
    (tmp_path / "data.yaml").write_text("names: [person, car]\n")
    (data / "obj" / "img0.txt").write_text("0 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.4 0.5\n")
    monkeypatch.chdir(tmp_path)
    report = ProblemReport()
    names = str(tmp_path / names) if names == "data.yaml" else names
    load_yolo("data/train.txt", names, report=report)
    [detail] = [d for d in report.problems[Problem.UNKNOWN_CLASS] if "img0" in d]
    assert detail.startswith("data/obj/img0.txt: line 2: class 5, ")
    assert expected.format(root=tmp_path) in detail
