"""`python train.py` / `evaluate.py` as a user runs them (subprocesses, the root scripts): a
2-epoch run on a non-default dataset, its reports against `evaluate.py` of the exported weights,
evaluate's default data (the checkpoint's), and a resume to 3 epochs in the run's config."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from yolov4 import build_model, save_checkpoint
from yolov4.evaluation import METRIC_KEYS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["circle", "rectangle", "triangle", "cross"]
# Lightning's known noise (yolov4.training.noise): none of it reaches the user
NOISE = ["GPU available", "TPU available", "💡 Tip", "Seed set to", "LeafSpec", "Total params"]


def run_cli(script: str, *overrides: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / script), *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )


@pytest.fixture(scope="module")
def start(tmp_path_factory, randomize):
    """A network that detects (randomised BN and head biases): the run starts from it with a
    tiny lr, so that every report has detections to agree on."""
    torch.manual_seed(3)
    model = randomize(build_model("yolov4-tiny", num_classes=4), seed=3)
    path = tmp_path_factory.mktemp("start") / "start.pt"
    return save_checkpoint(path, model, NAMES, {"input_size": [64, 64], "mode": "letterbox"})


@pytest.fixture(scope="module")
def run(tmp_path_factory, synthetic_cache, start):
    """`python train.py` for 2 epochs on a synthetic dataset other than the default one (its
    own seed, 16 + 5 images of 96 px), at 64 px."""
    run = tmp_path_factory.mktemp("train") / "run"
    overrides = [
        "data.num_train=16",
        "data.num_val=5",
        "data.data_seed=3",
        "data.image_size=96",
        "data.input_size=[64,64]",
        "data.batch_size=8",
        "data.num_workers=0",
        f"data.cache_dir={synthetic_cache}",
        f"module.pretrained={start}",
        "optim.lr=1e-6",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
        "logger=csv",
        "export.formats=[onnx]",
        f"hydra.run.dir={run}",
    ]
    done = run_cli("train.py", *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    return run, done


def test_the_reports_score_the_exported_weights_on_the_runs_data(run, tmp_path):
    """metrics.json (and every report) is the evaluation of weights/best.pt, the file export/
    holds, named with its epoch; `evaluate.py checkpoint=<run>/weights/best.pt` with no data
    keys scores the run's own dataset (5 images of seed 3, not the default 100) and gives the
    same numbers and reports."""
    run, done = run
    metrics = json.loads((run / "metrics.json").read_text())
    best = torch.load(run / "weights/best.pt", weights_only=True)
    assert metrics["weights"] == {
        "file": "weights/best.pt",
        "epoch": best["trained"]["epoch"],
        "step": best["trained"]["step"],
        "ema": True,
    }
    log = (run / "train.log").read_text()
    assert f"final evaluation of weights/best.pt (epoch {best['trained']['epoch'] + 1}," in log
    meta = json.loads((run / "export/metadata.json").read_text())
    assert meta["source"]["trained"] == best["trained"]  # export/ holds best.pt
    assert best["data"]["data_seed"] == 3 and best["data"]["num_val"] == 5

    out = tmp_path / "eval"
    done = run_cli("evaluate.py", f"checkpoint={run}/weights/best.pt", f"hydra.run.dir={out}")
    assert done.returncode == 0, done.stderr[-3000:]
    evaluated = json.loads((out / "metrics.json").read_text())
    assert evaluated["num_images"] == metrics["num_images"] == 5
    assert evaluated["AR100"] > 0  # detections: a real comparison
    assert [evaluated[k] for k in METRIC_KEYS] == pytest.approx(
        [metrics[k] for k in METRIC_KEYS], abs=1e-6
    )
    for report in ("pr_f1.json", "confusion_matrix.json", "darknet_map.json"):
        assert json.loads((out / report).read_text()) == json.loads((run / report).read_text())
    assert "data: the run's data config recorded in" in (out / "evaluate.log").read_text()


def test_the_log_has_one_line_per_epoch_and_no_lightning_noise(run):
    run, done = run
    log = (run / "train.log").read_text()
    for epoch in (1, 2):  # 1-based over the run's 2 epochs
        line = next(ln for ln in log.splitlines() if f"epoch {epoch}/2 step " in ln)
        assert "train loss" in line and "val mAP" in line
    for noise in NOISE:
        assert noise not in done.stdout + done.stderr, noise


def test_identical_checkpoints_share_one_file(run):
    run, _ = run
    for best, last in (("checkpoints/best.ckpt", "checkpoints/last.ckpt"),
                       ("weights/best.pt", "weights/last.pt")):  # fmt: skip
        a = torch.load(run / best, weights_only=True, mmap=True)
        b = torch.load(run / last, weights_only=True, mmap=True)
        epoch = "epoch" if "epoch" in a else "trained"
        same_state = a[epoch] == b[epoch]
        assert os.path.samefile(run / best, run / last) == same_state, (best, a[epoch], b[epoch])
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=True)["epoch"] == 1


def test_a_run_killed_after_its_last_epoch_is_finished_by_its_resume(run, tmp_path):
    """Killed in its final phase (after the last epoch: no metrics.json, export/ or reports),
    the run was refused by its resume as finished and nothing wrote them. The resume trains
    nothing (the checkpoint is untouched) and writes the same evaluation, reports and export."""
    run, _ = run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    metrics = json.loads((copy / "metrics.json").read_text())
    finished = run_cli("train.py", f"ckpt_path={copy}/checkpoints/last.ckpt")
    assert finished.returncode == 1 and "nothing would train" in finished.stderr
    for name in ("metrics.json", "export", "confusion_matrix.json", "pr_f1.png"):
        shutil.rmtree(copy / name) if (copy / name).is_dir() else (copy / name).unlink()
    last = (copy / "checkpoints/last.ckpt").read_bytes()
    done = run_cli("train.py", f"ckpt_path={copy}/checkpoints/last.ckpt")
    assert done.returncode == 0, done.stderr[-3000:]
    assert (copy / "checkpoints/last.ckpt").read_bytes() == last
    assert "the run stopped before its end (no metrics.json)" in (copy / "train.log").read_text()
    again = json.loads((copy / "metrics.json").read_text())
    assert again["weights"] == metrics["weights"]
    assert [again[k] for k in METRIC_KEYS] == pytest.approx([metrics[k] for k in METRIC_KEYS])
    meta = json.loads((copy / "export/metadata.json").read_text())
    assert (
        meta["source"]["trained"]
        == torch.load(copy / "weights/best.pt", weights_only=True)["trained"]
    )
    assert (copy / "confusion_matrix.json").is_file() and (copy / "pr_f1.png").is_file()


def test_resume_continues_the_runs_config_and_refuses_another_model(run):
    """`python train.py ckpt_path=<run>/checkpoints/last.ckpt trainer.max_epochs=3` (no
    hydra.run.dir): the run's directory and data keys, one more epoch, the change logged;
    `data=coco` is refused naming the keys, and the run's config is left as it was."""
    run, _ = run
    config = (run / ".hydra/config.yaml").read_bytes()
    logged = (run / "csv" / "metrics.csv").read_text().splitlines()
    refused = run_cli("train.py", f"ckpt_path={run}/checkpoints/last.ckpt", "data=coco")
    assert refused.returncode == 1
    assert "ConfigError" in refused.stderr and "cannot be resumed" in refused.stderr
    assert "data._target_: yolov4.data.datamodule.SyntheticDataModule" in refused.stderr
    assert (run / ".hydra/config.yaml").read_bytes() == config

    done = run_cli("train.py", f"ckpt_path={run}/checkpoints/last.ckpt", "trainer.max_epochs=3")
    assert done.returncode == 0, done.stderr[-3000:]
    cfg = yaml.safe_load((run / ".hydra/config.yaml").read_text())
    assert (cfg["data"]["num_train"], cfg["data"]["num_val"], cfg["data"]["data_seed"]) == (
        16,
        5,
        3,
    )
    assert cfg["trainer"]["max_epochs"] == 3 and cfg["logger"].keys() == {"csv"}
    assert torch.load(run / "checkpoints/last.ckpt", weights_only=True)["epoch"] == 2
    log = (run / "train.log").read_text()
    assert "the run's config" in log and "trainer.max_epochs: 2 -> 3" in log
    assert "epoch 3/3 step" in log
    assert json.loads((run / "metrics.json").read_text())["num_images"] == 5
    # the CSV logger's history of epochs 0-1 is kept (Lightning's writer deleted it)
    after = (run / "csv" / "metrics.csv").read_text().splitlines()
    assert after[0] == logged[0] and after[1 : len(logged)] == logged[1:]
    assert len(after) > len(logged)
