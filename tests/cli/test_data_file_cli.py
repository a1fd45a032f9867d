"""``data=yolo data.file=<darknet .data | data yaml>`` alone in every command: train.py trains on
the file's splits and records their paths, evaluate.py scores its val split (given anew over a
checkpoint's recorded data too), check-data reports where each split came from, and a missing
file stops a command before its model loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from tests.data.test_formats import write_yolo_twin
from yolov4.cli.check_data import main as check_main
from yolov4.cli.data_config import recorded_data
from yolov4.cli.evaluate import evaluate
from yolov4.cli.train import train
from yolov4.core.checkpoint import load_checkpoint
from yolov4.data.synthetic import generate_split
from yolov4.errors import DatasetError

SYNTHETIC_NAMES = ["circle", "rectangle", "triangle", "cross"]  # write_yolo_twin's classes
SMALL = ["data.input_size=[64,64]", "data.batch_size=4", "data.num_workers=0"]
VAL_IMAGES = 6


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """``root/``: YOLO txt train (8 images) and val (6) folders with the synthetic classes,
    ``ds.yaml`` naming them below its own folder, darknet's ``obj.data`` naming them relative
    to its folder (``valid =`` a folder), and ``val3.yaml`` whose val split is a list of 3 of
    the val images."""
    root = tmp_path_factory.mktemp("data-file")
    for split, n, seed in (("train", 8, 1), ("val", VAL_IMAGES, 2)):
        write_yolo_twin(generate_split(root / "coco", split, n, 96, seed=seed), root / split)
    names = "".join(f"  {i}: {n}\n" for i, n in enumerate(SYNTHETIC_NAMES))
    (root / "ds.yaml").write_text(f"train: train/images\nval: val/images\nnames:\n{names}")
    (root / "obj.names").write_text("\n".join(SYNTHETIC_NAMES) + "\n")
    (root / "obj.data").write_text(
        "classes = 4\ntrain = train/images\nvalid = val/images\nnames = obj.names\nbackup = b/\n"
    )
    listed = sorted((root / "val" / "images").iterdir())[:3]
    (root / "val3.txt").write_text("".join(f"{p}\n" for p in listed))
    (root / "val3.yaml").write_text(f"train: train/images\nval: val3.txt\nnames:\n{names}")
    return root


def _train_cfg(overrides: list[str], run_dir: Path):
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        return compose("train", overrides=[f"paths.output_dir={run_dir}", *overrides])


def test_train_and_evaluate_with_only_a_data_yaml(dataset, compose_cfg, tmp_path, monkeypatch):
    """`python train.py data=yolo data.file=ds.yaml`: the yaml's splits and names train and are
    recorded absolute, so `evaluate.py checkpoint=` from another folder scores the same val
    split; `data.file=` given to evaluate.py over that record scores the new file's."""
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    run = tmp_path / "run"
    overrides = ["data=yolo", f"data.file={dataset / 'ds.yaml'}", *SMALL]
    overrides += ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "logger=csv"]
    overrides += ["trainer.enable_progress_bar=false", "augment.multi_scale=null", "export=null"]
    overrides += ["analysis.plots=false", "darknet_files=false"]
    metrics = train(_train_cfg(overrides, run))
    assert metrics["num_images"] == VAL_IMAGES
    ckpt = load_checkpoint(run / "weights" / "best.pt")
    assert ckpt.class_names == SYNTHETIC_NAMES
    assert ckpt.data["train"]["images"] == str(dataset / "train" / "images")
    assert ckpt.data["val"]["images"] == str(dataset / "val" / "images")
    assert ckpt.data["val"]["names"] == ckpt.data["file"] == str(dataset / "ds.yaml")

    monkeypatch.chdir(tmp_path)  # another folder: the recorded paths are absolute
    weights = f"checkpoint={run / 'weights' / 'best.pt'}"
    again = evaluate(compose_cfg("evaluate", [weights, "batch_size=4"], tmp_path / "ev1"))
    assert again["num_images"] == VAL_IMAGES
    anew = [weights, "batch_size=4", f"+data.file={dataset / 'val3.yaml'}"]
    assert evaluate(compose_cfg("evaluate", anew, tmp_path / "ev2"))["num_images"] == 3


def test_evaluate_and_check_data_take_a_darknet_data_file(
    dataset, compose_cfg, seeded_checkpoint, tmp_path, capsys
):
    obj_data = dataset / "obj.data"
    overrides = [f"checkpoint={seeded_checkpoint[1]}", "batch_size=4", "data=yolo"]
    overrides += [f"data.file={obj_data}", "data.num_workers=0"]
    assert evaluate(compose_cfg("evaluate", overrides, tmp_path / "ev"))["num_images"] == 6

    assert check_main(["data=yolo", f"data.file={obj_data}", "data.num_workers=0"]) == 0
    out = capsys.readouterr().out
    assert f"note: images from `train = train/images` of {obj_data}, from the .data" in out
    assert f"note: images from `valid = val/images` of {obj_data}, from the .data" in out

    assert check_main(["data=yolo", f"data.file={dataset / 'nowhere.data'}"]) == 1
    assert "DatasetError: data.file=" in capsys.readouterr().err


def test_a_missing_data_file_stops_evaluate_before_the_model_loads(compose_cfg, tmp_path):
    overrides = [f"checkpoint={tmp_path / 'no.pt'}", "data=yolo", "data.file=nowhere.yaml"]
    with pytest.raises(DatasetError, match=r"^data.file=nowhere.yaml: no such file"):
        evaluate(compose_cfg("evaluate", overrides, tmp_path / "ev"))


def test_the_recorded_data_of_a_data_file_is_its_splits(dataset, tmp_path):
    """What a resume compares with the checkpoint's record: the composed config, its splits
    not yet filled, records as the run's filled one does."""
    cfg = _train_cfg(["data=yolo", f"data.file={dataset / 'obj.data'}"], tmp_path)
    recorded = recorded_data(cfg.data)
    assert recorded["val"]["images"] == str(dataset / "val" / "images")
    assert recorded["train"]["names"] == str(dataset / "obj.names")  # the .data file's names =
    assert OmegaConf.is_missing(cfg.data.train, "images")  # the config is left as composed


def test_check_data_prints_the_data_files_notes(dataset, capsys):
    """What the .data file gives that is not read (`backup =`) is printed by check-data, which
    configures no logging; its --help says the whole of what it does."""
    obj_data = dataset / "obj.data"
    assert check_main(["data=yolo", f"data.file={obj_data}", "data.num_workers=0"]) == 0
    out = capsys.readouterr().out
    assert f"note: data.file: {obj_data}: `classes = 4`" not in out  # classes = is read
    assert f"note: data.file: {obj_data}: `backup = b/` not read" in out
    with pytest.raises(SystemExit):
        check_main(["--help"])
    described = " ".join(capsys.readouterr().out.split())
    assert "check a dataset config without training, e.g. yolov4-check-data data=coco" in described
    assert "data=yolo data.file=data/obj.data. positional arguments" in described
