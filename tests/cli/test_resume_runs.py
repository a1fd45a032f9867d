"""A real tiny run (train.py in-process): its final evaluation is logged apart from the
epochs' curves."""

from __future__ import annotations

import csv
import json

import pytest

from yolov4.cli.train import train

NO_EXPORT = ["export=null"]  # what these tests read is in the checkpoints and logs
BEST = "SharedCheckpoint{'monitor': 'val/mAP'"  # the state key of callbacks.best_checkpoint


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, compose_cfg, tiny_run):
    """One epoch of two steps (tests/cli/conftest.py's TINY_RUN), CSV logger; read only."""
    run = tmp_path_factory.mktemp("first") / "run"
    train(compose_cfg("train", [*tiny_run, *NO_EXPORT], run))
    return run


def resume(compose_cfg, tiny_run, run, *overrides, callbacks=()):
    ckpt = f"ckpt_path={run}/checkpoints/last.ckpt"
    cfg = compose_cfg("train", [*tiny_run, *NO_EXPORT, ckpt, *overrides], run)
    return train(cfg, extra_callbacks=list(callbacks))


def csv_rows(run) -> list[dict[str, str]]:
    with open(run / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_the_final_evaluation_is_logged_apart_from_the_epochs(first_run):
    """The final evaluation was logged in the val/* curves as an epoch after the last when it
    validated best.pt again (a resume below), and not at all when the last epoch had scored
    those weights: it is final/*, at the run's last step, in either case."""
    rows = csv_rows(first_run)
    assert [r["epoch"] for r in rows if r["val/mAP"]] == ["0"]
    (final,) = [r for r in rows if r.get("final/mAP")]
    written = json.loads((first_run / "metrics.json").read_text())
    assert (final["step"], final["epoch"]) == ("2", "")
    assert float(final["final/mAP"]) == pytest.approx(written["mAP"])
    assert float(final["final/mAP50"]) == pytest.approx(written["mAP50"])
