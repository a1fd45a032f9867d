"""export.py's ``darknet`` format: ``model.cfg`` + ``model.weights`` that OpenCV's darknet
importer reads as the checkpoint's network, checked at export; a model that cannot be written
so is refused before anything is written, and an artifact already there is kept."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.models.test_cfg import BASE, nth
from tests.models.test_zoo import boost_heads_, opencv_outputs
from tests.test_darknet import assert_maps_equal
from yolov4 import build_model, load_checkpoint, save_checkpoint
from yolov4.cli import export as export_cli
from yolov4.core.artifact import FORMATS, read_metadata
from yolov4.darknet import load_darknet_weights, read_darknet_cfg
from yolov4.errors import ExportError
from yolov4.export import darknet_format
from yolov4.export.artifact import export_artifact

NAMES = ["a", "b", "c"]
SIZE = [64, 96]


def checkpoint(tmp_path, randomize, **preprocess):
    torch.manual_seed(2)
    model = boost_heads_(randomize(build_model("yolov4-tiny", num_classes=len(NAMES)), seed=2))
    pre = {"input_size": SIZE, "mode": "letterbox", **preprocess}
    return save_checkpoint(tmp_path / "weights" / "best.pt", model, NAMES, pre)


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


def test_metadata_records_the_files_and_their_check(exported):
    _, out = exported
    meta = read_metadata(out)
    assert meta["formats"] == ["onnx", "darknet"]
    assert {"model.cfg", "model.weights", "model.onnx"} <= set(meta["files"])
    assert meta["darknet"]["input_size"] == SIZE and meta["darknet"]["letter_box"] is True
    check = meta["parity"]["model.weights"]
    assert check["runtime"].startswith("OpenCV ") and check["max_rel_diff"] <= 1e-3
    assert meta["precisions"]["fp32"]["file"] == "model.onnx"  # the Predictor's model
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
    with pytest.raises(ExportError, match="model.weights disagrees with PyTorch.*read by "
                       "OpenCV's darknet importer"):  # fmt: skip
        export_artifact(weights, tmp_path / "export", ["darknet"])
    assert not (tmp_path / "export").exists()


def test_export_py_writes_the_darknet_files_of_a_checkpoint(exported, tmp_path, capsys):
    from hydra import compose, initialize_config_module

    weights, _ = exported
    out = tmp_path / "artifact"
    with initialize_config_module(config_module="yolov4.configs", version_base="1.3"):
        cfg = compose("export", overrides=[f"paths.output_dir={tmp_path}", f"output={out}",
                                           f"checkpoint={weights}", "formats=[darknet]"])  # fmt: skip
    assert export_cli.export(cfg) == out
    assert sorted(p.name for p in out.iterdir()) == ["metadata.json", "model.cfg", "model.weights"]
    printed = capsys.readouterr().out
    assert f"-> {out} (model.cfg, model.weights)" in printed
    assert "model.cfg + model.weights: fp32 darknet files" in printed
