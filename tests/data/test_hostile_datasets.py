"""A corpus of malformed dataset files, generated in ``tmp_path``.

Each malformed entry is repaired or skipped and reported with its file and entry; strict mode
raises a DatasetError with that message; a malformed whole document is a DatasetError naming
the file. Duplicate ids and orphan annotations are reported, and the ground truth handed to
COCOeval always matches what the dataset trains on.
"""

from __future__ import annotations

import codecs
import contextlib
import copy
import io
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from yolov4.cli.check_data import main as check_main
from yolov4.data.check import split_statistics
from yolov4.data.coco import load_coco
from yolov4.data.image_io import read_image
from yolov4.data.problems import Problem, ProblemReport
from yolov4.data.records import DetectionData
from yolov4.data.yolo_txt import load_yolo, read_class_names
from yolov4.errors import DatasetError

H, W = 24, 32
FILES = ("a.jpg", "b.jpg", "c.jpg")


def _base() -> dict[str, Any]:
    """Three images, two categories (ids 2 and 5), four annotations (ids 1-4)."""

    def ann(i: int, image_id: int, cat: int, box: list[float]) -> dict[str, Any]:
        return {
            "id": i,
            "image_id": image_id,
            "category_id": cat,
            "bbox": box,
            "area": box[2] * box[3],
            "iscrowd": 0,
        }

    return {
        "info": {"description": "hostile"},
        "images": [
            {"id": i + 1, "file_name": f, "height": H, "width": W} for i, f in enumerate(FILES)
        ],
        "annotations": [
            ann(1, 1, 2, [1.0, 1.0, 10.0, 8.0]),
            ann(2, 1, 5, [12.0, 6.0, 6.0, 9.0]),
            ann(3, 2, 2, [3.0, 2.0, 20.0, 15.0]),
            ann(4, 3, 5, [5.0, 5.0, 4.0, 4.0]),
        ],
        "categories": [{"id": 2, "name": "thing"}, {"id": 5, "name": "other"}],
    }


def _write(root: Path, dataset: Any) -> tuple[Path, Path]:
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    for f in FILES:
        Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(images / f)
    path = root / "instances.json"
    path.write_text(json.dumps(dataset))
    return path, images


def _set(section: str, index: int, key: str, value: Any) -> Callable[[dict], None]:
    def mutate(d: dict) -> None:
        d[section][index][key] = value

    return mutate


def _drop(section: str, index: int, key: str) -> Callable[[dict], None]:
    def mutate(d: dict) -> None:
        del d[section][index][key]

    return mutate


def _replace(section: str, index: int, value: Any) -> Callable[[dict], None]:
    def mutate(d: dict) -> None:
        d[section][index] = value

    return mutate


