"""`logger=[tensorboard,mlflow,wandb]`: each tracker gets the per-epoch metrics, the composed
config and the run's reports; read back with MlflowClient and from W&B's offline run folder."""

from __future__ import annotations

import json

import pytest

from tests.cli.wandb_offline import summary_and_config
from yolov4.cli.train import train
from yolov4.training.tracking import flatten

pytestmark = pytest.mark.slow


def test_mlflow_and_wandb_hold_the_config_metrics_and_reports(
    compose_cfg, tiny_run, tmp_path, monkeypatch
):
    import wandb
    from mlflow.tracking import MlflowClient

    wandb.teardown()  # W&B's process-wide settings of an earlier test (e.g. online, no key)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    store = f"file:{tmp_path}/mlruns"
    overrides = [
        *tiny_run,
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=1",
        "logger=[tensorboard,mlflow,wandb]",
        f"logger.mlflow.tracking_uri={store}",
        "logger.mlflow.run_name=tiny",
        "logger.wandb.offline=true",
        "analysis.plots=true",  # the figures are uploaded too
    ]
    run = tmp_path / "run"
    cfg = compose_cfg("train", overrides, run)
    metrics = train(cfg)
    assert (run / "tensorboard").is_dir()

    client = MlflowClient(tracking_uri=store)
    (found,) = client.search_runs([client.get_experiment_by_name("yolov4").experiment_id])
    assert found.info.run_name == "tiny" and found.info.status == "FINISHED"
    params = found.data.params
    assert params["optim.lr"] == str(cfg.optim.lr)
    assert params["model.name"] == "yolov4-tiny" and params["trainer.max_epochs"] == "2"
    assert len(params) == len(flatten(json.loads(json.dumps(dict(params)))))  # flat keys
    history = client.get_metric_history(found.info.run_id, "val/mAP50")
    # one value per epoch, and the final evaluation's when it re-validates other weights
    assert len(history) in (2, 3) and history[0].step < history[1].step
    assert client.get_metric_history(found.info.run_id, "train/loss")
    assert found.data.metrics["final/mAP50"] == pytest.approx(metrics["mAP50"])
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id, "reports")}
    expected = {"metrics.json", "confusion_matrix.json", "pr_f1.png", "errors.json"}
    expected |= {"worst_images.json", "darknet_map.json"}
    assert {f"reports/{n}" for n in expected} <= artifacts
    assert "config.yaml" in {a.path for a in client.list_artifacts(found.info.run_id)}

    (offline,) = (run / "wandb").glob("offline-run-*")
    (log,) = offline.glob("run-*.wandb")  # the offline run's records: summary, history, config
    summary, config = summary_and_config(log)
    assert summary["final/mAP50"] == pytest.approx(metrics["mAP50"])
    assert summary["final/mAP"] == pytest.approx(metrics["mAP"])
    assert "val/mAP50" in summary and "train/loss" in summary
    assert config["optim"]["lr"] == pytest.approx(cfg.optim.lr)
    assert (offline / "files/metrics.json").is_file() and (offline / "files/pr_f1.png").is_file()
