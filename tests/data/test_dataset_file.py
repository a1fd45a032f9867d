"""``data.file=``: darknet's ``.data`` file or an ultralytics data yaml fills each YOLO split's
``images`` and ``names`` (:mod:`yolov4.data.dataset_file`), relative paths read as darknet and
ultralytics read them, values given on the command line kept, and what is not read said."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import open_dict

from yolov4.data.dataset_file import fill_splits
from yolov4.errors import ConfigError, DatasetError

OBJ_DATA = (
    "classes = 2\ntrain = data/train.txt\nvalid = data/valid.txt\nnames = data/obj.names\n"
    "backup = backup/\n"
)


def _image(path: Path, label: str | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((40, 50, 3), 120, np.uint8))
    if label is not None:
        path.with_suffix(".txt").write_text(label)


def _darknet_root(root: Path, data: str = OBJ_DATA) -> Path:
    """darknet's layout: data/obj.data, obj.names, train.txt (3 images) and valid.txt (1),
    listing data/obj/img<i>.jpg relative to ``root`` (where darknet runs)."""
    for i in range(4):
        _image(root / "data" / "obj" / f"img{i}.jpg", f"{i % 2} 0.5 0.5 0.4 0.5\n")
    (root / "data" / "obj.data").write_text(data)
    (root / "data" / "obj.names").write_text("person\ncar\n")
    (root / "data" / "train.txt").write_text("".join(f"data/obj/img{i}.jpg\n" for i in range(3)))
    (root / "data" / "valid.txt").write_text("data/obj/img3.jpg\n")
    return root / "data" / "obj.data"


def _ultralytics(ds: Path, yaml: str) -> Path:
    """ultralytics' layout below ``ds``: images/{train,val} (3 and 2 images) with labels/, and
    ``ds/data.yaml`` holding ``yaml``."""
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            _image(ds / "images" / split / f"{split}{i}.jpg", None)
            label = ds / "labels" / split / f"{split}{i}.txt"
            label.parent.mkdir(parents=True, exist_ok=True)
            label.write_text(f"{i % 2} 0.5 0.5 0.4 0.5\n")
    (ds / "data.yaml").write_text(yaml)
    return ds / "data.yaml"


def _data(*overrides: str):
    """``cfg.data`` of ``python train.py data=yolo <overrides>``, as composed."""
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["data=yolo", "data.num_workers=0", "data.input_size=[64,64]", *overrides],
        )
    return cfg.data


def test_a_darknet_data_file_run_from_darknets_root_fills_both_splits(tmp_path, monkeypatch):
    """`darknet detector train data/obj.data ...` run from darknet's root: its paths are read
    from the working directory, backup = noted as not read, the names from its names = file."""
    _darknet_root(tmp_path)
    monkeypatch.chdir(tmp_path)
    data = _data("data.file=data/obj.data")
    notes = fill_splits(data)
    assert (data.train.images, data.val.images) == ("data/train.txt", "data/valid.txt")
    assert data.train.names == data.val.names == "data/obj.data"
    (note,) = notes  # a command that writes no weights (anchors, evaluate) is told no more
    assert "`backup = backup/` not read" in note and "weights" not in note
    unread, weights = fill_splits(_data("data.file=data/obj.data"), writes_weights=True)  # train
    assert unread == note and "run's folder (hydra.run.dir" in weights
    assert weights.endswith("not `backup = backup/`")
    dm = instantiate(data)
    assert dm.class_names == ["person", "car"] and dm.file == "data/obj.data"
    assert len(dm.split("train").records) == 3 and len(dm.split("val").records) == 1
    assert dm.split("val").info[0] == (
        f"images from `valid = data/valid.txt` of data/obj.data, from the working directory "
        f"{tmp_path}"
    )


def test_a_darknet_data_file_run_from_elsewhere_reads_its_paths_from_its_folder(
    tmp_path, monkeypatch
):
    """A .data file whose paths are relative to its own folder, the run started elsewhere: each
    path is read from the file's folder (not found from the working directory), and says so."""
    root = tmp_path / "root"
    obj_data = _darknet_root(root, "classes = 2\ntrain = train.txt\nvalid = valid.txt\nnames = obj.names\n")  # fmt: skip
    for name in ("train.txt", "valid.txt"):  # list entries relative to the list's folder
        listed = (root / "data" / name).read_text().replace("data/obj/", "obj/")
        (root / "data" / name).write_text(listed)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    data = _data(f"data.file={obj_data}")
    assert fill_splits(data) == []  # every key read
    assert data.val.images == str(root / "data" / "valid.txt")
    dm = instantiate(data)
    assert len(dm.split("train").records) == 3 and dm.class_names == ["person", "car"]
    images = dm.split("val").info[0]
    assert images.startswith(f"images from `valid = valid.txt` of {obj_data}, from the .data file's folder")  # fmt: skip
    assert f"not found in the working directory {tmp_path / 'elsewhere'}" in images


