"""What export.py says it wrote: each model file with its precision and runtimes, and for a
model that scores no box over 0.25 "no boxes to compare" (parity and agreement), not a 0 that
reads as an exact match."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module

from yolov4 import build_model, save_checkpoint
from yolov4.cli import export as export_cli
from yolov4.core.artifact import MODEL_INT8_XML, read_metadata
from yolov4.export.gates import map50_gate
from yolov4.export.quantize import NO_BOXES

ROOT = Path(__file__).resolve().parents[2]


def export_cfg(tmp_path, overrides):
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        return compose("export", overrides=[f"paths.output_dir={tmp_path}", *overrides])


def test_summary_lines_per_file():
    meta = {
        "files": {"model.onnx": {}, "model.torchscript": {}, "model_int8.xml": {}},
        "precisions": {
            "fp32": {"file": "model.onnx", "backends": ["onnxruntime", "openvino", "torchscript"]},
            "int8": {"file": "model_int8.xml", "backends": ["openvino"]},
        },
        "nms_graph": {"file": "model_nms.onnx"},
    }
    assert export_cli._summary(meta) == [
        "  model.onnx: fp32 in onnxruntime, fp32 in openvino",
        "  model.torchscript: fp32 in torchscript",
        "  model_int8.xml: int8 in openvino",
        "  model_nms.onnx: fp32 (NMS in the graph)",
    ]


def test_summary_of_an_artifact_without_precisions_lists_only_its_files():
    """An artifact listing no ``precisions`` (no Predictor model, or none of its runtimes
    installed at export) is summarised from its ``files``: no model file it does not hold."""
    darknet = {"cfg": "model.cfg", "weights": "model.weights", "letter_box": True}
    only_darknet = {"files": {"model.cfg": {}, "model.weights": {}}, "darknet": darknet}
    assert export_cli._summary(only_darknet) == [
        "  model.cfg + model.weights: fp32 darknet files (darknet, OpenCV's readNetFromDarknet), "
        "letter_box=1"
    ]
    only_torchscript = {"files": {"model.torchscript": {}}}
    assert export_cli._summary(only_torchscript) == ["  model.torchscript: fp32 in torchscript"]


def test_accuracy_lines_give_the_map_drop_beside_the_map50_gate():
    """The labelled gate is on mAP50; the summary showed only it, while INT8 can lose more of
    the mAP over IoU 0.5:0.95 (better boxes), which metadata records: both are printed."""
    acc = {
        "gate": "map50", "subset": "synthetic val, 4 images", "images": 4,
        "fp32": {"mAP50": 0.8123, "mAP": 0.5012}, "int8": {"mAP50": 0.8101, "mAP": 0.4788},
        "mAP50_drop_points": 0.22, "gate_points": 1.0,
    }  # fmt: skip
    agreement = {
        "gate": "agreement", "subset": "photos: 3 unlabelled images", "minimum_f1": 0.9,
        "agreement": {"f1": 0.95, "boxes": 20, "fp32_boxes": 21},
    }  # fmt: skip
    meta = {"precisions": {"fp32": {}, "int8": {"accuracy": acc}, "bf16": {"accuracy": agreement}}}
    assert export_cli._accuracy_lines(meta) == [
        "int8: mAP50 81.01 (fp32 81.23, drop 0.22 points, gate 1.0), mAP 47.88 (fp32 50.12) on "
        "synthetic val, 4 images",
        "bf16: agreement with fp32 F1 0.950 (20 vs 21 boxes, gate F1 >= 0.9) on photos: 3 "
        "unlabelled images",
    ]


def test_the_printed_map50_drop_is_the_one_metadata_records():
    """A drop under 0.01 points (INT8 scoring a hair better) is printed as metadata.json records
    it, to 3 decimals, not rounded to -0.01 or 0.00."""
    acc = {
        "gate": "map50", "subset": "synthetic val, 4 images", "images": 4,
        "fp32": {"mAP50": 0.81230, "mAP": 0.5}, "int8": {"mAP50": 0.81235, "mAP": 0.5},
        "mAP50_drop_points": -0.005, "gate_points": 1.0,
    }  # fmt: skip
    (line,) = export_cli._accuracy_lines({"precisions": {"int8": {"accuracy": acc}}})
    assert ", drop -0.005 points, gate 1.0)" in line


def test_a_map50_gate_against_an_fp32_map_of_0_warns_that_it_measured_nothing(caplog):
    """fp32 scoring mAP50 0 (an untrained model, or a val set without ground truth): INT8 can
    lose nothing, so the gate passes; it says, in the log and in metadata's accuracy, that it
    measured nothing. A gate against a real fp32 mAP has no such warning."""
    subset = "synthetic val, 4 images"

    def scoring(map50):
        return lambda _predictor: {"mAP50": map50, "mAP": map50 / 2, "images": 4, "subset": subset}

    with caplog.at_level(logging.WARNING, logger="yolov4"):
        acc = map50_gate(scoring(0.0), None, scoring(0.0)(None), "int8", 1.0)
    assert acc["mAP50_drop_points"] == 0.0
    assert acc["warning"].startswith(f"fp32 scores mAP50 0 on {subset}: the gate compared int8")
    assert "says nothing about int8's accuracy" in acc["warning"]
    assert acc["warning"] in caplog.text
    (line,) = export_cli._accuracy_lines({"precisions": {"int8": {"accuracy": acc}}})
    assert line.endswith("(the gate measured nothing: fp32's mAP50 is 0)")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="yolov4"):
        acc = map50_gate(scoring(0.5), None, scoring(0.5)(None), "int8", 1.0)
    assert "warning" not in acc and not caplog.records


@pytest.mark.slow
def test_untrained_model_int8_says_no_boxes_to_compare(overfit, tmp_path, capsys, caplog):
    """An untrained network scores no box over 0.25 on the photos: INT8 is exported (its
    probabilities agree with PyTorch's), and both checks say there was no box to compare."""
    torch.manual_seed(0)
    model = build_model("yolov4-tiny", num_classes=4, input_size=[64, 64])
    names = list(overfit.datamodule.class_names)
    ckpt = save_checkpoint(tmp_path / "w" / "untrained.pt", model, names, {"input_size": [64, 64]})
    photos = tmp_path / "photos"
    photos.mkdir()
    for f in overfit.calibration:
        shutil.copy(f, photos / Path(f).name)
    out = tmp_path / "export"
    cfg = export_cfg(
        tmp_path,
        [
            f"checkpoint={ckpt}",
            f"output={out}",
            "formats=[onnx,torchscript]",
            "precision=[fp32,int8]",
            f"calibration={photos}",
        ],
    )
    with caplog.at_level(logging.INFO, logger="yolov4"):
        meta = read_metadata(export_cli.export(cfg))
    parity = meta["parity"][f"{MODEL_INT8_XML}@openvino-int8"]
    assert parity["boxes"] == NO_BOXES and parity["boxes_compared"] == 0
    found = meta["precisions"]["int8"]["accuracy"]["agreement"]
    assert found == {"fp32_boxes": 0, "boxes": 0, "f1": None, "note": NO_BOXES}
    assert f"{MODEL_INT8_XML}@openvino-int8: {NO_BOXES} (mean probability" in caplog.text
    assert f"int8 agreement gate on {photos}" in caplog.text and NO_BOXES in caplog.text
    printed = capsys.readouterr().out
    assert f"int8: agreement with fp32 {NO_BOXES} (0 vs 0 boxes" in printed
    assert "  model.onnx: fp32 in onnxruntime, fp32 in openvino\n" in printed
    assert "  model.torchscript: fp32 in torchscript\n" in printed
    assert "  model_int8.xml: int8 in openvino\n" in printed


def test_default_precision_defaults_to_auto(tmp_path):
    """export.yaml's default_precision is ``auto`` (the fastest precision for the CPU that
    serves the artifact), as the docs say, and the export request keeps it as such."""
    from yolov4.core.artifact_formats import AUTO_PRECISION
    from yolov4.export.artifact import DEFAULT_OPSET, check_export_request

    cfg = export_cfg(tmp_path, ["checkpoint=w.pt"])
    assert cfg.default_precision == AUTO_PRECISION == "auto"
    request = check_export_request(
        ["onnx"], DEFAULT_OPSET, list(cfg.precision), cfg.default_precision
    )
    assert request == AUTO_PRECISION
    for page in ("docs/guides/export.md", "docs/cpu-precision.md"):
        assert (
            "defaults to `auto`" in (ROOT / page).read_text()
            or "(default `auto`" in (ROOT / page).read_text()
        ), page


def test_one_format_or_precision_needs_no_list_and_bad_ones_fail_before_loading(tmp_path):
    from yolov4.errors import ConfigError

    model = build_model("yolov4-tiny", num_classes=2, input_size=[64, 64])
    ckpt = save_checkpoint(tmp_path / "w.pt", model, ["a", "b"], {"input_size": [64, 64]})
    out = tmp_path / "one"
    export_cli.export(export_cfg(tmp_path, [f"checkpoint={ckpt}", f"output={out}", "formats=onnx"]))
    meta = read_metadata(out)
    assert list(meta["files"]) == ["model.onnx"] and meta["default_precision"] in ("fp32", "auto")
    missing = tmp_path / "no-such-data"  # int8 would load data first: the request fails before
    for overrides, message in (
        (["precision=fp16"], r"precisions must be a non-empty subset"),
        (["precision=[fp32]", "default_precision=int8"], r"exported \['fp32'\], got 'int8'"),
    ):
        with pytest.raises(ConfigError, match=message):
            export_cli.export(
                export_cfg(
                    tmp_path,
                    [
                        f"checkpoint={ckpt}",
                        f"output={tmp_path / 'x'}",
                        f"calibration={missing}",
                        *overrides,
                    ],
                )  # fmt: skip
            )
