"""train.py and evaluate.py end to end on a tiny synthetic dataset; config errors at start-up."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from pathlib import Path
from typing import NamedTuple

import lightning as L
import numpy as np
import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from pycocotools.cocoeval import COCOeval

from yolov4 import ConfigError, build_model, load_checkpoint, save_checkpoint
from yolov4.cli.evaluate import evaluate
from yolov4.cli.train import train
from yolov4.darknet import save_darknet_weights, write_darknet_cfg
from yolov4.evaluation import METRIC_KEYS
from yolov4.export.artifact import export_artifact
from yolov4.inference.darknet import DARKNET_PAD_VALUE


class Seen(L.Callback):
    """What the trainer ran with: its logging interval and the metrics it logged."""

    def on_train_end(self, trainer, module) -> None:
        self.every = trainer.log_every_n_steps
        self.logged = set(trainer.logged_metrics)


class TrainedRun(NamedTuple):
    run: Path  # the run directory
    metrics: dict
    cache: Path  # the synthetic data's cache folder
    log: str  # the yolov4 loggers' lines (INFO and up) during the run
    trainer: dict  # the composed trainer config, before train() ran it
    seen: Seen


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, compose_cfg, tiny_run, synthetic_cache) -> TrainedRun:
    """One tiny training run shared by the tests below."""
    run = tmp_path_factory.mktemp("run")
    cfg = compose_cfg("train", [*tiny_run, "analysis.plots=true"], run)
    composed, seen = OmegaConf.to_container(cfg.trainer), Seen()
    lines, logger = io.StringIO(), logging.getLogger("yolov4")
    handler, level = logging.StreamHandler(lines), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        metrics = train(cfg, extra_callbacks=[seen])
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return TrainedRun(run, metrics, synthetic_cache, lines.getvalue(), composed, seen)


def test_run_directory_has_the_documented_files(trained_run):
    run, metrics, synthetic_cache = trained_run.run, trained_run.metrics, trained_run.cache
    for name in (
        "checkpoints/last.ckpt",
        "checkpoints/best.ckpt",
        "weights/best.pt",
        "weights/last.pt",
        "metrics.json",
        "confusion_matrix.json",
        "confusion_matrix.png",
        "pr_f1.json",
        "pr_f1.png",
        "export/model.onnx",
        "export/metadata.json",
    ):
        assert (run / name).is_file(), name
    # darknet_files=auto: a zoo network's darknet files are the official cfg, not written
    assert not list((run / "weights").glob("*.cfg")) + list((run / "weights").glob("*.weights"))
    written = json.loads((run / "metrics.json").read_text())
    assert set(METRIC_KEYS) <= set(written) and set(written["per_class"]) == {
        "circle",
        "rectangle",
        "triangle",
        "cross",
    }
    assert written["mAP"] == metrics["mAP"]
    analysis = json.loads((run / "confusion_matrix.json").read_text())
    assert (analysis["conf"], analysis["iou"]) == (0.25, 0.5)
    assert analysis["labels"] == [*written["per_class"], "background"]
    assert sum(map(sum, analysis["counts"])) > 0  # the final validation's 6 images
    # the final reports are of the exported weights, weights/best.pt (here the last epoch's)
    saved = torch.load(run / "weights/best.pt", weights_only=True)
    assert saved["metrics"] == {k: written[k] for k in (*METRIC_KEYS, "num_images")}
    assert written["weights"] == {"file": "weights/best.pt", "epoch": 0, "step": 2, "ema": True}
    # the run's data config, recorded in both kinds of checkpoint
    for name in ("weights/best.pt", "checkpoints/last.ckpt"):
        data = load_checkpoint(run / name).data
        assert (data["_target_"], data["num_val"], data["cache_dir"]) == (
            "yolov4.data.datamodule.SyntheticDataModule",
            6,
            str(synthetic_cache),
        )


def test_identical_checkpoints_are_one_file_on_disk(trained_run):
    """After one epoch best and last hold the same state: one file each for .ckpt and .pt (hard
    links), so the run's checkpoints take the disk of one copy."""
    run = trained_run.run
    pairs = [
        ("checkpoints/best.ckpt", "checkpoints/last.ckpt"),
        ("weights/best.pt", "weights/last.pt"),
    ]
    for best, last in pairs:
        assert os.path.samefile(run / best, run / last), best
    files = [run / name for pair in pairs for name in pair]
    apparent = sum(f.stat().st_size for f in files)
    on_disk = sum({f.stat().st_ino: f.stat().st_size for f in files}.values())
    assert on_disk == apparent / 2  # the bytes the links save: half of the four files


