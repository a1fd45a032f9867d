"""Datasets as users' own data comes: other label layouts, polygons, pixel coordinates, hidden
and unsupported files, duplicate names, splits without boxes, and mostly unreadable images."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolov4.cli.check_data import main as check_main
from yolov4.core.preprocess import PreprocessConfig
from yolov4.data.coco import load_coco
from yolov4.data.datamodule import DetectionDataModule
from yolov4.data.dataset import DetectionDataset
from yolov4.data.problems import Problem, ProblemReport
from yolov4.data.transforms import AugmentConfig
from yolov4.data.yolo_txt import YoloSource, load_yolo, read_class_names
from yolov4.errors import DatasetError

H, W = 40, 50
LINE = "0 0.5 0.5 0.4 0.5\n"  # box [15, 10, 35, 30] in a 50x40 image


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((H, W, 3), 120, np.uint8))
    return path


def _yolo(root: Path, n: int = 3, labels: str = "labels") -> Path:
    """``root/images/img<i>.jpg`` with their labels in ``root/<labels>/`` (``""``: beside)."""
    for i in range(n):
        image = _image(root / "images" / f"img{i}.jpg")
        label = image.with_suffix(".txt") if not labels else root / labels / f"img{i}.txt"
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text(LINE)
    return root / "images"


def test_darknet_layout_labels_beside_the_images(tmp_path: Path):
    data = load_yolo(_yolo(tmp_path, labels=""), ["a"])
    assert data.num_boxes == 3 and not data.notes
    np.testing.assert_allclose(data.records[0].boxes, [[15, 10, 35, 30]])


def test_symlinked_folders_are_read_and_a_loop_is_not_followed_twice(tmp_path: Path):
    """A split assembled from links to other folders (Python's rglob skipped them silently)."""
    other = _yolo(tmp_path / "other", n=2, labels="")
    images = _yolo(tmp_path / "split", n=3, labels="")
    (images / "linked").symlink_to(other, target_is_directory=True)
    (other / "back").symlink_to(images, target_is_directory=True)  # a loop
    data = load_yolo(images, ["a"])
    assert data.num_boxes == 5 and len(data.records) == 5 and not data.notes
    assert sorted(Path(r.file).relative_to(images).as_posix() for r in data.records) == [
        "img0.jpg", "img1.jpg", "img2.jpg", "linked/img0.jpg", "linked/img1.jpg",
    ]  # fmt: skip
    from yolov4.inference.sources import open_sources

    [source] = open_sources(str(images))
    assert len(source.files) == 5


def test_a_val_folder_inside_the_train_folder_is_warned_about(tmp_path: Path, caplog):
    """data.train.images=<root>/images took images/val too: validation scored trained images."""
    train = _yolo(tmp_path / "images" / "train", n=3, labels="")
    val = _yolo(tmp_path / "images" / "val", n=2, labels="")
    for images, warned in ((tmp_path / "images", True), (train, False)):
        dm = DetectionDataModule(
            train=YoloSource(images=str(images), names=["a"]),
            val=YoloSource(images=str(val), names=["a"]),
            input_size=64,
            num_workers=0,
        )
        caplog.clear()
        with caplog.at_level("WARNING"):
            dm.setup("fit")
        assert ("data.train and data.val share 2 images" in caplog.text) == warned


def test_a_names_file_may_be_a_path(tmp_path: Path):
    images = _yolo(tmp_path, n=2, labels="")
    (tmp_path / "obj.names").write_text("a\n")
    assert load_yolo(images, tmp_path / "obj.names").class_names == ["a"]


def test_darknets_list_file_of_image_paths_is_a_split(tmp_path: Path):
    """data.train.images=train.txt (darknet's obj.data layout): "image directory not found"."""
    images = _yolo(tmp_path / "set", n=3)  # set/images/img<i>.jpg, set/labels/img<i>.txt
    beside = _yolo(tmp_path / "other", n=1, labels="")  # darknet's labels beside the image
    listing = tmp_path / "set" / "train.txt"
    listing.write_text(
        f"images/img2.jpg\n# a comment\n{images / 'img0.jpg'}\nimages/gone.jpg\n\n"
        f"{beside / 'img0.jpg'}\n"
    )
    report = ProblemReport()
    data = load_yolo(listing, ["a"], report=report)
    assert [Path(r.file).name for r in data.records] == ["img2.jpg", "img0.jpg", "img0.jpg"]
    assert data.num_boxes == 3
    # every listed image found its labels: the one note is on the missing path
    assert len(data.notes) == 1 and data.notes[0].startswith(
        f"1 of 4 image paths listed in {listing}"
    )
    assert any("gone.jpg" in f for f in report.problems[Problem.MISSING_FILE])
    np.testing.assert_allclose(data.records[0].boxes, [[15, 10, 35, 30]])


def test_images_listed_twice_are_read_once_in_val_and_kept_in_train(tmp_path: Path):
    _yolo(tmp_path)
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"images/img{i}.jpg\n" for i in (0, 1, 0, 2, 1)))
    report = ProblemReport()
    data = load_yolo(listing, ["a"], report=report)
    assert len(data.records) == 5 and data.repeats == [2, 4]
    found = report.problems[Problem.REPEATED_LISTING]
    assert found == [
        f"{listing}: line 3: images/img0.jpg repeats line 1",
        f"{listing}: line 5: images/img1.jpg repeats line 2",
    ]
    source = YoloSource(images=str(listing), names=["a"])
    dm = DetectionDataModule(train=source, val=source, input_size=64, num_workers=0)
    val = dm.split("val")
    assert [Path(r.file).name for r in val.records] == ["img0.jpg", "img1.jpg", "img2.jpg"]
    assert len(val.coco.imgs) == len(val.coco.anns) == 3
    assert "2 repeated listings of images left out: each image is scored once" in val.notes
    train = dm.split("train")
    assert len(train.records) == 5 and any(
        "2 repeated listings of images kept" in n for n in train.notes
    )


