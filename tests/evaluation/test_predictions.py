"""evaluate_predictor gives the Predictor each val image as validation reads it: in the frame
and at the size of its ground truth (an image annotated before its EXIF rotation read as
stored, a resized file resized back), and for a plain file exactly the input the file itself
would give (RGB order, uint8)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.frame_data import in_annotated_frame, write_coco
from yolov4.core.postprocess import SERVING
from yolov4.core.preprocess import PreprocessConfig
from yolov4.data.coco import CocoSource
from yolov4.data.datamodule import DetectionDataModule
from yolov4.data.problems import Problem
from yolov4.errors import ConfigError
from yolov4.evaluation import evaluate_predictor
from yolov4.inference import Predictor
from yolov4.inference.predictor import Detections
from yolov4.models import ModelConfig

CATEGORY = 4


class InputsPredictor:
    """A Predictor's call interface that keeps the images it is given and detects nothing (a
    model of the val split's one class)."""

    def __init__(self) -> None:
        self.metadata = {"model": ModelConfig.load("yolov4-tiny", num_classes=1).to_dict()}
        self.postprocess = SERVING
        self.given: list = []

    def __call__(self, images, postprocess=None):
        self.given.extend(images)
        empty = np.zeros((0, 4), np.float32)
        return [
            Detections(empty, np.zeros(0, np.float32), np.zeros(0, np.int64), [], (1, 1))
            for _ in images
        ]


def _scene(h: int, w: int, seed: int) -> np.ndarray:
    """Noise with a different level per channel: a swap of red and blue shows."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    image[..., 0] //= 2
    return image


@pytest.fixture
def val(tmp_path):
    """``(datamodule, folder)``: a stored-frame JPEG, a resized PNG, a JPEG, a PNG and a file
    that is not an image."""
    box, cat = [[4, 4, 20, 16]], [CATEGORY]
    images = [
        ("stored", _scene(40, 56, 0), box, cat),
        ("resized", _scene(36, 30, 1), box, cat),
        ("jpeg", _scene(33, 47, 2), box, cat),
        ("plain", _scene(45, 38, 3), box, cat),
        ("plain", _scene(30, 30, 4), box, cat),
    ]
    ann, folder = write_coco(tmp_path, images, [{"id": CATEGORY, "name": "thing"}])
    (folder / "4_plain.png").write_bytes(b"not an image")
    dm = DetectionDataModule(val=CocoSource(str(ann), str(folder)), input_size=64, num_workers=0)
    return dm, folder


def test_the_predictor_is_given_each_image_as_validation_reads_it(val):
    dm, folder = val
    records = dm.split("val").records
    predictor = InputsPredictor()
    result = evaluate_predictor(predictor, dm, records, 2)
    assert result.num_images == 4  # the file that is not an image: not scored
    assert len(predictor.given) == 4
    for r, given in zip(records, predictor.given):
        image = given.permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(image, in_annotated_frame(r.file, r.height, r.width))
    problems = dm.datasets["val"].report.problems
    assert problems[Problem.STORED_FRAME] == [
        f"{folder / '0_stored.jpg'}: annotated 56x40 (WxH), displayed 40x56"
    ]
    assert problems[Problem.SIZE_MISMATCH] == [
        f"{folder / '1_resized.png'}: annotated 30x36 (WxH), decoded 60x72"
    ]
    assert any("4_plain.png" in p for p in problems[Problem.UNREADABLE])


def test_a_plain_file_gives_the_predictor_the_input_of_the_file_itself(val):
    """RGB order, dtype and size: the Predictor preprocesses what evaluation gives it exactly as
    it preprocesses the file (a JPEG and a PNG at their annotated size, without EXIF)."""
    dm, folder = val
    records = dm.split("val").records[2:4]
    predictor = InputsPredictor()
    evaluate_predictor(predictor, dm, records, 2)
    real = Predictor(None, ["thing"], PreprocessConfig(input_size=(64, 64)))
    for r, given in zip(records, predictor.given, strict=True):
        assert given.dtype == torch.uint8
        ((x_given, p_given, hw_given),) = real.prepare(given)
        ((x_file, p_file, hw_file),) = real.prepare(r.file)
        assert torch.equal(x_given, x_file) and hw_given == hw_file == (r.height, r.width)
        assert tuple(p_given) == tuple(p_file)


def test_no_record_scores_no_image_not_every_image(val):
    """No record: COCOeval's numbers over no image (-1, undefined), not 0 from the ground truth
    of the whole split."""
    dm, _ = val
    result = evaluate_predictor(InputsPredictor(), dm, [], 2)
    assert result.num_images == 0 and result["mAP"] == result["mAP50"] == -1.0


@pytest.mark.parametrize(
    ("category_ids", "message"),
    [
        ([CATEGORY, 7], r"expected one category id per class of the model \(1\), got 2: \[4, 7\]"),
        ([99], r"category_ids\[0\] = 99 is not a category of the ground truth \(its category "
               r"ids: \[4\]\)"),
    ],
)  # fmt: skip
def test_category_ids_that_do_not_fit_are_refused_before_any_image(val, category_ids, message):
    dm, _ = val
    predictor = InputsPredictor()
    with pytest.raises(ConfigError, match=message):
        evaluate_predictor(predictor, dm, dm.split("val").records, 2, category_ids=category_ids)
    assert predictor.given == []


READ_ONLY_CHECK = """
import sys, warnings
from tests.evaluation.test_predictions import InputsPredictor
from yolov4.data.coco import CocoSource
from yolov4.data.datamodule import DetectionDataModule
from yolov4.evaluation import evaluate_predictor

dm = DetectionDataModule(val=CocoSource(sys.argv[1], sys.argv[2]), input_size=64, num_workers=0)
records = dm.split("val").records
with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert evaluate_predictor(InputsPredictor(), dm, records, 2).num_images == 1
"""


def test_a_repaired_truncated_jpeg_is_scored_without_a_warning(tmp_path):
    """A truncated JPEG decodes (repaired) into a read-only array: it reaches the Predictor
    without torch's warning about non-writable arrays. In a process of its own: torch gives
    that warning once per process."""
    box = [[4, 4, 20, 16]]
    ann, folder = write_coco(tmp_path, [("jpeg", _scene(40, 48, 0), box, [CATEGORY])],
                             [{"id": CATEGORY, "name": "thing"}])  # fmt: skip
    jpeg = folder / "0_jpeg.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[: jpeg.stat().st_size * 2 // 3])
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), *sys.path])}
    run = subprocess.run(
        [sys.executable, "-c", READ_ONLY_CHECK, str(ann), str(folder)],
        capture_output=True, text=True, env=env, cwd=root,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "truncated" in run.stderr  # the repair is reported, as validation reports it
