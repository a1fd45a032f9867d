"""One check of input sizes against the network's largest stride, one wording at every entry
point (model config, forward, DataModule, checkpoint writer, export, artifact metadata), each
with its boundary's error type."""

from __future__ import annotations

import json

import pytest
import torch

from yolov4 import CheckpointError, ConfigError, ExportError, InputError, build_model
from yolov4.core.artifact import validate_metadata
from yolov4.core.checkpoint import load_checkpoint, save_checkpoint
from yolov4.data.datamodule_args import preprocess_config
from yolov4.export.artifact import export_artifact
from yolov4.models.stride import check_stride_multiple, round_up_size, stride_multiple_error

WORDING = r"expected \(H, W\) positive multiples of 32 \(the network's largest stride\), got "


def test_the_helper_returns_the_size_or_raises_the_callers_type():
    assert check_stride_multiple([64, 96], 32, "x") == (64, 96)
    assert check_stride_multiple((128.0, 64), 64, "x") == (128, 64)
    assert stride_multiple_error([64, 96], 32, "x") is None
    assert [round_up_size(s, 32) for s in (0, 1, 32, 33, 100)] == [32, 32, 32, 64, 128]
    with pytest.raises(
        ConfigError, match="^k: " + WORDING + r"\[64, 100\] .*e\.g\. \[64, 128\]\)$"
    ):
        check_stride_multiple([64, 100], 32, "k")
    for bad in ([64], [64, 64, 64], ["64", 64], [True, 64], [0, 64], [-32, 64], [64.5, 64], "ab"):
        with pytest.raises(InputError, match="^k: " + WORDING):
            check_stride_multiple(bad, 32, "k", InputError)


def test_every_entry_point_uses_the_one_wording(tmp_path):
    with pytest.raises(ConfigError, match="model.input_size: " + WORDING + r"\[96, 100\]"):
        build_model("yolov4-tiny", num_classes=2, input_size=[96, 100])
    model = build_model("yolov4-tiny", num_classes=2, input_size=[64, 64]).eval()
    with pytest.raises(InputError, match=r"images of shape \(B, 3, H, W\): " + WORDING):
        model(torch.rand(1, 3, 64, 80))
    with pytest.raises(ConfigError, match="data.input_size: " + WORDING + r"\[64, 80\]"):
        preprocess_config(None, [64, 80], None, multiple=32)
    with pytest.raises(CheckpointError, match="preprocess.input_size: " + WORDING):
        save_checkpoint(tmp_path / "w.pt", model, ["a", "b"], {"input_size": [64, 80]})
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "w.pt", model, ["a", "b"]))
    with pytest.raises(ExportError, match="input_size: " + WORDING + r"\[64, 80\]"):
        export_artifact(ckpt, tmp_path / "e", ["torchscript"], input_size=[64, 80])


@pytest.mark.slow  # an export (~10 s on 2 shared cores)
def test_artifact_metadata_uses_the_one_wording(tmp_path):
    model = build_model("yolov4-tiny", num_classes=2, input_size=[64, 64]).eval()
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "w.pt", model, ["a", "b"]))
    art = export_artifact(ckpt, tmp_path / "e", ["torchscript"])
    meta = json.loads((art / "metadata.json").read_text())
    meta["input_size"] = [64, 80]
    with pytest.raises(ExportError, match="'input_size': " + WORDING + r"\[64, 80\]"):
        validate_metadata(meta, art / "metadata.json")