def test_weights_are_strict_loadable_and_match_the_lightning_checkpoint(trained_run):
    run = trained_run.run
    raw = torch.load(run / "weights/last.pt", weights_only=True)
    model = build_model(**raw["model"])
    model.load_state_dict(raw["state_dict"], strict=True)  # the user's one-liner
    assert raw["preprocess"]["input_size"] == [64, 64] and raw["trained"]["ema"] is True
    # last.pt holds the EMA weights, exactly what load_checkpoint takes from last.ckpt
    from_ckpt = load_checkpoint(run / "checkpoints/last.ckpt").model
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model.eval()(x), from_ckpt(x)):
            assert torch.equal(a, b)


def test_weights_and_lightning_checkpoint_record_the_same_epoch(trained_run):
    """weights/last.pt and checkpoints/last.ckpt hold the same state after the run: they name the
    same (0-based, Lightning's) epoch and the same step."""
    run = trained_run.run
    weights = torch.load(run / "weights/last.pt", weights_only=True)["trained"]
    ckpt = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert (weights["epoch"], weights["step"]) == (ckpt["epoch"], ckpt["global_step"]) == (0, 2)


def test_evaluate_matches_training(trained_run, compose_cfg, tiny_run, tmp_path):
    run, train_metrics = trained_run.run, trained_run.metrics
    data = [o for o in tiny_run if o.startswith("data.") and "input_size" not in o]
    cfg = compose_cfg("evaluate", [f"checkpoint={run}/weights/last.pt", *data], tmp_path)
    metrics = evaluate(cfg)
    assert [metrics[k] for k in METRIC_KEYS] == pytest.approx(
        [train_metrics[k] for k in METRIC_KEYS], abs=1e-6
    )
    assert json.loads((tmp_path / "metrics.json").read_text())["mAP"] == metrics["mAP"]


def test_evaluate_of_the_runs_export_scores_the_runs_own_data(
    trained_run, compose_cfg, tmp_path, caplog
):
    """``evaluate.py artifact=<run>/export`` with no data= scores the run's validation split
    (recorded at export), as ``checkpoint=`` of the exported weights does (it fell back to the
    default synthetic data: other images, another mAP)."""
    import logging

    run = trained_run.run
    with caplog.at_level(logging.INFO, logger="yolov4"):
        from_export = evaluate(compose_cfg("evaluate", [f"artifact={run}/export"], tmp_path / "a"))
    assert "the run's data config recorded in" in caplog.text
    assert "records no data config" not in caplog.text
    from_weights = evaluate(
        compose_cfg("evaluate", [f"checkpoint={run}/weights/best.pt"], tmp_path / "c")
    )
    assert from_export["num_images"] == from_weights["num_images"] == 6
    assert from_export["mAP50"] == pytest.approx(from_weights["mAP50"], abs=2e-3)


def test_evaluate_matches_pycocotools_on_its_own_detections(
    compose_cfg, tiny_run, synthetic_cache, tmp_path, randomize
):
    """detections.json re-scored by pycocotools alone gives metrics.json's numbers, on a model
    that has detections (a randomised network: every image gets some at conf 0.001)."""
    torch.manual_seed(3)
    model = randomize(build_model("yolov4-tiny", num_classes=4), seed=3)
    ckpt = save_checkpoint(
        tmp_path / "m.pt",
        model,
        ["circle", "rectangle", "triangle", "cross"],
        {"input_size": [64, 64], "mode": "letterbox"},
    )
    data = [o for o in tiny_run if o.startswith("data.") and "input_size" not in o]
    metrics = evaluate(compose_cfg("evaluate", [f"checkpoint={ckpt}", *data], tmp_path / "run"))
    detections = json.loads((tmp_path / "run" / "detections.json").read_text())
    assert len(detections) > 0  # a real re-score
    from yolov4.data.problems import ProblemReport
    from yolov4.data.synthetic import SyntheticSource

    gt = (
        SyntheticSource(split="val", num_images=6, image_size=96, cache_dir=str(synthetic_cache))
        .load(ProblemReport())
        .coco
    )
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(detections), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    np.testing.assert_allclose(ev.stats, [metrics[k] for k in METRIC_KEYS], atol=1e-6)
    assert metrics["AR100"] > 0
    assert {d["category_id"] for d in detections} <= {1, 3, 5, 7}


