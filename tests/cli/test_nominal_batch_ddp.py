"""A recipe's 64 images per optimizer step under DDP: the Trainer's processes set the
accumulation (the split itself: tests/training/test_nominal_batch.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from yolov4 import load_checkpoint
from yolov4.cli.train import build_trainer
from yolov4.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.sync_batchnorm=false", "logger=csv"]


@pytest.mark.parametrize(("devices", "accumulate"), [(1, 8), (2, 4)])
def test_the_trainer_accumulates_what_its_processes_leave_of_the_nominal_batch(
    compose_cfg, tmp_path, devices, accumulate
):
    cfg = compose_cfg(
        "train",
        ["experiment=coco_yolov4", "data=synthetic", *DDP, f"trainer.devices={devices}"],
        tmp_path,
    )
    trainer = build_trainer(cfg, "32-true")
    assert trainer.world_size == devices
    assert trainer.accumulate_grad_batches == cfg.trainer.accumulate_grad_batches == accumulate


def test_an_accumulation_that_breaks_the_nominal_batch_is_refused(compose_cfg, tmp_path):
    overrides = ["experiment=coco_yolov4", "data=synthetic", *DDP, "trainer.devices=2",
                 "trainer.accumulate_grad_batches=8"]  # fmt: skip
    with pytest.raises(
        ConfigError, match="accumulate_grad_batches=8 disagrees with nominal_batch=64"
    ):
        build_trainer(compose_cfg("train", overrides, tmp_path), "32-true")


@pytest.mark.slow  # two CPU processes (about a minute on 2 cores)
def test_two_processes_train_the_recipes_64_images_a_step(synthetic_cache, tmp_path):
    """yolov4-tiny's recipe on 2 processes of 8 images: 4 batches accumulated, so the epoch's
    64 images (32 a process) are one optimizer step."""
    run = tmp_path / "run"
    done = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "experiment=coco_yolov4_tiny", "data=synthetic",
         *DDP, "trainer.devices=2", f"hydra.run.dir={run}", f"data.cache_dir={synthetic_cache}",
         "data.num_train=64", "data.num_val=4", "data.image_size=64", "data.input_size=[64,64]",
         "data.batch_size=8", "data.num_workers=0", "trainer.max_epochs=1", "optim.burn_in=1",
         "trainer.precision=32-true", "trainer.enable_progress_bar=false", "export=null",
         "analysis.plots=false"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert (
        out.count("64 images per optimizer step: 8 per process x 2 processes x 4 accumulated") == 1
    )
    assert load_checkpoint(run / "weights/last.pt").trained["step"] == 1
