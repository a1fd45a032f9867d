"""export.py's ``darknet`` format: ``model.cfg`` + ``model.weights`` that OpenCV's darknet
importer reads as the checkpoint's network, checked at export; a model that cannot be written
so is refused before anything is written, and an artifact already there is kept."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
import torch

from tests.models.test_cfg import BASE, nth
from tests.models.test_zoo import boost_heads_, opencv_outputs
from tests.test_darknet import assert_maps_equal
from yolov4 import build_model, load_checkpoint, save_checkpoint
from yolov4.cli import export as export_cli
from yolov4.core.artifact import FORMATS, artifact_precisions, read_metadata
from yolov4.core.model import DecodedModel
from yolov4.darknet import (
    load_darknet_weights,
    read_darknet_cfg,
    save_darknet_weights,
    write_darknet_cfg,
)
from yolov4.errors import ExportError
from yolov4.export import darknet_format
from yolov4.export.artifact import export_artifact
from yolov4.export.parity import PARITY_RTOL
from yolov4.inference import Predictor
from yolov4.models.layers import BN_EPS, ConvBnAct

NAMES = ["a", "b", "c"]
SIZE = [64, 96]


def checkpoint(tmp_path, randomize, shrink=False, **preprocess):
    torch.manual_seed(2)
    model = boost_heads_(randomize(build_model("yolov4-tiny", num_classes=len(NAMES)), seed=2))
    if shrink:
        shrink_channels_(model)
    pre = {"input_size": SIZE, "mode": "letterbox", **preprocess}
    return save_checkpoint(tmp_path / "weights" / "best.pt", model, NAMES, pre)


def shrink_channels_(model, var: float = 1e-5):
    """Two channels of every 4th BN conv as weight decay leaves some in a trained model: their
    kernels, running mean and running variance shrunk, the variance to ``var``, near darknet's
    batch-norm epsilon and OpenCV's."""
    convs = [m for m in model.modules() if isinstance(m, ConvBnAct) and m.has_bn]
    with torch.no_grad():
        for m in convs[::4]:
            m.conv.weight[:2] *= var**0.5
            m.bn.running_mean[:2] *= var**0.5
            m.bn.running_var[:2] = var
    return model


def snapshot(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, randomize):
    root = tmp_path_factory.mktemp("darknet-format")
    weights = checkpoint(root, randomize)
    return weights, export_artifact(weights, root / "export", ["onnx", "darknet"])


def test_opencv_reads_the_files_as_the_checkpoints_network(exported):
    import cv2

    weights, out = exported
    model = load_checkpoint(weights).model.eval()
    cfg, darknet_weights = out / "model.cfg", out / "model.weights"
    net_options = read_darknet_cfg(cfg.read_text())[0][1]
    assert [net_options[k] for k in ("height", "width", "letter_box")] == ["64", "96", "1"]
    images = torch.rand(2, 3, *SIZE)
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(darknet_weights))
    maps, _ = opencv_outputs(model, net, images)
    assert_maps_equal(model, maps, images)
    # darknet_weights= reads them back to the checkpoint's tensors, exactly
    rebuilt = build_model(cfg=cfg.read_text())
    assert load_darknet_weights(rebuilt, darknet_weights).seen == 0
    for key, tensor in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], tensor), key
    # with the checkpoint's class names, from model.names beside them
    assert Predictor.from_darknet(cfg, darknet_weights).class_names == NAMES


def test_metadata_records_the_files_and_their_check(exported):
    _, out = exported
    meta = read_metadata(out)
    assert meta["formats"] == ["onnx", "darknet"]
    assert {"model.cfg", "model.weights", "model.names", "model.onnx"} <= set(meta["files"])
    assert meta["darknet"]["input_size"] == SIZE and meta["darknet"]["letter_box"] is True
    assert meta["darknet"]["names"] == "model.names"
    assert (out / "model.names").read_text() == "".join(f"{n}\n" for n in NAMES)
    check = meta["parity"]["model.weights"]
    assert check["runtime"].startswith("OpenCV ") and check["max_rel_diff"] <= 1e-3
    assert meta["precisions"]["fp32"]["file"] == "model.onnx"  # the Predictor's model
    # the network's config as exported: [net] letter_box from the artifact's resize mode
    assert meta["model"]["letter_box"] is True and meta["preprocess"]["mode"] == "letterbox"
    # the checkpoint's letterbox border (114 by default) is not darknet's grey: said there
    assert "letterboxes with pad_value 114" in meta["darknet"]["pad_warning"]
    assert "darknet_weights= with 127" in meta["darknet"]["pad_warning"]
    lines = export_cli._summary(meta)
    assert "  model.cfg + model.weights: fp32 darknet files (darknet, OpenCV's " \
        "readNetFromDarknet), letter_box=1" in lines  # fmt: skip


