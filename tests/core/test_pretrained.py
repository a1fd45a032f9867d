"""``load_pretrained``: the one function behind ``module.pretrained=`` (darknet files and project
checkpoints), used by the YoloModule of train.py and by evaluate.py's ``darknet_weights=``."""

from __future__ import annotations

import pytest
import torch

from yolov4 import CheckpointError, build_model, save_checkpoint
from yolov4.core.pretrained import conv_cutoff, is_darknet_weights, load_pretrained
from yolov4.darknet import save_darknet_weights


def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def source(randomize):
    torch.manual_seed(0)
    return randomize(build_model("yolov4-tiny", num_classes=3), seed=4)


def test_conv_cutoff_is_read_from_the_name():
    assert conv_cutoff("weights/yolov4.conv.137") == 137
    assert conv_cutoff("yolov4-tiny.conv.29") == 29
    assert conv_cutoff("yolov4-tiny.conv.29.weights") == 29  # renamed by users, as darknet's
    assert conv_cutoff("yolov4.weights") is None and conv_cutoff("model.conv.pt") is None


@pytest.mark.parametrize("name", ["m.weights", "darknet-file.bin"])
def test_darknet_file_loads_every_layer_whatever_its_name(tmp_path, source, name):
    """A darknet file is recognised by its name or, failing that, by its bytes (no zip, no
    pickle); every layer is read and the file must hold exactly the network."""
    path = save_darknet_weights(source, tmp_path / name)
    assert is_darknet_weights(path)
    model = build_model("yolov4-tiny", num_classes=3)
    done = load_pretrained(model, path)
    assert done.source == "darknet" and "darknet layers" in done.summary
    model.eval()
    assert same(model, source)
    with pytest.raises(CheckpointError, match="it fits yolov4-tiny with num_classes=3"):
        load_pretrained(build_model("yolov4", num_classes=3), path)  # another network


def test_partial_conv_file_loads_up_to_its_cutoff(tmp_path, source):
    path = save_darknet_weights(source, tmp_path / "tiny.conv.29", upto=29)
    torch.manual_seed(9)
    model = build_model("yolov4-tiny", num_classes=3)
    load_pretrained(model, path)
    assert torch.equal(model.layers[28].conv.weight, source.layers[28].conv.weight)  # last kept
    assert not torch.equal(model.layers[29].conv.weight, source.layers[29].conv.weight)
    assert not torch.equal(model.layers[36].conv.weight, source.layers[36].conv.weight)


def test_partial_conv_file_of_another_network_is_refused(tmp_path, source):
    """darknet's partial writes exactly layers 0..N-1: a .conv.N file longer than the model's
    N layers is another network's, whose floats would land cut at the wrong places."""
    path = save_darknet_weights(source, tmp_path / "yolov4-tiny.conv.29", upto=29)
    model = build_model("yolov4", num_classes=3)
    before = model.layers[0].conv.weight.clone()
    with pytest.raises(
        CheckpointError,
        match=r"layers 0-28 need 636,768 floats after the header, found 4,947,424: it holds "
        r"exactly the first 17 convolutional layers \(darknet layers 0-28\) of yolov4-tiny",
    ):
        load_pretrained(model, path)
    assert torch.equal(model.layers[0].conv.weight, before)


def test_project_checkpoint_strict_and_backbone_only(tmp_path, source):
    path = save_checkpoint(tmp_path / "w.pt", source)
    assert not is_darknet_weights(path)
    model = build_model("yolov4-tiny", num_classes=3)
    assert load_pretrained(model, path).source == "checkpoint"
    assert same(model.eval(), source)
    torch.manual_seed(5)
    backbone = build_model("yolov4-tiny", num_classes=3)
    report = load_pretrained(backbone, path, backbone_only=True)
    assert "kept" not in report.summary  # every backbone tensor came from the file
    # yolov4-tiny.conv.29: darknet layers 0-28 from the file, the rest as initialised
    assert backbone.backbone_layer_count() == 29
    assert torch.equal(backbone.layers[28].conv.weight, source.layers[28].conv.weight)
    assert not torch.equal(backbone.layers[32].conv.weight, source.layers[32].conv.weight)


def test_other_architecture_names_the_switch(tmp_path, source):
    path = save_checkpoint(tmp_path / "tiny.pt", source)
    model = build_model("yolov4", num_classes=3)
    with pytest.raises(
        CheckpointError, match=r"(?s)does not fit yolov4: .*module.pretrained_strict=false"
    ):
        load_pretrained(model, path)
    report = load_pretrained(model, path, strict=False)
    assert "ignored from the file" in report.summary


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pretrained(build_model("yolov4-tiny", num_classes=3), tmp_path / "nope.weights")


def test_a_checkpoint_cut_short_is_not_read_as_darknet_weights(tmp_path, source):
    """A half-written .ckpt of a length that darknet's float count for some class count fits
    (here 4): refused as a checkpoint torch cannot read, the model untouched."""
    from dataclasses import replace

    from yolov4.darknet import _config_float_count

    path = save_checkpoint(tmp_path / "w.pt", source, ["a", "b", "c"])
    one, two = (_config_float_count(replace(source.config, num_classes=c)) for c in (1, 2))
    size = 20 + 4 * (one + 3 * (two - one))  # the header, then 4 classes' floats
    data = path.read_bytes()
    assert data[:2] == b"PK" and size < len(data)
    path.write_bytes(data[:size])
    model = build_model("yolov4-tiny", num_classes=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert not is_darknet_weights(path)
    with pytest.raises(CheckpointError) as e:
        load_pretrained(model, path)
    assert "darknet" not in str(e.value) and str(path) in str(e.value)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_state_dict_saved_under_model_loads_and_file_errors_carry_no_strict_hint(
    tmp_path, source
):
    """torch.save({"model": model.state_dict()}) (hand-written loops) matched 0 of 118 tensors;
    an unreadable file's error offered module.pretrained_strict=false, which cannot help."""
    for key in ("model", "model_state_dict"):
        torch.save({key: source.state_dict(), "epoch": 3}, tmp_path / f"{key}.pt")
        model = build_model("yolov4-tiny", num_classes=3)
        assert load_pretrained(model, tmp_path / f"{key}.pt").summary == "118 of 118 tensors loaded"
        assert same(model, source)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError) as e:
        load_pretrained(build_model("yolov4-tiny", num_classes=3), tmp_path / "empty.pt")
    assert "is not a PyTorch checkpoint" in str(e.value) and "pretrained_strict" not in str(e.value)