def test_explicit_labels_folder_does_not_look_beside_the_image(tmp_path: Path):
    images = _yolo(tmp_path, labels="")
    data = load_yolo(images, ["a"], labels=tmp_path / "elsewhere")
    assert data.num_boxes == 0
    assert any("3 of 3 images have no label file" in n for n in data.notes)


@pytest.mark.parametrize("labels", ["labels", ""])
def test_label_files_with_an_uppercase_suffix_are_read(tmp_path: Path, labels: str):
    images = _yolo(tmp_path, n=4, labels=labels)
    folder = tmp_path / labels if labels else images
    (folder / "img0.txt").rename(folder / "img0.TXT")
    (folder / "img1.txt").rename(folder / "img1.Txt")
    data = load_yolo(images, ["a"])
    assert [len(r.boxes) for r in data.records] == [1, 1, 1, 1]
    assert not data.notes  # no image without labels, no label file without an image
    listing = tmp_path / "train.txt"
    listing.write_text("".join(f"images/img{i}.jpg\n" for i in range(4)))
    assert load_yolo(listing, ["a"]).num_boxes == 4


def test_images_sharing_a_name_and_so_a_label_file_are_reported(tmp_path: Path):
    images = _yolo(tmp_path, n=2)
    _image(images / "img0.png")
    report = ProblemReport()
    data = load_yolo(images, ["a"], report=report)
    assert [len(r.boxes) for r in data.records] == [1, 1, 1]  # both read, as ultralytics does
    (problem,) = report.problems[Problem.SHARED_LABEL_FILE]
    label = tmp_path / "labels" / "img0.txt"
    assert problem == f"{label}: read for {images / 'img0.jpg'} and {images / 'img0.png'}"
    with pytest.raises(DatasetError, match=r"label file of two images .* in .*img0\.txt"):
        load_yolo(images, ["a"], report=ProblemReport(strict=True))


def test_images_without_a_label_file_are_named_in_the_note(tmp_path: Path):
    images = _yolo(tmp_path, n=6)
    for i in (1, 2, 4, 5):
        (tmp_path / "labels" / f"img{i}.txt").unlink()
    (note,) = load_yolo(images, ["a"]).notes
    assert note.startswith(f"4 of 6 images have no label file in {tmp_path / 'labels'}")
    assert "(e.g. img1.jpg, img2.jpg, img4.jpg, ... (1 more))" in note
    listing = tmp_path / "train.txt"
    listing.write_text("images/img0.jpg\nimages/img1.jpg\n")
    (note,) = load_yolo(listing, ["a"]).notes
    assert note.startswith("1 of 2 listed images have no label file")
    assert "(e.g. images/img1.jpg)" in note


