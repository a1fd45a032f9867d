"""Every ``data`` option composes with ``train`` and (val split only) with ``evaluate`` exactly as
the README writes the commands, and the DataModule builds on generated files."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from tests.data.test_formats import write_yolo_twin
from yolov4 import build_model
from yolov4.cli.evaluate import evaluate
from yolov4.cli.train import train
from yolov4.core.checkpoint import save_checkpoint
from yolov4.data.synthetic import generate_split
from yolov4.evaluation import METRIC_KEYS


@pytest.fixture
def compose_cfg(synthetic_cache):
    """The real config ``name`` as the command line composes it (``data.cache_dir`` only for
    ``data=synthetic``, the only option that has it; evaluate's data defaults to the
    checkpoint's: ``data=synthetic`` when ``data.*`` keys are given without an option); the
    reports without figures unless ``analysis.plots=true`` (as tests/cli/conftest.py's)."""

    def _compose(name: str, overrides: list[str], run_dir) -> object:
        option = any(o.startswith("data=") for o in overrides)
        if name != "train" and not option:
            overrides = ["data=synthetic", *overrides]
        synthetic = not option or "data=synthetic" in overrides
        extra = [f"data.cache_dir={synthetic_cache}"] if synthetic else []
        extra += ["analysis.plots=false"] if name in ("train", "evaluate") else []
        with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
            return compose(name, overrides=[f"paths.output_dir={run_dir}", *extra, *overrides])

    return _compose


SMALL = ["data.input_size=[64,64]", "data.batch_size=4", "data.num_workers=0"]
NAMES = ["circle", "rectangle", "triangle", "cross"]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A generated COCO train/val pair and the YOLO txt twin of each."""
    root = tmp_path_factory.mktemp("datasets")
    train_dir = generate_split(root / "coco", "train", 8, 96, seed=1)
    val_dir = generate_split(root / "coco", "val", 6, 96, seed=2)
    return {
        "train": train_dir,
        "val": val_dir,
        "yolo_train": write_yolo_twin(train_dir, root / "yolo_train"),
        "yolo_val": write_yolo_twin(val_dir, root / "yolo_val"),
    }


def data_overrides(option: str, files: dict[str, Path], splits: tuple[str, ...]) -> list[str]:
    if option == "synthetic":
        return ["data.num_train=8", "data.num_val=4", "data.image_size=96"]
    out = [f"data={option}"]
    for split in splits:
        if option == "coco":
            out += [
                f"data.{split}.annotations={files[split] / 'annotations.json'}",
                f"data.{split}.images={files[split] / 'images'}",
            ]
        else:
            out.append(f"data.{split}.images={files['yolo_' + split] / 'images'}")
    if option == "yolo":  # the README: names on the train split (val follows), or on val alone
        names = files["yolo_val"] / "data.yaml"
        out.append(f"data.{'train' if 'train' in splits else 'val'}.names={names}")
    return out


@pytest.mark.parametrize("option", ["synthetic", "coco", "yolo"])
def test_train_composes_and_builds_the_datamodule(option, files, compose_cfg, tmp_path):
    from yolov4.cli.common import build

    cfg = compose_cfg("train", [*SMALL, *data_overrides(option, files, ("train", "val"))], tmp_path)
    dm = build(cfg, "data", augment=build(cfg, "augment"))
    dm.prepare_data()
    dm.setup("fit")
    assert dm.class_names == NAMES
    batch = next(iter(dm.train_dataloader()))
    assert tuple(batch["images"].shape[1:]) == (3, 64, 64)
    assert len(dm.datasets["val"]) > 0


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, randomize) -> Path:
    """A randomised yolov4-tiny of the data's four classes at 64x64 (read only)."""
    model = randomize(build_model("yolov4-tiny", num_classes=4), seed=5)
    preprocess = {"input_size": [64, 64], "mode": "letterbox"}
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.pt", model, NAMES, preprocess)


@pytest.mark.parametrize("option", ["synthetic", "coco", "yolo"])
def test_evaluate_needs_only_the_val_split(option, files, compose_cfg, tmp_path, checkpoint):
    """``python evaluate.py checkpoint=... data=coco data.val.annotations=... data.val.images=...``
    (no train split given) runs and scores the val images."""
    ckpt = checkpoint
    overrides = [
        f"checkpoint={ckpt}",
        "batch_size=4",
        *data_overrides(option, files, ("val",)),
        "data.num_workers=0",
    ]
    metrics = evaluate(compose_cfg("evaluate", overrides, tmp_path / "run"))
    assert set(METRIC_KEYS) <= set(metrics)
    expected = 4 if option == "synthetic" else 6
    assert metrics["num_images"] == expected


def test_yolo_val_only_without_names_is_a_clear_error(files, compose_cfg, tmp_path, checkpoint):
    from yolov4.errors import YoloError

    overrides = [
        f"checkpoint={checkpoint}",
        "data=yolo",
        f"data.val.images={files['yolo_val'] / 'images'}",
    ]
    with pytest.raises(YoloError, match="names"):
        evaluate(compose_cfg("evaluate", overrides, tmp_path / "run"))


def test_train_rejects_a_missing_train_split_by_key(files, compose_cfg, tmp_path):
    from omegaconf.errors import MissingMandatoryValue

    cfg = compose_cfg("train", [*SMALL, *data_overrides("coco", files, ("val",))], tmp_path)
    with pytest.raises(MissingMandatoryValue, match="data.train.annotations"):
        train(cfg)
