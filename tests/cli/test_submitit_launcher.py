"""`python train.py -m hydra/launcher=local ...`: submitit's launcher runs each run of a sweep
as its own job (what `hydra/launcher=slurm` does through sbatch), with the job's trainer
topology taken from the launcher."""

from __future__ import annotations

import json
import re

import pytest
from hydra import compose, initialize_config_module

from tests.cli.conftest import TINY_RUN
from tests.cli.test_train_cli import ROOT, run_cli


def test_the_slurm_preset_asks_for_sigusr1_before_the_limit_and_a_requeueable_job():
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        cfg = compose("train", ["hydra/launcher=slurm"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.additional_parameters.signal == f"USR1@{launcher.signal_delay_s}"
    assert launcher.additional_parameters.requeue is True
    assert "SIGUSR1" in cfg.callbacks.requeue.signals


@pytest.mark.slow
def test_local_launcher_runs_two_jobs(tmp_path, synthetic_cache):
    sweep = tmp_path / "sweep"
    done = run_cli(
        "train.py",
        "-m",
        "hydra/launcher=local",
        "seed=0,1",
        *TINY_RUN,
        f"data.cache_dir={synthetic_cache}",
        f"hydra.sweep.dir={sweep}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for job in ("0", "1"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["weights"]["file"] == "weights/best.pt"
        assert (sweep / job / "checkpoints/last.ckpt").is_file()
        log = (sweep / job / "train.log").read_text()
        assert "submitit launcher: {'num_nodes': 1, 'devices': 1}" in log
    # submitit's own folder: one pickled job, its result and its logs per run
    results = list((sweep / ".submitit").glob("*/*_result.pkl"))
    assert len(results) == 2
    assert len(list((sweep / ".submitit").glob("*/*_log.out"))) == 2
    # docs/slurm.md's tree of it: each job's folder holds the files it lists, %j/ is empty
    text = (ROOT / "docs/slurm.md").read_text()
    listed = set(re.findall(r"^ +<job id>(_\S+)", text, flags=re.MULTILINE))
    jobs = [d for d in (sweep / ".submitit").iterdir() if d.name != "%j"]
    assert len(jobs) == 2 and not any((sweep / ".submitit/%j").iterdir())
    for job in jobs:
        assert {f.name for f in job.iterdir()} == {job.name + tail for tail in listed}
