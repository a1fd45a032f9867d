"""The NMS graphs' export check (model_nms.onnx, the Triton repository's model.onnx) compares
detections: on the export's calibration images, else generated scenes, at the graph's score
threshold and at a lowered one; a broken graph fails it, and a check that compared no box at
the graph's threshold says so."""

from __future__ import annotations

import logging

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch

import yolov4.cli.export as export_cli
import yolov4.export.formats as formats
import yolov4.export.parity as parity_module
from yolov4 import build_model, load_checkpoint, save_checkpoint
from yolov4.core.artifact import read_metadata
from yolov4.core.preprocess import preprocess
from yolov4.errors import ExportError
from yolov4.export.artifact import export_artifact
from yolov4.export.job import export_onnx, synthetic_scenes
from yolov4.export.onnx_nms import NmsModel
from yolov4.export.parity import NO_BOXES, PARITY_BATCHES
from yolov4.export.quantize import calibration_batch

NAMES = ["circle", "rectangle", "triangle"]
SIZE = [64, 96]
CONF = 0.3  # the randomised model scores some boxes over it on any image


def _checkpoint(path, model):
    pre = {"input_size": SIZE, "mode": "letterbox", "channel_order": "rgb"}
    return load_checkpoint(save_checkpoint(path, model, NAMES, pre))


@pytest.fixture(scope="module")
def scoring(tmp_path_factory, randomize):
    """Head biases in [-1, 1]: scores over CONF on any image."""
    model = randomize(build_model("yolov4-tiny", num_classes=3), seed=3)
    return _checkpoint(tmp_path_factory.mktemp("nms") / "scoring.pt", model)


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """Freshly initialised: every score near 1e-4, nothing over the serving conf of 0.25 (on
    random pixels too: the export check of random inputs compared no box for it)."""
    torch.manual_seed(0)
    model = build_model("yolov4-tiny", num_classes=3).eval()
    return _checkpoint(tmp_path_factory.mktemp("nms") / "untrained.pt", model)


def _graph_counts(path, images: torch.Tensor) -> int:
    """Detections the graph itself gives on ``images`` cut into PARITY_BATCHES."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    total, start = 0, 0
    for batch in PARITY_BATCHES:
        x = images[start : start + batch].numpy()
        total += int(session.run(None, {"images": x})[1].sum())
        start += batch
    return total


def _broken_writer(make):
    """A ``write_nms_onnx`` exporting ``make(job)`` instead of the job's NMS model."""

    def write(job, path):
        outputs = ("detections", "num_detections")
        export_onnx(make(job), path, job.example(), job.opset, outputs)

    return write


class SwappedNms(NmsModel):
    """An NMS graph that writes its boxes y1, x1, y2, x2."""

    def forward(self, images):
        det, count = super().forward(images)
        return det[..., [1, 0, 3, 2, 4, 5]], count


def test_nms_check_compares_the_detections_of_the_calibration_images(scoring, tmp_path):
    rng = np.random.default_rng(7)
    photos = [rng.integers(0, 256, (40 + 10 * i, 90, 3), dtype=np.uint8) for i in range(4)]
    art = export_artifact(
        scoring, tmp_path / "a", ["onnx_nms"], thresholds={"conf": CONF}, calibration=photos
    )
    record = read_metadata(art)["parity"]["model_nms.onnx"]
    assert record["inputs"] == "the first 3 calibration images"
    images = torch.stack([preprocess(p, scoring.preprocess)[0] for p in photos[:3]])
    expected = _graph_counts(art / "model_nms.onnx", images)
    assert expected > 0 and record["boxes_compared"] == expected
    assert "warning" not in record and "boxes" not in record


def test_export_cli_checks_the_nms_graph_on_a_calibration_folder(scoring, tmp_path, caplog):
    """fp32 only: calibration=<folder> still gives the NMS graph's check its images."""
    from hydra import compose, initialize_config_module

    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(4):
        cv2.imwrite(str(folder / f"p{i}.png"), rng.integers(0, 256, (70, 50, 3), np.uint8))
    overrides = [f"checkpoint={scoring.path}", f"output={tmp_path / 'a'}", "formats=[onnx_nms]"]
    overrides += [f"conf={CONF}", f"calibration={folder}", f"paths.output_dir={tmp_path}"]
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        cfg = compose("export", overrides=overrides)
    with caplog.at_level(logging.INFO, logger="yolov4"):
        art = export_cli.export(cfg)
    record = read_metadata(art)["parity"]["model_nms.onnx"]
    assert record["inputs"] == "the first 3 calibration images"
    files = export_cli.image_folder(folder)[:3]
    images = calibration_batch(files, scoring.preprocess)
    assert record["boxes_compared"] == _graph_counts(art / "model_nms.onnx", images) > 0
    assert f"on {record['boxes_compared']} boxes" in caplog.text


def test_nms_check_without_images_runs_on_generated_scenes(scoring, tmp_path):
    art = export_artifact(scoring, tmp_path / "a", ["triton"], thresholds={"conf": CONF})
    record = read_metadata(art)["parity"]["triton/yolov4/1/model.onnx"]
    assert record["inputs"].startswith("3 generated scenes")
    scenes = synthetic_scenes(3, max(SIZE))
    images = torch.stack([preprocess(s, scoring.preprocess)[0] for s in scenes])
    expected = _graph_counts(art / "triton/yolov4/1/model.onnx", images)
    assert expected > 0 and record["boxes_compared"] == expected


