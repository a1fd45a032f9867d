"""README commands of a user's first hour, run or composed as written: the quick start's short
run (its keys exist and mean what it says), the command that makes the curl example's
``shapes.jpg``, and the ``load_checkpoint`` snippet (a ``Checkpoint``, not a model)."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import yolov4
from yolov4 import Checkpoint, build_model, load_checkpoint, save_checkpoint

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
SRC = Path(yolov4.__file__).resolve().parents[1]


def readme_line(prefix: str) -> str:
    lines = [line.strip() for line in README.splitlines() if line.strip().startswith(prefix)]
    assert len(lines) >= 1, prefix
    return lines[0]


def test_quick_start_short_run_composes(compose_cfg, tmp_path):
    command = readme_line("python train.py trainer.max_epochs=1")
    overrides = shlex.split(command)[2:]
    cfg = compose_cfg("train", overrides, tmp_path)
    assert cfg.trainer.max_epochs == 1
    assert (cfg.data.num_train, cfg.data.num_val) == (64, 16)


@pytest.mark.slow  # generates the default run's 100 val images
def test_curl_example_image_is_made_by_the_readme_command(tmp_path):
    command = readme_line('python -c "import shutil; from yolov4.data.synthetic')
    env = {**os.environ, "PYTHONPATH": str(SRC), "YOLOV4_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", shlex.split(command)[2]],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    image = (tmp_path / "shapes.jpg").read_bytes()
    assert image[:3] == b"\xff\xd8\xff"  # a JPEG, as the service takes it
    assert "curl -s -F file=@shapes.jpg" in README


def test_load_checkpoint_snippet(tmp_path):
    block = README[README.index('ckpt = load_checkpoint("outputs/train') :]
    snippet = "\n".join(block.splitlines()[:2]).replace("outputs/train/<run>/weights/best.pt", "{}")
    torch.manual_seed(0)
    path = save_checkpoint(
        tmp_path / "best.pt", build_model("yolov4-tiny", num_classes=2), ["a", "b"]
    )
    scope = {"load_checkpoint": load_checkpoint}
    exec(re.sub(r"#.*", "", snippet).replace('"{}"', repr(str(path))), scope)
    assert isinstance(scope["ckpt"], Checkpoint) and scope["names"] == ["a", "b"]
    assert isinstance(scope["model"], yolov4.models.YOLOv4)
