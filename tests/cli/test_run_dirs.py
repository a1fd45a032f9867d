"""The default run directory of every command but train.py (whose folder a resume names again)
is one no other run has: two runs started in the same second get ``<date>_<time>`` and
``<date>_<time>_2``, made as a run starts (the config's ``NewRunDir`` callback), before Hydra
writes ``.hydra/`` and the log there, and named in the saved ``hydra.yaml``. Composing the
config (``--cfg``, ``--help``) makes no folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module
from hydra.utils import instantiate
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("app", ["predict", "evaluate", "export", "anchors"])
def test_two_runs_in_one_second_get_folders_of_their_own(app, tmp_path, monkeypatch, same_second):
    import yolov4.cli.common  # noqa: F401 (registers the yolov4.new_dir resolver)

    monkeypatch.chdir(tmp_path)
    with initialize_config_module("yolov4.configs", version_base="1.3"):
        configs = [compose(app, return_hydra_config=True) for _ in range(2)]
    first = f"outputs/{app}/2026-01-01_00-00-00"
    assert [c.hydra.run.dir for c in configs] == [first, first]  # resolved: a path, no folder
    assert not (tmp_path / "outputs").exists()
    for cfg in configs:  # as Hydra does as each run starts
        instantiate(cfg.hydra.callbacks.new_run_dir).on_run_start(config=cfg)
    assert [c.hydra.run.dir for c in configs] == [first, f"{first}_2"]
    assert sorted(p.name for p in (tmp_path / "outputs" / app).iterdir()) == [
        "2026-01-01_00-00-00",
        "2026-01-01_00-00-00_2",
    ]


def test_a_train_run_directory_is_the_time_alone():
    """A train run's folder is named by its time only: resuming names it again
    (``hydra.run.dir=<run>``), and the resume must find that folder, not a new one."""
    with initialize_config_module("yolov4.configs", version_base="1.3"):
        cfg = compose("train", return_hydra_config=True)
    assert "new_dir" not in OmegaConf.to_container(cfg.hydra.run, resolve=False)["dir"]


def test_a_run_dir_given_is_used_as_given(tmp_path, monkeypatch):
    import yolov4.cli.common  # noqa: F401 (registers the yolov4.new_dir resolver)

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").mkdir()
    with initialize_config_module("yolov4.configs", version_base="1.3"):
        cfg = compose("predict", ["hydra.run.dir=mine"], return_hydra_config=True)
    instantiate(cfg.hydra.callbacks.new_run_dir).on_run_start(config=cfg)
    assert cfg.hydra.run.dir == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]


def test_printing_the_config_makes_no_folder_and_a_run_saves_its_folder(tmp_path):
    """``predict.py --cfg hydra --resolve`` prints the run directory and makes nothing; a run
    (one that stops at its missing source, after Hydra set up its folder) saves the folder it
    used as ``hydra.run.dir`` in ``.hydra/hydra.yaml``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def predict(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "predict.py"), *args], cwd=tmp_path,
                              capture_output=True, text=True, env=env, timeout=120)  # fmt: skip

    shown = predict("--cfg", "hydra", "--resolve")
    assert shown.returncode == 0, shown.stderr[-2000:]
    printed = yaml.safe_load(shown.stdout)["hydra"]["run"]["dir"]
    assert printed.startswith("outputs/predict/")
    assert not list(tmp_path.iterdir())
    done = predict(f"source={tmp_path / 'missing.jpg'}", f"checkpoint={tmp_path / 'm.pt'}")
    assert done.returncode == 1, done.stderr[-2000:]
    (run,) = (tmp_path / "outputs" / "predict").iterdir()
    saved = OmegaConf.load(run / ".hydra" / "hydra.yaml")
    assert saved.hydra.run.dir == f"outputs/predict/{run.name}"
    assert saved.hydra.runtime.output_dir == str(run)
