"""``train.py model.anchors=fit``: the anchors fitted at start-up are those
``python -m yolov4.anchors`` fits on the same data, stored in the checkpoint and the artifact."""

from __future__ import annotations

import json

import pytest
import torch

from yolov4.cli.anchors import fit
from yolov4.cli.train import train


@pytest.mark.slow
def test_train_with_fitted_anchors_stores_them_in_checkpoint_and_artifact(
    compose_cfg, tiny_run, tmp_path
):
    cfg = compose_cfg("train", [*tiny_run, "model.anchors=fit"], tmp_path / "run")
    train(cfg)
    weights = torch.load(tmp_path / "run" / "weights" / "last.pt", weights_only=True)
    data = [o for o in tiny_run if o.startswith("data.")]
    cli = compose_cfg("anchors", [*data, "restarts=10"], tmp_path / "anchors")
    report, _ = fit(cli)  # the command fits the same anchors from the same data and seed
    assert weights["model"]["anchors"] == report.anchors
    assert weights["model"]["masks"] == report.masks
    meta = json.loads((tmp_path / "run" / "export" / "metadata.json").read_text())
    assert [a for head in meta["anchors"] for a in head] == report.anchors
