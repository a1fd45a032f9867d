"""Checkpoints and ``pretrained=`` for the zoo's networks and a user's own cfg: a checkpoint of a
network built from a cfg file rebuilds from the checkpoint alone (the file deleted); darknet's
full and partial (``.conv.N``) weight files initialise zoo networks, ``backbone_only`` at
darknet's partial-file cut-off."""

from __future__ import annotations

import pytest
import torch

from tests.zoo_cases import calibrate_, slim_cfg
from yolov4 import CheckpointError, ConfigError, build_model, load_checkpoint, save_checkpoint
from yolov4.core.pretrained import load_pretrained
from yolov4.darknet import save_darknet_weights


def convs(model) -> dict[int, torch.Tensor]:
    """Darknet layer index -> conv weight."""
    return {i: m.conv.weight for i, m in model.conv_layers()}


def loaded_upto(model, source, upto: int) -> None:
    """Convs below darknet layer ``upto`` equal ``source``'s, every other one differs."""
    mine, theirs = convs(model), convs(source)
    assert any(i >= upto for i in mine)
    for i in mine:
        assert torch.equal(mine[i], theirs[i]) == (i < upto), i


def test_a_user_cfg_checkpoint_rebuilds_without_the_cfg_file(tmp_path, randomize):
    """yolov4-p6's structure (4 heads to stride 64, 4 anchors, new_coords) as a user's cfg: the
    .pt file and a Lightning .ckpt of it rebuild the network after the cfg file is gone."""
    cfg = tmp_path / "my-p6.cfg"
    cfg.write_text(slim_cfg("yolov4-p6"))
    torch.manual_seed(0)
    model = build_model(cfg=cfg, num_classes=2, input_size=[128, 192])
    calibrate_(randomize(model, seed=3), (128, 192))
    assert model.config.name == "my-p6" and model.config.cfg == cfg.read_text()
    assert model.config.max_stride == 64 and model.config.num_anchors == 4
    path = save_checkpoint(tmp_path / "best.pt", model, ["a", "b"], {"input_size": [128, 192]})
    sd = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save(
        {
            "pytorch-lightning_version": "2.5.0",
            "epoch": 1,
            "global_step": 10,
            "state_dict": sd,
            "hyper_parameters": {"model": model.config.to_dict(), "class_names": ["a", "b"]},
        },
        tmp_path / "last.ckpt",
    )
    cfg.unlink()
    x = torch.rand(1, 3, 128, 192, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model(x)
    for file in (path, tmp_path / "last.ckpt"):
        ckpt = load_checkpoint(file)
        assert ckpt.model.config == model.config and ckpt.class_names == ["a", "b"]
        with torch.no_grad():
            got = ckpt.model(x)
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    with pytest.raises(CheckpointError, match=r"multiples of 64 \(the network's largest stride\)"):
        save_checkpoint(tmp_path / "x.pt", model, ["a", "b"], {"input_size": [96, 128]})


def test_darknet_full_and_partial_files_of_a_zoo_network(tmp_path, randomize):
    """yolov3-tiny: the full file, darknet's partial yolov3-tiny.conv.15 (cut-off from its name)
    and backbone_only (darknet's cut-off for the network, whatever the file)."""
    torch.manual_seed(0)
    source = randomize(build_model("yolov3-tiny", num_classes=3, input_size=[96, 96]), seed=1)
    full = save_darknet_weights(source, tmp_path / "yolov3-tiny.weights")
    partial = save_darknet_weights(source, tmp_path / "yolov3-tiny.conv.15", upto=15)
    model = build_model("yolov3-tiny", num_classes=3, input_size=[96, 96])
    assert model.backbone_layer_count() == 15
    assert "15 darknet layers" in load_pretrained(model, partial).summary
    loaded_upto(model, source, 15)
    model = build_model("yolov3-tiny", num_classes=3, input_size=[96, 96])
    load_pretrained(model, full, backbone_only=True)
    loaded_upto(model, source, 15)
    load_pretrained(model, full)
    model.eval()
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in model.state_dict().items())


def test_the_yolov4_tiny_partial_file_initialises_yolov4_tiny_3l(tmp_path):
    """darknet's yolov4-tiny.conv.29 is also yolov4-tiny-3l's backbone (same first 29 layers)."""
    torch.manual_seed(0)
    tiny = build_model("yolov4-tiny", num_classes=80, input_size=[96, 96])
    partial = save_darknet_weights(tiny, tmp_path / "yolov4-tiny.conv.29", upto=29)
    model = build_model("yolov4-tiny-3l", num_classes=2, input_size=[96, 96])
    assert model.backbone_layer_count() == 29
    load_pretrained(model, partial, backbone_only=True)
    mine, theirs = convs(model), convs(tiny)
    assert all(torch.equal(mine[i], theirs[i]) for i in mine if i < 29)
    assert not any(torch.equal(mine[i], theirs[i]) for i in mine if 29 <= i < len(tiny.layers))


def test_yolov4_csp_partial_file_and_backbone_only(tmp_path):
    """The real yolov4-csp (52 M weights): a generated yolov4-csp.conv.142 loads layers 0-141,
    by its name or with backbone_only (darknet's cut-off for yolov4-csp)."""
    torch.manual_seed(0)
    model = build_model("yolov4-csp", num_classes=2, input_size=[64, 64])
    partial = save_darknet_weights(model, tmp_path / "yolov4-csp.conv.142", upto=142)
    want = {i: w.clone() for i, w in convs(model).items()}
    assert model.backbone_layer_count() == 142
    for backbone_only in (False, True):
        with torch.no_grad():
            for w in convs(model).values():
                w.zero_()
        load_pretrained(model, partial, backbone_only=backbone_only)
        for i, w in convs(model).items():
            assert torch.equal(w, want[i]) if i < 142 else not w.any(), i


def test_a_user_cfg_has_no_backbone_cut_off_but_takes_one_from_a_file_name(tmp_path):
    """A cfg that is no zoo network's backbone: backbone_only asks for a cut-off, which a
    ``.conv.N`` file name gives."""
    torch.manual_seed(0)
    source = build_model("my-csp", cfg=slim_cfg("yolov4-csp"), num_classes=2, input_size=[64, 64])
    partial = save_darknet_weights(source, tmp_path / "my-csp.conv.142", upto=142)
    model = build_model("my-csp", cfg=slim_cfg("yolov4-csp"), num_classes=2, input_size=[64, 64])
    with pytest.raises(ConfigError, match=r"no darknet partial file is known.*upto=N"):
        load_pretrained(model, partial, backbone_only=True)
    load_pretrained(model, partial)
    loaded_upto(model, source, 142)
