"""The console commands after ``pip install``: ``yolov4-train``, ``yolov4-evaluate``,
``yolov4-export``, ``yolov4-predict`` (pyproject's [project.scripts]), ``python -m yolov4
<command>`` and ``python -m yolov4.cli.<command>``: the same Hydra apps, configs read from the
package, so they run from any directory (here a temporary one, outside the checkout)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch

import yolov4
from yolov4 import build_model, save_checkpoint
from yolov4.__main__ import COMMANDS

ROOT = Path(__file__).resolve().parents[2]
SRC = Path(yolov4.__file__).resolve().parents[1]


def scripts() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_pyproject_scripts_are_the_commands_of_python_m_yolov4():
    declared = scripts()
    for command, (module, function) in COMMANDS.items():
        assert declared[f"yolov4-{command}"] == f"{module}:{function}"
    # every target resolves to a callable; yolov4.cli.predict is written on the predict branch
    present = {
        name: target
        for name, target in declared.items()
        if importlib.util.find_spec(target.split(":")[0]) is not None
    }
    assert {"yolov4-train", "yolov4-evaluate", "yolov4-export", "yolov4-serve"} <= set(present)
    for target in present.values():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), target


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, expected",
    [
        (["-m", "yolov4", "train", "trainer.max_epochs=1"], "max_epochs: 1"),
        (["-m", "yolov4", "evaluate", "checkpoint=m.pt"], "checkpoint: m.pt"),
        (
            ["-m", "yolov4", "export", "checkpoint=m.pt", "calibration=photos"],
            "calibration: photos",
        ),
        (["-m", "yolov4.cli.train", "trainer.max_epochs=2"], "max_epochs: 2"),
        (["-m", "yolov4.cli.export", "checkpoint=m.pt"], "agreement_gate: 0.9"),
    ],
)
def test_commands_compose_their_config_from_any_directory(tmp_path, args, expected):
    """``--cfg job``: Hydra composes the app's config (from the package) and prints it."""
    done = run([*args, "--cfg", "job"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout


@pytest.mark.slow  # one process per app, each importing torch: about a minute on 2 cores
def test_python_m_of_each_module_prints_its_apps_help(tmp_path):
    """``python -m <module> --help`` for every module the docs give as runnable (the modules
    behind ``python -m yolov4 <command>``, and ``yolov4.serve``, ``yolov4.anchors``): each
    runs its app, which prints its own help and exits 0 (a module without a ``__main__``
    guard prints nothing). The processes run side by side."""
    modules = {
        module.removesuffix(".__main__"): command for command, (module, _) in COMMANDS.items()
    }
    modules["yolov4.anchors"] = "anchors"
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    running = {
        module: subprocess.Popen(
            [sys.executable, "-m", module, "--help"],
            cwd=tmp_path,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for module in modules
    }
    for module, process in running.items():
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, (module, err[-2000:])
        command = modules[module]
        if COMMANDS[command][1] == "main":  # argparse apps: serve, check-data
            assert out.startswith(f"usage: yolov4-{command} "), (module, out[:300])
        else:  # Hydra apps: their help template (configs/hydra/help/yolov4.yaml)
            job = COMMANDS[command][0].rsplit(".", 1)[-1]
            assert out.startswith(f"{job} is powered by Hydra."), (module, out[:300])
            assert "== Configuration groups ==" in out and "== Config ==" in out, module


def test_usage_unknown_command_and_dispatch(tmp_path, monkeypatch, capsys):
    """In-process ``main(argv)``, run from a temporary directory: the usage, an unknown
    command, and a command's Hydra app composing its config from the package."""
    from yolov4.__main__ import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        main([])
    assert (
        e.value.code == 2 and "usage: python -m yolov4 {train,evaluate" in capsys.readouterr().out
    )
    with pytest.raises(SystemExit) as e:
        main(["fit"])
    assert e.value.code == 2 and "unknown command 'fit'" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # main() hands the app its own argv
    with pytest.raises(SystemExit) as e:
        main(["export", "--cfg", "job", "checkpoint=m.pt", "calibration=photos"])
    assert e.value.code is None and sys.argv[0] == "yolov4-export"
    out = capsys.readouterr().out
    assert "checkpoint: m.pt" in out and "calibration: photos" in out
    assert list(tmp_path.iterdir()) == []  # --cfg job: nothing written


@pytest.mark.slow
def test_python_m_yolov4_evaluate_runs_outside_the_checkout(tmp_path, tiny_run, synthetic_cache):
    torch.manual_seed(0)
    model = build_model("yolov4-tiny", num_classes=4)
    names = ["circle", "rectangle", "triangle", "cross"]
    ckpt = save_checkpoint(tmp_path / "m.pt", model, names, {"input_size": [64, 64]})
    data = [o for o in tiny_run if o.startswith("data.")]
    args = ["-m", "yolov4", "evaluate", f"checkpoint={ckpt}", "data=synthetic"]
    args.append(f"data.cache_dir={synthetic_cache}")  # m.pt records no data: given
    done = run([*args, *data, "hydra.run.dir=run"], tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["weights"]["file"] == str(ckpt) and metrics["num_images"] == 6