def test_a_network_darknet_does_not_feed_is_refused_before_anything_is_written(
    exported, tmp_path, randomize
):
    """A checkpoint of BGR inputs has no darknet equivalent: refused naming why, and the
    artifact already in the folder is kept as it was."""
    bgr = checkpoint(tmp_path, randomize, channel_order="bgr")
    out = tmp_path / "export"
    export_artifact(bgr, out, ["onnx"])
    before = snapshot(out)
    with pytest.raises(ExportError, match=r"formats=\[darknet\]: yolov4-tiny takes "
                       r"channel_order=bgr, scale=0.00392157: no darknet equivalent"):  # fmt: skip
        export_artifact(bgr, out, ["onnx", "darknet"])
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "weights"]  # no temp folder


def test_a_network_opencv_does_not_read_is_refused_naming_the_layer(tmp_path):
    model = build_model(cfg=nth(BASE, "[maxpool]", "[local_avgpool]"))
    weights = save_checkpoint(tmp_path / "m.pt", model, ["x"], {"input_size": [32, 32]})
    with pytest.raises(ExportError, match="OpenCV's darknet importer does not read the "
                       "network's cfg .*Unknown layer type: local_avgpool"):  # fmt: skip
        export_artifact(weights, tmp_path / "export", ["darknet"])
    assert not (tmp_path / "export").exists()


def test_files_that_disagree_with_pytorch_fail_the_export(exported, tmp_path, monkeypatch):
    """The check reads the written files: a network written with other weights than the
    checkpoint's fails it, and nothing is installed."""
    weights, _ = exported

    def write_other(job, folder):
        other = load_checkpoint(weights).model
        with torch.no_grad():
            other.head_convs()[0].conv.bias.add_(1.0)
        darknet_format.write(dataclasses.replace(job, network=other), folder)

    monkeypatch.setitem(FORMATS, "darknet", dataclasses.replace(FORMATS["darknet"],
                                                                 write=write_other))  # fmt: skip
    with pytest.raises(ExportError, match="model.weights disagrees with PyTorch.*OpenCV's "
                       "darknet importer runs every setting of this network as darknet does "
                       r"\(compared at its batch-norm epsilon 1e-06\): the written model.cfg or "
                       "model.weights does not hold the checkpoint's network"):  # fmt: skip
        export_artifact(weights, tmp_path / "export", ["darknet"])
    assert not (tmp_path / "export").exists()


def test_opencv_normalises_batch_norm_at_its_own_epsilon(tmp_path):
    """OPENCV_BN_EPS is what OpenCV's importer adds to a running variance, measured on a conv
    whose BN divides by sqrt(variance + eps) alone (variances 0 and 1e-6); darknet's is BN_EPS."""
    import cv2

    # layer 0 linear: OpenCV's bn_0 output is the normalised map (no activation run in place)
    model = build_model(cfg=nth(BASE, "activation=leaky", "activation=linear")).eval()
    layer = model.layers[0]  # 8 filters, size 3, stride 2, pad 1
    var = torch.tensor([0.0, 1e-6]).repeat(4)
    with torch.no_grad():
        layer.bn.weight.fill_(1.0), layer.bn.bias.zero_(), layer.bn.running_mean.zero_()
        layer.bn.running_var.copy_(var)
    cfg, weights = tmp_path / "m.cfg", tmp_path / "m.weights"
    cfg.write_text(write_darknet_cfg(model))
    save_darknet_weights(model, weights)
    net = cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    x = torch.rand(1, 3, 32, 32)
    net.setInput(x.numpy())
    normalised = torch.from_numpy(net.forward("bn_0")).double()
    with torch.no_grad():
        conv = torch.nn.functional.conv2d(x, layer.conv.weight, stride=2, padding=1).double()
    eps = (conv**2).sum((0, 2, 3)) / (normalised**2).sum((0, 2, 3)) - var.double()
    np.testing.assert_allclose(eps.numpy(), darknet_format.OPENCV_BN_EPS, rtol=1e-3)
    assert BN_EPS == 1e-5 != darknet_format.OPENCV_BN_EPS


