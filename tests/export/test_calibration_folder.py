"""INT8 for a darknet user with a folder of their own photos: ``export.py precision=[fp32,int8]
calibration=<folder>`` calibrates on the folder's (unlabelled) images and, with no labelled
``data``, gates on the agreement of INT8's boxes with fp32's on them; the gate that ran is
recorded. With no ``data=`` and a labelled gate, the data the checkpoint records is used."""

from __future__ import annotations

import logging
import re
import shutil
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_module

from yolov4.cli import export as export_cli
from yolov4.core.artifact import read_metadata
from yolov4.core.checkpoint import load_checkpoint
from yolov4.core.preprocess import PreprocessConfig
from yolov4.errors import ConfigError, ExportError
from yolov4.export.artifact import export_artifact
from yolov4.export.quantize import NO_BOXES, Agreement, calibration_batch
from yolov4.inference.predictor import Detections


def export_cfg(tmp_path, overrides):
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        return compose(
            "export", overrides=[f"paths.output_dir={tmp_path}", "formats=[onnx]", *overrides]
        )


def dets(boxes, scores, classes) -> Detections:
    n = len(scores)
    return Detections(
        boxes=np.asarray(boxes, np.float32).reshape(n, 4),
        scores=np.asarray(scores, np.float32),
        class_ids=np.asarray(classes, np.int64),
        class_names=[str(c) for c in classes],
        image_size=(64, 64),
    )


def test_agreement_counts_matched_boxes_both_ways():
    """fp32: 4 boxes over 0.25; the other model finds 2 of them (one at 0.2: still a match),
    one of another class, one moved off (IoU < 0.5), and one box fp32 does not have."""
    agreement = Agreement(["x"], minimum=0.5)
    ref = dets(
        [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [0, 40, 10, 50]],
        [0.9, 0.8, 0.7, 0.6],
        [0, 1, 0, 0],
    )
    other = dets(
        [[0, 0, 10, 11], [20, 20, 30, 30], [40, 40, 50, 50], [5, 45, 15, 55], [50, 0, 60, 10]],
        [0.9, 0.2, 0.7, 0.6, 0.5],
        [0, 1, 1, 0, 0],
    )
    found = agreement.compare([ref], [other])
    # fp32 boxes matched: #0 and #1 (0.2 >= 0.1) of 4; other's boxes over 0.25 matched: #0 of 4
    assert (found["fp32_boxes"], found["boxes"]) == (4, 4)
    assert found["recall"] == pytest.approx(2 / 4) and found["precision"] == pytest.approx(1 / 4)
    assert found["f1"] == pytest.approx(2 * 0.5 * 0.25 / 0.75, abs=1e-5)
    assert agreement.compare([ref], [ref])["f1"] == 1.0
    empty = dets([], [], [])
    assert agreement.compare([empty], [empty]) == {
        "fp32_boxes": 0,
        "boxes": 0,
        "f1": None,
        "note": NO_BOXES,
    }
    assert agreement.compare([empty], [other])["f1"] == 0.0


@pytest.fixture(scope="module")
def photos(overfit, tmp_path_factory):
    """The overfit model's images in nested folders, unlabelled, with files that are not images."""
    root = tmp_path_factory.mktemp("photos")
    for split in ("train", "val"):
        for i, r in enumerate(overfit.datamodule.split(split).records):
            dest = (
                root
                / split
                / ("deep" if i % 2 else "")
                / f"{split}{i}{Path(r.file).suffix.upper()}"
            )
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(r.file, dest)
    (root / "notes.txt").write_text("not an image")
    (root / "train" / "labels.json").write_text("{}")
    return root


@pytest.mark.slow
def test_int8_from_a_folder_of_unlabelled_images(overfit, photos, tmp_path, caplog):
    out = tmp_path / "export"
    cfg = export_cfg(
        tmp_path,
        [
            f"checkpoint={overfit.checkpoint}",
            f"output={out}",
            "precision=[fp32,int8]",
            f"calibration={photos}",
        ],
    )
    assert cfg.get("data") is None  # no labelled data anywhere
    with caplog.at_level(logging.INFO, logger="yolov4"):
        meta = read_metadata(export_cli.export(cfg))
    entry = meta["precisions"]["int8"]
    assert entry["quantization"]["calibration_images"] == 8  # every image, recursively
    acc = entry["accuracy"]
    assert acc["gate"] == "agreement" and acc["images"] == 8
    assert acc["subset"] == f"{photos}: 8 unlabelled images"
    found = acc["agreement"]
    assert found["fp32_boxes"] > 0  # the model detects on its own images: a real comparison
    assert acc["minimum_f1"] == 0.9 and found["f1"] >= 0.9
    assert "metric" in acc and "IoU >= 0.5" in acc["metric"]
    assert "gate: agreement with fp32" in caplog.text
    # the recorded agreement is what the artifact's models give when loaded again
    from yolov4.inference import Predictor
    from yolov4.inference.backends import OpenVinoBackend

    files = export_cli.image_folder(photos)
    agreement = Agreement(files)
    fp32 = Predictor.from_artifact(out, precision="fp32", backend="openvino")
    int8 = Predictor.from_artifact(out, precision="int8")
    assert isinstance(int8.backend, OpenVinoBackend)
    again = agreement.compare(agreement.detections(fp32), agreement.detections(int8))
    assert again["f1"] == found["f1"] and again["fp32_boxes"] == found["fp32_boxes"]