@pytest.mark.parametrize("override", ["data.batch_szie=4", "ema_decay=null", "module.ema_decy=0"])
def test_typo_in_a_key_fails_at_composition(compose_cfg, tmp_path, override):
    """Typos and the keys that moved under `module.` (`ema_decay` -> `module.ema_decay`) fail at
    start-up naming the key."""
    key = override.split("=")[0].split(".")[-1]
    with pytest.raises(ConfigCompositionException, match=key):
        compose_cfg("train", [override], tmp_path)


@pytest.mark.parametrize("source", ["checkpoint", "darknet_weights"])
def test_evaluate_builds_no_loss_ema_or_optimizer(
    compose_cfg, tiny_run, tmp_path, monkeypatch, randomize, source
):
    """Evaluating weights builds the network and the validation only; `module.val_postprocess.*` (the same
    config node as in training) sets its postprocess."""
    import yolov4.training.module as module_py

    def refuse(what):
        def build(*args, **kwargs):
            raise AssertionError(f"evaluate built {what}")

        return build

    monkeypatch.setattr(module_py.YoloLoss, "from_config", refuse("the loss"))
    monkeypatch.setattr(module_py, "build_optimizer", refuse("an optimizer"))
    monkeypatch.setattr(module_py, "ModelEMA", refuse("an EMA"))
    torch.manual_seed(3)
    model = randomize(build_model("yolov4-tiny", num_classes=4), seed=3)  # it detects
    path = (
        save_checkpoint(tmp_path / "m.pt", model, ["circle", "rectangle", "triangle", "cross"])
        if source == "checkpoint"
        else save_darknet_weights(model, tmp_path / "m.weights")
    )
    data = [o for o in tiny_run if o.startswith("data.")]
    network = ["model=yolov4-tiny"] if source == "darknet_weights" else []
    cfg = compose_cfg(
        "evaluate",
        [f"{source}={path}", *network, "module.val_postprocess.max_det=1", *data],
        tmp_path,
    )
    metrics = evaluate(cfg)
    assert metrics["num_images"] == 6
    per_image = {}
    for d in json.loads((tmp_path / "detections.json").read_text()):
        per_image[d["image_id"]] = per_image.get(d["image_id"], 0) + 1
    assert per_image and max(per_image.values()) == 1
    # the same patches stop training: the test would see a loss being built
    with pytest.raises(AssertionError, match="the loss"):
        train(
            compose_cfg(
                "train", [*tiny_run, "module.ema_decay=null", "export=null"], tmp_path / "train"
            )
        )


def test_evaluate_refuses_module_pretrained(compose_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"module.pretrained=x.weights: evaluate takes"):
        evaluate(
            compose_cfg("evaluate", ["checkpoint=m.pt", "module.pretrained=x.weights"], tmp_path)
        )


@pytest.mark.parametrize(
    "override, match",
    [
        ("model.num_classes=7", r"model.num_classes=7 but the dataset has 4 classes"),
        (
            "optim.optimizer=adam",
            r"optim: optim.optimizer must be one of \('sgd', 'adamw'\), got 'adam'",
        ),
        ("optim.lr=0", r"optim.lr must be > 0"),
        ("optim.lr=abc", r"optim.lr must be a number, got 'abc'"),
        ("data.input_size=[100,100]", r"data: .*multiples of 32"),
        ("trainer.max_epochs=0", r"trainer.max_epochs=0 trains nothing"),
        # Lightning asserted deep in the fit, or trained on (a fractional step count)
        ("trainer.max_epochs=1.5", r"trainer.max_epochs: expected a whole number .*got 1.5"),
        ("trainer.max_steps=2.5", r"trainer.max_steps: expected a whole number .*got 2.5"),
        ("trainer.limit_val_batches=1.5", r"trainer.limit_val_batches: .*fraction.*got 1.5"),
        # '<' not supported between str and int; torch's batch_size error after the set-up
        ("data.batch_size=abc", r"data.batch_size: expected an integer >= 1, got 'abc'"),
        ("data.batch_size=2.5", r"data.batch_size: expected an integer >= 1, got 2.5"),
        ("data.val_batch_size=abc", r"data.val_batch_size: expected an integer >= 1, got 'abc'"),
        ("data.num_workers=abc", r"data.num_workers: expected an integer >= 0, got 'abc'"),
        ("data.resize_mode=strech", r"data.resize_mode: expected one of .*got 'strech'"),
        ("export.formats=[]", r"export.formats must be .*; export=null skips the run's export"),
        ("darknet_files=yes", r"darknet_files: expected auto, true or false, got 'yes'"),
        # a typo exported best.pt silently; an unknown format failed after the whole run
        ("export.weights=bset", r"export.weights must be best or last, got 'bset'"),
        (
            "export.formats=[onnx,tflite]",
            r"export.formats must be a non-empty subset of \[.*got \['onnx', 'tflite'\]",
        ),
        ("trainer.precision=64", r"trainer.precision=64: .* float64 network cannot train"),
        ("trainer.precision=bf16-true", r"bf16-true casts the network's weights .* bf16-mixed"),
        ("trainer.limit_train_batches=0", r"trainer.limit_train_batches=0 trains nothing"),
        ("trainer.limit_val_batches=0", r"validates nothing.*check_val_every_n_epoch"),
        ("objective=val/mAP_50", r"objective=val/mAP_50: expected one of \[.*'val/mAP50'"),
        ("objective=mAP50", r"objective=mAP50: expected one of"),
        (
            "callbacks.best_checkpoint.monitor=val/map50",
            r"callbacks.best_checkpoint.monitor=val/map50: expected one of .*'train/loss'",
        ),
    ],
)
def test_bad_values_fail_at_start_naming_the_key(compose_cfg, tiny_run, tmp_path, override, match):
    from yolov4.cli.train import run_objective

    cfg = compose_cfg("train", [*tiny_run, override], tmp_path)
    with pytest.raises(ConfigError, match=match):
        run_objective(cfg)  # what python train.py runs
    assert not (tmp_path / "checkpoints").exists()  # failed before any training