def test_channels_of_small_running_variance_pass_the_check(tmp_path, randomize):
    """A trained model's BN channels with running variances near the epsilons: OpenCV's importer
    reads the files otherwise than darknet (and PyTorch) run them, at its own epsilon; the check
    compares it with the network at that epsilon, and the files hold the checkpoint's tensors."""
    import cv2

    weights = checkpoint(tmp_path, randomize, shrink=True)
    out = export_artifact(weights, tmp_path / "export", ["darknet"])
    record = read_metadata(out)["parity"]["model.weights"]
    assert record["max_rel_diff"] <= PARITY_RTOL
    assert record["reference"] == "PyTorch at OpenCV's batch-norm epsilon 1e-06"
    model = load_checkpoint(weights).model.eval()
    rebuilt = build_model(cfg=(out / "model.cfg").read_text())
    load_darknet_weights(rebuilt, out / "model.weights")
    for key, tensor in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], tensor), key
    # the channels matter: at darknet's epsilon PyTorch and OpenCV disagree past the tolerance
    net = cv2.dnn.readNetFromDarknet(str(out / "model.cfg"), str(out / "model.weights"))
    images = torch.rand(2, 3, *SIZE)
    maps, _ = opencv_outputs(model, net, images)
    with torch.no_grad():
        ours = DecodedModel(model)(images)
        theirs = darknet_format.opencv_reference(model)(images)
    m = DecodedModel(model)
    opencv = darknet_format.decode_predictions(
        [torch.from_numpy(a) for a in maps], m.anchors, m.strides, m.scale_x_y, m.new_coords
    )
    scale = float(ours.abs().max())
    assert float((opencv - theirs).abs().max()) <= PARITY_RTOL * scale
    assert float((opencv - ours).abs().max()) > 10 * PARITY_RTOL * scale


def test_export_py_writes_the_darknet_files_of_a_checkpoint(exported, tmp_path, capsys, caplog):
    import logging

    from hydra import compose, initialize_config_module

    weights, _ = exported
    out = tmp_path / "artifact"
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        cfg = compose("export", overrides=[f"paths.output_dir={tmp_path}", f"output={out}",
                                           f"checkpoint={weights}", "formats=[darknet]"])  # fmt: skip
    with caplog.at_level(logging.INFO, logger="yolov4"):
        assert export_cli.export(cfg) == out
    assert re.search(r"model.weights: worst difference vs PyTorch \S+ \(\S+ relative\) in "
                     r"OpenCV \S+ readNetFromDarknet, against PyTorch at OpenCV's batch-norm "
                     r"epsilon 1e-06", caplog.text)  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == [
        "metadata.json", "model.cfg", "model.names", "model.weights"
    ]  # fmt: skip
    pads = [r for r in caplog.records if "pad_value" in r.getMessage()]
    assert len(pads) == 1 and pads[0].levelname == "WARNING"
    assert "pad_value 114" in pads[0].getMessage() and "127.5 of 255" in pads[0].getMessage()
    printed = capsys.readouterr().out
    assert f"-> {out} (model.cfg, model.weights, model.names)" in printed
    summary = printed.split(f"-> {out}", 1)[1].splitlines()[1:]
    assert [line.split(":")[0].strip() for line in summary] == ["model.cfg + model.weights"]
    assert "model.onnx" not in printed and "model.torchscript" not in printed


def test_metadata_model_letter_box_is_the_stretch_the_files_say(tmp_path, randomize):
    """A zoo cfg of [net] letter_box=1 (yolov4-csp's) exported from a stretch checkpoint:
    metadata's model, darknet entry and model.cfg all say letter_box 0, and the model entry
    still reads back as a config."""
    from yolov4.models import ModelConfig

    model = randomize(build_model("yolov4-csp", num_classes=1, input_size=[64, 64]), seed=3)
    assert model.config.letter_box is True  # the zoo cfg's darknet training setting
    pre = {"input_size": [64, 64], "mode": "stretch"}
    weights = save_checkpoint(tmp_path / "csp.pt", model, ["x"], pre)
    meta = read_metadata(export_artifact(weights, tmp_path / "export", ["darknet"]))
    assert meta["model"]["letter_box"] is False and meta["darknet"]["letter_box"] is False
    net = read_darknet_cfg((tmp_path / "export" / "model.cfg").read_text())[0][1]
    assert net["letter_box"] == "0" and "pad_warning" not in meta["darknet"]
    assert ModelConfig.from_dict(meta["model"]).letter_box is False