@pytest.mark.slow
def test_agreement_gate_refuses_a_bad_calibration_naming_both_numbers(overfit, photos, tmp_path):
    """Black calibration images: INT8 loses its boxes and the agreement gate refuses it."""
    black = [np.zeros((64, 64, 3), np.uint8)] * 2
    gate = Agreement(export_cli.image_folder(photos), minimum=0.9, subset="the photos")
    with pytest.raises(
        ExportError, match=r"int8 agrees with fp32 at F1 0\.\d+ on the photos .*gate: F1 >= 0\.9"
    ):
        export_artifact(
            overfit.checkpoint,
            tmp_path / "export",
            formats=["onnx"],
            precisions=["fp32", "int8"],
            calibration=black,
            evaluate=gate,
        )
    assert list(tmp_path.iterdir()) == []


def test_labelled_gate_defaults_to_the_checkpoints_recorded_data(
    overfit, tmp_path, monkeypatch, caplog
):
    """No data=: the checkpoint's recorded data config (Checkpoint.data) is the gate's data;
    a checkpoint without one falls back to synthetic, saying so."""
    ckpt = load_checkpoint(overfit.checkpoint)
    recorded = {
        "_target_": "yolov4.data.datamodule.SyntheticDataModule",
        "num_train": 4,
        "num_val": 4,
        "image_size": 64,
        "input_size": [64, 64],
        "cache_dir": str(overfit.cache_dir),
        "num_workers": 0,
    }
    ckpt.data = recorded
    cfg = export_cfg(tmp_path, [f"checkpoint={overfit.checkpoint}", "val_images=null"])
    with caplog.at_level(logging.INFO, logger="yolov4"):
        calibration, evaluate = export_cli._gate(cfg, ckpt)
    assert "data config recorded in" in caplog.text
    assert "(yolov4.data.datamodule.SyntheticDataModule)" in caplog.text
    assert calibration == overfit.calibration  # its train split
    assert cfg.data.num_val == 4 and callable(evaluate)
    ckpt.data = None
    cfg = export_cfg(tmp_path, [f"checkpoint={overfit.checkpoint}"])
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="yolov4"):
        export_cli._gate(cfg, ckpt)
    assert cfg.data._target_.endswith("SyntheticDataModule") and cfg.data.num_val == 100
    assert "records no data config; evaluating on data=synthetic" in caplog.text


def test_calibration_folder_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"calibration=.*nope: not a folder"):
        export_cli.image_folder(tmp_path / "nope")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"no image files \(\.jpg"):
        export_cli.image_folder(tmp_path)
    with pytest.raises(ExportError, match=r"an F1 in \[0, 1\], got 2"):
        Agreement(["x"], minimum=2)


def test_calibration_images_a_few_pixels_high_are_read_as_decoded():
    """The dataset's decoded ``(H, W, 3)`` images calibrate whatever their height: a 3-pixel
    high image is not the ambiguous ``(C, H, W)`` array a user might pass."""
    config = PreprocessConfig(input_size=(64, 64))
    thin = np.full((3, 640, 3), 200, np.uint8)
    batch = calibration_batch([thin, np.zeros((1, 1, 3), np.uint8)], config)
    assert batch.shape == (2, 3, 64, 64)
    assert float(batch[0].max()) == pytest.approx(200 / 255)


def _jpeg(path: Path, seed: int) -> Path:
    """A 64x64 noise JPEG (several KB: more than the 500 bytes a cut copy keeps)."""
    image = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), image)
    return path


def _huge_png(path: Path, w: int = 9000, h: int = 12000) -> Path:
    """A PNG whose header says ``w x h`` (over MAX_PIXELS), its data one pixel's."""
    data = bytearray(cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))[1].tobytes())
    ihdr = 8 + 8  # signature, then the IHDR chunk's length and type
    data[ihdr : ihdr + 8] = struct.pack(">II", w, h)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13]))
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def damaged_folder(tmp_path):
    """3 good JPEGs, a JPEG cut at 500 bytes and a PNG of 9000x12000 pixels (by its header)."""
    root = tmp_path / "photos"
    root.mkdir()
    good = [_jpeg(root / f"good{i}.jpg", i) for i in range(3)]
    (root / "trunc.jpg").write_bytes(_jpeg(tmp_path / "whole.jpg", 9).read_bytes()[:500])
    _huge_png(root / "huge.png")
    return root, good


def test_unreadable_calibration_images_are_skipped_with_one_warning(damaged_folder, caplog):
    root, good = damaged_folder
    cfg = export_cfg(root.parent, [f"calibration={root}", "precision=[fp32,int8]"])
    with caplog.at_level(logging.WARNING, logger="yolov4"):
        calibration, gate = export_cli._gate(cfg, ckpt=None)
    assert calibration == good
    assert isinstance(gate, Agreement) and gate.images == good
    assert gate.subset == f"{root}: 3 unlabelled images"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert f"calibration={root}: skipped 2 of 5 images" in warnings[0]
    assert "trunc.jpg" in warnings[0] and "truncated JPEG" in warnings[0]
    assert "huge.png" in warnings[0] and "108,000,000 pixels" in warnings[0]


