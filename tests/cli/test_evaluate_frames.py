"""evaluate.py checkpoint= and artifact= score a COCO dataset's images in one frame, the ground
truth's, as validation reads them: an image annotated as its file stores it, before its EXIF
rotation, is read as stored, and an image whose json size is not its file's is resized to the
json's. On such images the same weights give the same mAP50 and detections by both paths, the
same warnings, and a worst-images gallery drawn on the images as validation read them (a
Predictor given the files sees them rotated or at the file's size: its boxes land in another
frame than the ground truth's; so do the boxes of a gallery drawn on the files)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.frame_data import RESIZE, in_annotated_frame, write_coco
from yolov4.cli.evaluate import evaluate
from yolov4.data.problems import Problem
from yolov4.data.records import coco_from_dict
from yolov4.evaluation.worst import worst_gallery
from yolov4.export.artifact import export_artifact
from yolov4.ops.boxes import box_iou

PAD = 16  # columns added to the 64-px images that are stored rotated (a square keeps its size)
MATCHED = 0.05  # detections at or above this score are matched between the two runs
KINDS = ("stored", "resized", "plain", "plain")  # the overfit model's four val images


@pytest.fixture(scope="module")
def frames(overfit, tmp_path_factory) -> tuple[Path, Path, Path]:
    """The overfit model's val images as a COCO dataset (the first stored rotated, the second
    resized after annotating) and its ONNX artifact: ``(annotations, image folder, artifact)``."""
    dm = overfit.datamodule
    root = tmp_path_factory.mktemp("frames")
    images = []
    for kind, r in zip(KINDS, dm.split("val").records, strict=True):
        image = np.asarray(Image.open(r.file).convert("RGB"))
        if kind == "stored":
            image = np.pad(image, ((0, 0), (0, PAD), (0, 0)), constant_values=114)
        images.append((kind, image, r.boxes, [dm.category_ids[c] for c in r.labels]))
    categories = [
        {"id": i, "name": n} for i, n in zip(dm.category_ids, dm.class_names, strict=True)
    ]
    ann, folder = write_coco(root, images, categories)
    return ann, folder, export_artifact(overfit.checkpoint, root / "export", formats=["onnx"])


def _detections(run) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for d in json.loads((run / "detections.json").read_text()):
        if d["score"] >= MATCHED:
            out.setdefault(d["image_id"], []).append(d)
    return out


def _xyxy(dets: list[dict]) -> torch.Tensor:
    b = torch.tensor([d["bbox"] for d in dets], dtype=torch.float64).reshape(-1, 4)
    return torch.cat([b[:, :2], b[:, :2] + b[:, 2:]], 1)


def _same_detections(a: list[dict], b: list[dict]) -> None:
    """Each detection of ``a`` has one of ``b`` of its class, its box (IoU > 0.99) and its
    score (PyTorch and ONNX Runtime round differently)."""
    iou = box_iou(_xyxy(a), _xyxy(b))
    for i, d in enumerate(a):
        close = [
            j
            for j, e in enumerate(b)
            if e["category_id"] == d["category_id"]
            and iou[i, j] > 0.99
            and abs(e["score"] - d["score"]) < 1e-3
        ]
        assert close, f"image {d['image_id']}: {d} has no counterpart"


def test_checkpoint_and_artifact_score_the_images_in_the_ground_truths_frame(
    compose_cfg, overfit, frames, tmp_path, caplog
):
    ann, folder, artifact = frames
    data = ["data=coco", f"data.val.annotations={ann}", f"data.val.images={folder}"]
    data.append("data.num_workers=0")
    runs = {"checkpoint": tmp_path / "checkpoint", "artifact": tmp_path / "artifact"}
    sources = {"checkpoint": f"checkpoint={overfit.checkpoint}", "artifact": f"artifact={artifact}"}
    metrics, logs = {}, {}
    for name, run in runs.items():
        overrides = [sources[name], *data, "analysis.plots=true", "analysis.worst_images=4"]
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="yolov4"):
            metrics[name] = evaluate(compose_cfg("evaluate", overrides, run))
        logs[name] = caplog.text
    # the overfit model finds its objects in the frame they were annotated in
    assert metrics["checkpoint"]["mAP50"] > 0.3
    assert metrics["artifact"]["mAP50"] == pytest.approx(metrics["checkpoint"]["mAP50"], abs=0.01)
    assert metrics["artifact"]["num_images"] == metrics["checkpoint"]["num_images"] == 4
    by = {name: _detections(run) for name, run in runs.items()}
    assert sorted(by["artifact"]) == sorted(by["checkpoint"]) == [1, 2, 3, 4]
    for image_id in by["checkpoint"]:
        _same_detections(by["checkpoint"][image_id], by["artifact"][image_id])
        _same_detections(by["artifact"][image_id], by["checkpoint"][image_id])
    coco = coco_from_dict(json.loads(ann.read_text()))
    # the same warnings, naming the files and sizes
    stored, resized = (coco.imgs[i] for i in (1, 2))
    for log in logs.values():
        assert (
            f"{Problem.STORED_FRAME}: {folder / '0_stored.jpg'}: "
            f"annotated {stored['width']}x{stored['height']} (WxH)"
        ) in log
        h, w = resized["height"], resized["width"]
        assert (
            f"{Problem.SIZE_MISMATCH}: {folder / '1_resized.png'}: "
            f"annotated {w}x{h} (WxH), decoded {RESIZE * w}x{RESIZE * h}"
        ) in log

    # the gallery draws each image in its ground truth's frame, as validation read it
    def reference(image_id: int) -> np.ndarray:
        info = coco.imgs[image_id]
        return in_annotated_frame(folder / info["file_name"], info["height"], info["width"])

    names = [c["name"] for c in sorted(coco.dataset["categories"], key=lambda c: c["id"])]
    for run in runs.values():
        worst = json.loads((run / "worst_images.json").read_text())
        assert {1, 2} <= {e["image_id"] for e in worst["images"]}
        results = json.loads((run / "detections.json").read_text())
        expected = worst_gallery(
            worst["images"], coco, results, names, worst["conf"], read_image=reference
        )
        drawn = np.asarray(Image.open(run / "worst_images.png").convert("RGB"))
        np.testing.assert_array_equal(drawn, expected.permute(1, 2, 0).numpy())
