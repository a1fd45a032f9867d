"""WeightsCallback: weights/last.pt and best.pt are strict-loadable files; weights that diverged
to NaN are not written over them, and training stops saying why."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import torch

from yolov4 import build_model, load_checkpoint
from yolov4.training.callbacks import WeightsCallback


def test_diverged_weights_keep_the_last_finite_file_and_stop_training(tmp_path, caplog):
    model = build_model("yolov4-tiny", num_classes=2, input_size=[64, 64])
    hparams = {"class_names": ["a", "b"], "preprocess": {"input_size": [64, 64]}}
    module = SimpleNamespace(
        eval_model=model, evaluation=None, ema=None, hparams={**hparams, "category_ids": [0, 1]}
    )
    trainer = SimpleNamespace(current_epoch=0, global_step=5, should_stop=False)
    callback = WeightsCallback(tmp_path)
    path = callback.save(trainer, module, "last.pt")
    before = path.read_bytes()
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    trainer.global_step = 9
    with caplog.at_level(logging.ERROR):
        assert callback.save(trainer, module, "last.pt") is None
    assert trainer.should_stop and path.read_bytes() == before
    assert load_checkpoint(path).trained["step"] == 5
    assert "training diverged" in caplog.text and "step 9" in caplog.text