@pytest.mark.slow
def test_darknet_weights_and_checkpoint_give_the_same_metrics(
    compose_cfg, tiny_run, tmp_path, randomize
):
    torch.manual_seed(3)
    model = randomize(build_model("yolov4-tiny", num_classes=4), seed=3)
    # darknet's letterbox border (0.5 grey), which darknet_weights= are fed with
    preprocess = {"input_size": [64, 64], "mode": "letterbox", "pad_value": DARKNET_PAD_VALUE}
    ckpt = save_checkpoint(
        tmp_path / "m.pt", model, ["circle", "rectangle", "triangle", "cross"], preprocess
    )
    weights = save_darknet_weights(model, tmp_path / "m.weights")
    # the cfg darknet would run: 64 px (darknet_weights= are fed at their cfg's size)
    cfg_file = tmp_path / "m.cfg"
    cfg_file.write_text(write_darknet_cfg(model, input_size=(64, 64), letter_box=True))
    data = [o for o in tiny_run if o.startswith("data.") and "input_size" not in o]
    from_ckpt = evaluate(compose_cfg("evaluate", [f"checkpoint={ckpt}", *data], tmp_path / "a"))
    from_darknet = evaluate(
        compose_cfg(
            "evaluate",
            [
                f"darknet_weights={weights}",
                "model=darknet",
                f"model.cfg={cfg_file}",
                "darknet_resize_mode=letterbox",
                *data,
            ],
            tmp_path / "b",
        )
    )
    assert from_ckpt["AR100"] > 0  # a real comparison
    assert [from_darknet[k] for k in METRIC_KEYS] == [from_ckpt[k] for k in METRIC_KEYS]
    # the serving artifact, through the Predictor from the image files
    art = export_artifact(ckpt, tmp_path / "export", formats=["onnx"])
    from_artifact = evaluate(compose_cfg("evaluate", [f"artifact={art}", *data], tmp_path / "c"))
    assert [from_artifact[k] for k in METRIC_KEYS] == pytest.approx(
        [from_ckpt[k] for k in METRIC_KEYS], abs=2e-3
    )


def test_evaluate_needs_exactly_one_source(compose_cfg, tmp_path):
    with pytest.raises(
        ConfigError, match="exactly one of checkpoint=..., darknet_weights=... or artifact="
    ):
        evaluate(compose_cfg("evaluate", [], tmp_path))
    # predict.py's vocabulary: model= names darknet weights' network, and only theirs
    with pytest.raises(ConfigError, match="model=yolov4 describe darknet_weights=; a checkpoint="):
        evaluate(compose_cfg("evaluate", ["checkpoint=x.pt", "model=yolov4"], tmp_path))
    with pytest.raises(ConfigError, match="darknet_weights= needs its network: model=<zoo name>"):
        evaluate(compose_cfg("evaluate", ["darknet_weights=x.weights"], tmp_path))


