"""``logger=csv`` keeps a resumed run's ``metrics.csv``: the rows up to where the resumed run
starts logging again, then its rows (Lightning's writer deleted the file at start-up)."""

from __future__ import annotations

import csv

from yolov4.training.tracking import csv_logger


def rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_resumed_runs_csv_keeps_the_earlier_rows_and_drops_the_lost_ones(tmp_path):
    first = csv_logger(save_dir=tmp_path, name="csv", version="")
    for step in range(1, 11):
        first.log_metrics({"train/loss": 10.0 - step}, step=step)
    first.log_metrics({"val/mAP50": 0.5}, step=5)  # a validation at the checkpoint's step
    first.save()
    # resumed from the checkpoint at step 5: steps 6-10 were lost and are trained again
    second = csv_logger(save_dir=tmp_path, name="csv", version="")
    for step in range(6, 9):
        second.log_metrics({"train/loss": 1.0, "lr-SGD/weights": 0.01}, step=step)
    second.save()
    found = rows(tmp_path / "csv" / "metrics.csv")
    assert [int(r["step"]) for r in found] == [1, 2, 3, 4, 5, 6, 5, 6, 7, 8]
    assert found[5]["train/loss"] == "4.0" and found[6]["val/mAP50"] == "0.5"  # earlier rows
    assert {"train/loss", "val/mAP50", "lr-SGD/weights", "step"} == set(found[0])
    assert found[-1]["lr-SGD/weights"] == "0.01" and found[-1]["val/mAP50"] == ""


def test_a_new_run_writes_a_new_file(tmp_path):
    logger = csv_logger(save_dir=tmp_path, name="csv", version="")
    logger.log_metrics({"train/loss": 1.0}, step=0)
    logger.save()
    assert [r["train/loss"] for r in rows(tmp_path / "csv" / "metrics.csv")] == ["1.0"]