def test_polygon_lines_train_as_their_bounding_box(tmp_path: Path):
    images = _yolo(tmp_path)
    (tmp_path / "labels" / "img0.txt").write_text("0 0.2 0.25 0.6 0.25 0.6 0.75 0.2 0.75\n")
    report = ProblemReport()
    data = load_yolo(images, ["a"], report=report)
    np.testing.assert_allclose(data.records[0].boxes, [[10, 10, 30, 30]], atol=1e-4)
    assert not report.problems


def test_pose_lines_of_a_kpt_shape_yaml_give_their_box_and_keypoints_are_ignored(tmp_path):
    images = _yolo(tmp_path, n=1)
    # 4 keypoints of (x, y): 13 numbers, which without kpt_shape read as a polygon
    pose = "0 0.5 0.5 0.4 0.5 0.1 0.1 0.9 0.2 0.5 0.95 0.3 0.6\n"
    label = tmp_path / "labels" / "img0.txt"
    label.write_text(pose + "0 0.5 0.5 0.4 0.5 0.1 0.1\n")
    (tmp_path / "det.yaml").write_text("names: [person]\n")
    polygon = load_yolo(images, str(tmp_path / "det.yaml"), report=ProblemReport())
    assert not np.allclose(polygon.records[0].boxes[0], [15, 10, 35, 30])
    (tmp_path / "pose.yaml").write_text("names: [person]\nkpt_shape: [4, 2]\n")
    report = ProblemReport()
    data = load_yolo(images, str(tmp_path / "pose.yaml"), report=report)
    np.testing.assert_allclose(data.records[0].boxes, [[15, 10, 35, 30]], atol=1e-4)
    (bad,) = report.problems.pop(Problem.BAD_POSE_LINE)
    assert bad.startswith(f"{label}: line 2: 7 numbers, expected 5 + 4*2 = 13: ")
    assert not report.problems
    (note,) = [n for n in data.notes if "kpt_shape" in n]
    assert note.endswith("its first 5 numbers (class cx cy w h), its 4 keypoints are ignored")
    # names from a .names file or a list: the shape given with them (data.<split>.kpt_shape)
    source = YoloSource(images=str(images), names=["person"], kpt_shape=[4, 2])
    listed = source.load(ProblemReport())
    np.testing.assert_allclose(listed.records[0].boxes, [[15, 10, 35, 30]], atol=1e-4)
    assert any(n.startswith("kpt_shape=[4, 2]: a pose dataset") for n in listed.notes)
    with pytest.raises(DatasetError, match=r"kpt_shape: expected \[K, D\].*found \[4\]"):
        load_yolo(images, ["person"], kpt_shape=[4])
    (tmp_path / "bad.yaml").write_text("names: [person]\nkpt_shape: [17, 4]\n")
    with pytest.raises(DatasetError, match=r"`kpt_shape:` expected \[K, D\].*found \['17', '4'\]"):
        load_yolo(images, str(tmp_path / "bad.yaml"))


def test_box_messages_show_numbers_without_float_noise(tmp_path: Path):
    images = _yolo(tmp_path)
    (tmp_path / "labels" / "img0.txt").write_text("0 0.95 0.5 0.3 0.166\n0 0.3 0.5 0.01 0.5\n")
    report = ProblemReport()
    load_yolo(images, ["a"], report=report)
    (clipped,) = report.problems[Problem.BOX_CLIPPED]
    assert clipped.endswith("img0.txt: line 1: box [40, 16.68, 55, 23.32] in image 50x40 (WxH)")
    (tiny,) = report.problems[Problem.BOX_TINY]
    assert tiny.endswith("line 2: box [14.75, 10, 15.25, 30] in image 50x40 (WxH)")


def test_pixel_coordinates_are_named_as_such(tmp_path: Path):
    images = _yolo(tmp_path)
    (tmp_path / "labels" / "img0.txt").write_text("0 25 20 20 20\n")
    report = ProblemReport()
    data = load_yolo(images, ["a"], report=report)
    assert len(data.records[0].labels) == 0
    assert any("img0.txt" in f for f in report.problems[Problem.NOT_NORMALIZED])
    assert Problem.BOX_OUTSIDE not in report.problems