def test_no_box_at_the_graphs_threshold_is_reported_as_not_checked(untrained, tmp_path, caplog):
    from yolov4.cli.export import _log_parity

    art = export_artifact(untrained, tmp_path / "a", ["onnx_nms"])
    record = read_metadata(art)["parity"]["model_nms.onnx"]
    assert record["boxes_compared"] == 0 and record["boxes"] == NO_BOXES
    assert "was not checked against detections at its own threshold" in record["warning"]
    # the lowered score threshold compares the untrained graph on many boxes
    lowered = record["lowered_conf"]
    assert lowered["conf"] < 0.25 and lowered["boxes_compared"] > 0
    assert f"checked on {lowered['boxes_compared']} boxes" in record["warning"]
    with caplog.at_level(logging.INFO, logger="yolov4"):
        _log_parity(read_metadata(art)["parity"])
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "not checked against detections" in warned[0].getMessage()


@pytest.mark.parametrize("model", ["scoring", "untrained"])
def test_nms_graph_with_swapped_coordinates_fails_the_check(model, request, tmp_path, monkeypatch):
    """The scoring model's boxes at conf, the untrained one's at the lowered threshold (random
    inputs gave it no box, so the swapped graph passed)."""
    ckpt = request.getfixturevalue(model)
    broken = _broken_writer(lambda job: SwappedNms(job.model, job.settings))
    monkeypatch.setattr(formats, "write_nms_onnx", broken)
    with pytest.raises(ExportError, match="model_nms.onnx disagrees with PyTorch"):
        export_artifact(ckpt, tmp_path / "a", ["onnx_nms"], thresholds={"conf": CONF})
    assert not (tmp_path / "a" / "model_nms.onnx").exists()


def test_nms_graph_with_a_wrong_iou_threshold_fails_the_check(scoring, tmp_path, monkeypatch):
    strict = _broken_writer(lambda job: NmsModel(job.model, job.settings.update({"iou": 0.1})))
    monkeypatch.setattr(formats, "write_nms_onnx", strict)
    thresholds = {"conf": CONF, "iou": 0.45}
    with pytest.raises(ExportError, match=r"NonMaxSuppression has iou 0\.1 \(the export's"):
        export_artifact(scoring, tmp_path / "a", ["onnx_nms"], thresholds=thresholds)
    # the detections alone catch it too: boxes NMS at 0.45 keeps are missing
    monkeypatch.setattr(parity_module, "_check_constants", lambda *args: None)
    with pytest.raises(ExportError, match="is neither a detection nor suppressed by one"):
        export_artifact(scoring, tmp_path / "b", ["onnx_nms"], thresholds=thresholds)
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


def test_the_nms_graph_leaves_the_model_in_eval_mode(untrained, tmp_path):
    """torch.onnx.export puts a module back in the mode it found it in: an NMS wrapper made in
    training mode left the shared network training, so the TorchScript file written after it
    was saved training, and a 32x32 check met the network's training-batch guard."""
    import torch.jit

    art = export_artifact(untrained, tmp_path / "a", formats=["onnx_nms", "torchscript"],
                          input_size=[32, 32])  # fmt: skip
    scripted = torch.jit.load(str(art / "model.torchscript"))
    assert not scripted.training and not any(m.training for m in scripted.modules())


@pytest.mark.parametrize("option, value", [("agnostic_nms", True), ("multi_label", False)])
def test_nms_graph_of_a_best_class_option_equals_the_predictors_detections(
    scoring, tmp_path, option, value
):
    """thresholds agnostic_nms=true (one NMS over every class) or multi_label=false (each
    box's best class only, then NMS per class): model_nms.onnx in onnxruntime gives the
    Predictor's detections with that option (ops.postprocess), which differ from the default
    (multi-label, per-class) ones."""
    from yolov4.inference import Predictor

    thresholds = {"conf": CONF, option: value}
    art = export_artifact(scoring, tmp_path / "a", ["onnx_nms"], thresholds=thresholds)
    meta = read_metadata(art)
    assert meta["thresholds"][option] is value
    assert meta["nms_graph"][option] is value
    images = synthetic_scenes(3, max(SIZE))
    predictor = Predictor.from_checkpoint(scoring)
    expected = predictor(images, conf=CONF, postprocess={option: value})
    default = predictor(images, conf=CONF)
    assert sum(map(len, default)) > sum(map(len, expected)) > 0  # the option changes them
    batch = torch.stack([preprocess(s, scoring.preprocess)[0] for s in images]).numpy()
    session = ort.InferenceSession(str(art / "model_nms.onnx"), providers=["CPUExecutionProvider"])
    rows, counts = session.run(None, {"images": batch})
    for k, dets in enumerate(expected):
        assert int(counts[k]) == len(dets)
        got = rows[k, : counts[k]]
        np.testing.assert_allclose(got[:, 4], dets.scores, atol=2e-3)
        np.testing.assert_array_equal(got[:, 5].astype(int), dets.class_ids)


def test_multi_label_nms_graph_fails_the_check_of_a_best_class_export(
    scoring, tmp_path, monkeypatch
):
    """The export check reads multi_label: a graph that keeps every class of a box fails it."""
    multi = _broken_writer(
        lambda job: NmsModel(job.model, job.settings.update({"multi_label": True}))
    )
    monkeypatch.setattr(formats, "write_nms_onnx", multi)
    thresholds = {"conf": CONF, "multi_label": False}
    with pytest.raises(ExportError, match="model_nms.onnx disagrees with PyTorch"):
        export_artifact(scoring, tmp_path / "a", ["onnx_nms"], thresholds=thresholds)
