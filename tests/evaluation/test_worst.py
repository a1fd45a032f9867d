"""The worst images: ranked by FP + FN at the serving threshold, drawn from their files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.evaluation.test_analysis import CAT, DOG, det, make_coco
from yolov4.evaluation.analysis import analyze_detections
from yolov4.evaluation.worst import worst_gallery, worst_images, write_png


@pytest.fixture
def case(tmp_path):
    """Three 100x100 images: 100 perfect, 101 one miss + one background box, 102 a class swap
    (one FP, one FN) and a detection below conf; 103 has nothing at all."""
    gt = make_coco(
        [
            (100, CAT, (10, 10, 30, 30), 0),
            (101, CAT, (10, 10, 30, 30), 0),
            (102, DOG, (50, 50, 40, 40), 0),
        ],
        images=(100, 101, 102, 103),
    )
    files = {}
    for i in (100, 101, 102, 103):
        files[i] = str(tmp_path / f"img{i}.png")
        Image.fromarray(np.full((100, 100, 3), 30, np.uint8)).save(files[i])
    dets = [
        det(100, CAT, (10, 10, 30, 30), 0.9),
        det(101, DOG, (60, 60, 20, 20), 0.8),  # background
        det(102, CAT, (50, 50, 40, 40), 0.7),  # cat on the dog: FP + FN
        det(102, DOG, (0, 0, 5, 5), 0.1),  # below conf 0.25: not counted
    ]
    return gt, dets, files


def test_ranked_by_false_positives_plus_misses(case):
    gt, dets, files = case
    a = analyze_detections(gt, dets, conf=0.25)
    assert a.per_image == {
        100: {"TP": 1, "FP": 0, "FN": 0},
        101: {"TP": 0, "FP": 1, "FN": 1},
        102: {"TP": 0, "FP": 1, "FN": 1},
        103: {"TP": 0, "FP": 0, "FN": 0},
    }
    worst = worst_images(a, gt, files)
    assert [w["image_id"] for w in worst] == [101, 102]  # ties by image id; no error: left out
    assert worst[0] == {
        "image_id": 101,
        "file_name": files[101],
        "errors": 2,
        "FP": 1,
        "FN": 1,
        "TP": 0,
        "num_gt": 1,
    }
    assert [w["image_id"] for w in worst_images(a, gt, files, top=1)] == [101]


def test_gallery_draws_truth_and_predictions_from_the_files(case, tmp_path):
    gt, dets, files = case
    a = analyze_detections(gt, dets, conf=0.25)
    worst = worst_images(a, gt, files)
    grid = worst_gallery(worst, gt, dets, a.names, conf=0.25, tile=200)
    # two 200 px tiles side by side, make_grid's 2 px padding around each
    assert grid.dtype == torch.uint8 and tuple(grid.shape) == (3, 204, 406)
    img = grid.permute(1, 2, 0).numpy().astype(int)
    green = (img[..., 1] > 200) & (img[..., 0] < 100)
    red = (img[..., 0] > 200) & (img[..., 1] < 100)
    # image 101 (first tile): its cat box in green at 2x, its background dog box in red
    assert green[2 + 20, 2 + 20 : 2 + 80].all() and red[2 + 120, 2 + 120 : 2 + 160].all()
    # image 102 (second tile, 204 px further right): green dog box under a red cat box
    assert red[2 + 100, 206 + 110 : 206 + 170].all()
    assert not red[2 + 0, 206 + 0 : 206 + 10].any()  # the detection below conf is not drawn
    path = write_png(grid, tmp_path / "g.png")
    np.testing.assert_array_equal(np.asarray(Image.open(path)), grid.permute(1, 2, 0).numpy())


def test_unreadable_files_are_left_out(case, tmp_path):
    gt, dets, files = case
    files[101] = str(tmp_path / "missing.png")
    a = analyze_detections(gt, dets, conf=0.25)
    worst = worst_images(a, gt, files)
    grid = worst_gallery(worst, gt, dets, a.names, conf=0.25, tile=64)
    assert tuple(grid.shape) == (3, 64, 64)  # only image 102 (one image: no grid padding)
    assert worst_gallery(worst[:1], gt, dets, a.names, conf=0.25) is None


def test_a_truncated_image_is_drawn_as_validation_decoded_it(case, tmp_path, caplog):
    gt, dets, files = case
    jpeg = tmp_path / "cut.jpg"
    Image.fromarray(np.full((100, 100, 3), 30, np.uint8)).save(jpeg, quality=95)
    jpeg.write_bytes(jpeg.read_bytes()[:-200])  # cut inside its image data
    files[101] = str(jpeg)
    (tmp_path / "empty.png").write_bytes(b"")
    files[102] = str(tmp_path / "empty.png")
    a = analyze_detections(gt, dets, conf=0.25)
    with caplog.at_level("INFO", logger="yolov4.evaluation.worst"):
        grid = worst_gallery(worst_images(a, gt, files), gt, dets, a.names, conf=0.25, tile=64)
    assert tuple(grid.shape) == (3, 64, 64)  # image 101, truncated, drawn; 102 left out
    messages = [r.getMessage() for r in caplog.records]
    assert not any("cannot read" in m and "cut.jpg" in m for m in messages)
    assert any("truncated JPEG" in m and "drawn as validation decoded it" in m for m in messages)
    assert any("empty.png does not decode" in m and "left out" in m for m in messages)


def test_images_annotated_in_another_frame_are_drawn_as_validation_read_them(tmp_path):
    """A JPEG annotated as stored, before its EXIF rotation, and a file twice the annotated
    size (read as they display, the first is rotated and the second too large: the boxes miss
    their objects). With the DataModule's reader each tile is the drawing on the image in its
    ground truth's frame and size (read here by OpenCV alone)."""
    from tests.frame_data import in_annotated_frame, write_coco
    from yolov4.data.coco import CocoSource
    from yolov4.data.datamodule import DetectionDataModule
    from yolov4.data.problems import Problem

    red, blue, green = (230, 20, 20), (20, 20, 230), (20, 200, 20)
    stored = np.full((48, 80, 3), 90, np.uint8)
    stored[8:24, 8:40], stored[20:44, 50:70] = red, blue
    resized = np.full((60, 60, 3), 90, np.uint8)
    resized[30:50, 10:40] = green
    ann, folder = write_coco(
        tmp_path,
        [
            ("stored", stored, [[8, 8, 40, 24], [50, 20, 70, 44]], [CAT, DOG]),
            ("resized", resized, [[10, 30, 40, 50]], [CAT]),
        ],
        [{"id": CAT, "name": "cat"}, {"id": DOG, "name": "dog"}],
    )
    dm = DetectionDataModule(val=CocoSource(str(ann), str(folder)), input_size=64, num_workers=0)
    gt = dm.val_coco
    dets = [
        det(1, CAT, (8, 8, 32, 16), 0.9),  # on the red box
        det(1, CAT, (50, 20, 20, 24), 0.8),  # the blue dog taken for a cat: FP + FN
        det(2, DOG, (10, 30, 30, 20), 0.7),  # the green cat taken for a dog: FP + FN
    ]
    a = analyze_detections(gt, dets, conf=0.25)
    worst = worst_images(a, gt, {r.image_id: r.file for r in dm.split("val").records})
    assert [w["image_id"] for w in worst] == [1, 2]

    def reference(image_id: int) -> np.ndarray:
        info = gt.imgs[image_id]
        return in_annotated_frame(folder / info["file_name"], info["height"], info["width"])

    # the reference is in the frame of the boxes: each box holds its object's colour
    for image_id, box, colour in [(1, (8, 8, 40, 24), red), (1, (50, 20, 70, 44), blue),
                                  (2, (10, 30, 40, 50), green)]:  # fmt: skip
        x1, y1, x2, y2 = box
        inside = reference(image_id)[y1 + 2 : y2 - 2, x1 + 2 : x2 - 2].reshape(-1, 3)
        np.testing.assert_allclose(inside.mean(0), colour, atol=12)

    grid = worst_gallery(worst, gt, dets, a.names, conf=0.25, tile=100, read_image=dm.val_image)
    expected = worst_gallery(worst, gt, dets, a.names, conf=0.25, tile=100, read_image=reference)
    np.testing.assert_array_equal(grid.numpy(), expected.numpy())
    problems = dm.datasets["val"].report.problems
    assert any("0_stored.jpg" in p for p in problems[Problem.STORED_FRAME])
    assert any("1_resized.png" in p for p in problems[Problem.SIZE_MISMATCH])