def test_hidden_and_unsupported_files_and_orphan_labels(tmp_path: Path):
    images = _yolo(tmp_path)
    _image(images / ".ipynb_checkpoints" / "img0-checkpoint.jpg")
    (images / "._img1.jpg").write_bytes(b"\x00\x05\x16\x07 macOS metadata")
    (images / "img9.gif").write_bytes(b"GIF89a")
    (tmp_path / "labels" / "img9.txt").write_text(LINE)
    report = ProblemReport()
    data = load_yolo(images, ["a"], report=report)
    assert len(data.records) == 3 and not report.problems  # nothing hidden read or reported
    text = "\n".join(data.notes)
    assert "1 files in" in text and ".gif (1)" in text
    assert "1 label files in" in text and "img9.txt" in text


def test_duplicate_class_names_are_refused(tmp_path: Path):
    with pytest.raises(
        DatasetError, match="'car' is the name of category_id 0 and of category_id 1"
    ):
        load_yolo(_yolo(tmp_path), ["car", "car"])
    _image(tmp_path / "coco" / "a.jpg")
    doc = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": H, "width": W}],
        "annotations": [],
        "categories": [{"id": 3, "name": "car"}, {"id": 5, "name": "car"}],
    }
    (tmp_path / "coco.json").write_text(json.dumps(doc))
    with pytest.raises(DatasetError, match="category_id 3 and of category_id 5"):
        load_coco(tmp_path / "coco.json", tmp_path / "coco")


def test_data_yaml_names_stay_text_and_nc_must_agree(tmp_path: Path):
    (tmp_path / "a.yaml").write_text("nc: 3\nnames: [yes, no, 'off']\n")
    assert read_class_names(str(tmp_path / "a.yaml")) == ["yes", "no", "off"]
    (tmp_path / "n.yaml").write_text("nc: 6\nnames: [007, 010, 1_000, 12:30, 1.50, 0x1F]\n")
    assert read_class_names(str(tmp_path / "n.yaml")) == [
        "007", "010", "1_000", "12:30", "1.50", "0x1F"
    ]  # not YAML 1.1's 7, 8 (octal), 1000, 750 (base 60), 1.5, 31  # fmt: skip
    (tmp_path / "d.yaml").write_text("names:\n  0: 010\n  1: 12:30\n")
    assert read_class_names(str(tmp_path / "d.yaml")) == ["010", "12:30"]
    (tmp_path / "b.yaml").write_text("nc: 3\nnames: [cat, dog]\n")
    with pytest.raises(DatasetError, match="`nc: 3` but `names:` has 2 names"):
        read_class_names(str(tmp_path / "b.yaml"))


def test_training_split_without_a_box_stops_at_setup_naming_the_search(tmp_path: Path, caplog):
    images = _yolo(tmp_path, labels="annotations")  # not where a loader looks
    source = YoloSource(images=str(images), names=["a", "b"])
    dm = DetectionDataModule(train=source, val=source, input_size=64, num_workers=0)
    with pytest.raises(DatasetError, match=r"no box.*\n.*3 of 3 images have no label file in"):
        dm.setup("fit")
    dm.setup("validate")  # scoring such a split is allowed (its mAP says what it is)
    (tmp_path / "labels").mkdir()
    for i in range(3):
        (tmp_path / "labels" / f"img{i}.txt").write_text(LINE)
    with caplog.at_level("WARNING"):
        DetectionDataModule(train=source, input_size=64, num_workers=0).setup("fit")
    assert "1 of 2 classes have no box to learn from: 'b'" in caplog.text


