"""The default run directory of every command but train.py (whose folder a resume names again)
is one no other run has: two runs started in the same second get ``<date>_<time>`` and
``<date>_<time>_2``, made as Hydra resolves the directory, before it writes ``.hydra/`` and the
log there."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf


@pytest.mark.parametrize("app", ["predict", "evaluate", "export", "anchors"])
def test_two_runs_in_one_second_get_folders_of_their_own(app, tmp_path, monkeypatch, same_second):
    import yolov4.cli.common  # noqa: F401 (registers the yolov4.new_dir resolver)

    monkeypatch.chdir(tmp_path)
    with initialize_config_module("yolov4.configs", version_base="1.3"):
        dirs = [compose(app, return_hydra_config=True).hydra.run.dir for _ in range(2)]
    first = f"outputs/{app}/2026-01-01_00-00-00"
    assert dirs == [first, f"{first}_2"]
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
