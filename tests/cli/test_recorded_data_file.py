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


def test_a_resume_of_a_record_without_list_root_and_with_the_data_file_as_names_changes_nothing(
    tmp_path, monkeypatch
):
    """A checkpoint whose data record has `list_root: null` and the .data file as its splits'
    names reads the same files as the record made now: its resume lists no change; a .data file
    of other names is still a change."""
    import copy

    import torch

    from yolov4.cli.resume import RESUME_LOG, resume_argv
    from yolov4.errors import ConfigError

    data = _darknet_root(tmp_path / "cvat", n=IMAGES)
    (data / "v.data").write_text("classes = 2\ntrain = data/train.txt\nnames = data/obj.names\n")
    monkeypatch.chdir(tmp_path / "cvat")
    given = ["data=yolo", "data.file=data/v.data"]
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        recorded = recorded_data(compose("train", overrides=given).data)
    assert recorded["train"]["list_root"] == str(tmp_path / "cvat")
    older = copy.deepcopy(recorded)
    for split in ("train", "val"):
        older[split].update(list_root=None, names=str(data / "v.data"))
    ckpt = tmp_path / "copied.ckpt"
    torch.save({"hyper_parameters": {"data": older}}, ckpt)
    argv = ["train.py", f"ckpt_path={ckpt}", *given]
    assert resume_argv(argv) == argv
    assert RESUME_LOG[-1].endswith("the data, model and optimizer the checkpoint records"), (
        RESUME_LOG
    )

    (data / "other.names").write_text("dog\ncat\n")
    (data / "other.data").write_text("classes = 2\nnames = data/other.names\n")
    older["train"]["names"] = str(data / "other.data")
    torch.save({"hyper_parameters": {"data": older}}, ckpt)
    with pytest.raises(ConfigError, match=r"data\.train\.names: \S*other\.names -> \S*obj\.names"):
        resume_argv(argv)
