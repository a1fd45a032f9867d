"""The lines every process of a DDP run would print alike (the anchors' fit, the precision, the
run's summary and objective) come from rank 0 only; a DDP process of evaluate.py or predict.py
logs into a file of its command's name. Two real CPU processes: tests/cli/test_train.py's
DDP test."""

from __future__ import annotations

import logging

import pytest
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import OmegaConf

from tests.training.test_anchors_start import TINY, bars_datamodule
from yolov4.cli.common import rank_log_argv
from yolov4.training.anchors import anchors_at_start
from yolov4.training.precision import check_accelerator


def logged(caplog, run) -> str:
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="yolov4"):
        run()
    return caplog.text


@pytest.mark.parametrize(
    ("rank", "node_rank", "printed"), [(0, "0", True), (1, "0", False), (0, "1", False)]
)
def test_run_notes_are_logged_by_rank_zero_only(caplog, monkeypatch, rank, node_rank, printed):
    monkeypatch.setattr(rank_zero_only, "rank", rank)
    monkeypatch.setenv("NODE_RANK", node_rank)
    anchors = logged(caplog, lambda: anchors_at_start({**TINY, "anchors": None},
                                                      bars_datamodule(30)))  # fmt: skip
    assert ("the anchors fit the training boxes poorly" in anchors) == printed
    trainer = OmegaConf.create({"accelerator": "cpu", "sync_batchnorm": True})
    precision = logged(caplog, lambda: check_accelerator(trainer))
    assert ("trainer.sync_batchnorm=true is not applied" in precision) == printed
    assert trainer.sync_batchnorm is False  # done on every rank, said once


def test_run_objective_logs_its_line_on_rank_zero_only(caplog, monkeypatch):
    import yolov4.cli.train as train_cli

    monkeypatch.setattr(train_cli, "train", lambda cfg, extra_callbacks: {"mAP50": 0.25})
    cfg = OmegaConf.create({"objective": "val/mAP50"})
    for rank, count in ((1, 0), (0, 1)):
        monkeypatch.setattr(rank_zero_only, "rank", rank)
        text = logged(caplog, lambda: train_cli.run_objective(cfg))
        assert text.count("objective val/mAP50: 0.25") == count


@pytest.mark.parametrize(("rank", "printed"), [(0, True), (1, False)])
def test_evaluate_set_up_lines_are_logged_by_rank_zero_only(caplog, monkeypatch, rank, printed):
    """evaluate.py's notes on its data and classes (each process of a DDP evaluation runs the
    same set-up) come from rank 0 only."""
    from types import SimpleNamespace

    from yolov4.cli.common import warn_without_ground_truth
    from yolov4.cli.data_config import resolve_data
    from yolov4.cli.evaluate import _check_classes

    monkeypatch.setattr(rank_zero_only, "rank", rank)
    cfg = OmegaConf.create({"data": None})
    data = logged(caplog, lambda: resolve_data(cfg, None, "m.weights"))
    assert ("data: m.weights records no data config" in data) == printed
    assert cfg.data._target_  # done on every rank, said once
    datamodule = SimpleNamespace(
        num_classes=2, class_names=["a", "b"], category_ids=[1, 2],
        split=lambda name: SimpleNamespace(num_boxes=0),
    )  # fmt: skip
    order = logged(caplog, lambda: _check_classes("checkpoint", ["b", "a"], datamodule))
    assert ("the checkpoint's classes are the data's in another order" in order) == printed
    empty = logged(caplog, lambda: warn_without_ground_truth(datamodule))
    assert ("data.val has no ground-truth box" in empty) == printed


def test_a_ddp_process_of_evaluate_logs_into_a_file_of_its_name():
    """Lightning names the job of each DDP process it starts under Hydra train_ddp_process_N,
    whatever the command: evaluate.py's rank 1 logged into train_ddp_process_1.log."""
    argv = ["evaluate.py", "checkpoint=m.pt", "hydra.run.dir=out",
            "hydra.job.name=train_ddp_process_1", "hydra.output_subdir=null"]  # fmt: skip
    assert rank_log_argv(argv, "evaluate") == [
        *argv[:3],
        "hydra.job.name=evaluate_ddp_process_1",
        "hydra.output_subdir=null",
    ]
    assert rank_log_argv(argv[:3], "evaluate") == argv[:3]  # rank 0: as given