# name -> (mutation of the base, problem kind, text the report names the entry with,
#          image ids kept, annotation count kept in the ground truth)
VARIANTS: dict[str, tuple[Callable[[dict], None], str, str, set[int], int]] = {
    "ann_without_bbox": (_drop("annotations", 0, "bbox"), "BAD_ANNOTATION", "id 1", {1, 2, 3}, 3),
    "ann_bbox_null": (_set("annotations", 0, "bbox", None), "BAD_ANNOTATION", "id 1", {1, 2, 3}, 3),
    "ann_polygon_without_bbox": (
        lambda d: d["annotations"][0].update(bbox=None, segmentation=[[1, 1, 11, 1, 11, 9, 1, 9]]),
        "BBOX_FROM_SEGMENTATION",
        "annotations[0] (id 1): bbox None, computed from its polygon segmentation: [1, 1, 10, 8]",
        {1, 2, 3},
        4,
    ),
    "ann_bad_segmentation_without_bbox": (
        lambda d: d["annotations"][0].update(bbox=None, segmentation=[["a", "b"]]),
        "BAD_ANNOTATION",
        "id 1",
        {1, 2, 3},
        3,
    ),
    "ann_bbox_3_numbers": (
        _set("annotations", 0, "bbox", [1, 2, 3]),
        "BAD_ANNOTATION",
        "id 1",
        {1, 2, 3},
        3,
    ),
    "ann_bbox_strings": (
        _set("annotations", 0, "bbox", ["1", "1", "10", "8"]),
        "BAD_ANNOTATION",
        "id 1",
        {1, 2, 3},
        3,
    ),
    "ann_without_category_id": (
        _drop("annotations", 1, "category_id"),
        "BAD_ANNOTATION",
        "id 2",
        {1, 2, 3},
        3,
    ),
    "ann_category_id_list": (
        _set("annotations", 1, "category_id", [5]),
        "BAD_ANNOTATION",
        "id 2",
        {1, 2, 3},
        3,
    ),
    "ann_without_id": (
        _drop("annotations", 2, "id"),
        "ANNOTATION_ID",
        "annotations[2]",
        {1, 2, 3},
        4,
    ),
    "ann_image_id_string": (
        _set("annotations", 3, "image_id", "3"),
        "BAD_ANNOTATION",
        "id 4",
        {1, 2, 3},
        3,
    ),
    "ann_not_an_object": (
        _replace("annotations", 3, None),
        "BAD_ANNOTATION",
        "annotations[3]",
        {1, 2, 3},
        3,
    ),
    "ann_area_string": (_set("annotations", 0, "area", "big"), "BAD_FIELD", "id 1", {1, 2, 3}, 4),
    "image_without_file_name": (
        _drop("images", 1, "file_name"),
        "BAD_IMAGE",
        "images[1]",
        {1, 3},
        3,
    ),
    "image_without_width_height": (
        lambda d: [d["images"][1].pop(k) for k in ("width", "height")],
        "IMAGE_SIZE",
        "b.jpg",
        {1, 2, 3},
        4,
    ),
    "image_width_not_numeric": (
        _set("images", 1, "width", "wide"),
        "IMAGE_SIZE",
        "b.jpg",
        {1, 2, 3},
        4,
    ),
    "image_width_huge": (_set("images", 1, "width", 10**400), "IMAGE_SIZE", "b.jpg", {1, 2, 3}, 4),
    "ann_bbox_huge": (
        _set("annotations", 0, "bbox", [1, 1, 10**400, 8]),
        "BAD_ANNOTATION",
        "id 1",
        {1, 2, 3},
        3,
    ),
    "image_id_string": (_set("images", 2, "id", "three"), "BAD_IMAGE", "images[2]", {1, 2}, 3),
    "image_not_an_object": (_replace("images", 2, 7), "BAD_IMAGE", "images[2]", {1, 2}, 3),
    "category_without_name": (
        _drop("categories", 1, "name"),
        "CATEGORY_NAME",
        "categories[1]",
        {1, 2, 3},
        4,
    ),
    "category_without_id": (
        _drop("categories", 1, "id"),
        "BAD_CATEGORY",
        "categories[1]",
        {1, 2, 3},
        2,
    ),
    # item 5: duplicates and orphans
    "duplicate_image_id": (_set("images", 1, "id", 1), "DUPLICATE_IMAGE", "b.jpg", {1, 3}, 3),
    "duplicate_annotation_id": (
        _set("annotations", 1, "id", 1),
        "DUPLICATE_ANNOTATION",
        "id 1",
        {1, 2, 3},
        4,
    ),
    "repeated_annotation": (
        lambda d: d["annotations"].append(copy.deepcopy(d["annotations"][0])),
        "DUPLICATE_ANNOTATION",
        "id 1",
        {1, 2, 3},
        4,
    ),
    "same_box_under_a_new_id": (
        lambda d: d["annotations"].append({**copy.deepcopy(d["annotations"][0]), "id": 9}),
        "DUPLICATE_BOX",
        "annotations[4] (id 9): the box of annotations[0] (id 1)",
        {1, 2, 3},
        4,
    ),
    "orphan_annotation": (
        _set("annotations", 3, "image_id", 99),
        "ORPHAN_ANNOTATION",
        "id 4",
        {1, 2, 3},
        3,
    ),
}


