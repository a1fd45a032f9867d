"""evaluate.py on a val split none of whose images decodes: an error that says so (how many,
which, where the reasons are), after the reports of the empty evaluation are written; a split
with one readable image among broken ones is scored on it. export.py's mAP gate on such a split:
an error, not a pass between two mAPs of no image."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.cli.test_compose_data import files  # noqa: F401 (a fixture)
from yolov4.cli.common import build
from yolov4.cli.evaluate import evaluate
from yolov4.cli.export import _dataset
from yolov4.errors import DatasetError
from yolov4.inference.predictor import Predictor

TRAIN = {"annotations": "annotations.json", "images": "images"}


def _broken_val(files, tmp_path, keep: int = 0):  # noqa: F811 (the fixture's value)
    """A copy of the generated COCO val split with all but ``keep`` images made unreadable."""
    val = tmp_path / "val"
    shutil.copytree(files["val"], val)
    for f in sorted((val / "images").iterdir())[keep:]:
        f.write_bytes(b"not an image")
    return [
        "data=coco",
        f"data.val.annotations={val / 'annotations.json'}",
        f"data.val.images={val / 'images'}",
        "data.num_workers=0",
        "batch_size=4",
    ]


@pytest.mark.parametrize("source", ["checkpoint", "artifact"])
def test_no_readable_val_image_is_an_error_after_the_reports(
    source,
    files,  # noqa: F811 (the fixture)
    compose_cfg,
    seeded_checkpoint,
    seeded_artifact,
    tmp_path,
):
    model = seeded_checkpoint[1] if source == "checkpoint" else seeded_artifact
    run = tmp_path / "run"
    cfg = compose_cfg("evaluate", [f"{source}={model}", *_broken_val(files, tmp_path)], run)
    with pytest.raises(DatasetError) as caught:
        evaluate(cfg)
    message = str(caught.value)
    n = len(json.loads((files["val"] / "annotations.json").read_text())["images"])
    assert message.startswith(f"no val image could be scored: all {n} images of data.val were ")
    assert str(tmp_path / "val" / "images") in message and f"run's log in {run}" in message
    assert json.loads((run / "metrics.json").read_text())["num_images"] == 0  # still written


def test_one_readable_val_image_is_scored(files, compose_cfg, seeded_checkpoint, tmp_path):  # noqa: F811
    overrides = [f"checkpoint={seeded_checkpoint[1]}", *_broken_val(files, tmp_path, keep=1)]
    assert evaluate(compose_cfg("evaluate", overrides, tmp_path / "run"))["num_images"] == 1


def test_the_export_gate_on_no_readable_val_image_is_an_error(
    files,  # noqa: F811 (the fixture)
    compose_cfg,
    seeded_checkpoint,
    tmp_path,
):
    train = [f"data.train.{k}={files['train'] / v}" for k, v in TRAIN.items()]
    overrides = [f"checkpoint={seeded_checkpoint[1]}", *_broken_val(files, tmp_path), *train]
    cfg = compose_cfg("export", overrides, tmp_path / "run")
    names = list(build(cfg, "data", augment=None).class_names)
    _, gate_evaluation = _dataset(cfg, names)
    with pytest.raises(DatasetError, match="none of the .* val images of the mAP gate"):
        gate_evaluation(Predictor.from_checkpoint(seeded_checkpoint[1]))
