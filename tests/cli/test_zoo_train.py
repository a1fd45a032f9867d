"""train.py with the zoo's networks: the input size multiple comes from the model (64 for
yolov4-p6), for the data's sizes and multi-scale training; a run of a user's cfg needs the cfg
file no more once it is written."""

from __future__ import annotations

import lightning as L
import numpy as np
import pytest

from tests.zoo_cases import slim_cfg
from yolov4 import ConfigError, load_checkpoint
from yolov4.cli.common import model_stride
from yolov4.cli.evaluate import evaluate
from yolov4.cli.train import train
from yolov4.inference import Predictor


class InputSizes(L.Callback):
    """The (H, W) of every training batch."""

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.sizes.append(tuple(batch["images"].shape[-2:]))


def test_a_64_stride_model_asks_the_data_for_multiples_of_64(compose_cfg, tiny_run, tmp_path):
    cfg = compose_cfg("train", [*tiny_run, "model=yolov4-p6", "data.input_size=[96,96]"], tmp_path)
    assert model_stride(cfg) == 64
    with pytest.raises(
        ConfigError,
        match=r"data: data.input_size: expected \(H, W\) positive multiples of 64 \(the network's largest "
        r"stride\), got \[96, 96\]",
    ):
        train(cfg)
    assert not (tmp_path / "checkpoints").exists()  # failed before any training
    tiny = compose_cfg("train", tiny_run, tmp_path / "tiny")
    assert model_stride(tiny) == 32


@pytest.mark.slow  # a stride-64 network trained multi-scale
def test_a_user_cfg_with_stride_64_trains_multi_scale_and_its_run_needs_no_cfg(
    compose_cfg, tiny_run, tmp_path
):
    """yolov4-p6's structure as a user cfg (model=darknet model.cfg=...): multi-scale batches
    are multiples of 64; the weights rebuild the network after the file is gone, for the
    Predictor and evaluate.py (its data at the checkpoint's size, a multiple of 64)."""
    cfg = tmp_path / "my-p6.cfg"
    cfg.write_text(slim_cfg("yolov4-p6", 16))
    overrides = [o for o in tiny_run if not o.startswith("augment.multi_scale")]
    overrides += [
        "model=darknet",
        f"model.cfg={cfg}",
        "data.input_size=[128,128]",
        "augment.multi_scale=1.5",
        "trainer.limit_train_batches=3",
        "data.num_train=16",
        "export=null",  # a user cfg's artifact: tests/inference/test_zoo_predictor.py
    ]
    run = tmp_path / "run"
    sizes = InputSizes()
    train(compose_cfg("train", overrides, run), extra_callbacks=[sizes])
    assert len(sizes.sizes) == 3 and all(h % 64 == 0 and w % 64 == 0 for h, w in sizes.sizes)
    assert sizes.sizes[0] == (256, 256)  # multi-scale resized: its first window at the largest
    cfg.unlink()
    ckpt = load_checkpoint(run / "weights" / "best.pt")
    assert ckpt.model.config.name == "my-p6" and ckpt.model.config.max_stride == 64
    [dets] = Predictor.from_checkpoint(run / "weights" / "best.pt")(np.zeros((50, 70, 3), np.uint8))
    assert dets.image_size == (50, 70)
    data = [o for o in overrides if o.startswith("data.")]
    weights = f"checkpoint={run / 'weights' / 'last.pt'}"
    metrics = evaluate(compose_cfg("evaluate", [weights, *data], tmp_path / "eval"))
    assert metrics["num_images"] == 6