def _variant(tmp_path: Path, name: str) -> tuple[Path, Path]:
    dataset = _base()
    VARIANTS[name][0](dataset)
    return _write(tmp_path, dataset)


def perfect_detections_ap(data: DetectionData) -> float:
    """COCO AP of detections equal to the training boxes: 1.0 exactly when the ground truth
    handed to COCOeval holds the same boxes the dataset trains on (no box lost or doubled)."""
    results = [
        {
            "image_id": r.image_id,
            "category_id": data.category_ids[int(c)],
            "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
            "score": 1.0,
        }
        for r in data.records
        for b, c in zip(r.boxes, r.labels, strict=True)
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(data.coco, data.coco.loadRes(results), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def assert_ground_truth_matches_records(data: DetectionData) -> None:
    gt = data.coco.dataset
    ann_ids = [a["id"] for a in gt["annotations"]]
    assert len(ann_ids) == len(set(ann_ids)), "annotation ids unique"
    assert sorted(i["id"] for i in gt["images"]) == sorted(r.image_id for r in data.records)
    assert [c["id"] for c in gt["categories"]] == data.category_ids
    for r in data.records:
        anns = [a for a in data.coco.imgToAnns[r.image_id] if not a.get("iscrowd", 0)]
        assert len(anns) == len(r.boxes)
        xywh = [[b[0], b[1], b[2] - b[0], b[3] - b[1]] for b in r.boxes.tolist()]
        np.testing.assert_allclose(
            sorted(a["bbox"] for a in anns), sorted(xywh), atol=1e-4, err_msg=str(r)
        )
        for a in anns:
            assert data.coco.anns[a["id"]] is a
    assert perfect_detections_ap(data) == pytest.approx(1.0)


def test_the_base_dataset_is_clean(tmp_path: Path):
    path, images = _write(tmp_path, _base())
    report = ProblemReport()
    data = load_coco(path, images, report=report)
    assert len(report) == 0
    assert len(data.records) == 3 and data.class_names == ["thing", "other"]
    assert_ground_truth_matches_records(data)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_malformed_entry_is_reported_repaired_or_skipped(tmp_path: Path, name: str):
    _, kind, entry, image_ids, num_anns = VARIANTS[name]
    path, images = _variant(tmp_path, name)
    report = ProblemReport(name="hostile")
    data = load_coco(path, images, report=report)
    found = report.problems[getattr(Problem, kind)]
    assert found, report.summary()
    assert any(str(path) in f and entry in f for f in found), found
    assert {r.image_id for r in data.records} == image_ids
    assert len(data.coco.dataset["annotations"]) == num_anns
    assert_ground_truth_matches_records(data)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_strict_mode_stops_naming_file_and_entry(tmp_path: Path, name: str):
    _, kind, entry, _, _ = VARIANTS[name]
    path, images = _variant(tmp_path, name)
    with pytest.raises(DatasetError) as info:
        load_coco(path, images, report=ProblemReport(strict=True, name="data.train"))
    message = str(info.value)
    assert str(path) in message and entry in message
    assert getattr(Problem, kind).split(" (")[0] in message


def test_category_without_name_is_named_after_its_id(tmp_path: Path):
    path, images = _variant(tmp_path, "category_without_name")
    data = load_coco(path, images, report=ProblemReport())
    assert data.class_names == ["thing", "category_5"] and data.category_ids == [2, 5]


def test_missing_size_is_read_from_the_image_file(tmp_path: Path):
    path, images = _variant(tmp_path, "image_width_not_numeric")
    data = load_coco(path, images, report=ProblemReport())
    rec = next(r for r in data.records if r.image_id == 2)
    assert (rec.height, rec.width) == (H, W)
    assert data.coco.imgs[2]["width"] == W


def test_duplicate_image_id_keeps_the_first_entry(tmp_path: Path):
    path, images = _variant(tmp_path, "duplicate_image_id")
    report = ProblemReport()
    data = load_coco(path, images, report=report)
    rec = next(r for r in data.records if r.image_id == 1)
    assert rec.file.endswith("a.jpg")
    (problem,) = report.problems[Problem.DUPLICATE_IMAGE]
    assert "b.jpg" in problem and "a.jpg" in problem  # names both files
    # the annotation of the skipped entry's own id (2) is now an orphan: reported, not trained on
    assert any("id 3" in p for p in report.problems[Problem.ORPHAN_ANNOTATION])


def test_duplicate_annotation_id_keeps_both_boxes_under_unique_ids(tmp_path: Path):
    path, images = _variant(tmp_path, "duplicate_annotation_id")
    data = load_coco(path, images, report=ProblemReport())
    rec = next(r for r in data.records if r.image_id == 1)
    assert len(rec.boxes) == 2
    ids = sorted(a["id"] for a in data.coco.dataset["annotations"])
    assert ids == [1, 3, 4, 5]  # the later one renumbered after the largest id


def test_annotation_ids_from_0_are_renumbered_so_cocoeval_matches_every_box(tmp_path: Path):
    """Roboflow numbers annotations from 0; COCOeval reads a match to id 0 as no match, so a
    perfect detection of that box was a false positive and the box a miss (mAP50 below 1)."""
    dataset = _base()
    for k, a in enumerate(dataset["annotations"]):
        a["id"] = k
    path, images = _write(tmp_path, dataset)
    report = ProblemReport()
    data = load_coco(path, images, report=report)
    (problem,) = report.problems[Problem.ANNOTATION_ID]
    assert "annotations[0] (id 0): id 0 (COCOeval takes ids below 1" in problem
    heading = report.summary().splitlines()[1]  # the kind an id of 0 is listed under
    assert heading.endswith("1 x " + Problem.ANNOTATION_ID)
    assert "below 1" in heading and "without an integer id" not in heading
    assert sorted(data.coco.anns) == [1, 2, 3, 4]
    perfect = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1}
        for a in data.coco.dataset["annotations"]
    ]
    ev = COCOeval(data.coco, data.coco.loadRes(perfect), "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate(), ev.accumulate(), ev.summarize()
    assert ev.stats[1] == pytest.approx(1.0)  # mAP50: every box matched


def test_repeated_annotation_is_dropped(tmp_path: Path):
    path, images = _variant(tmp_path, "repeated_annotation")
    data = load_coco(path, images, report=ProblemReport())
    rec = next(r for r in data.records if r.image_id == 1)
    assert len(rec.boxes) == 2  # not 3: the repeat is one box


def test_every_box_listed_twice_under_new_ids_scores_itself_at_map_1(tmp_path: Path):
    """A json whose every annotation is repeated under a new id: the ground truth against
    itself scored mAP50 0.505 (each repeat a box no detection can match)."""
    dataset = _base()
    dataset["annotations"] += [{**a, "id": a["id"] + 10} for a in dataset["annotations"]]
    path, images = _write(tmp_path, dataset)
    report = ProblemReport()
    data = load_coco(path, images, report=report)
    assert len(report.problems[Problem.DUPLICATE_BOX]) == 4 and len(report) == 4
    assert data.num_boxes == 4 and len(data.coco.dataset["annotations"]) == 4
    assert_ground_truth_matches_records(data)


def _rle(compressed: bool) -> dict[str, Any]:
    """The RLE of a mask covering annotation 0's box ``[1, 1, 10, 8]`` (xywh)."""
    mask = np.zeros((H, W), np.uint8, order="F")
    mask[1:9, 1:11] = 1
    if compressed:
        rle = mask_utils.encode(mask)
        return {"size": rle["size"], "counts": rle["counts"].decode()}
    runs = [len(list(run)) for _, run in itertools.groupby(mask.ravel(order="F"))]
    return {"size": [H, W], "counts": runs}  # column-major runs, zeros first (mask[0, 0] = 0)


@pytest.mark.parametrize(
    "segmentation",
    [
        [[1, 1, 11, 1, 11, 9, 1, 9]],
        [[1, 1, 11, 1, 6, 5], [1, 9, 6, 4, 11, 9]],  # two parts
        [1, 1, 11, 1, 11, 9, 1, 9],  # one flat polygon
        _rle(compressed=True),
        _rle(compressed=False),
    ],
)
@pytest.mark.parametrize("bbox", ["missing", None, []])
def test_annotation_without_bbox_gets_its_segmentations_box(
    tmp_path: Path, segmentation: Any, bbox: Any
):
    dataset = _base()
    dataset["annotations"][0]["segmentation"] = segmentation
    if bbox == "missing":
        del dataset["annotations"][0]["bbox"]
    else:
        dataset["annotations"][0]["bbox"] = bbox
    path, images = _write(tmp_path, dataset)
    report = ProblemReport()
    data = load_coco(path, images, report=report)
    (problem,) = report.problems[Problem.BBOX_FROM_SEGMENTATION]
    assert "annotations[0] (id 1)" in problem and "[1, 1, 10, 8]" in problem, problem
    assert len(report) == 1
    rec = next(r for r in data.records if r.image_id == 1)
    np.testing.assert_allclose(rec.boxes[0], [1, 1, 11, 9])
    assert_ground_truth_matches_records(data)


def test_box_problems_name_the_image_and_the_annotation(tmp_path: Path):
    dataset = _base()
    dataset["annotations"][0]["bbox"] = [5.0, 5.0, 0.0, 3.0]
    path, images = _write(tmp_path, dataset)
    report = ProblemReport()
    load_coco(path, images, report=report)
    (problem,) = report.problems[Problem.BOX_EMPTY]
    assert (
        "a.jpg" in problem and "annotations[0] (id 1): bbox [x, y, w, h] = [5, 5, 0, 3]" in problem
    )
    assert "as x1, y1, x2, y2: box [5, 5, 5, 8]" in problem  # the json's box, then ours


def test_missing_area_and_iscrowd_are_filled_for_cocoeval(tmp_path: Path):
    dataset = _base()
    for a in dataset["annotations"]:
        del a["area"], a["iscrowd"]
    path, images = _write(tmp_path, dataset)
    report = ProblemReport()
    data = load_coco(path, images, report=report)
    assert len(report) == 0  # optional in practice: COCO's meaning is filled in silently
    assert data.coco.anns[1]["area"] == pytest.approx(80.0) and data.coco.anns[1]["iscrowd"] == 0
    assert_ground_truth_matches_records(data)


WHOLE_DOCUMENTS = {
    "null": ("null", "found null"),
    "list": ("[]", "found a list"),
    "string": ('"images"', "found a str"),
    "images_not_list": (
        json.dumps({"images": {}, "annotations": [], "categories": []}),
        "`images`",
    ),
    "categories_null": (
        json.dumps({"images": [], "annotations": [], "categories": None}),
        "`categories`",
    ),
    "no_usable_category": (
        json.dumps({"images": [], "annotations": [], "categories": [{"name": "x"}]}),
        "categor",
    ),
    "invalid_json": ("{", "not valid json"),
    "deep_nesting": ("[" * 100_000 + "]" * 100_000, "not valid json"),
}


@pytest.mark.parametrize("name", list(WHOLE_DOCUMENTS))
def test_malformed_document_is_a_dataset_error_naming_the_file(tmp_path: Path, name: str):
    text, expected = WHOLE_DOCUMENTS[name]
    path, images = _write(tmp_path, None)
    path.write_text(text)
    with pytest.raises(DatasetError, match="expected|not valid json") as info:
        load_coco(path, images, report=ProblemReport())
    assert str(path) in str(info.value) and expected in str(info.value)


def test_non_utf8_json_is_a_dataset_error(tmp_path: Path):
    path, images = _write(tmp_path, None)
    path.write_bytes(b'{"images": ["\xff\xfe"]}')
    with pytest.raises(DatasetError, match="not valid json"):
        load_coco(path, images, report=ProblemReport())


def test_no_usable_image_says_why(tmp_path: Path):
    dataset = _base()
    for img in dataset["images"]:
        img["id"] = str(img["id"])
    path, images = _write(tmp_path, dataset)
    with pytest.raises(DatasetError, match="no usable image") as info:
        load_coco(path, images, report=ProblemReport())
    assert "images[0]" in str(info.value)  # the report's first problems come with it


def test_check_command_lists_duplicates_and_orphans(tmp_path: Path, capsys: pytest.CaptureFixture):
    dataset = _base()
    dataset["images"][1]["id"] = 1  # duplicate image id
    dataset["annotations"][1]["id"] = 1  # duplicate annotation id
    dataset["annotations"][3]["image_id"] = 99  # orphan
    path, images = _write(tmp_path, dataset)
    args = [f"data.val.annotations={path}", f"data.val.images={images}", "data.train=null"]
    assert check_main(["data=coco", *args, "--no-decode"]) == 1  # an image, a box lost
    out = capsys.readouterr().out
    for kind in ("DUPLICATE_IMAGE", "DUPLICATE_ANNOTATION", "ORPHAN_ANNOTATION"):
        assert getattr(Problem, kind) in out
    assert "image_id 99" in out
    assert "data.val: 2 label lines or boxes lost, 1 image left out" in out
    assert check_main(["data=coco", *args, "--no-decode", "--strict"]) == 1
    assert "DatasetError" in capsys.readouterr().err


def test_a_val_split_without_boxes_is_said_to_leave_map_undefined_not_to_stop_training(
    tmp_path: Path, capsys: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
):
    """check-data said a val split without boxes stops training; training ran, logging mAP 0
    every epoch and choosing best.pt by it, with no word."""
    import logging

    from yolov4.cli.common import warn_without_ground_truth
    from yolov4.data.coco import CocoSource
    from yolov4.data.datamodule import DetectionDataModule

    dataset = _base()
    dataset["annotations"] = []
    path, images = _write(tmp_path, dataset)
    args = [f"data.val.annotations={path}", f"data.val.images={images}", "data.train=null"]
    assert check_main(["data=coco", *args, "--no-decode"]) == 0
    out = capsys.readouterr().out
    assert "no box in this split: COCO mAP is undefined on it" in out
    assert "training on it stops" not in out
    # the same split as data.train: train.py refuses it, so the check does not pass it
    both = [f"data.train.annotations={path}", f"data.train.images={images}", *args[:2]]
    assert check_main(["data=coco", *both, "--no-decode"]) == 1
    assert "data.train holds no box: train.py stops on it" in capsys.readouterr().err
    dm = DetectionDataModule(val=CocoSource(str(path), str(images)))
    with caplog.at_level(logging.WARNING, logger="yolov4"):
        warn_without_ground_truth(dm, training=True)
    assert "data.val has no ground-truth box" in caplog.text and "best.pt" in caplog.text


# ---------------------------------------------------------------------------------- YOLO txt


def _yolo(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for stem in ("ok", "latin"):
        Image.fromarray(np.full((H, W, 3), 90, np.uint8)).save(root / "images" / f"{stem}.jpg")
    (root / "labels" / "ok.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "labels" / "latin.txt").write_bytes(b"0 0.5 0.5 0.2 0.2 # caf\xe9\n")
    return root


def test_yolo_label_file_not_utf8_is_reported_and_its_image_skipped(tmp_path: Path):
    root = _yolo(tmp_path)
    report = ProblemReport()
    data = load_yolo(root / "images", ["a"], report=report)
    assert [Path(r.file).name for r in data.records] == ["ok.jpg"]
    (problem,) = report.problems[Problem.NOT_TEXT]
    assert "latin.txt" in problem and "offset 23" in problem
    with pytest.raises(DatasetError, match=r"latin\.txt"):
        load_yolo(root / "images", ["a"], report=ProblemReport(strict=True))


def test_yolo_label_file_written_twice_keeps_each_box_once(tmp_path: Path):
    root = _yolo(tmp_path)
    lines = "0 0.5 0.5 0.2 0.2\n0 0.25 0.25 0.2 0.2\n1 0.5 0.5 0.2 0.2\n"
    (root / "labels" / "ok.txt").write_text(lines + lines)
    (root / "labels" / "latin.txt").write_text(lines + lines)
    report = ProblemReport()
    data = load_yolo(root / "images", ["a", "b"], report=report)
    assert [len(r.boxes) for r in data.records] == [3, 3]  # class 1 on class 0's box is kept
    found = report.problems[Problem.DUPLICATE_BOX]
    assert len(found) == len(report) == 6
    assert any("ok.txt: line 4: repeats line 1" in f for f in found), found
    assert_ground_truth_matches_records(data)


def test_check_data_counts_lost_lines_apart_from_repeated_boxes(tmp_path, capsys):
    """The verdict's count agrees with the list above it: a lost line, and the repeated boxes
    (listed as dropped) counted apart, since they lose no ground truth."""
    root = _yolo(tmp_path)
    lines = "0 0.5 0.5 0.2 0.2\n0 0.25 0.25 0.2 0.2\n"
    (root / "labels" / "ok.txt").write_text(lines + lines + "0 0.5 0.5\n")
    (root / "labels" / "latin.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    args = [f"data.train.images={root / 'images'}", "data.train.names=[a]", "data.val=null"]
    assert check_main(["data=yolo", *args, "--no-decode"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert "       2 x box repeating an earlier box" in "\n".join(out)
    assert out[-1].startswith(
        "check-data: images or ground truth lost (exit 1): data.train: 1 label line or box "
        "lost, 2 repeated boxes dropped (no ground truth lost). Fix"
    ), out[-1]


@pytest.mark.parametrize("split", ["train", "val"])
def test_unreadable_image_notes_agree_in_number_and_name_files_as_the_report(tmp_path, split):
    root = _yolo(tmp_path)
    (root / "labels" / "latin.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    bad = root / "images" / "latin.jpg"
    bad.write_bytes(b"x" * 2000)  # no image header
    report = ProblemReport(name=f"data.{split}")
    data = load_yolo(root / "images", ["a"], report=report)
    (problem,) = report.problems[Problem.UNREADABLE]
    (note,) = [n for n in data.notes if "unreadable" in n]
    goes_on = {"train": "training is", "val": "mAP is"}[split]
    assert note.startswith(f"1 unreadable image (e.g. {bad}) left out with the 1 box of its label")
    assert note.endswith(f": {goes_on} over the other images"), note
    assert problem.startswith(f"{bad}: ")  # one form of the file's name in both
    stats = split_statistics(data, [0], split)
    assert "  of these, 1 image (1 box) does not decode: skipped in training" in stats
    assert "  of these, 2 images (2 boxes) do not decode" in split_statistics(data, [0, 0], split)
    decoded = ProblemReport()
    assert read_image(bad, decoded) is None
    (unreadable,) = decoded.problems[Problem.UNREADABLE]
    assert unreadable.startswith(f"{bad}: 2,000 bytes: ")  # thousands as every byte count


UTF16 = {"le": (b"", "utf-16", "FF FE"), "be": (codecs.BOM_UTF16_BE, "utf-16-be", "FE FF")}


@pytest.mark.parametrize("order", list(UTF16))
def test_utf16_text_files_are_named_as_such_with_the_fix(tmp_path: Path, order: str):
    """Notepad's "Unicode" and PowerShell 5's `>` write UTF-16: a label file of it is reported,
    a names file or a list file of it refused, each saying so and how to fix it."""
    bom, codec, shown = UTF16[order]
    root = _yolo(tmp_path)
    (root / "labels" / "latin.txt").write_bytes(bom + "0 0.5 0.5 0.2 0.2\n".encode(codec))
    report = ProblemReport()
    load_yolo(root / "images", ["a"], report=report)
    (problem,) = report.problems[Problem.NOT_TEXT]
    assert problem.endswith(f"latin.txt: found UTF-16 text (BOM {shown}): save it as UTF-8")
    names = tmp_path / "obj.names"
    names.write_bytes(bom + "a\nb\n".encode(codec))
    with pytest.raises(DatasetError, match=rf"obj\.names: expected UTF-8 text, found UTF-16 text "
                       rf"\(BOM {shown}\): save it as UTF-8"):  # fmt: skip
        read_class_names(names)
    listing = tmp_path / "train.txt"
    listing.write_bytes(bom + f"{root / 'images' / 'ok.jpg'}\n".encode(codec))
    with pytest.raises(DatasetError, match=rf"train\.txt: .*found UTF-16 text \(BOM {shown}\)"):
        load_yolo(listing, ["a"], report=ProblemReport())


@pytest.mark.parametrize("order", list(UTF16))
def test_boxes_of_a_utf16_label_file_lost_with_its_unreadable_image_are_counted(tmp_path, order):
    bom, codec, _ = UTF16[order]
    root = _yolo(tmp_path)
    lines = "0 0.5 0.5 0.2 0.2\n1 0.25 0.25 0.1 0.1\nnot a box\n"
    (root / "labels" / "latin.txt").write_bytes(bom + lines.encode(codec))
    bad = root / "images" / "latin.jpg"
    bad.write_bytes(b"x" * 2000)  # no image header
    data = load_yolo(root / "images", ["a", "b"], report=ProblemReport())
    (note,) = [n for n in data.notes if "unreadable" in n]
    assert note.startswith(f"1 unreadable image (e.g. {bad}) left out with the 2 boxes of its"), (
        note
    )


def test_yolo_label_file_with_bom_is_read(tmp_path: Path):
    root = _yolo(tmp_path)
    (root / "labels" / "latin.txt").write_bytes(b"\xef\xbb\xbf0 0.5 0.5 0.2 0.2\n")
    report = ProblemReport()
    data = load_yolo(root / "images", ["a"], report=report)
    assert len(report) == 0 and all(len(r.boxes) == 1 for r in data.records)


NAMES_FILES = {
    "invalid_yaml.yaml": ("names: [a, b\n", "not valid YAML"),
    "string_keys.yaml": ("names:\n  cat: 0\n  dog: 1\n", "integer keys"),
    "gap_keys.yaml": ("names:\n  0: a\n  2: c\n", "0..1"),
    "null_names.yaml": ("names: null\n", "`names:`"),
    "null_document.yaml": ("", "`names:`"),
    "null_entry.yaml": ("names: [a, null]\n", "names[1]"),
    "not_utf8.yaml": (b"names: [caf\xe9]\n", "UTF-8"),
    "not_utf8.names": (b"caf\xe9\n", "UTF-8"),
}


@pytest.mark.parametrize("file", list(NAMES_FILES))
def test_bad_names_file_is_a_dataset_error_naming_the_file(tmp_path: Path, file: str):
    content, expected = NAMES_FILES[file]
    path = tmp_path / file
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(DatasetError) as info:
        read_class_names(str(path))
    assert str(path) in str(info.value) and expected in str(info.value)


def test_names_yaml_with_integer_or_digit_keys_is_ordered_by_index(tmp_path: Path):
    path = tmp_path / "data.yaml"
    path.write_text("names:\n  1: dog\n  0: cat\n")
    assert read_class_names(str(path)) == ["cat", "dog"]
    path.write_text("names:\n  '1': dog\n  '0': cat\n")
    assert read_class_names(str(path)) == ["cat", "dog"]


def test_datamodule_setup_logs_duplicates_and_strict_stops(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    from yolov4.data.coco import CocoSource
    from yolov4.data.datamodule import DetectionDataModule

    dataset = _base()
    dataset["annotations"][1]["id"] = 1
    path, images = _write(tmp_path, dataset)
    source = CocoSource(annotations=str(path), images=str(images))
    dm = DetectionDataModule(val=source, input_size=64, num_workers=0)
    with caplog.at_level("WARNING"):
        dm.setup()
    assert "annotations[1] (id 1): id already used by annotations[0] (id 1)" in caplog.text
    ids = [a["id"] for a in dm.val_coco.dataset["annotations"]]
    assert len(ids) == len(set(ids)) == 4
    strict = DetectionDataModule(val=source, input_size=64, num_workers=0, strict=True)
    with pytest.raises(DatasetError, match=r"duplicate annotation id in .*instances\.json"):
        strict.setup()