def test_a_missing_darknet_split_names_its_key_and_the_folder_to_run_from(tmp_path, monkeypatch):
    _darknet_root(tmp_path)
    monkeypatch.chdir(tmp_path / "data")  # not darknet's root: data/valid.txt is nowhere
    data = _data("data.file=obj.data")
    fill_splits(data)
    with pytest.raises(DatasetError) as info:
        instantiate(data).split("val")
    message = str(info.value)
    assert message.startswith(
        f"image directory not found: data/valid.txt: looked for {tmp_path / 'data' / 'data' / 'valid.txt'}"  # noqa: E501
    )
    assert "; it is `valid = data/valid.txt` of obj.data, found neither from the working" in message
    assert f"; run from {tmp_path}, where it is" in message


def test_a_darknet_data_file_without_valid_validates_on_its_train_list(tmp_path, monkeypatch):
    _darknet_root(tmp_path, "classes = 2\ntrain = data/train.txt\nnames = data/obj.names\n")
    monkeypatch.chdir(tmp_path)
    data = _data("data.file=data/obj.data")
    (note,) = fill_splits(data)
    assert data.val.images == data.train.images == "data/train.txt"
    assert "has no `valid =`: the val split is its `train =` list" in note


@pytest.mark.parametrize(
    ("path_line", "run_in", "root", "where"),
    [
        ("path: ds\n", "ws", "ds", "from the working directory"),  # ultralytics' reading
        ("path: ../ds\n", "elsewhere", "{ws}/ds", "from the yaml's folder"),
        ("path: {ws}/ds\n", "elsewhere", "{ws}/ds", None),
        ("", "elsewhere", "{ws}/ds", None),  # no path: the yaml's folder
    ],
)
def test_a_data_yaml_fills_the_splits_below_its_path(
    tmp_path, monkeypatch, path_line, run_in, root, where
):
    ws = tmp_path / "ws"
    yaml = _ultralytics(
        ws / "ds",
        path_line.format(ws=ws) + "train: images/train\nval: images/val\nnames: {0: cat, 1: dog}\n",
    )
    (tmp_path / run_in).mkdir(exist_ok=True)
    monkeypatch.chdir(tmp_path / run_in)
    data = _data(f"data.file={yaml}")
    fill_splits(data)
    expected = Path(root.format(ws=ws))
    assert data.train.images == str(expected / "images" / "train")
    assert data.val.images == str(expected / "images" / "val")
    dm = instantiate(data)
    assert dm.class_names == ["cat", "dog"] and len(dm.split("val").records) == 2
    source = dm.split("val").info[0]
    assert source.startswith(f"images from `val: images/val` of {yaml}, below ")
    if where is not None:
        assert f"({expected.absolute()}, {where})" in source


