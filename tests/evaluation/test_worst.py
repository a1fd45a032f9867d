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
