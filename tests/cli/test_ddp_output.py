"""What a DDP run of two CPU processes (gloo) prints and writes: the lines every process would
print alike once (rank 0's), and each process's log file named by its command. The rank-0
logging and the log names one by one: tests/training/test_rank_zero_lines.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # two runs of two processes each (about 40 s each on 2 cores)

ROOT = Path(__file__).resolve().parents[2]
DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]


def run(script: str, *overrides: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / script), *DDP, *overrides],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    return out


def test_a_ddp_run_prints_its_notes_once_and_evaluate_names_its_rank_log(synthetic_cache, tmp_path):
    """Each line of the run's set-up (the anchors' fit, the precision, the model line) and its
    objective, and evaluate.py's line naming what it evaluates, come once (rank 0's);
    evaluate.py's rank 1 logs into evaluate_ddp_process_1.log."""
    data = [f"data.cache_dir={synthetic_cache}", "data.num_train=16", "data.num_val=6",
            "data.image_size=96"]  # fmt: skip
    out = run(
        "train.py", f"hydra.run.dir={tmp_path / 'run'}", *data, "data.input_size=[64,64]",
        "data.batch_size=4", "data.num_workers=0", "augment.multi_scale=null",
        "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.precision=16-mixed",
        "trainer.enable_progress_bar=false", "logger=csv", "export=null", "analysis.plots=false",
    )  # fmt: skip
    assert "GLOBAL_RANK: 1" in out  # two processes ran
    once = (
        "the anchors fit the training boxes poorly",
        "trainer.precision=16-mixed runs as bf16-mixed",
        "yolov4-tiny, 4 classes, input 64x64",
        "objective val/mAP50: ",
    )
    for line in once:
        assert out.count(line) == 1, line
    assert out.count("runs bf16 on a CPU without native bf16") <= 1  # on such a CPU only
    assert (tmp_path / "run/train_ddp_process_1.log").is_file()

    out = run("evaluate.py", f"checkpoint={tmp_path / 'run/weights/best.pt'}",
        f"hydra.run.dir={tmp_path / 'eval'}", "data=synthetic", *data, "analysis.plots=false",
        "trainer.precision=32-true")  # fmt: skip
    assert "GLOBAL_RANK: 1" in out
    assert out.count("in pytorch, precision 32-true") == 1  # evaluate's set-up line: rank 0's
    assert (tmp_path / "eval/evaluate_ddp_process_1.log").is_file()
    assert not (tmp_path / "eval/train_ddp_process_1.log").exists()
