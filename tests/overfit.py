"""A small trained model for the reduced-precision tests (tests/export, tests/serve): yolov4-tiny
overfit on four generated 64-px images, with the datamodule it was trained on (calibration and
the mAP gate's images come from it, as export.py takes them from ``data``), and its INT8
artifact. The session fixtures ``overfit`` and ``int8_artifact`` (tests/conftest.py) build each
once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from yolov4 import build_model, save_checkpoint
from yolov4.data.datamodule import SyntheticDataModule
from yolov4.evaluation import evaluate_predictor
from yolov4.loss import YoloLoss

SIZE = 64
# the synthetic data of the overfit run (also as export.py overrides: see OVERFIT_DATA_ARGS)
OVERFIT_DATA = {"num_train": 4, "num_val": 4, "image_size": SIZE, "input_size": [SIZE, SIZE]}
STEPS, LR = 40, 3e-3  # mAP50 ~0.44 on its own images (measured); one thread: see below


@dataclass
class Overfit:
    checkpoint: Path
    datamodule: Any
    cache_dir: Path

    @property
    def calibration(self) -> list[Path]:
        return [r.file for r in self.datamodule.split("train").records]

    def evaluate(self, predictor) -> dict[str, Any]:
        """The export's ``evaluate``: mAP of ``predictor`` on the four val images."""
        records = self.datamodule.split("val").records
        result = evaluate_predictor(predictor, self.datamodule, records, 4, {})
        return {**result.metrics, "images": len(records), "subset": "synthetic val, 4 images"}

    def overrides(self) -> list[str]:
        """export.py's ``data`` overrides for the same dataset."""
        return (
            ["data=synthetic"]
            + [f"data.{k}={v}".replace(" ", "") for k, v in OVERFIT_DATA.items()]
            + [
                f"data.cache_dir={self.cache_dir}",
                "data.num_workers=0",
            ]
        )


@torch.no_grad()
def set_bn_statistics(model: nn.Module, images: torch.Tensor) -> None:
    """BN running statistics := the batch statistics of ``images`` (what every step normalised
    with), so that the eval-mode network computes what training saw."""

    def take(bn: nn.BatchNorm2d, inputs, _out) -> None:
        bn.running_mean.copy_(inputs[0].mean((0, 2, 3)))
        bn.running_var.copy_(inputs[0].var((0, 2, 3), unbiased=False))

    hooks = [
        m.register_forward_hook(take) for m in model.modules() if isinstance(m, nn.BatchNorm2d)
    ]
    model.train()(images)
    for h in hooks:
        h.remove()
    model.eval()


def overfit_run(d: Path) -> Overfit:
    """Train the overfit model in folder ``d`` (its synthetic data and run directory)."""
    dm = SyntheticDataModule(
        cache_dir=str(d / "synthetic"), num_workers=0, batch_size=4, **OVERFIT_DATA
    )
    dm.prepare_data()
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    images, targets = batch["images"].float() / 255, batch["targets"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 4-10x faster than 2 threads on a shared 2-core machine (measured)
    try:
        torch.manual_seed(0)
        model = build_model("yolov4-tiny", num_classes=len(dm.class_names), input_size=[SIZE, SIZE])
        loss_fn = YoloLoss.from_config(model.config)
        optimizer = torch.optim.Adam(model.parameters(), lr=LR, fused=True)
        model.train()
        for _ in range(STEPS):
            loss = loss_fn(model(images), targets).total
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        set_bn_statistics(model, images)
    finally:
        torch.set_num_threads(threads)
    run = d / "run"
    (run / "weights").mkdir(parents=True)
    ckpt = save_checkpoint(
        run / "weights" / "best.pt", model, dm.class_names, dm.preprocess_config.to_dict()
    )
    return Overfit(ckpt, dm, d / "synthetic")


def int8_export(overfit: Overfit, out: Path) -> Path:
    """The overfit model's artifact with its INT8 model as the default precision, calibrated on
    the train images and gated on the val images."""
    from yolov4.export.artifact import export_artifact

    return export_artifact(
        overfit.checkpoint,
        out,
        formats=["onnx"],
        precisions=["fp32", "int8"],
        default_precision="int8",
        calibration=overfit.calibration,
        evaluate=overfit.evaluate,
    )
