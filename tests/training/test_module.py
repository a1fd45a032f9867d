"""YoloModule: clear failures (NaN, OOM) and initial weights from darknet files or checkpoints."""

from __future__ import annotations

import pytest
import torch

from yolov4 import build_model, save_checkpoint
from yolov4.darknet import save_darknet_weights
from yolov4.loss import LossOutput
from yolov4.training.module import YoloModule


def tiny_module(**kwargs) -> YoloModule:
    return YoloModule(model=build_model("yolov4-tiny", num_classes=3).config.to_dict(), **kwargs)


def batch():
    return {
        "images": torch.rand(2, 3, 64, 64),
        "targets": torch.tensor([[0, 1, 5.0, 5.0, 30.0, 40.0]]),
    }


def test_nan_loss_stops_with_a_message(monkeypatch):
    module = tiny_module()
    nan = torch.tensor(float("nan"))
    monkeypatch.setattr(
        type(module.loss_fn),
        "forward",
        lambda self, maps, targets: LossOutput(nan, nan, torch.tensor(1.0), nan),
    )
    with pytest.raises(
        FloatingPointError, match=r"loss became nan at step 0 .*obj=1.*Lower optim.lr"
    ):
        module.training_step(batch(), 0)


def test_out_of_memory_names_batch_and_remedies(monkeypatch):
    module = tiny_module()

    def oom(self, images):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(type(module.model), "forward", oom)
    with pytest.raises(
        torch.OutOfMemoryError,
        match=r"batch size 2 at input \(64, 64\).*accumulate_grad_batches.*precision",
    ):
        module.training_step(batch(), 0)


def test_pretrained_darknet_backbone(tmp_path):
    torch.manual_seed(0)
    source = build_model("yolov4-tiny", num_classes=80)
    path = save_darknet_weights(source, tmp_path / "yolov4-tiny.conv.29", upto=29)
    module = tiny_module(pretrained=str(path))  # .conv.29: layers 0-28 from the file's name
    assert torch.equal(
        module.model.backbone.stem[0].conv.weight, source.backbone.stem[0].conv.weight
    )
    assert torch.equal(
        module.model.heads[1].conv.conv.weight, source.heads[1].conv.conv.weight
    )  # layer 28
    only_backbone = tiny_module(pretrained=str(path), pretrained_backbone_only=True)
    assert torch.equal(
        only_backbone.model.backbone.head_conv.conv.weight, source.backbone.head_conv.conv.weight
    )
    assert not torch.equal(
        only_backbone.model.neck.reduce5.conv.weight, source.neck.reduce5.conv.weight
    )
    # the EMA starts from the loaded weights
    assert torch.equal(
        module.ema.module.backbone.stem[0].conv.weight, source.backbone.stem[0].conv.weight
    )


def test_pretrained_checkpoint_with_other_classes(tmp_path):
    torch.manual_seed(1)
    source = build_model("yolov4-tiny", num_classes=80)
    path = save_checkpoint(tmp_path / "coco.pt", source)
    module = tiny_module(pretrained=str(path))
    assert torch.equal(module.model.neck.reduce5.conv.weight, source.neck.reduce5.conv.weight)
    assert module.model.heads[0].pred.conv.weight.shape[0] == 3 * (5 + 3)  # new head, not loaded