def test_training_survives_a_mostly_unreadable_split(tmp_path: Path):
    images = _yolo(tmp_path, n=10)
    for i in range(2, 10):  # 8 of 10 files unreadable
        (images / f"img{i}.jpg").write_bytes(b"")
    data = load_yolo(images, ["a"])
    assert len(data.records) == 2  # headers are read at load: empty files are skipped there
    data.records.extend(
        type(data.records[0])(100 + i, str(images / f"img{i}.jpg"), H, W) for i in range(2, 10)
    )  # as a COCO json lists them: only decoding finds them unreadable
    ds = DetectionDataset(data, PreprocessConfig(input_size=(64, 64)), AugmentConfig(), seed=1)
    for _ in range(3):
        for i in range(len(ds)):
            assert ds[i]["image_id"] in (1, 2)
    unreadable = ds.report.problems[Problem.UNREADABLE]  # each found, reported once
    assert sorted(Path(u.split(": ")[0]).name for u in unreadable) == [
        f"img{i}.jpg" for i in range(2, 10)
    ]
    for rec in data.records[:2]:
        Path(rec.file).write_bytes(b"")
    fresh = DetectionDataset(data, PreprocessConfig(input_size=(64, 64)), AugmentConfig())
    with pytest.raises(DatasetError, match="none of the 10 images could be decoded"):
        fresh[0]


def test_unreadable_yolo_val_images_and_their_boxes_are_counted_at_setup(tmp_path, caplog):
    images = _yolo(tmp_path, n=4)
    (tmp_path / "labels" / "img1.txt").write_text(LINE + "0 0.2 0.2 0.1 0.1\nnot a box\n")
    for i in (1, 3):
        (images / f"img{i}.jpg").write_bytes(b"")  # no size: its normalised boxes cannot be placed
    source = YoloSource(images=str(images), names=["a"])
    dm = DetectionDataModule(val=source, input_size=64, num_workers=0)
    with caplog.at_level("WARNING"):
        dm.setup("validate")
    assert (
        f"data.val: 2 unreadable images (e.g. {images / 'img1.jpg'}, {images / 'img3.jpg'}) "
        "left out with the 3 boxes of their label files"
    ) in caplog.text
    assert "does not give): mAP is over the other images" in caplog.text
    assert len(dm.val_coco.getImgIds()) == 2 and len(dm.val_coco.getAnnIds()) == 2


def test_check_data_counts_what_decodes_and_prints_notes(tmp_path: Path, capsys):
    images = _yolo(tmp_path, n=4)
    (images / "img3.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")  # header-less
    _image(images / "img4.jpg")  # no label file
    (images / "img2.jpg").unlink()
    png = bytearray(cv2.imencode(".png", np.full((H, W, 3), 120, np.uint8))[1].tobytes())
    start = png.index(b"IDAT") + 4
    png[start : start + 8] = bytes(b ^ 0x5A for b in png[start : start + 8])  # corrupt pixels
    (images / "img2.png").write_bytes(bytes(png))  # its header reads, its pixels do not
    args = [
        "data=yolo",
        f"data.train.images={images}",
        f"data.val.images={images}",
        "data.train.names=[a]",
    ]
    assert check_main(args) == 1  # two images do not decode
    out = capsys.readouterr().out
    assert "note: 1 of 5 images have no label file" in out
    assert "images: 4 (1 without boxes), boxes: 3" in out
    assert "of these, 1 image (1 box) does not decode" in out
    assert f"note: 1 unreadable image (e.g. {images / 'img3.jpg'}) left out with the 1 box" in out


def test_check_data_prints_what_train_warns_about(tmp_path: Path, capsys, caplog):
    images = _yolo(tmp_path, n=3)
    source = YoloSource(images=str(images), names=["a", "b"])
    with caplog.at_level("WARNING"):
        dm = DetectionDataModule(train=source, val=source, input_size=64, num_workers=0)
        dm.setup("fit")  # what train.py logs
    shared = f"data.train and data.val share 3 images (e.g. {images / 'img0.jpg'})"
    empty = "data.train: 1 of 2 classes have no box to learn from: 'b' (category_id 1)"
    assert shared in caplog.text and empty in caplog.text
    args = ["data=yolo", f"data.train.images={images}", f"data.val.images={images}"]
    assert check_main([*args, "data.train.names=[a,b]"]) == 0
    out = capsys.readouterr().out
    train, val = out.split("[val]")
    assert f"  warning: {empty}" in train and f"  warning: {shared}" in val
    assert check_main([*args, "data.train.names=[a]"]) == 0
    assert "classes have no box" not in capsys.readouterr().out


def test_check_data_config_mistake_is_one_line(capsys):
    assert check_main(["data=yolo", "data.train.imagez=/x"]) == 2
    err = capsys.readouterr().err
    assert "imagez" in err and "Traceback" not in err and len(err.strip().splitlines()) <= 3


