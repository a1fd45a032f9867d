"""The strict-loadable weights file: round trips through every wrapper, errors, atomic writes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from yolov4 import CheckpointError, build_model
from yolov4.core.checkpoint import (
    FORMAT,
    clean_state_dict,
    load_checkpoint,
    load_state_dict_checked,
    save_checkpoint,
)

NAMES = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def tiny3():
    torch.manual_seed(0)
    model = build_model("yolov4-tiny", num_classes=3)
    with torch.no_grad():  # non-default BN statistics so a lost buffer would show
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_round_trip_reproduces_outputs(tmp_path, tiny3):
    path = save_checkpoint(
        tmp_path / "best.pt",
        tiny3,
        NAMES,
        preprocess={"size": [96, 96], "mode": "letterbox"},
        metrics={"mAP": np.float64(0.25), "mAP50": torch.tensor(0.5)},
        trained={"epoch": 3, "step": 120},
    )
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["metrics"] == {"mAP": 0.25, "mAP50": 0.5}
    assert list(raw["state_dict"]) == list(build_model(**raw["model"]).state_dict())
    strict = build_model(**raw["model"])
    strict.load_state_dict(raw["state_dict"], strict=True)

    ckpt = load_checkpoint(path)
    assert ckpt.class_names == NAMES and ckpt.trained == {"epoch": 3, "step": 120}
    assert ckpt.preprocess == {"size": [96, 96], "mode": "letterbox"}
    assert not ckpt.model.training
    x = torch.rand(1, 3, 96, 96)
    for a, b in zip(outputs(ckpt.model, x), outputs(tiny3, x)):
        assert torch.equal(a, b)


class Wrapper(torch.nn.Module):
    """Stands in for the LightningModule: the network as an attribute."""

    def __init__(self, model):
        super().__init__()
        self.model = model


@pytest.mark.parametrize(
    "wrap",
    [
        lambda m: Wrapper(m).state_dict(),  # LightningModule attribute: model.
        lambda m: torch.nn.DataParallel(Wrapper(m)).state_dict(),  # module.model.
        lambda m: torch.compile(m).state_dict(),  # _orig_mod.
        lambda m: Wrapper(torch.compile(m)).state_dict(),  # model._orig_mod.
        lambda m: torch.optim.swa_utils.AveragedModel(m).state_dict(),  # EMA: module. + n_averaged
    ],
    ids=["lightning", "ddp", "compile", "lightning-compile", "ema"],
)
def test_wrapped_state_dicts_save_with_plain_keys(tmp_path, tiny3, wrap):
    sd = wrap(copy.deepcopy(tiny3))
    path = save_checkpoint(tmp_path / "w.pt", tiny3, NAMES, state_dict=sd)
    raw = torch.load(path, weights_only=True)
    assert list(raw["state_dict"]) == list(tiny3.state_dict())
    x = torch.rand(1, 3, 64, 64)
    for a, b in zip(outputs(load_checkpoint(path).model, x), outputs(tiny3, x)):
        assert torch.equal(a, b)


def test_lightning_ckpt_prefers_ema_weights(tmp_path, tiny3):
    other = build_model("yolov4-tiny", num_classes=3)
    sd = {f"model.{k}": v for k, v in other.state_dict().items()}
    sd.update({f"ema_model.{k}": v for k, v in tiny3.state_dict().items()})
    path = tmp_path / "last.ckpt"
    torch.save(
        {
            "pytorch-lightning_version": "2.6.0",
            "epoch": 4,
            "global_step": 99,
            "state_dict": sd,
            "hyper_parameters": {"model": tiny3.config.to_dict(), "class_names": NAMES},
        },
        path,
    )
    ckpt = load_checkpoint(path)
    assert ckpt.trained == {"epoch": 4, "step": 99} and ckpt.class_names == NAMES
    x = torch.rand(1, 3, 64, 64)
    for a, b in zip(outputs(ckpt.model, x), outputs(tiny3, x)):
        assert torch.equal(a, b)


def test_other_num_classes_is_named(tiny3):
    with pytest.raises(
        CheckpointError,
        match=r"(?s)shape mismatches 4.*trained with num_classes=3, the model has num_classes=5",
    ):
        load_state_dict_checked(build_model("yolov4-tiny", num_classes=5), tiny3.state_dict())


def test_other_model_is_named(tiny3):
    with torch.device("meta"):
        big = build_model("yolov4", num_classes=3)
    with pytest.raises(CheckpointError) as e:
        load_state_dict_checked(big, tiny3.state_dict())
    msg = str(e.value)
    assert "missing keys" in msg and "unexpected keys" in msg
    assert "the weights are for yolov4-tiny, the model is yolov4" in msg


def test_non_strict_loads_what_fits(tiny3):
    model = build_model("yolov4-tiny", num_classes=5)
    skipped = load_state_dict_checked(model, tiny3.state_dict(), strict=False)
    assert skipped == [
        "heads.0.pred.conv.bias",
        "heads.0.pred.conv.weight",
        "heads.1.pred.conv.bias",
        "heads.1.pred.conv.weight",
    ]
    assert torch.equal(model.backbone.stem[0].conv.weight, tiny3.backbone.stem[0].conv.weight)


def test_save_refuses_wrong_class_names(tmp_path, tiny3):
    with pytest.raises(ValueError, match="2 class names for a model with num_classes=3"):
        save_checkpoint(tmp_path / "x.pt", tiny3, ["a", "b"])


def test_truncated_and_foreign_files(tmp_path, tiny3):
    path = save_checkpoint(tmp_path / "best.pt", tiny3, NAMES)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint"):
        load_checkpoint(path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(junk)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match=r"format None, expected 'yolov4.weights/1'"):
        load_checkpoint(other)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "payload": np.float64(1.0)}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_checkpoint(path)


def test_crash_during_write_keeps_previous_file(tmp_path, tiny3, monkeypatch):
    path = save_checkpoint(tmp_path / "best.pt", tiny3, NAMES, metrics={"mAP": 0.1})

    def crash(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, tiny3, NAMES, metrics={"mAP": 0.9})
    monkeypatch.undo()
    assert load_checkpoint(path).metrics == {"mAP": 0.1}
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


def test_clean_state_dict_drops_non_tensors_and_nested_compile():
    sd = {"module._orig_mod.a.weight": torch.zeros(1), "module.n_averaged": torch.tensor(3)}
    assert list(clean_state_dict(sd)) == ["a.weight"]
    assert list(clean_state_dict({"x._orig_mod.y": torch.ones(1), "step": 5})) == ["x.y"]
