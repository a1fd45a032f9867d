"""``nominal_batch``: darknet's images per optimizer step, split into ``data.batch_size`` x
``trainer.accumulate_grad_batches`` x processes the same on any number of processes."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from hydra import compose, initialize_config_module

from yolov4.errors import ConfigError
from yolov4.training.nominal_batch import accumulation, set_accumulation

EXPERIMENTS = sorted(
    p.stem
    for p in (Path(__file__).resolve().parents[2] / "src/yolov4/configs/experiment").glob("*.yaml")
    if p.stem.startswith("coco_")
)


def composed(tmp_path, *overrides: str):
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        return compose("train", [f"paths.output_dir={tmp_path}", *overrides])


@pytest.mark.parametrize(
    ("nominal", "batch_size", "world", "expected"),
    [(64, 8, 1, 8), (64, 8, 2, 4), (64, 8, 8, 1), (64, 4, 16, 1), (64, 64, 1, 1), (16, 2, 1, 8)],
)
def test_the_accumulation_makes_the_nominal_batch(nominal, batch_size, world, expected):
    accumulate = accumulation(nominal, batch_size, world)
    assert accumulate == expected
    assert batch_size * world * accumulate == nominal


def test_without_a_nominal_batch_the_accumulation_is_the_trainers():
    assert accumulation(None, 8, 2) == 1
    assert accumulation(None, 8, 2, 3) == 3


def test_a_split_that_is_not_whole_names_the_values_and_a_batch_size_that_fits():
    with pytest.raises(ConfigError) as e:
        accumulation(64, 64, 16)  # yolov4-tiny's recipe on 16 GPUs
    message = str(e.value)
    assert "nominal_batch=64" in message and "data.batch_size=64" in message
    assert "16 processes" in message and "data.batch_size=4 fits (1 accumulated)" in message
    with pytest.raises(ConfigError, match=r"data.batch_size=4 or 8 fits \(8 or 4 accumulated\)"):
        accumulation(64, 7, 2)  # 32 a process: the divisors nearest 7 below and above it
    with pytest.raises(ConfigError, match=r"data.batch_size=4 or 8 fits \(2 or 1 accumulated\)"):
        accumulation(64, 6, 8)  # 8 a process
    with pytest.raises(ConfigError, match=r"data.batch_size=2 or 4 fits \(16 or 8 accumulated\)"):
        accumulation(64, 3, 2)
    with pytest.raises(ConfigError, match="no data.batch_size fits: 3 processes do not divide 64"):
        accumulation(64, 8, 3)


def test_an_accumulation_given_beside_the_nominal_batch_must_agree():
    assert accumulation(64, 8, 8, 1) == 1  # agrees: accepted
    with pytest.raises(ConfigError) as e:
        accumulation(64, 8, 2, 2)
    message = str(e.value)
    assert "trainer.accumulate_grad_batches=2" in message and "nominal_batch=64" in message
    assert "gives 4" in message and "nominal_batch=null" in message


@pytest.mark.parametrize(
    ("args", "key"),
    [((0, 8, 1), "nominal_batch"), ((64.0, 8, 1), "nominal_batch"), ((True, 8, 1), "nominal_batch"),
     ((64, None, 1), "data.batch_size"), ((64, 8, 1, 0), "trainer.accumulate_grad_batches")],
)  # fmt: skip
def test_bad_values_are_refused_naming_the_key(args, key):
    with pytest.raises(ConfigError, match=rf"{key}: expected a whole number >= 1"):
        accumulation(*args)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_each_recipe_trains_its_cfgs_batch_on_one_and_two_processes(experiment, tmp_path, caplog):
    """One process: the one-GPU split of darknet's subdivisions; two: half the accumulation.
    The recipe holds no accumulation of its own (it would disagree with more processes)."""
    cfg = composed(tmp_path, f"experiment={experiment}")
    assert cfg.nominal_batch == 64 and cfg.trainer.accumulate_grad_batches is None
    for world in (1, 2):
        cfg = composed(tmp_path, f"experiment={experiment}")
        if experiment == "coco_yolov4_tiny" and world == 2:  # 64 a process: 32 over two
            with pytest.raises(ConfigError, match="data.batch_size=32 fits"):
                set_accumulation(cfg, SimpleNamespace(world_size=world))
            cfg = composed(tmp_path, f"experiment={experiment}", "data.batch_size=32")
        trainer = SimpleNamespace(world_size=world, accumulate_grad_batches=1)
        with caplog.at_level(logging.INFO, logger="yolov4.training.nominal_batch"):
            accumulate = set_accumulation(cfg, trainer)
        assert trainer.accumulate_grad_batches == cfg.trainer.accumulate_grad_batches == accumulate
        assert cfg.data.batch_size * world * accumulate == 64
        processes = "1 process" if world == 1 else f"{world} processes"
        line = f"64 images per optimizer step: {cfg.data.batch_size} per process x {processes}"
        assert f"{line} x {accumulate} accumulated" in caplog.text


def test_the_default_run_sets_no_nominal_batch(tmp_path, caplog):
    cfg = composed(tmp_path, "trainer.accumulate_grad_batches=3")
    assert cfg.nominal_batch is None
    trainer = SimpleNamespace(world_size=2, accumulate_grad_batches=1)
    with caplog.at_level(logging.INFO, logger="yolov4.training.nominal_batch"):
        assert set_accumulation(cfg, trainer) == trainer.accumulate_grad_batches == 3
    assert (
        "96 images per optimizer step: 16 per process x 2 processes x 3 accumulated" in caplog.text
    )
