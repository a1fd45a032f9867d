"""``python -m yolov4.models``: the summary of any zoo network or user cfg, on small inputs."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from yolov4 import build_model
from yolov4.darknet import darknet_float_count
from yolov4.models.__main__ import _parser, main
from yolov4.models.cfg import ZOO, parse_cfg, read_zoo_cfg


def run(capsys, *argv: str) -> str:
    main(list(argv))
    return capsys.readouterr().out


def field(out: str, label: str) -> str:
    match = re.search(rf"^  {label}\s+(.+)$", out, re.M)
    assert match, f"no {label!r} line in:\n{out}"
    return match.group(1)


def conv_gflops(model: nn.Module, size: tuple[int, int]) -> float:
    """2 x multiply-adds of every convolution, from the output shapes (independent of torch's
    FlopCounterMode)."""
    macs = []

    def hook(m: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
        macs.append(out.numel() * k)

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model(torch.rand(1, 3, *size))
    for h in hooks:
        h.remove()
    return 2 * sum(macs) / 1e9


def test_every_zoo_name_is_a_choice():
    name = next(a for a in _parser()._actions if a.dest == "name")
    assert list(name.choices) == list(ZOO)


def test_summary_numbers_of_a_zoo_model(capsys, tmp_path):
    weights = tmp_path / "m.weights"
    out = run(
        capsys, "yolov3-tiny", "--size", "64", "96", "--num-classes", "3", "--repeats", "1",
        "--weights", str(weights),
    )  # fmt: skip
    model = build_model("yolov3-tiny", num_classes=3, input_size=[64, 96]).eval()
    assert "yolov3-tiny" in out and "3 classes, input 1x3x64x96" in out
    assert field(out, "parameters") == f"{sum(p.numel() for p in model.parameters()):,}"
    gflops = float(field(out, "GFLOPs").split()[0])
    assert gflops == pytest.approx(conv_gflops(model, (64, 96)), abs=0.006)
    assert "2 FLOPs per multiply-add" in field(out, "GFLOPs")
    layers = len(parse_cfg(read_zoo_cfg("yolov3-tiny"))) - 1  # sections after [net]
    assert field(out, "darknet layers") == str(layers) == "24"
    floats = darknet_float_count(model)
    assert field(out, ".weights floats") == f"{floats:,} ({weights.stat().st_size:,} bytes)"
    # heads, ascending stride: A * (5 + C) channels at H / s x W / s
    assert field(out, "stride 16 map") == "(1, 24, 4, 6)"
    assert field(out, "stride 32 map") == "(1, 24, 2, 3)"
    assert re.fullmatch(r"[\d.]+ ms median of 1 \(batch 1, channels-last, \d+ CPU threads\)",
                        field(out, "fused forward"))  # fmt: skip


def test_default_size_is_the_cfgs_net_size(capsys):
    out = run(capsys, "yolov4-tiny", "--repeats", "0")
    h, w = build_model("yolov4-tiny").config.input_size
    assert (h, w) == (416, 416) and "80 classes, input 1x3x416x416" in out
    assert "fused forward" not in out  # --repeats 0: no timing


def test_a_user_cfg_file_at_its_own_size(capsys, tmp_path):
    text = (
        read_zoo_cfg("yolov3-tiny")
        .replace("width=416", "width=96")
        .replace("height=416", "height=64")
    )
    text = text.replace("classes=80", "classes=2").replace("filters=255", "filters=21")
    cfg = tmp_path / "mine.cfg"
    cfg.write_text(text)
    written = tmp_path / "out.cfg"
    out = run(capsys, "--cfg-file", str(cfg), "--repeats", "0", "--cfg", str(written))
    assert out.startswith(f"mine: {cfg}, 2 classes, input 1x3x64x96")
    assert field(out, "stride 32 map") == "(1, 21, 2, 3)"
    rebuilt = build_model(cfg=str(written), num_classes=None)
    assert rebuilt.config.input_size == (64, 96) and rebuilt.config.num_classes == 2


def test_a_scaled_yolov4_head_layout(capsys):
    out = run(capsys, "yolov4-csp", "--size", "64", "--repeats", "0", "--num-classes", "1")
    assert field(out, "box decoding") == "new_coords, iou_loss ciou"
    assert [field(out, f"stride {s:2d} map") for s in (8, 16, 32)] == [
        "(1, 18, 8, 8)",
        "(1, 18, 4, 4)",
        "(1, 18, 2, 2)",
    ]


def test_a_size_the_network_cannot_take_fails_naming_the_stride(capsys):
    with pytest.raises(SystemExit) as e:
        main(["yolov4-tiny", "--size", "100", "--repeats", "0"])
    assert e.value.code == 2
    assert "multiples of 32" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--cfg", "--weights"])
def test_existing_darknet_files_given_as_outputs_are_refused_untouched(capsys, tmp_path, flag):
    # the natural command of a user holding darknet files: --cfg/--weights are outputs here
    cfg, weights = tmp_path / "yolov2-tiny.cfg", tmp_path / "yolov2-tiny.weights"
    cfg.write_text("[net]\nwidth=416\n")
    weights.write_bytes(b"\x00\x01user weights")
    argv = {"--cfg": ["--cfg", str(cfg)], "--weights": ["--weights", str(weights)]}[flag]
    with pytest.raises(SystemExit) as e:
        main([*argv, "--repeats", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    named = cfg if flag == "--cfg" else weights
    assert f"{flag} {named}: the file exists and is not overwritten" in err
    assert "WRITES" in err and "--cfg-file" in err
    assert cfg.read_text() == "[net]\nwidth=416\n"
    assert weights.read_bytes() == b"\x00\x01user weights"


def test_a_region_network_summary_names_its_head_and_no_loss(capsys, tmp_path):
    from tests.models.test_region import shrunk

    cfg = tmp_path / "yolov2-tiny.cfg"
    cfg.write_text(shrunk("yolov2-tiny"))
    out = run(capsys, "--cfg-file", str(cfg), "--size", "64", "--repeats", "0")
    assert field(out, "head") == "[region] (softmax classes), inference only"
    assert "iou_loss" not in out and "box decoding" not in out
    assert field(out, "stride 32 map") == "(1, 425, 2, 2)"  # 5 anchors x (80 + 5)


@pytest.mark.parametrize("spelling", ["same", "dotted"])
def test_one_new_path_for_both_outputs_is_refused_before_writing(capsys, tmp_path, spelling):
    out = tmp_path / "out.cfg"
    other = out if spelling == "same" else tmp_path / "." / "out.cfg"
    with pytest.raises(SystemExit) as e:
        main(["--cfg", str(out), "--weights", str(other), "--repeats", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert f"--cfg {out} and --weights {other} name one file" in err[-1]
    assert not out.exists()