# a small run that learns: enough steps on small images for the metric to move clearly
LEARN_RUN = [
    "data.num_train=64",
    "data.num_val=16",
    "data.image_size=128",
    "data.input_size=[128,128]",
    "data.batch_size=8",
    "data.num_workers=0",
    "trainer.max_epochs=20",
    "trainer.check_val_every_n_epoch=20",
    "trainer.enable_progress_bar=false",
    "optim.burn_in=20",
    "logger=none",
    "export=null",
]


@pytest.mark.slow  # 20 epochs; the default suite trains 1 epoch (trained_run)
def test_python_train_learns_far_above_an_untrained_model(compose_cfg, tmp_path):
    """`python train.py`'s defaults (optimizer, augmentation, EMA, schedule) on a small synthetic
    split: the final val mAP50 is far above the same network's at initialisation."""
    metrics = train(compose_cfg("train", LEARN_RUN, tmp_path / "run"))
    untrained = save_checkpoint(
        tmp_path / "untrained.pt",
        build_model("yolov4-tiny", num_classes=4),
        ["circle", "rectangle", "triangle", "cross"],
        {"input_size": [128, 128], "mode": "letterbox"},
    )
    data = [o for o in LEARN_RUN if o.startswith("data.") and "input_size" not in o]
    before = evaluate(compose_cfg("evaluate", [f"checkpoint={untrained}", *data], tmp_path / "e"))
    assert before["mAP50"] < 0.01
    # about 0.11 after these 160 steps; the default run goes on to 0.54 (README)
    assert metrics["mAP50"] > max(0.06, 10 * before["mAP50"]), (metrics, before)


@pytest.mark.slow  # torch.compile on a CPU; compiled state dicts: tests/core/test_checkpoint.py
def test_compiled_training_writes_strict_loadable_weights(compose_cfg, tiny_run, tmp_path, caplog):
    """`module.compile_model=true` trains through torch.compile, saying so before and after the
    compilation; the weights files still hold plain
    `build_model` keys (no `_orig_mod.`), and the .ckpt loads to the same network. The other
    `module.*` overrides reach the YoloModule too (recorded in the .ckpt's hyper-parameters)."""
    run = tmp_path / "run"
    module_overrides = [
        "module.compile_model=true",
        "module.ema_decay=null",
        "module.val_postprocess.max_det=7",
    ]
    with caplog.at_level(logging.INFO, logger="yolov4.training.module"):
        train(compose_cfg("train", [*tiny_run, *module_overrides, "export=null"], run))
    # the module's own lines (torch's compile logs its own, e.g. about CUDA_HOME, in between)
    said = [r.getMessage() for r in caplog.records if r.name == "yolov4.training.module"]
    start = next(
        i for i, m in enumerate(said) if m.startswith("compiling the network with torch.compile")
    )
    assert (
        "torch.compile: the first step (compilation, forward and backward) took" in said[start + 1]
    )
    hp = torch.load(run / "checkpoints/last.ckpt", weights_only=True)["hyper_parameters"]
    assert (hp["compile_model"], hp["ema_decay"], hp["val_postprocess"]["max_det"]) == (
        True,
        None,
        7,
    )
    raw = torch.load(run / "weights/last.pt", weights_only=True)
    assert raw["trained"]["ema"] is False
    assert not any("_orig_mod" in k for k in raw["state_dict"])
    model = build_model(**raw["model"]).eval()
    model.load_state_dict(raw["state_dict"], strict=True)
    from_ckpt = load_checkpoint(run / "checkpoints/last.ckpt").model
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), from_ckpt(x)):
            assert torch.equal(a, b)