@pytest.mark.parametrize("path_line", ["path: .\n", "path: ../ds\n"])
def test_a_relative_path_read_from_elsewhere_says_where_the_split_is_and_the_fix(
    tmp_path, monkeypatch, path_line
):
    """`path: .` is read from the working directory (ultralytics' rule), which has no
    images/train: the error says the folder exists below the yaml's folder and how to fix it
    (without `path:` the yaml's folder is read: a fix only where `path:` means that folder)."""
    ds = tmp_path / "ws" / "ds"
    text = path_line + "train: images/train\nval: images/val\nnames: [cat, dog]\n"
    yaml = _ultralytics(ds, text)
    if path_line == "path: ../ds\n":  # the yaml in a folder beside the dataset's
        (tmp_path / "ws" / "cfg").mkdir()
        yaml = yaml.rename(tmp_path / "ws" / "cfg" / "data.yaml")
    (tmp_path / "elsewhere" / "ds").mkdir(parents=True)  # `../ds` from there: no images in it
    monkeypatch.chdir(tmp_path / "elsewhere" / "ds")
    data = _data(f"data.file={yaml}")
    fill_splits(data)
    with pytest.raises(DatasetError) as info:
        instantiate(data).split("train")
    message = str(info.value)
    fixes = f"run from {yaml.parent}, or write `path: {ds}` (an absolute path)"
    if path_line == "path: .\n":
        fixes = f"run from {ds}, write `path: {ds}` (an absolute path), or remove `path:`"
    assert (
        f"; with `path:` read from the yaml's folder `train:` exists ({ds / 'images' / 'train'}), "
        "but a relative `path:` is read from there only when the working directory has no such "
        f"folder: {fixes}"
    ) in message


def test_a_data_yaml_reads_ultralytics_shapes_and_refuses_several_folders(tmp_path):
    """Roboflow's `../train/images` (read as `train/images` when that is where it is, as
    ultralytics does), a list of one folder, a `validation:` key; a list of several folders is
    refused naming the key, and only when that split is used."""
    ds = tmp_path / "ds"
    _ultralytics(ds, "")
    (ds / "images").rename(ds / "train")  # ds/train/train, ds/train/val
    yaml = ds / "data.yaml"
    yaml.write_text(
        "train: ../train/train\nvalidation: [train/val]\ntest: [a, b]\nnames: [cat, dog]\n"
    )
    data = _data(f"data.file={yaml}")
    fill_splits(data)
    assert data.train.images == str(ds / "train" / "train")
    assert data.val.images == str(ds / "train" / "val")
    yaml.write_text("train: train/train\nval: [train/val, train/train]\nnames: [cat, dog]\n")
    with pytest.raises(DatasetError, match=r"data.yaml: `val:` lists 2 folders; one folder or "):
        fill_splits(_data(f"data.file={yaml}"))


def test_a_missing_yaml_split_names_its_key_and_the_download_not_run(tmp_path):
    yaml = _ultralytics(
        tmp_path / "ds",
        "train: images/train\nval: images/gone\nnames: [cat, dog]\n"
        "download: https://example.com/ds.zip\n",
    )
    data = _data(f"data.file={yaml}")
    fill_splits(data)
    with pytest.raises(DatasetError) as info:
        instantiate(data).split("val")
    message = str(info.value)
    assert f"; it is `val: images/gone` of {yaml}, below the yaml's folder" in message
    assert "its `download: https://example.com/ds.zip` is not run here" in message


def test_values_given_win_over_the_file(tmp_path):
    yaml = _ultralytics(
        tmp_path / "ds", "train: images/train\nval: images/val\nnames: [cat, dog]\n"
    )
    other = tmp_path / "ds" / "images" / "train"
    data = _data(f"data.file={yaml}", f"data.val.images={other}", "data.train.names=[a,b]")
    fill_splits(data)
    assert data.train.images == str(tmp_path / "ds" / "images" / "train")  # the file's
    assert data.val.images == str(other)  # given
    assert list(data.train.names) == list(data.val.names) == ["a", "b"]  # given (val follows)
    assert instantiate(data).class_names == ["a", "b"]


