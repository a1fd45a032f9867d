"""The loggers' set-up: ``logger=csv`` keeps a resumed run's ``metrics.csv`` (the rows up to
where the resumed run starts logging again, then its rows; Lightning's writer deleted the file
at start-up); ``logger=wandb`` without an API key says how to log offline."""

from __future__ import annotations

import csv

import pytest

from yolov4.errors import ConfigError
from yolov4.training.tracking import csv_logger, log_config


def rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_resumed_runs_csv_keeps_the_earlier_rows_and_drops_the_lost_ones(tmp_path):
    first = csv_logger(save_dir=tmp_path, name="csv", version="")
    for step in range(1, 11):
        first.log_metrics({"train/loss": 10.0 - step}, step=step)
    first.log_metrics({"val/mAP50": 0.5}, step=5)  # a validation at the checkpoint's step
    first.save()
    # resumed from the checkpoint at step 5: steps 6-10 were lost and are trained again
    second = csv_logger(save_dir=tmp_path, name="csv", version="")
    for step in range(6, 9):
        second.log_metrics({"train/loss": 1.0, "lr-SGD/weights": 0.01}, step=step)
    second.save()
    found = rows(tmp_path / "csv" / "metrics.csv")
    assert [int(r["step"]) for r in found] == [1, 2, 3, 4, 5, 6, 5, 6, 7, 8]
    assert found[5]["train/loss"] == "4.0" and found[6]["val/mAP50"] == "0.5"  # earlier rows
    assert {"train/loss", "val/mAP50", "lr-SGD/weights", "step"} == set(found[0])
    assert found[-1]["lr-SGD/weights"] == "0.01" and found[-1]["val/mAP50"] == ""


def test_a_new_run_writes_a_new_file(tmp_path):
    logger = csv_logger(save_dir=tmp_path, name="csv", version="")
    logger.log_metrics({"train/loss": 1.0}, step=0)
    logger.save()
    assert [r["train/loss"] for r in rows(tmp_path / "csv" / "metrics.csv")] == ["1.0"]


def test_wandb_without_an_api_key_says_how_to_log_offline(tmp_path, monkeypatch):
    """W&B's UsageError surfaced as a traceback from deep in Lightning."""
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    wandb.finish()  # an earlier test's offline run in this process would be reused
    wandb.teardown()  # and its settings (WANDB_MODE=offline) with it
    for var in ("WANDB_API_KEY", "WANDB_MODE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(project="p", save_dir=str(tmp_path), offline=False)
    with pytest.raises(ConfigError, match=r"logger=wandb: W&B cannot start a run \(No API key"):
        log_config([logger], {"seed": 0})
    with pytest.raises(ConfigError, match=r"logger.wandb.offline=true"):
        log_config([logger], {"seed": 0})


def test_the_final_metrics_reach_tensorboard_and_csv_after_the_fit(tmp_path):
    """log_reports runs after the fit, whose end finalized the loggers (TensorBoard closed its
    writer): the final evaluation is still written, as final/*, at the step given."""
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from yolov4.training.tracking import log_reports

    tb = TensorBoardLogger(tmp_path / "tb", name="", version="")
    table = csv_logger(save_dir=tmp_path, name="csv", version="")
    for logger in (tb, table):
        logger.log_metrics({"val/mAP": 0.25}, step=4)
        logger.finalize("success")  # the end of Trainer.fit
    log_reports([tb, table], tmp_path, {"mAP": 0.5, "mAP50": 0.75, "per_class": {}}, step=4)
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert [(e.step, e.value) for e in events.Scalars("final/mAP50")] == [(4, 0.75)]
    assert [e.value for e in events.Scalars("val/mAP")] == [0.25]
    found = rows(tmp_path / "csv" / "metrics.csv")
    assert [(r["step"], r["val/mAP"], r["final/mAP"]) for r in found] == [
        ("4", "0.25", ""),
        ("4", "", "0.5"),
    ]