def test_export_cli_writes_every_format(trained_run, tmp_path):
    """`python export.py checkpoint=... formats=[...]`: the artifact, with the NMS graph."""
    from hydra import compose, initialize_config_module

    from yolov4.cli.export import export

    run = trained_run.run
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        cfg = compose(
            "export",
            overrides=[
                f"checkpoint={run}/weights/best.pt",
                f"output={tmp_path}/art",
                "formats=[onnx,torchscript,onnx_nms]",
            ],
        )
    art = export(cfg)
    meta = json.loads((art / "metadata.json").read_text())
    assert set(meta["files"]) == {"model.onnx", "model.torchscript", "model_nms.onnx"}
    # every file checked against PyTorch; model.onnx also in OpenVINO when it is installed
    assert set(meta["parity"]) - {"model.onnx@openvino"} == set(meta["files"])
    assert meta["nms_graph"]["max_det"] == 300


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["model=yolov4"], "stretch"),  # yolov4.cfg: no letter_box
        (["model=yolov4-tiny"], "stretch"),
        (["model=yolov4-csp"], "letterbox"),  # letter_box=1
        (["model=yolov4-p6"], "letterbox"),
        (["model=yolov4-csp", "darknet_resize_mode=stretch"], "stretch"),  # as told
    ],
)
def test_darknet_weights_are_resized_as_their_cfg_trained_them(
    compose_cfg, tmp_path, overrides, expected
):
    from yolov4.cli.evaluate import darknet_resize_mode

    cfg = compose_cfg("evaluate", ["darknet_weights=x.weights", *overrides], tmp_path)
    assert darknet_resize_mode(cfg) == expected


def test_darknet_weights_are_scored_at_their_cfgs_size_with_darknets_border(
    compose_cfg, tmp_path, monkeypatch
):
    """evaluate.py scored darknet_weights= at data.input_size (synthetic's 256, coco's 608)
    while predict.py and export.py ran them at the cfg's [net] size, and letterboxed them with
    the project's 114 border where darknet fills 0.5: now as darknet's `detector map`, unless
    the command gives data.input_size."""
    import yolov4.cli.evaluate as evaluate_cli

    text = write_darknet_cfg(build_model("yolov4-tiny", num_classes=4), input_size=(128, 160))
    (tmp_path / "mine.cfg").write_text(text)
    args = ["darknet_weights=x.weights", "model=darknet", f"model.cfg={tmp_path / 'mine.cfg'}"]
    cfg = compose_cfg("evaluate", [*args, "data=synthetic"], tmp_path)
    found = evaluate_cli._darknet_preprocess(cfg)
    assert found["preprocess"] == {
        "input_size": [128, 160], "mode": "stretch", "pad_value": DARKNET_PAD_VALUE
    }  # fmt: skip
    assert DARKNET_PAD_VALUE == 127  # darknet's 0.5 grey: 127.5, in uint8
    csp = compose_cfg("evaluate", ["darknet_weights=x.weights", "model=yolov4-csp"], tmp_path)
    assert evaluate_cli._darknet_preprocess(csp)["preprocess"]["mode"] == "letterbox"
    asked = [*args, "data=synthetic", "data.input_size=[96,96]"]
    monkeypatch.setattr(evaluate_cli, "run_overrides", lambda: asked)
    cfg = compose_cfg("evaluate", asked, tmp_path)
    assert evaluate_cli._darknet_preprocess(cfg)["input_size"] == [96, 96]


def test_evaluate_writes_the_confusion_matrix_and_pr_f1_files(
    compose_cfg, tiny_run, synthetic_cache, tmp_path, randomize
):
    """confusion_matrix.json / pr_f1.json beside metrics.json, at analysis.conf / analysis.iou,
    consistent with detections.json and the ground truth."""
    torch.manual_seed(3)
    model = randomize(build_model("yolov4-tiny", num_classes=4), seed=3)
    names = ["circle", "rectangle", "triangle", "cross"]
    ckpt = save_checkpoint(
        tmp_path / "m.pt", model, names, {"input_size": [64, 64], "mode": "letterbox"}
    )
    data = [o for o in tiny_run if o.startswith("data.") and "input_size" not in o]
    run = tmp_path / "run"
    evaluate(
        compose_cfg(
            "evaluate",
            [f"checkpoint={ckpt}", "analysis.conf=0.05", "analysis.iou=0.3", "analysis.plots=true"]
            + data,
            run,
        )
    )
    detections = json.loads((run / "detections.json").read_text())
    cm = json.loads((run / "confusion_matrix.json").read_text())
    pr = json.loads((run / "pr_f1.json").read_text())
    for png in ("confusion_matrix.png", "pr_f1.png"):
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (cm["conf"], cm["iou"], pr["iou"]) == (0.05, 0.3, 0.3)
    assert cm["labels"] == [*names, "background"]
    counts = np.array(cm["counts"])
    assert counts.shape == (5, 5) and counts[4, 4] == 0
    # every detection at or above conf is in one column (no crowd boxes here)
    kept = [d for d in detections if d["score"] >= 0.05]
    assert counts.sum(0)[:4].tolist() == [
        sum(1 for d in kept if d["category_id"] == c) for c in (1, 3, 5, 7)
    ]
    assert len(kept) > 0
    # every true box is in one row, TP + FN = the class's boxes, also in pr_f1.json
    for k, name in enumerate(names):
        c = cm["per_class"][name]
        assert c["TP"] + c["FN"] == counts[k].sum() == pr["per_class"][name]["num_gt"]
        assert c["TP"] + c["FP"] == counts[:, k].sum()
        assert pr["per_class"][name]["num_detections"] == sum(
            1 for d in detections if d["category_id"] == (1, 3, 5, 7)[k]
        )
    assert counts[:4].sum() == pr["all"]["num_gt"] > 0
    np.testing.assert_allclose(np.array(cm["normalized"])[:4].sum(1), 1.0)
    assert len(pr["confidence"]) == len(pr["all"]["f1"]) == 101
    assert set(pr["best_f1"]) == {"all", *names}
    best = pr["best_f1"]["all"]
    assert best["conf"] is None or (0 < best["conf"] <= 1 and best["f1"] > 0)