def test_check_data_refuses_a_key_added_with_plus_as_train_does(tmp_path: Path, capsys):
    """+data.train.image=... (Hydra's own advice for an unknown key) ended check-data in a raw
    "InstantiationException ... unexpected keyword argument 'image'"; train.py's ConfigError."""
    from yolov4.cli.common import build
    from yolov4.errors import ConfigError

    images = _yolo(tmp_path, n=1)
    args = ["data=yolo", f"data.train.images={images}", "data.train.names=[a]", "data.val=null"]
    assert check_main([*args, f"+data.train.image={images}"]) == 2
    err = capsys.readouterr().err.strip()
    with pytest.raises(ConfigError) as info:  # what train.py says: build(cfg, "data")
        from hydra import compose, initialize_config_module

        with initialize_config_module("yolov4.configs", version_base="1.3"):
            overrides = [*args, f"+data.train.image={images}"]
            build(compose("train", overrides=overrides), "data")
    assert err == f"ConfigError: {info.value}" and "unexpected keyword argument 'image'" in err


def test_coco_sizes_of_the_stored_frame_keep_boxes_on_their_objects(tmp_path: Path):
    """A json whose width/height are the file's own, before an EXIF rotation of 90 degrees
    (tools that ignore the tag): the image is read as stored, where its boxes are."""
    from PIL import Image

    stored = np.full((64, 128, 3), 200, np.uint8)
    stored[8:24, 8:40] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    (tmp_path / "images").mkdir()
    Image.fromarray(stored).save(tmp_path / "images" / "r.jpg", exif=exif.tobytes(), quality=95)
    doc = {
        "images": [{"id": 1, "file_name": "r.jpg", "height": 64, "width": 128}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [8, 8, 32, 16], "area": 512}
        ],
        "categories": [{"id": 1, "name": "red"}],
    }
    (tmp_path / "a.json").write_text(json.dumps(doc))
    data = load_coco(tmp_path / "a.json", tmp_path / "images")
    ds = DetectionDataset(data, PreprocessConfig(input_size=(64, 128)))
    image, boxes, _ = ds.load(0)
    x1, y1, x2, y2 = boxes[0].astype(int)
    assert image.shape[:2] == (64, 128)
    np.testing.assert_allclose(image[y1:y2, x1:x2].reshape(-1, 3).mean(0), [255, 0, 0], atol=12)
    [detail] = ds.report.problems[Problem.STORED_FRAME]
    assert detail.endswith("r.jpg: annotated 128x64 (WxH), displayed 64x128")


def test_every_size_in_a_report_is_width_by_height(tmp_path: Path):
    """One file: "annotated 105x150, decoded 112x137" (height first) beside "box [...] in image
    150x105" (width first)."""
    cv2.imwrite(str(_image(tmp_path / "images" / "a.jpg")), np.full((112, 137, 3), 9, np.uint8))
    doc = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 105, "width": 150}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [74, 55, 100, 52], "area": 1}
        ],
        "categories": [{"id": 1, "name": "x"}],
    }
    (tmp_path / "a.json").write_text(json.dumps(doc))
    data = load_coco(tmp_path / "a.json", tmp_path / "images", report=(report := ProblemReport()))
    [clipped] = report.problems[Problem.BOX_CLIPPED]
    assert clipped.endswith("box [74, 55, 174, 107] in image 150x105 (WxH)"), clipped
    ds = DetectionDataset(data, PreprocessConfig(input_size=(64, 64)))
    assert ds.load(0)[0].shape[:2] == (105, 150)
    [resized] = ds.report.problems[Problem.SIZE_MISMATCH]
    assert resized.endswith("a.jpg: annotated 150x105 (WxH), decoded 137x112"), resized


def test_coco_file_names_written_on_windows_are_found(tmp_path: Path):
    _image(tmp_path / "images" / "sub" / "a.jpg")
    doc = {
        "images": [{"id": 1, "file_name": "sub\\a.jpg", "height": H, "width": W}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 10], "area": 100}
        ],
        "categories": [{"id": 1, "name": "x"}],
    }
    (tmp_path / "a.json").write_text(json.dumps(doc))
    report = ProblemReport()
    data = load_coco(tmp_path / "a.json", tmp_path / "images", report=report)
    assert [Path(r.file).relative_to(tmp_path) for r in data.records] == [Path("images/sub/a.jpg")]
    assert not report.problems
    assert data.info == [
        f"1 path(s) of {tmp_path / 'a.json'}'s file_name written with `\\` (on Windows) read "
        "with `/` (e.g. sub\\a.jpg as sub/a.jpg)"
    ]


