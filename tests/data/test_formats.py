"""Round trips: synthetic COCO json ↔ generator, YOLO txt ↔ its COCO twin, category ids → results."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from pycocotools.cocoeval import COCOeval

from tests.data.conftest import SYNTH_IMAGES, SYNTH_SIZE
from yolov4.data.coco import CocoSource, load_coco
from yolov4.data.problems import ProblemReport
from yolov4.data.synthetic import (
    SHAPES,
    SPLIT_CODES,
    SYNTHETIC_CATEGORY_IDS,
    generate_split,
    render_sample,
)
from yolov4.data.yolo_txt import YoloSource, load_yolo, read_class_names
from yolov4.errors import DatasetError


def test_synthetic_json_loads_back_with_the_generated_boxes(synth_split: Path):
    data = load_coco(synth_split / "annotations.json", synth_split / "images")
    assert data.class_names == list(SHAPES)
    assert data.category_ids == list(SYNTHETIC_CATEGORY_IDS)
    assert len(data.records) == SYNTH_IMAGES
    for i, rec in enumerate(data.records):
        image, boxes, labels, _ = render_sample(
            np.random.default_rng([3, SPLIT_CODES["val"], i]), SYNTH_SIZE
        )
        assert (rec.height, rec.width) == image.shape[:2]
        np.testing.assert_allclose(rec.boxes, boxes, atol=2e-3)
        np.testing.assert_array_equal(rec.labels, labels)
    assert sum(len(r.labels) for r in data.records) == len(data.coco.getAnnIds())


def test_generation_is_cached_and_deterministic(synth_cache: Path, tmp_path: Path):
    a = generate_split(synth_cache, "val", SYNTH_IMAGES, SYNTH_SIZE, seed=3)
    mtime = (a / "annotations.json").stat().st_mtime_ns
    assert generate_split(synth_cache, "val", SYNTH_IMAGES, SYNTH_SIZE, seed=3) == a
    assert (a / "annotations.json").stat().st_mtime_ns == mtime  # reused, not rewritten
    b = generate_split(tmp_path, "val", SYNTH_IMAGES, SYNTH_SIZE, seed=3)
    assert json.loads((a / "annotations.json").read_text()) == json.loads(
        (b / "annotations.json").read_text()
    )
    c = generate_split(tmp_path, "val", SYNTH_IMAGES, SYNTH_SIZE, seed=4)
    assert json.loads((c / "annotations.json").read_text()) != json.loads(
        (b / "annotations.json").read_text()
    )


def write_yolo_twin(coco_dir: Path, out: Path) -> Path:
    """Write the YOLO txt twin of a COCO split (same images, normalised cx cy w h)."""
    data = load_coco(coco_dir / "annotations.json", coco_dir / "images")
    (out / "images").mkdir(parents=True)
    (out / "labels").mkdir()
    for rec in data.records:
        name = Path(rec.file).name
        shutil.copy(rec.file, out / "images" / name)
        lines = []
        for (x1, y1, x2, y2), c in zip(rec.boxes.tolist(), rec.labels.tolist(), strict=True):
            cx, cy = (x1 + x2) / 2 / rec.width, (y1 + y2) / 2 / rec.height
            lines.append(
                f"{c} {cx:.8f} {cy:.8f} {(x2 - x1) / rec.width:.8f} {(y2 - y1) / rec.height:.8f}"
            )
        (out / "labels" / name).with_suffix(".txt").write_text("\n".join(lines))
    (out / "data.yaml").write_text("names: {0: circle, 1: rectangle, 2: triangle, 3: cross}\n")
    return out


def test_yolo_twin_gives_the_same_boxes_and_ground_truth(synth_split: Path, tmp_path: Path):
    coco = load_coco(synth_split / "annotations.json", synth_split / "images")
    twin = write_yolo_twin(synth_split, tmp_path / "yolo")
    yolo = YoloSource(images=str(twin / "images"), names=str(twin / "data.yaml")).load(
        ProblemReport(strict=True)
    )
    assert yolo.class_names == coco.class_names
    assert yolo.category_ids == [0, 1, 2, 3]  # the YOLO class index is the category id
    assert [Path(r.file).name for r in yolo.records] == [Path(r.file).name for r in coco.records]
    for a, b in zip(yolo.records, coco.records, strict=True):
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-3)
        np.testing.assert_array_equal(a.labels, b.labels)
    # the in-memory COCO ground truth holds the same boxes
    gt_yolo = sorted(tuple(np.round(a["bbox"], 2)) for a in yolo.coco.dataset["annotations"])
    gt_coco = sorted(tuple(np.round(a["bbox"], 2)) for a in coco.coco.dataset["annotations"])
    assert gt_yolo == gt_coco


def _ap_of_perfect_results(data, category_ids) -> float:
    results = [
        {
            "image_id": rec.image_id,
            "category_id": category_ids[c],
            "bbox": [x1, y1, x2 - x1, y2 - y1],
            "score": 1.0,
        }
        for rec in data.records
        for (x1, y1, x2, y2), c in zip(rec.boxes.tolist(), rec.labels.tolist(), strict=True)
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(data.coco, data.coco.loadRes(results), "bbox")
        ev.evaluate(), ev.accumulate(), ev.summarize()
    return float(ev.stats[0])


def test_category_ids_survive_to_results(synth_split: Path):
    data = CocoSource(str(synth_split / "annotations.json"), str(synth_split / "images")).load(
        ProblemReport()
    )
    assert _ap_of_perfect_results(data, data.category_ids) == pytest.approx(1.0)
    # writing contiguous indices instead of the original ids (gaps: 1, 3, 5, 7) is caught
    assert _ap_of_perfect_results(data, list(range(data.num_classes))) < 0.5


def test_class_names_sources(tmp_path: Path):
    (tmp_path / "a.names").write_text("cat\ndog\n\n")
    (tmp_path / "d.yaml").write_text("names: [cat, dog]\n")
    assert read_class_names(str(tmp_path / "a.names")) == ["cat", "dog"]
    assert read_class_names(str(tmp_path / "d.yaml")) == ["cat", "dog"]
    assert read_class_names(["x"]) == ["x"]
    with pytest.raises(DatasetError, match="class names file not found"):
        read_class_names(str(tmp_path / "none.names"))


def test_unusable_datasets_fail_at_setup_saying_what_to_fix(tmp_path: Path, synth_split: Path):
    with pytest.raises(DatasetError, match="annotation file not found.*instances_"):
        load_coco(tmp_path / "missing.json", tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match="not valid json"):
        load_coco(tmp_path / "bad.json", tmp_path)
    with pytest.raises(DatasetError, match="no usable image"):
        load_coco(synth_split / "annotations.json", tmp_path)  # images are elsewhere
    with pytest.raises(DatasetError, match="image directory not found"):
        load_yolo(tmp_path / "nope", ["a"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no usable image"):
        load_yolo(tmp_path / "empty", ["a"])