@pytest.mark.slow
def test_without_the_weights_callback_the_final_model_is_written_evaluated_and_exported(
    compose_cfg, tiny_run, tmp_path
):
    cfg = compose_cfg("train", [*tiny_run, "callbacks=none"], tmp_path)
    metrics = train(cfg)
    assert metrics["weights"]["file"] == "weights/last.pt"
    assert load_checkpoint(tmp_path / "weights" / "last.pt").trained["step"] == 2
    assert (tmp_path / "metrics.json").is_file() and (tmp_path / "export" / "model.onnx").is_file()


def test_last_ckpt_is_written_every_epoch_between_validations(compose_cfg, tiny_run, tmp_path):
    """The COCO recipes validate every 5th epoch: a run stopped before its first validation still
    leaves a last.ckpt of its latest epoch to resume. With an EMA decay of ~0 the EMA is the
    weights of the last step (it was updated inside the step's closure, before the update: one
    step behind, the last step never in the EMA that validation scores and best.pt holds)."""
    cfg = compose_cfg("train", [*tiny_run, "trainer.max_epochs=2", "module.ema_decay=1e-9",
                                "trainer.check_val_every_n_epoch=5", "export=null"], tmp_path)  # fmt: skip
    train(cfg)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 4
    assert not (tmp_path / "checkpoints" / "best.ckpt").exists()  # no validation: no best
    state = ckpt["state_dict"]
    assert int(state["ema.updates"]) == 4
    for key, value in state.items():
        if key.startswith("model.") and value.is_floating_point():
            torch.testing.assert_close(state[f"ema.module.{key[6:]}"], value, atol=1e-7, rtol=0)


def test_a_run_shorter_than_the_logging_interval_still_logs_its_steps(trained_run):
    """The README's first check (1 epoch of 4 batches) with log_every_n_steps=5 logged no loss:
    the interval is lowered to the run's steps (here 2: limit_train_batches=2)."""
    composed, seen, log = trained_run.trainer, trained_run.seen, trained_run.log
    assert composed["log_every_n_steps"] == 5 and composed["max_epochs"] == 1
    assert seen.every == 2 and "trainer.log_every_n_steps=2: the run's 2 steps" in log
    # and the warm-up longer than the run is named (a first run on a small dataset learnt nothing)
    assert "optim.burn_in=100 warm-up steps, but the run makes 2 optimizer steps" in log
    assert "train/loss" in seen.logged


@pytest.mark.parametrize(
    ("limit", "max_steps", "expected"),
    [(None, -1, 5), (2, -1, 2), (0.25, -1, 2), (1.0, 3, 3), (3, 100, 3), (10, -1, 5)],
)
def test_the_logging_interval_follows_the_runs_steps(compose_cfg, tmp_path, limit, max_steps,
                                                      expected):  # fmt: skip
    """An epoch of 8 batches: limit_train_batches (a count or Lightning's fraction) and max_steps
    shorten the run below log_every_n_steps=5, which follows them."""
    from types import SimpleNamespace

    from yolov4.cli.train_checks import log_short_runs

    cfg = compose_cfg("train", ["trainer.max_epochs=1", f"trainer.limit_train_batches={limit}",
                                f"trainer.max_steps={max_steps}"], tmp_path)  # fmt: skip
    assert cfg.trainer.log_every_n_steps == 5 and cfg.trainer.max_epochs == 1
    log_short_runs(
        cfg, SimpleNamespace(train_batches=lambda world=1: 8), SimpleNamespace(world_size=1)
    )
    assert cfg.trainer.log_every_n_steps == expected


