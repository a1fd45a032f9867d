"""``Checkpoint.preprocess`` is a :class:`PreprocessConfig`: the file keeps its dict form, a file
without one reads as letterbox at the network size, and a bad stored dict is refused naming the
key."""

from __future__ import annotations

import pytest
import torch

from yolov4 import CheckpointError, build_model
from yolov4.core.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from yolov4.core.preprocess import PreprocessConfig

NAMES = ["a", "b"]


@pytest.fixture(scope="module")
def tiny2():
    torch.manual_seed(0)
    return build_model("yolov4-tiny", num_classes=2, input_size=[96, 128]).eval()


def _rewrite(path, **changes):
    """The weights file at ``path`` with its raw dict entries replaced (what a hand-edited or
    foreign file holds)."""
    raw = torch.load(path, weights_only=True)
    raw.update(changes)
    torch.save(raw, path)


def test_round_trip_keeps_every_field_and_the_file_keeps_the_dict_form(tmp_path, tiny2):
    config = PreprocessConfig((64, 96), "stretch", 0, "bgr", 1 / 128)
    path = save_checkpoint(tmp_path / "w.pt", tiny2, NAMES, preprocess=config)
    raw = torch.load(path, weights_only=True)["preprocess"]
    assert raw == {
        "input_size": [64, 96],
        "mode": "stretch",
        "pad_value": 0,
        "channel_order": "bgr",
        "scale": 1 / 128,
    }
    assert all(type(v) in (list, str, int, float) for v in raw.values())  # plain builtins
    ckpt = load_checkpoint(path)
    assert isinstance(ckpt.preprocess, PreprocessConfig) and ckpt.preprocess == config
    assert ckpt.preprocess_stored and ckpt.preprocess_dict() == raw
    again = save_checkpoint(tmp_path / "again.pt", ckpt.model, NAMES, preprocess=ckpt.preprocess)
    assert load_checkpoint(again).preprocess == config


def test_a_file_without_preprocess_reads_as_letterbox_at_the_network_size(tmp_path, tiny2):
    path = save_checkpoint(tmp_path / "w.pt", tiny2, NAMES)
    _rewrite(path, preprocess={})
    ckpt = load_checkpoint(path)
    assert not ckpt.preprocess_stored
    assert ckpt.preprocess == PreprocessConfig(input_size=(96, 128), mode="letterbox")
    built = Checkpoint(model=tiny2, class_names=NAMES)  # the same default when built in code
    assert built.preprocess == ckpt.preprocess and not built.preprocess_stored


@pytest.mark.parametrize(
    "stored, match",
    [
        ({"input_size": [96, 128], "colour": "rgb"}, r"unknown preprocess key\(s\) \['colour'\]"),
        ({"input_size": [96, 128], "mode": "crop"}, r"preprocess\.mode: expected one of"),
        ({"input_size": [96, 128], "pad_value": 300}, r"preprocess\.pad_value: expected"),
        ({"input_size": [96, 128], "scale": -1.0}, r"preprocess\.scale: expected"),
        ({"input_size": [96, 100]}, r"preprocess\.input_size: expected \(H, W\) positive "
         r"multiples of 32 \(the network's largest stride\), got \[96, 100\]"),
        (["letterbox"], r"preprocess: expected a mapping"),
    ],
)  # fmt: skip
def test_a_bad_stored_preprocess_is_refused_naming_the_key_and_the_file(
    tmp_path, tiny2, stored, match
):
    path = save_checkpoint(tmp_path / "w.pt", tiny2, NAMES)
    _rewrite(path, preprocess=stored)
    with pytest.raises(CheckpointError, match=match) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value)


def test_save_refuses_a_bad_preprocess_and_writes_nothing(tmp_path, tiny2):
    with pytest.raises(CheckpointError, match=r"save_checkpoint: preprocess\.mode"):
        save_checkpoint(tmp_path / "w.pt", tiny2, NAMES, preprocess={"mode": "crop"})
    assert not (tmp_path / "w.pt").exists()