def test_yaml_splits_written_on_windows_are_read_with_slashes_and_noted_once(tmp_path):
    """A data yaml saved on Windows: `train: images\\train`, `val: ..\\ds\\images\\val` read
    with `/` below the yaml's folder, one note for the file, as for its `path:`."""
    yaml = _ultralytics(
        tmp_path / "ds", "train: images\\train\nval: ..\\ds\\images\\val\nnames: [cat, dog]\n"
    )
    data = _data(f"data.file={yaml}")
    notes = fill_splits(data)
    assert data.train.images == str(tmp_path / "ds" / "images" / "train")
    assert data.val.images == str(tmp_path / "ds" / "../ds/images/val")
    assert notes == [
        f"2 path(s) of {yaml} written with `\\` (on Windows) read with `/` "
        "(e.g. images\\train as images/train)"
    ]
    dm = instantiate(data)
    assert len(dm.split("train").records) == 3 and len(dm.split("val").records) == 2


def test_a_test_split_is_noted_as_not_read(tmp_path):
    yaml = _ultralytics(
        tmp_path / "ds", "train: images/train\nval: images/val\ntest: images/val\nnames: [a]\n"
    )
    data = _data(f"data.file={yaml}")
    (note,) = fill_splits(data)
    assert data.test is None
    test = tmp_path / "ds" / "images" / "val"
    assert note == (
        f"{yaml}'s `test:` {test} is not read: no command uses a test split (evaluate.py scores "
        f"data.val: data.val.images={test})"
    )


@pytest.mark.parametrize(
    ("setup", "error", "match"),
    [
        ("missing", DatasetError, r"data.file=.*nowhere.yaml: no such file: looked for "),
        ("suffix", DatasetError, r"data.file=.*obj.txt: expected darknet's .data file or an "),
        (
            "no val",
            ConfigError,
            r"data.val.images: .*data.yaml has no `val:` \(its splits: `train:`\); give "
            r"data.val.images=",
        ),
        (
            "coco",
            ConfigError,
            r"data.file=.*data.yaml: a dataset file fills the splits of a YOLO txt dataset "
            r"\(data=yolo\), found data.train yolov4.data.coco.CocoSource",
        ),
    ],
)
def test_a_data_file_that_cannot_fill_the_splits_says_why(tmp_path, setup, error, match):
    yaml = _ultralytics(tmp_path / "ds", "train: images/train\nnames: [cat, dog]\n")
    file = {"missing": tmp_path / "nowhere.yaml", "suffix": tmp_path / "obj.txt"}.get(setup, yaml)
    (tmp_path / "obj.txt").write_text("train = x\n")
    data = _data(f"data.file={file}")
    if setup == "coco":
        with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
            data = compose("train", overrides=["data=coco"]).data
        with open_dict(data):
            data.file = str(yaml)
    with pytest.raises(error, match=match):
        fill_splits(data)


def test_a_split_is_named_by_its_key_not_by_a_path_another_key_shares(tmp_path):
    """ultralytics' coco128.yaml: `val:` and `train:` the same folder; the val split's images
    are its `val:`. A data.val.images= given that is the file's `test:` path came from the
    command line, not from the file."""
    yaml = _ultralytics(
        tmp_path / "ds", "train: images/train\nval: images/train\ntest: images/val\nnames: [a, b]\n"
    )
    data = _data(f"data.file={yaml}")
    fill_splits(data)
    dm = instantiate(data)
    assert dm.split("val").info[0].startswith(f"images from `val: images/train` of {yaml}")
    assert dm.split("train").info[0].startswith(f"images from `train: images/train` of {yaml}")

    given = _data(f"data.file={yaml}", f"data.val.images={tmp_path / 'ds' / 'images' / 'val'}")
    fill_splits(given)
    assert given.val.file_split is None
    assert instantiate(given).split("val").info == []
