"""darknet's list files (train.txt, valid.txt) name images relative to the folder darknet runs
in; read from another folder, the paths are not found, and the report says where they were looked
for and which folder to run from."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.data.test_class_names_files import _darknet_root
from yolov4.data.problems import Problem, ProblemReport
from yolov4.data.yolo_txt import load_yolo
from yolov4.errors import DatasetError


def test_listed_paths_missing_from_another_folder_name_where_to_run(tmp_path, monkeypatch):
    data = _darknet_root(tmp_path / "darknet", n=4)  # darknet/data/train.txt: data/obj/img<i>.jpg
    (data / "train.txt").write_text(
        "".join(f"data/obj/img{i}.jpg\n" for i in range(3)) + f"{data / 'obj' / 'img3.jpg'}\n"
    )
    monkeypatch.chdir(tmp_path)  # the folder above darknet's
    report = ProblemReport()
    loaded = load_yolo("darknet/data/train.txt", "darknet/data/obj.names", report=report)
    assert len(loaded.records) == 1  # the absolute path
    assert len(report.problems[Problem.MISSING_FILE]) == 3
    note = loaded.notes[0]
    assert note.startswith(
        "3 of 4 image paths listed in darknet/data/train.txt not found (e.g. data/obj/img0.jpg, "
        "data/obj/img1.jpg, data/obj/img2.jpg)"
    )
    assert f"from the list's folder {data}, then from the working directory {tmp_path}" in note
    assert note.endswith(
        "darknet reads them from the folder it runs in: run from the folder they are relative "
        f"to ({tmp_path / 'darknet'}, where data/obj/img0.jpg is)"
    )
    monkeypatch.chdir(tmp_path / "darknet")  # where darknet runs: every path found
    assert len(load_yolo("data/train.txt", "data/obj.names").records) == 4


def test_a_list_of_paths_none_found_says_so_not_suffixes(tmp_path, monkeypatch):
    data = _darknet_root(tmp_path / "darknet", n=2)
    (data / "valid.txt").write_text("data/obj/img0.jpg\ndata/obj/img1.jpg\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError) as info:
        load_yolo("darknet/data/valid.txt", "darknet/data/obj.names")
    message = str(info.value)
    assert message.startswith(
        "no usable image in darknet/data/valid.txt (2 paths listed, 2 of them not found)"
    )
    assert "suffixes" not in message
    assert re.search(r"run from the folder they are relative to \(.*darknet, where", message)


def test_a_few_missing_paths_get_no_hint_to_move(tmp_path: Path, monkeypatch):
    data = _darknet_root(tmp_path, n=3)
    (data / "train.txt").write_text(
        "data/obj/img0.jpg\ndata/obj/img1.jpg\ndata/obj/img2.jpg\ngone.jpg\n"
    )
    monkeypatch.chdir(tmp_path)
    loaded = load_yolo("data/train.txt", "data/obj.names")
    assert len(loaded.records) == 3
    assert loaded.notes[0].startswith("1 of 4 image paths listed in data/train.txt not found")
    assert "run from" not in loaded.notes[0]


def test_paths_written_on_windows_are_read(tmp_path, monkeypatch):
    """CVAT's or darknet's files saved on Windows: `train = data\\train.txt` in the .data file
    and `data\\obj\\img0.jpg` lines in the list."""
    from yolov4.data.dataset_file import read_dataset_file

    data = _darknet_root(tmp_path, n=2)
    (data / "train.txt").write_text("data\\obj\\img0.jpg\ndata\\obj\\img1.jpg\n")
    (data / "win.data").write_text(
        "classes = 2\ntrain = data\\train.txt\nnames = data\\obj.names\n"
    )
    monkeypatch.chdir(tmp_path)
    dataset = read_dataset_file("data/win.data")
    split = dataset.split("train")
    assert split.path == Path("data/train.txt")
    assert dataset.notes[-1] == (
        "2 path(s) of data/win.data written with `\\` (on Windows) read with `/` "
        "(e.g. data\\train.txt as data/train.txt)"
    )
    loaded = load_yolo(split.path, "data/win.data")
    assert loaded.class_names == ["person", "car"]
    assert loaded.info[1:] == [  # after the names' origin: one note for the list, not one a line
        "2 path(s) of data/train.txt written with `\\` (on Windows) read with `/` "
        "(e.g. data\\obj\\img0.jpg as data/obj/img0.jpg)"
    ]
    assert [r.file for r in loaded.records] == ["data/obj/img0.jpg", "data/obj/img1.jpg"]


def test_check_data_says_once_that_windows_paths_were_read_with_slashes(
    tmp_path, monkeypatch, capsys
):
    from yolov4.cli.check_data import main as check_main

    data = _darknet_root(tmp_path, n=2)
    (data / "train.txt").write_text("data\\obj\\img0.jpg\ndata\\obj\\img1.jpg\n")
    (data / "valid.txt").write_text("data/obj/img0.jpg\ndata/obj/img1.jpg\n")
    (data / "win.data").write_text(
        "classes = 2\ntrain = data\\train.txt\nvalid = data/valid.txt\nnames = data/obj.names\n"
    )
    monkeypatch.chdir(tmp_path)
    assert check_main(["data=yolo", "data.file=data/win.data", "data.num_workers=0"]) == 0
    out = capsys.readouterr().out
    data_file_note = (
        "note: data.file: 1 path(s) of data/win.data written with `\\` (on Windows) read with "
        "`/` (e.g. data\\train.txt as data/train.txt)"
    )
    list_note = (
        "note: 2 path(s) of data/train.txt written with `\\` (on Windows) read with `/` "
        "(e.g. data\\obj\\img0.jpg as data/obj/img0.jpg)"
    )
    assert out.count(data_file_note) == 1, out
    assert out.count(list_note) == 1, out  # the train split's; valid.txt is written with /
    assert "data/valid.txt written with" not in out


def test_the_folder_to_run_from_is_found_for_lines_written_on_windows(tmp_path, monkeypatch):
    data = _darknet_root(tmp_path / "darknet", n=2)
    (data / "train.txt").write_text("data\\obj\\img0.jpg\ndata\\obj\\img1.jpg\n")
    monkeypatch.chdir(tmp_path)  # the folder above darknet's
    with pytest.raises(DatasetError) as info:
        load_yolo("darknet/data/train.txt", "darknet/data/obj.names")
    message = str(info.value)
    assert "not found (e.g. data/obj/img0.jpg, data/obj/img1.jpg)" in message
    assert (
        "run from the folder they are relative to "
        f"({tmp_path / 'darknet'}, where data/obj/img0.jpg is)"
    ) in message
