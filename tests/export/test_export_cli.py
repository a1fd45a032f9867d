"""export.py from the command line's config: conf=best_f1 from a run's pr_f1.json and precision=[fp32,int8] gated on data's val images."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_module

from yolov4.cli.export import best_f1_conf, export
from yolov4.core.artifact import read_metadata
from yolov4.errors import ConfigError

# what evaluate.py / train.py write (yolov4.evaluation.analysis.DetectionAnalysis.pr_f1_dict)
PR_F1 = {
    "iou": 0.5,
    "confidence": [0.1, 0.2, 0.3],
    "best_f1": {
        "all": {"conf": 0.3712, "precision": 0.81, "recall": 0.77, "f1": 0.7895},
        "circle": {"conf": 0.2, "precision": 0.9, "recall": 0.8, "f1": 0.847},
    },
}


def export_cfg(tmp_path, overrides):
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        return compose(
            "export", overrides=[f"paths.output_dir={tmp_path}", "formats=[onnx]", *overrides]
        )


def test_conf_best_f1_from_the_runs_pr_f1(overfit, tmp_path):
    run = overfit.checkpoint.parent.parent  # <run>/weights/best.pt
    (run / "pr_f1.json").write_text(json.dumps(PR_F1))
    out = tmp_path / "export"
    cfg = export_cfg(
        tmp_path, [f"checkpoint={overfit.checkpoint}", f"output={out}", "conf=best_f1"]
    )
    meta = read_metadata(export(cfg))
    assert meta["thresholds"]["conf"] == 0.3712
    source = meta["conf_source"]
    assert source["file"] == str((run / "pr_f1.json").resolve())
    assert (source["key"], source["f1"], source["iou"]) == ("best_f1.all.conf", 0.7895, 0.5)
    assert meta["precisions"] == {
        "fp32": {"file": "model.onnx", "backends": ["onnxruntime", "openvino"]}
    }


def test_conf_number_and_bad_pr_f1(overfit, tmp_path, caplog):
    import logging

    base = [f"checkpoint={overfit.checkpoint}", f"output={tmp_path / 'export'}"]
    meta = read_metadata(export(export_cfg(tmp_path, [*base, "conf=0.3"])))
    with caplog.at_level(logging.WARNING, logger="yolov4"):  # the same folder again
        meta = read_metadata(export(export_cfg(tmp_path, [*base, "conf=0.4"])))
    assert "holds an artifact (model.onnx): this export replaces it" in caplog.text
    caplog.clear()  # a refused request replaces nothing: no warning that it would
    with (
        caplog.at_level(logging.WARNING, logger="yolov4"),
        pytest.raises(ConfigError, match=r"export.py formats must be"),
    ):
        export(export_cfg(tmp_path, [*base, "formats=[onnx,tflite]"]))
    assert "this export replaces it" not in caplog.text
    assert meta["thresholds"]["conf"] == 0.4 and meta["conf_source"]["set"] == "export.py conf="
    missing = tmp_path / "none.json"
    with pytest.raises(ConfigError, match=f"no {missing}"):
        export(export_cfg(tmp_path, [*base, "conf=best_f1", f"pr_f1={missing}"]))
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"best_f1": {"all": {"conf": None, "f1": 0.0}}}))
    with pytest.raises(ConfigError, match=r"best_f1.all.conf is None, expected a number"):
        best_f1_conf(empty)
    (tmp_path / "bad.json").write_text(json.dumps({"curves": []}))
    with pytest.raises(ConfigError, match=r"has no best_f1.all"):
        best_f1_conf(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match=r"conf must be null, a number in \[0, 1\] or 'best_f1'"):
        export(export_cfg(tmp_path, [*base, "conf=best"]))


@pytest.mark.parametrize(
    "given, found", [("nan", "NaN"), ("inf", "infinity"), ("1.5", "1.5"), ("true", "True")]
)
def test_a_conf_that_is_no_threshold_is_refused_before_the_model_loads(tmp_path, given, found):
    """conf=nan passes a type check and fails every comparison: it is named NaN, with the
    range, before the checkpoint is read (this one is not a checkpoint at all)."""
    checkpoint = tmp_path / "m.pt"
    checkpoint.write_bytes(b"not a checkpoint")
    overrides = [f"checkpoint={checkpoint}", f"output={tmp_path / 'export'}", f"conf={given}"]
    with pytest.raises(ConfigError) as refused:
        export(export_cfg(tmp_path, overrides))
    assert str(refused.value) == (
        f"conf must be null, a number in [0, 1] or 'best_f1', got {found}"
    )


@pytest.mark.slow
def test_cli_int8_on_the_checkpoints_dataset(overfit, tmp_path):
    out = tmp_path / "export"
    overrides = [f"checkpoint={overfit.checkpoint}", f"output={out}", "precision=[fp32,int8]"]
    meta = read_metadata(export(export_cfg(tmp_path, [*overrides, *overfit.overrides()])))
    acc = meta["precisions"]["int8"]["accuracy"]
    assert acc["images"] == 4 and acc["subset"].startswith("SyntheticDataModule val split")
    assert acc["fp32"]["mAP50"] > 0.3 and acc["mAP50_drop_points"] <= 1.0
    assert meta["precisions"]["int8"]["quantization"]["calibration_images"] == 4


def test_cli_refuses_another_datasets_classes(overfit, tmp_path):
    overrides = [
        f"checkpoint={overfit.checkpoint}",
        f"output={tmp_path / 'export'}",
        "precision=[fp32,int8]",
        *overfit.overrides(),
        "data.num_classes=null",
    ]
    cfg = export_cfg(tmp_path, overrides)
    from yolov4.cli import export as export_mod

    with pytest.raises(ConfigError, match=r"are not the checkpoint's"):
        export_mod._dataset(cfg, ["cat", "dog"])


@pytest.mark.parametrize(
    "best, warned",
    [
        ({"conf": 0.0025, "f1": 0.03}, ["conf 0.0025 is below 0.05", "its F1 0.03 is below 0.1"]),
        ({"conf": 0.3, "f1": 0.05}, ["its F1 0.05 is below 0.1"]),
        ({"conf": 0.01, "f1": 0.6}, ["conf 0.01 is below 0.05"]),
        ({"conf": 0.3, "f1": 0.6}, []),
    ],
)
def test_conf_best_f1_warns_on_a_low_conf_or_f1(tmp_path, caplog, best, warned):
    """A best-F1 threshold of 0.0025 (F1 0.03) is an undertrained run's: warned and recorded,
    naming both numbers; a usable one is not."""
    path = tmp_path / "pr_f1.json"
    path.write_text(json.dumps({"iou": 0.5, "best_f1": {"all": best}}))
    with caplog.at_level("WARNING", logger="yolov4"):
        conf, source = best_f1_conf(path)
    assert conf == best["conf"]
    if not warned:
        assert "warning" not in source and not caplog.records
        return
    for part in warned:
        assert part in source["warning"] and part in caplog.text
    assert f"conf=best_f1 {best['conf']:g} (F1 {best['f1']})" in source["warning"]


def test_an_export_at_another_input_size_describes_its_model_at_that_size(overfit, tmp_path):
    """export.py input_size= other than the checkpoint's training size: metadata.json's model
    config (what GET /v1/model shows as the architecture) records the artifact's size and
    resize mode, as its top-level input_size and preprocess do, and a Predictor runs at it."""
    import numpy as np

    from yolov4 import load_checkpoint
    from yolov4.inference import Predictor
    from yolov4.models import ModelConfig

    trained = list(load_checkpoint(overfit.checkpoint).model.config.input_size)
    size = [trained[0] + 32, trained[1] + 64]
    out = tmp_path / "export"
    overrides = [f"checkpoint={overfit.checkpoint}", f"output={out}", f"input_size={size}"]
    meta = read_metadata(export(export_cfg(tmp_path, overrides)))
    model = ModelConfig.from_dict(meta["model"])
    assert meta["input_size"] == meta["preprocess"]["input_size"] == size
    assert list(model.input_size) == size
    assert model.letter_box == (meta["preprocess"]["mode"] == "letterbox")
    predictor = Predictor.from_artifact(out)
    assert list(predictor.input_size) == size
    (found,) = predictor(np.zeros((50, 70, 3), np.uint8))  # letterboxed to the artifact's size
    assert found.boxes.shape[1] == 4


def test_serving_thresholds_given_to_export_py_are_the_artifacts_defaults(tmp_path):
    """iou=, max_det=, nms_kind=, multi_label=, agnostic_nms= go into metadata.json's
    thresholds, and a Predictor loading the artifact serves with them (nms_kind=model: the
    cfg's NMS, resolved)."""
    import torch

    from yolov4 import build_model, save_checkpoint
    from yolov4.core.postprocess import SERVING
    from yolov4.inference import Predictor

    torch.manual_seed(0)
    model = build_model("yolov4-tiny", num_classes=2).eval()
    ckpt = save_checkpoint(tmp_path / "m.pt", model, ["a", "b"], {"input_size": [64, 64]})
    given = {"iou": 0.6, "max_det": 7, "nms_kind": "diou", "multi_label": False}
    overrides = [f"{k}={v}" for k, v in {**given, "agnostic_nms": True}.items()]
    cfg = export_cfg(tmp_path, [f"checkpoint={ckpt}", f"output={tmp_path / 'a'}", *overrides])
    art = export(cfg)
    expected = SERVING.replace(**given, agnostic_nms=True).to_dict()
    assert read_metadata(art)["thresholds"] == expected
    assert Predictor.from_artifact(art).postprocess.to_dict() == expected
    assert expected != SERVING.to_dict()


@pytest.mark.parametrize(
    "override, message",
    [
        ("iou=1.5", "export.py postprocess iou must be a number in [0, 1], got 1.5"),
        ("max_det=0", "export.py postprocess max_det must be an integer >= 1, got 0"),
        ("nms_kind=soft", "export.py postprocess nms_kind must be one of"),
        (
            "multi_label=maybe",
            "export.py postprocess multi_label must be true or false, got 'maybe'",
        ),
        ("agnostic_nms=1", "export.py postprocess agnostic_nms must be true or false, got 1"),
    ],
)
def test_a_bad_serving_threshold_is_refused_before_the_model_loads(tmp_path, override, message):
    checkpoint = tmp_path / "m.pt"
    checkpoint.write_bytes(b"not a checkpoint")
    overrides = [f"checkpoint={checkpoint}", f"output={tmp_path / 'export'}", override]
    with pytest.raises(ConfigError) as refused:
        export(export_cfg(tmp_path, overrides))
    assert str(refused.value).startswith(message)
