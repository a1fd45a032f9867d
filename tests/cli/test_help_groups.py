"""``--help`` lists the config groups of the command's own defaults list (tracker for
predict.py, not for train.py), each line as Hydra's own help writes it for that group."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

ROOT = Path(__file__).resolve().parents[2]


def section(text: str) -> dict[str, str]:
    """``{group: its line}`` of the help's "Configuration groups" section."""
    body = text.split("(group=option)", 1)[1].split("== Config ==", 1)[0]
    return {line.split(":", 1)[0]: line for line in body.splitlines() if line.strip()}


def help_groups(script: str, *overrides: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / script), "--help", *overrides],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return section(done.stdout)


def test_train_help_lists_its_own_groups_as_hydra_lists_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ours = help_groups("train.py")
    hydras = help_groups("train.py", "hydra/help=default")  # Hydra's: every folder of configs/
    assert {"optim", "logger", "trainer", "experiment"} <= set(ours)
    assert "tracker" in hydras and "tracker" not in ours
    assert ours == {group: hydras[group] for group in ours}  # each group's options as Hydra's


@pytest.mark.parametrize(
    ("app", "groups"),
    [("predict", {"model", "paths", "tracker", "trainer"}),
     ("evaluate", {"analysis", "data", "model", "module", "paths", "trainer"}),
     ("export", {"data", "model", "paths"}),
     ("anchors", {"data", "model", "paths"})],
)  # fmt: skip
def test_each_commands_help_lists_the_groups_of_its_defaults(app, groups):
    import yolov4.cli.common  # noqa: F401 (registers the resolvers)

    with initialize_config_module("yolov4.configs", version_base="1.3"):
        cfg = compose(app, return_hydra_config=True)
    shown = section(cfg.hydra.help.template)
    assert set(shown) == groups
    assert shown["model"].startswith("model: darknet, yolov3, ")