def test_a_border_of_darknets_grey_or_a_stretch_needs_no_pad_warning():
    """The warning is for a letterbox border other than darknet's grey only."""
    from yolov4.core.preprocess import PreprocessConfig
    from yolov4.inference.darknet import DARKNET_PAD_VALUE

    warn = darknet_format.pad_warning
    assert (
        warn(PreprocessConfig(input_size=SIZE, mode="letterbox", pad_value=DARKNET_PAD_VALUE))
        is None
    )
    assert warn(PreprocessConfig(input_size=SIZE, mode="stretch", pad_value=0)) is None
    assert "pad_value 0," in warn(PreprocessConfig(input_size=SIZE, mode="letterbox", pad_value=0))


def test_a_failed_check_names_the_settings_opencv_runs_otherwise(tmp_path, randomize):
    """A network using a key OpenCV's importer ignores fails the check, which names the layer
    and the key as the likely cause."""
    text = nth(BASE, "activation=mish\n", "activation=mish\ndilation=2\n")  # darknet layer 3
    model = boost_heads_(randomize(build_model(cfg=text), seed=5))
    weights = save_checkpoint(tmp_path / "m.pt", model, ["x"], {"input_size": [32, 32]})
    with pytest.raises(ExportError, match=r"model.weights disagrees with PyTorch.*the network "
                       r"has settings OpenCV's darknet importer runs otherwise than darknet "
                       r"\(layer 3 \[convolutional\] dilation=2: docs/guides/networks.md\)"):  # fmt: skip
        export_artifact(weights, tmp_path / "export", ["darknet"])


def test_the_settings_opencv_runs_otherwise_are_found_in_the_cfg():
    sections = [
        "[net]\nwidth=32",
        "[convolutional]\nstride=2\nstride_x=2\ndilation=1",  # darknet's values: as OpenCV
        "[convolutional]\nstride=2\nstride_y=1",
        "[upsample]\nscale=1.0",
        "[upsample]\nscale=0.5",
        "[shortcut]\nfrom=-1\nweights_type=none",
        "[shortcut]\nfrom=-1, -3\nweights_type=per_channel",
        "[scale_channels]\nfrom=-2\nscale_wh=1",
        "[reorg]\nstride=2\nreverse=0",
        "[reorg]\nstride=2\nreverse=1",
    ]
    assert darknet_format.opencv_deviations("\n\n".join(sections)) == [
        "layer 1 [convolutional] stride_y=1",
        "layer 3 [upsample] scale=0.5",
        "layer 5 [shortcut] weights_type=per_channel",
        "layer 5 [shortcut] from=-1,-3",
        "layer 6 [scale_channels] scale_wh=1",
        "layer 8 [reorg] reverse=1",
    ]


def test_a_darknet_only_artifact_names_how_its_files_run(exported, tmp_path):
    """Predictor.from_artifact on an artifact of formats=[darknet] alone names the format that
    writes the model it runs and the darknet_weights= keys (and Predictor.from_darknet call)
    that read its files, which then load as the artifact's network and classes."""
    from yolov4.inference import Predictor

    weights, _ = exported
    out = export_artifact(weights, tmp_path / "artifact", ["darknet"])
    assert artifact_precisions(read_metadata(out)) == {}  # no model a backend loads
    with pytest.raises(ExportError, match="has no model.onnx"):
        Predictor.from_artifact(out, precision="auto")
    with pytest.raises(ExportError) as e:
        Predictor.from_artifact(out)
    message = str(e.value)
    assert "has no model.onnx" in message and "export it with formats=[onnx]" in message
    cfg, darknet_weights = out / "model.cfg", out / "model.weights"
    assert (
        f"darknet_weights={darknet_weights} model=darknet model.cfg={cfg} names=[a,b,c]" in message
    )
    assert f"Predictor.from_darknet({str(cfg)!r}, {str(darknet_weights)!r}" in message
    predictor = Predictor.from_darknet(cfg, darknet_weights, names=NAMES)
    assert predictor.class_names == NAMES and list(predictor.input_size) == SIZE


def test_the_weights_header_holds_the_images_the_checkpoint_trained_on(exported, tmp_path):
    """A checkpoint recording the images trained on (train.py's trained.seen) exports them as
    the .weights header's seen, and metadata.json says so."""
    ckpt = load_checkpoint(exported[0])
    weights = save_checkpoint(tmp_path / "seen.pt", ckpt.model, NAMES, ckpt.preprocess,
                              trained={"seen": 4096})  # fmt: skip
    out = export_artifact(weights, tmp_path / "artifact", ["darknet"])
    rebuilt = build_model(cfg=(out / "model.cfg").read_text())
    assert load_darknet_weights(rebuilt, out / "model.weights").seen == 4096
    assert read_metadata(out)["darknet"]["seen"] == 4096