def test_a_folder_without_a_readable_image_is_refused_naming_it(damaged_folder):
    root, good = damaged_folder
    for file in good:
        file.unlink()
    with pytest.raises(
        ConfigError,
        match=rf"calibration={re.escape(str(root))}: 0 of its 2 image files can be read, at "
        r"least 1 needed \(.*huge\.png.*trunc\.jpg",
    ):
        export_cli.readable_images(root, 32)


def test_readable_images_stops_at_the_number_wanted(damaged_folder):
    root, good = damaged_folder
    assert export_cli.readable_images(root, 2) == good[:2]
    assert export_cli.readable_images(root, None) == good


def test_calibration_batch_skips_what_cannot_be_read(damaged_folder, caplog):
    root, good = damaged_folder
    config = PreprocessConfig(input_size=(64, 64))
    with caplog.at_level(logging.WARNING, logger="yolov4"):
        batch = calibration_batch([root / "trunc.jpg", good[0], root / "huge.png"], config)
    assert batch.shape == (1, 3, 64, 64)
    assert torch.equal(batch, calibration_batch([good[0]], config))
    assert "INT8 calibration: skipped 2 of 3 images" in caplog.text
    with pytest.raises(ExportError, match=r"at least 1 image .* none of 1 can be read \(.*trunc"):
        calibration_batch([root / "trunc.jpg"], config)


def test_the_agreement_gate_skips_unreadable_images_as_the_cli_does(
    overfit, damaged_folder, caplog
):
    """Through the Python API: the unreadable images are skipped with one warning naming them,
    both models are compared on the same readable ones, and none readable is refused."""
    from yolov4.export.gates import agreement_gate
    from yolov4.inference import Predictor

    root, good = damaged_folder
    predictor = Predictor.from_checkpoint(overfit.checkpoint)
    gate = Agreement(
        [root / "trunc.jpg", good[0], root / "huge.png", good[1]], subset="the photos", batch_size=1
    )
    with caplog.at_level(logging.WARNING, logger="yolov4"):
        fp32 = gate.detections(predictor)
    assert gate.images == good[:2]
    expected = [predictor(f, conf=0.1)[0] for f in good[:2]]  # batches of one, as the gate's
    assert len(fp32) == 2 and fp32[0].image_size == (64, 64)
    for a, b in zip(fp32, expected, strict=True):
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.scores, b.scores)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "agreement gate on the photos: skipped 2 of 4 images" in warnings[0]
    assert "trunc.jpg" in warnings[0] and "huge.png" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="yolov4"):
        accuracy = agreement_gate(gate, predictor, fp32, "int8", 0.0)  # the same model again
    assert not caplog.records  # the skipped images are gone: nothing more to say
    assert accuracy["images"] == 2
    assert accuracy["agreement"]["f1"] in (1.0, None)
    with pytest.raises(
        ExportError,
        match=r"agreement gate on x needs at least one readable image, none of 2 .*"
        r"trunc\.jpg.*huge\.png",
    ):
        Agreement([root / "trunc.jpg", root / "huge.png"], subset="x").detections(predictor)


def test_an_export_checks_its_nms_graph_on_the_readable_images(overfit, damaged_folder, caplog):
    """fp32 with calibration=<folder>: the NMS graph's check runs on the 3 readable images."""
    root, _ = damaged_folder
    out = root.parent / "export"
    cfg = export_cfg(
        root.parent,
        [
            f"checkpoint={overfit.checkpoint}",
            f"output={out}",
            "formats=[onnx,onnx_nms]",
            f"calibration={root}",
        ],
    )
    with caplog.at_level(logging.WARNING, logger="yolov4"):
        meta = read_metadata(export_cli.export(cfg))
    assert meta["parity"]["model_nms.onnx"]["inputs"] == "the first 3 calibration images"
    assert f"calibration={root}: skipped 2 of 5 images" in caplog.text


@pytest.mark.slow  # an NNCF quantization and the agreement gate
def test_int8_from_a_folder_with_damaged_images(overfit, photos, tmp_path, caplog):
    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    (folder / "trunc.jpg").write_bytes(_jpeg(tmp_path / "whole.jpg", 9).read_bytes()[:500])
    _huge_png(folder / "val" / "huge.png")
    out = tmp_path / "export"
    overrides = [f"checkpoint={overfit.checkpoint}", f"output={out}", "precision=[fp32,int8]"]
    cfg = export_cfg(tmp_path, [*overrides, f"calibration={folder}"])
    with caplog.at_level(logging.WARNING, logger="yolov4"):
        meta = read_metadata(export_cli.export(cfg))
    entry = meta["precisions"]["int8"]
    assert entry["quantization"]["calibration_images"] == 8
    assert entry["accuracy"]["images"] == 8
    assert f"calibration={folder}: skipped 2 of 10 images" in caplog.text
