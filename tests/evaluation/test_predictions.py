"""evaluate_predictor gives the Predictor each val image as validation reads it: in the frame
and at the size of its ground truth (an image annotated before its EXIF rotation read as
stored, a resized file resized back), and for a plain file exactly the input the file itself
would give (RGB order, uint8)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.frame_data import in_annotated_frame, write_coco
from yolov4.core.postprocess import SERVING
from yolov4.core.preprocess import PreprocessConfig
from yolov4.data.coco import CocoSource
from yolov4.data.datamodule import DetectionDataModule
from yolov4.data.problems import Problem
from yolov4.evaluation import evaluate_predictor
from yolov4.inference import Predictor
from yolov4.inference.predictor import Detections
from yolov4.models import ModelConfig

CATEGORY = 4


class InputsPredictor:
    """A Predictor's call interface that keeps the images it is given and detects nothing."""

    def __init__(self) -> None:
        self.metadata = {"model": ModelConfig.load("yolov4-tiny").to_dict()}
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
