"""Checkpoints record their run's data config; `evaluate.py checkpoint=` defaults to it (and to
data=synthetic, logged, for files without one); the training run's log says what ran."""

from __future__ import annotations

import logging
import warnings

import lightning as L
import pytest
import torch

from yolov4 import CheckpointError, build_model, load_checkpoint, save_checkpoint
from yolov4.cli.data_config import resolve_data
from yolov4.training.noise import precision_note, quiet_lightning

NAMES = ["circle", "rectangle", "triangle", "cross"]
DATA = {"_target_": "yolov4.data.datamodule.SyntheticDataModule", "num_train": 16, "num_val": 5,
        "data_seed": 3, "input_size": [64, 64], "preprocess": {"input_size": [64, 64]}}  # fmt: skip


def test_save_checkpoint_records_the_data_config(tmp_path):
    net = build_model("yolov4-tiny", num_classes=4)
    path = save_checkpoint(tmp_path / "m.pt", net, NAMES, data=DATA)
    assert load_checkpoint(path).data == DATA
    assert load_checkpoint(save_checkpoint(tmp_path / "old.pt", net, NAMES)).data is None
    with pytest.raises(CheckpointError, match="data: expected the run's data config as a mapping"):
        save_checkpoint(tmp_path / "bad.pt", net, NAMES, data=["synthetic"])
    assert not (tmp_path / "bad.pt").exists()
    # a Lightning .ckpt carries it in the module's hyper-parameters
    lightning = {
        "pytorch-lightning_version": "2.6.0",
        "state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
        "hyper_parameters": {"model": net.config.to_dict(), "class_names": NAMES, "data": DATA},
    }
    torch.save(lightning, tmp_path / "last.ckpt")
    assert load_checkpoint(tmp_path / "last.ckpt").data == DATA


def test_evaluate_data_defaults_to_the_checkpoints(compose_cfg, tmp_path, caplog):
    cfg = compose_cfg("evaluate", ["checkpoint=m.pt"], tmp_path)
    assert cfg.get("data") is None  # `- data: null`: nothing composed
    with caplog.at_level(logging.INFO, logger="yolov4.cli.data_config"):
        resolve_data(cfg, DATA, "m.pt")
    assert cfg.data.num_val == 5 and cfg.data.data_seed == 3
    assert "the run's data config recorded in m.pt" in caplog.text
    # +data.<key>= on top of the recorded config
    cfg = compose_cfg("evaluate", ["checkpoint=m.pt", "+data.num_val=2"], tmp_path)
    resolve_data(cfg, DATA, "m.pt")
    assert (cfg.data.num_val, cfg.data.data_seed) == (2, 3)
    # data=<option> wins over the recorded config
    cfg = compose_cfg("evaluate", ["checkpoint=m.pt", "data=yolo"], tmp_path)
    resolve_data(cfg, DATA, "m.pt")
    assert cfg.data.train._target_ == "yolov4.data.yolo_txt.YoloSource"
    # a file without one: the synthetic data, said in the log
    cfg = compose_cfg("evaluate", ["checkpoint=old.pt"], tmp_path)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="yolov4.cli.data_config"):
        resolve_data(cfg, None, "old.pt")
    assert cfg.data._target_ == "yolov4.data.datamodule.SyntheticDataModule"
    assert cfg.data.num_val == 100 and cfg.data.preprocess.input_size == [256, 256]
    assert "old.pt records no data config; evaluating on data=synthetic" in caplog.text


def test_fp16_on_a_cpu_is_named_as_what_ran():
    quiet_lightning()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_lightning()  # the filters, after simplefilter
        trainer = L.Trainer(accelerator="cpu", precision="16-mixed", logger=False)
    assert trainer.precision == "bf16-mixed"
    assert not [w for w in seen if "AMP with fp16" in str(w.message)]  # ours replaces it
    note = precision_note("16-mixed", trainer.precision, "CPUAccelerator")
    assert note.startswith("trainer.precision=16-mixed runs as bf16-mixed on CPUAccelerator")
    assert precision_note(16, "16-mixed", "CUDAAccelerator") is None
    assert precision_note("32", "32-true", "CPUAccelerator") is None


def test_lightning_noise_is_dropped_and_nothing_else():
    quiet_lightning()
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    seed = logging.getLogger("lightning.fabric.utilities.seed")
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    # a handler on the loggers themselves: other tests may stop their propagation to the root
    handler, levels = Keep(), {lg: lg.level for lg in (rank_zero, seed)}
    try:
        for lg in levels:
            lg.addHandler(handler)
            lg.setLevel(logging.INFO)
        rank_zero.info("GPU available: False, used: False")
        rank_zero.info("💡 Tip: For seamless cloud logging ...")
        seed.info("Seed set to 0")
        rank_zero.info("Using bfloat16 Automatic Mixed Precision (AMP)")
        rank_zero.info("Restoring states from the checkpoint path at x.ckpt")
        rank_zero.warning("GPU available: but a warning")
    finally:
        for lg, level in levels.items():
            lg.removeHandler(handler)
            lg.setLevel(level)
    assert seen == [
        "Restoring states from the checkpoint path at x.ckpt",
        "GPU available: but a warning",
    ]


def test_relative_data_paths_are_recorded_absolute(tmp_path, monkeypatch):
    """A run started in one folder with data.train.images=mydata/images: its checkpoint named
    that relative path, which evaluate.py run from another folder could not find."""
    from yolov4.cli.data_config import recorded_data

    (tmp_path / "mydata" / "images").mkdir(parents=True)
    (tmp_path / "mydata" / "data.yaml").write_text("names: [a]\n")
    monkeypatch.chdir(tmp_path)
    node = {
        "_target_": "yolov4.data.datamodule.DetectionDataModule",
        "train": {"images": "mydata/images", "names": "mydata/data.yaml", "labels": None},
        "val": {"images": "missing/images", "names": ["a", "b"]},
        "input_size": [64, 64],
        "cache_dir": "https://example.com/x",
    }
    got = recorded_data(node)
    assert got["train"] == {
        "images": str(tmp_path / "mydata" / "images"),
        "names": str(tmp_path / "mydata" / "data.yaml"),
        "labels": None,
    }
    assert got["val"] == {"images": "missing/images", "names": ["a", "b"]}  # as typed: unknown
    assert got["input_size"] == [64, 64] and got["cache_dir"] == "https://example.com/x"
