"""What decoding finds in training and evaluation reaches the run's log: each file once per
run over every DataLoader worker, the first few of a kind by name, then one line and a count."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from yolov4.core.preprocess import PreprocessConfig
from yolov4.data.collate import DetectionCollate
from yolov4.data.dataset import DetectionDataset
from yolov4.data.problems import LOGGED_PER_KIND, Problem, ProblemReport
from yolov4.data.transforms import AugmentConfig
from yolov4.data.yolo_txt import load_yolo

H, W = 24, 32


def _cmyk_split(root: Path, n: int) -> Path:
    """``n`` CMYK JPEGs with one box each in a YOLO txt layout."""
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    rgb = np.random.default_rng(0).integers(0, 255, (H, W, 3), dtype=np.uint8)
    for i in range(n):
        Image.fromarray(rgb).convert("CMYK").save(images / f"c{i}.jpg")
        (labels / f"c{i}.txt").write_text("0 0.5 0.5 0.4 0.4\n")
    return images


@pytest.fixture
def problem_log(tmp_path: Path):
    """A file every process writes the problems logger's records to (forked workers too)."""
    path = tmp_path / "problems.log"
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("yolov4.data.problems")
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield path
    logger.removeHandler(handler)
    handler.close()
    logger.setLevel(old_level)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("augment", [None, "train"])
def test_converted_images_are_warned_of_once_per_run_few_by_name_then_counted(
    tmp_path, problem_log, workers, augment
):
    n = LOGGED_PER_KIND + 3
    data = load_yolo(_cmyk_split(tmp_path, n), ["a"], report=ProblemReport())
    aug = AugmentConfig.none() if augment else None
    ds = DetectionDataset(data, PreprocessConfig(input_size=(32, 32)), aug, name="data.train")
    loader = torch.utils.data.DataLoader(
        ds, batch_size=3, num_workers=workers, persistent_workers=False,
        multiprocessing_context="fork" if workers else None, collate_fn=DetectionCollate(),
    )  # fmt: skip
    for _ in range(2):  # epochs: new workers each
        for _ in loader:
            pass
    ds.report.log_counts()
    ds.report.log_counts()  # nothing new found: no second count line
    lines = problem_log.read_text().splitlines()
    named = [line for line in lines if Problem.CONVERTED in line and ".jpg: " in line]
    assert len(named) == LOGGED_PER_KIND, lines
    assert all(line.startswith("WARNING data.train: ") for line in named)
    assert all("JPEG file, CMYK pixels" in line for line in named)
    files = {line.split(f"{Problem.CONVERTED}: ")[1] for line in named}
    assert len(files) == LOGGED_PER_KIND  # distinct files
    more = [line for line in lines if f"more than {LOGGED_PER_KIND} files with not 8-bit" in line]
    assert len(more) == 1, lines
    counts = [line for line in lines if "files in all with" in line]
    assert counts == [f"WARNING data.train: {n} files in all with {Problem.CONVERTED} in this run"]


def test_a_few_converted_images_are_each_named_and_not_counted_again(tmp_path, problem_log):
    data = load_yolo(_cmyk_split(tmp_path, 2), ["a"], report=ProblemReport())
    ds = DetectionDataset(data, PreprocessConfig(input_size=(32, 32)), name="data.val")
    for _ in range(2):
        for i in range(len(ds)):
            ds[i]
    ds.report.log_counts()
    lines = problem_log.read_text().splitlines()
    assert len(lines) == 2, lines
    assert all(line.startswith(f"WARNING data.val: {Problem.CONVERTED}: ") for line in lines)


def test_a_ddp_process_counts_its_share_not_the_run(tmp_path, problem_log, monkeypatch):
    """Under DDP each process decodes the images its sampler deals it: its count line says it
    covers that process's share, not "this run"."""
    n = LOGGED_PER_KIND + 1
    data = load_yolo(_cmyk_split(tmp_path, n), ["a"], report=ProblemReport())
    ds = DetectionDataset(data, PreprocessConfig(input_size=(32, 32)), name="data.train")
    for i in range(len(ds)):
        ds[i]
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *a: 2)
    monkeypatch.setattr(torch.distributed, "get_rank", lambda *a: 1)
    ds.report.log_counts()
    counts = [line for line in problem_log.read_text().splitlines() if "files in all" in line]
    assert counts == [
        f"WARNING data.train: {n} files in all with {Problem.CONVERTED} "
        "in this process's share of the run (rank 1 of 2)"
    ]