def test_a_data_yaml_given_as_the_images_names_what_goes_where(tmp_path: Path):
    """data.train.images=data.yaml read the yaml as a list of image paths ("7 x missing image
    file ... listed in data.yaml") without a word on what to give instead."""
    data = tmp_path / "data.yaml"
    data.write_text("path: .\ntrain: images/train\nval: images/val\nnames: [a, b]\n")
    with pytest.raises(DatasetError, match=r"data.yaml is a data yaml, not a list of images: "
                       r"give the split's images folder .*\(data.<split>.names=.*\), or the "
                       r"yaml alone as data.file=.*data.yaml \(its train:/val: are the splits\)"):  # fmt: skip
        load_yolo(data, str(data))


def test_a_missing_images_folder_names_where_it_was_looked_for(tmp_path: Path, monkeypatch):
    """data.train.images=images/train run from the wrong folder said only "image directory
    not found: images/train", with a data yaml beside the images saying where they are."""
    _yolo(tmp_path / "ds", n=1)  # ds/images/img0.jpg
    # no `path:`: the splits are below the yaml's folder (ultralytics' rule)
    (tmp_path / "ds" / "data.yaml").write_text("train: images\nval: images/val\nnames: [a]\n")
    (tmp_path / "ds" / "a.json").write_text('{"images": [], "annotations": [], "categories": []}')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError) as info:
        load_yolo("images/train", "ds/data.yaml")
    message = str(info.value)
    assert message.startswith(
        f"image directory not found: images/train: looked for {tmp_path / 'images' / 'train'} "
        f"(a relative path is read from the working directory {tmp_path})"
    ), message
    assert (
        f"; ds/data.yaml gives `train:` {tmp_path / 'ds' / 'images'} (data.file=ds/data.yaml "
        "reads its splits)"
    ) in message
    assert "`val:`" not in message  # ds/images/val does not exist
    with pytest.raises(DatasetError, match=r"looked for .*/images/val \(a relative path is read "
                       r"from the working directory .*\) \(for "):  # fmt: skip
        load_coco(tmp_path / "ds" / "a.json", "images/val")  # a COCO json's images too


def test_check_data_says_no_problems_only_when_it_passes_and_fails_on_lost_ground_truth(
    tmp_path: Path, capsys
):
    """A labels folder missing printed "data.train: no problems found" and then failed (exit
    1); label lines dropped (ground truth lost) passed with exit 0."""
    images = _yolo(tmp_path, n=3)
    args = ["data=yolo", f"data.train.images={images}", "data.train.names=[a]", "data.val=null"]
    # repairs (a box clipped) and notes (a grayscale image): nothing lost, exit 0
    (tmp_path / "labels" / "img0.txt").write_text("0 0.9 0.5 0.4 0.5\n")
    cv2.imwrite(str(images / "img1.jpg"), np.full((H, W), 90, np.uint8))
    assert check_main(args) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == "check-data: nothing lost (exit 0): 1 repaired problem(s) and 1 note(s) above"
    # a class index outside the names and a 4-number line: two boxes lost, exit 1
    (tmp_path / "labels" / "img2.txt").write_text("3 0.5 0.5 0.4 0.5\n0 0.5 0.5 0.4\n")
    assert check_main(args) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith(
        "check-data: images or ground truth lost (exit 1): data.train: 2 label lines or "
        "boxes lost. Fix the files above"
    ), out[-1]
    # no labels folder: no box in the split; the summary does not say "no problems"
    for label in (tmp_path / "labels").iterdir():
        label.unlink()
    assert check_main(args) == 1
    captured = capsys.readouterr()
    out = captured.out.strip().splitlines()
    assert "no problems found" not in captured.out
    assert "data.train holds no box: train.py stops on it at start-up" in out
    assert out[-1] == (
        "check-data: FAILED (exit 1): data.train holds no box: train.py stops on it at start-up"
    )
    assert "DatasetError: data.train holds no box" in captured.err