@pytest.mark.parametrize(
    ("overrides", "warned"),
    [
        # 10 optimizer steps (max_steps counts them), not 10 batches // 4: no warning
        (
            [
                "trainer.max_epochs=10",
                "trainer.max_steps=10",
                "trainer.accumulate_grad_batches=4",
                "optim.burn_in=5",
            ],
            None,
        ),  # fmt: skip
        # the recipes' max_epochs=null: bounded by max_steps alone (it was never checked)
        (["trainer.max_epochs=null", "trainer.max_steps=12", "optim.burn_in=100"], 12),
        # 8 batches in windows of 3: 3 steps an epoch, the last window partial
        (["trainer.max_epochs=2", "trainer.accumulate_grad_batches=3", "optim.burn_in=7"], 6),
        (["trainer.max_epochs=2", "optim.burn_in=16"], None),  # the last step reaches optim.lr
    ],
)
def test_the_warm_up_warning_counts_optimizer_steps(compose_cfg, tmp_path, caplog, overrides,
                                                    warned):  # fmt: skip
    import logging
    from types import SimpleNamespace

    from yolov4.cli.train_checks import log_short_runs

    cfg = compose_cfg("train", overrides, tmp_path)
    with caplog.at_level(logging.WARNING, logger="yolov4"):
        log_short_runs(
            cfg, SimpleNamespace(train_batches=lambda world=1: 8), SimpleNamespace(world_size=1)
        )
    if warned is None:
        assert "warm-up steps" not in caplog.text
    else:
        assert f"but the run makes {warned} optimizer steps" in caplog.text
    # a window longer than the epoch: one step of 8 batches scaled as 20 (0.4 of its gradient)
    caplog.clear()
    cfg = compose_cfg("train", ["trainer.accumulate_grad_batches=20"], tmp_path)
    with caplog.at_level(logging.WARNING, logger="yolov4"):
        log_short_runs(
            cfg, SimpleNamespace(train_batches=lambda world=1: 8), SimpleNamespace(world_size=1)
        )
    assert "accumulate_grad_batches=20 is more than an epoch's 8 batches" in caplog.text
    # DDP on 4 processes: each reads 2 of the 8 batches, 4 steps in 2 epochs, under a 7-step warm-up
    caplog.clear()
    cfg = compose_cfg("train", ["trainer.max_epochs=2", "optim.burn_in=7"], tmp_path)
    with caplog.at_level(logging.WARNING, logger="yolov4"):
        log_short_runs(cfg, SimpleNamespace(train_batches=lambda world=1: 8 // world),
                        SimpleNamespace(world_size=4))  # fmt: skip
    assert "but the run makes 4 optimizer steps" in caplog.text


def test_a_value_the_recipe_leaves_to_the_user_is_one_line(caplog):
    """experiment=coco_yolov4_tiny without the annotation files: omegaconf's 30-frame
    MissingMandatoryValue traceback became one line naming the key."""
    import logging

    from hydra import compose, initialize_config_module

    from yolov4.cli.common import one_line_errors

    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        cfg = compose("train", ["experiment=coco_yolov4_tiny", "trainer=default"])
    with caplog.at_level(logging.ERROR, logger="yolov4"), pytest.raises(SystemExit) as e:
        one_line_errors(lambda c: c.data.train.annotations)(cfg)
    assert e.value.code == 1
    assert "ConfigError: data.train.annotations has no value (??? in the config): give " in (
        caplog.text
    )


@pytest.mark.parametrize("code", ["EROFS", "ENOSPC", "ENOTDIR"])
def test_a_place_the_system_refuses_is_one_line_and_other_os_errors_are_raised(caplog, code):
    """predict.py / export.py into a read-only or full folder printed Hydra's traceback."""
    import errno
    import logging

    from yolov4.cli.common import one_line_errors

    def refused(cfg):
        raise OSError(getattr(errno, code), os.strerror(getattr(errno, code)), "/out/x.jpg")

    with caplog.at_level(logging.ERROR, logger="yolov4"), pytest.raises(SystemExit) as e:
        one_line_errors(refused)(None)
    assert e.value.code == 1 and f"Error: [Errno {getattr(errno, code)}]" in caplog.text
    assert "/out/x.jpg" in caplog.text

    def bug(cfg):
        raise OSError(errno.EBADF, "Bad file descriptor")

    with pytest.raises(OSError, match="Bad file descriptor"):
        one_line_errors(bug)(None)
