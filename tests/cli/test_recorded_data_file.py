"""A checkpoint's recorded data config is read from any folder: darknet's layout (CVAT's export)
names its names file and its list's image paths relative to the folder darknet runs in, and
``evaluate.py checkpoint=`` run from another folder reads them as the training run did."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module
from hydra.utils import instantiate

from tests.data.test_class_names_files import _darknet_root
from yolov4.cli.data_config import recorded_data
from yolov4.data.problems import Problem, ProblemReport
from yolov4.errors import DatasetError

IMAGES = 3


def test_a_darknet_data_file_recorded_in_its_root_is_read_from_another_folder(
    tmp_path, monkeypatch
):
    data = _darknet_root(tmp_path / "cvat", n=IMAGES)  # train.txt: data/obj/img<i>.jpg
    (data / "v.data").write_text("classes = 2\ntrain = data/train.txt\nnames = data/obj.names\n")
    monkeypatch.chdir(tmp_path / "cvat")  # where darknet (and train.py) runs
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        cfg = compose("train", overrides=["data=yolo", "data.file=data/v.data"])
    recorded = recorded_data(cfg.data)
    assert recorded["val"]["names"] == str(data / "obj.names")
    assert recorded["val"]["list_root"] == str(tmp_path / "cvat")

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # evaluate.py checkpoint=... from another folder
    for split in ("train", "val"):
        report = ProblemReport()
        loaded = instantiate(recorded[split]).load(report)
        assert loaded.class_names == ["person", "car"]
        assert len(loaded.records) == IMAGES
        assert not report.problems.get(Problem.MISSING_FILE)


def test_a_list_root_is_read_after_the_lists_folder_and_the_working_directory(
    tmp_path, monkeypatch
):
    data = _darknet_root(tmp_path / "darknet", n=2)
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "other")
    source = {
        "_target_": "yolov4.data.yolo_txt.YoloSource",
        "images": str(data / "train.txt"),
        "names": str(data / "obj.names"),
    }
    with pytest.raises(DatasetError, match=r"\(2 paths listed, 2 of them not found\)"):
        instantiate(source).load(ProblemReport())  # without the root: no listed path is found
    found = instantiate({**source, "list_root": str(tmp_path / "darknet")}).load(ProblemReport())
    assert [r.file for r in found.records] == [
        str(tmp_path / "darknet" / "data" / "obj" / f"img{i}.jpg") for i in range(2)
    ]
