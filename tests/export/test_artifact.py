"""The serving artifact: metadata, parity, checksums; three backends agree through the Predictor."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from yolov4 import build_model, save_checkpoint
from yolov4.core.artifact import ARTIFACT_FORMAT, read_metadata, sha256
from yolov4.core.model import DecodedModel
from yolov4.errors import ExportError, YoloError
from yolov4.export import artifact as artifact_mod
from yolov4.export import formats as formats_mod
from yolov4.export.artifact import export_artifact
from yolov4.inference import Predictor

NAMES = ["circle", "rectangle", "triangle", "cross"]
PREPROCESS = {"input_size": [96, 128], "mode": "letterbox"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, randomize):
    d = tmp_path_factory.mktemp("artifact")
    torch.manual_seed(5)
    model = randomize(build_model("yolov4-tiny", num_classes=4), seed=5)
    ckpt = save_checkpoint(d / "best.pt", model, NAMES, PREPROCESS, metrics={"mAP": 0.5})
    return ckpt, export_artifact(ckpt, d / "export")


def test_metadata_describes_the_contract(exported):
    ckpt, art = exported
    meta = read_metadata(art)
    assert meta["format"] == ARTIFACT_FORMAT and meta["class_names"] == NAMES
    assert meta["input_size"] == [96, 128] and meta["opset"] >= 17
    p = meta["preprocess"]
    assert (p["mode"], p["pad_value"], p["channel_order"], p["input_size"]) == (
        "letterbox",
        114,
        "rgb",
        [96, 128],
    )
    assert p["scale"] == pytest.approx(1 / 255)
    assert meta["strides"] == [16, 32] and meta["anchors"][0] == [
        [23.0, 27.0],
        [37.0, 58.0],
        [81.0, 82.0],
    ]
    assert meta["thresholds"]["conf"] == 0.25 and meta["thresholds"]["iou"] == 0.45
    assert meta["output"]["shape"] == ["batch", 3 * (6 * 8 + 3 * 4), 9]
    assert set(meta["versions"]) >= {"yolov4", "torch", "onnx", "onnxruntime"}
    for name, info in meta["files"].items():
        assert info["sha256"] == sha256(art / name)
        assert meta["parity"][name]["max_rel_diff"] <= artifact_mod.PARITY_RTOL
    graph = onnx.load(str(art / "model.onnx")).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # dynamic batch


def test_the_preprocess_rules_in_the_metadata_reproduce_the_predictors_input(exported):
    """A consumer following metadata.json alone (preprocess and preprocess_rules) builds the
    network input of an odd-sized image exactly as the Predictor does."""
    import cv2

    from yolov4.core.preprocess import PreprocessConfig, preprocess

    meta = read_metadata(exported[1])
    p, rules = meta["preprocess"], meta["preprocess_rules"]
    assert "INTER_LINEAR" in rules["resize"] and "(W - w) // 2" in rules["letterbox"]
    image = np.random.default_rng(1).integers(0, 256, (173, 301, 3), np.uint8)  # RGB
    (h_net, w_net), (h0, w0) = p["input_size"], image.shape[:2]
    r = min(h_net / h0, w_net / w0)
    w, h = round(w0 * r), round(h0 * r)
    canvas = np.full((h_net, w_net, 3), p["pad_value"], np.uint8)
    x, y = (w_net - w) // 2, (h_net - h) // 2
    canvas[y : y + h, x : x + w] = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    mine = canvas.astype(np.float32).transpose(2, 0, 1) * p["scale"]
    theirs, _ = preprocess(image, PreprocessConfig.from_dict(p))
    np.testing.assert_array_equal(mine, theirs.numpy())


def test_the_torchscript_file_runs_without_autograd(exported):
    """torch.jit.load(model.torchscript)(x).numpy() raised "Can't call numpy() on Tensor that
    requires grad": its parameters are saved not requiring grad."""
    module = torch.jit.load(str(exported[1] / "model.torchscript"))
    assert not any(p.requires_grad for p in module.parameters())
    out = module(torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(0)))
    assert not out.requires_grad
    assert out.numpy().shape[0] == 2 and np.isfinite(out.numpy()).all()


def test_backends_agree(exported):
    ckpt, art = exported
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in ((97, 203), (64, 64), (150, 90))
    ]
    predictors = (
        Predictor.from_artifact(art),
        Predictor.from_artifact(art, backend="torchscript"),
        Predictor.from_checkpoint(ckpt),
    )
    # raw outputs agree within the tolerance the export itself enforces
    batch = torch.rand(3, 3, *predictors[0].input_size, generator=torch.Generator().manual_seed(1))
    raw = [p.backend(batch).float().cpu() for p in predictors]
    scale = float(raw[-1].abs().max())
    for name, out in zip(("onnxruntime", "torchscript"), raw[:2], strict=True):
        worst = float((out - raw[-1]).abs().max())
        assert worst <= artifact_mod.PARITY_RTOL * scale, (name, worst, scale)
    results = [p(images, conf=0.3) for p in predictors]
    assert sum(len(d) for d in results[0]) > 0  # a real comparison
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert len(a) == len(b)
            np.testing.assert_allclose(a.boxes, b.boxes, atol=1.0)
            assert a.class_names == b.class_names and (a.class_ids == b.class_ids).all()


def test_altered_or_unknown_artifacts_are_refused(exported, tmp_path):
    _, art = exported
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(art, copy)
    with open(copy / "model.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ExportError, match="model.onnx does not match its sha256"):
        Predictor.from_artifact(copy)
    meta = json.loads((copy / "metadata.json").read_text())
    meta["format"] = "yolov4.artifact/99"
    (copy / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ExportError, match="is not 'yolov4.artifact/1'"):
        Predictor.from_artifact(copy)
    with pytest.raises(ExportError, match="no metadata.json"):
        Predictor.from_artifact(tmp_path)


def test_a_backend_checks_only_the_files_it_reads(exported, tmp_path):
    """model.onnx corrupt or absent: TorchScript loads from model.torchscript alone (what a
    deployment shipping only that file and metadata.json holds); onnxruntime is refused, naming
    model.onnx; a corrupt model.torchscript is refused for TorchScript."""
    import shutil

    _, art = exported
    copy = tmp_path / "copy"
    shutil.copytree(art, copy)
    image = np.zeros((96, 128, 3), np.uint8)
    expected = Predictor.from_artifact(art, backend="torchscript").backend(
        torch.zeros(1, 3, 96, 128)
    )
    with open(copy / "model.onnx", "ab") as f:
        f.write(b"\0")
    for state in ("corrupt", "absent"):
        loaded = Predictor.from_artifact(copy, backend="torchscript")
        assert loaded.model_file == "model.torchscript"
        assert torch.equal(loaded.backend(torch.zeros(1, 3, 96, 128)), expected)
        loaded(image)
        why = "does not match its sha256" if state == "corrupt" else "is listed in .* but missing"
        with pytest.raises(ExportError, match=f"model.onnx {why}"):
            Predictor.from_artifact(copy)
        (copy / "model.onnx").unlink(missing_ok=True)  # corrupt, then absent
    with open(copy / "model.torchscript", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ExportError, match="model.torchscript does not match its sha256"):
        Predictor.from_artifact(copy, backend="torchscript")


def test_a_file_that_disagrees_fails_the_export(exported, tmp_path, monkeypatch):
    ckpt, _ = exported
    original = formats_mod.export_onnx

    def wrong_model(model, path, example, opset):  # exports another network
        other = DecodedModel(build_model("yolov4-tiny", num_classes=4)).eval()
        original(other, path, example, opset)

    monkeypatch.setattr(formats_mod, "export_onnx", wrong_model)
    with pytest.raises(ExportError, match="model.onnx disagrees with PyTorch"):
        export_artifact(ckpt, tmp_path / "export", formats=["onnx"])
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_bad_export_arguments(exported, tmp_path):
    ckpt, _ = exported
    with pytest.raises(ExportError, match="formats"):
        export_artifact(ckpt, tmp_path / "e", formats=["tflite"])
    with pytest.raises(ExportError, match="multiples of 32"):
        export_artifact(ckpt, tmp_path / "e", input_size=[100, 100])


def test_mish_exports_as_vectorised_ops_with_the_same_values(tmp_path):
    """yolov4's Mish leaves ONNX without onnxruntime's scalar Softplus, and keeps its values."""
    import onnxruntime as ort
    import torch.nn.functional as F

    from yolov4.models.layers import Mish, mish_onnx

    wide = torch.cat([torch.linspace(-100, 100, 20001), torch.randn(10000) * 5])
    torch.testing.assert_close(mish_onnx(wide), F.mish(wide), atol=2e-6, rtol=1e-5)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), Mish()).eval()
    x = torch.randn(2, 3, 16, 16) * 4
    path = tmp_path / "mish.onnx"
    torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=17, input_names=["x"])
    assert "Softplus" not in {n.op_type for n in onnx.load(str(path)).graph.node}
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": x.numpy()}
    )[0]
    with torch.no_grad():
        want = F.mish(net[0](x))
    np.testing.assert_allclose(got, want.numpy(), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "conf, max_det",
    [
        pytest.param(0.05, 20, marks=pytest.mark.slow),
        (0.25, 300),
        pytest.param(0.999, 10, marks=pytest.mark.slow),
    ],
)
def test_nms_graph_has_fixed_outputs_and_matches_postprocess(tmp_path, randomize, conf, max_det):
    """model_nms.onnx (onnxruntime's NonMaxSuppression) == model.onnx + ops.postprocess, padded
    to max_det rows with a count; full, partly filled and empty outputs; dynamic batch."""
    import onnxruntime as ort

    from yolov4.ops.postprocess import postprocess

    torch.manual_seed(7)
    model = randomize(build_model("yolov4-tiny", num_classes=4), seed=7)
    with torch.no_grad():  # hundreds of boxes above 0.25, as an early-trained model
        for head in model.head_convs():
            head.conv.bias.view(model.config.num_anchors, -1)[:, 4:].uniform_(-3, 1)
    ckpt = save_checkpoint(tmp_path / "m.pt", model, NAMES, PREPROCESS)
    thresholds = {"conf": conf, "iou": 0.45, "max_det": max_det}
    art = export_artifact(ckpt, tmp_path / "export", ["onnx", "onnx_nms"], thresholds=thresholds)
    meta = read_metadata(art)
    assert meta["nms_graph"]["file"] == "model_nms.onnx" and meta["nms_graph"]["max_det"] == max_det
    assert meta["nms_graph"]["outputs"]["detections"] == ["batch", max_det, 6]
    plain = ort.InferenceSession(str(art / "model.onnx"), providers=["CPUExecutionProvider"])
    nms = ort.InferenceSession(str(art / "model_nms.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((3, 3, 96, 128), dtype=np.float32)
    dets, counts = nms.run(None, {"images": x})
    assert dets.shape == (3, max_det, 6) and counts.shape == (3,) and counts.dtype == np.int64
    (pred,) = plain.run(None, {"images": x})
    want = postprocess(
        torch.from_numpy(pred), (96, 128), conf_thresh=conf, iou_thresh=0.45, max_det=max_det
    )
    for k in range(3):
        n = int(counts[k])
        assert n == min(len(want[k]), max_det)
        np.testing.assert_allclose(dets[k, :n], want[k][:n].numpy(), atol=1e-3, rtol=1e-4)
        assert not dets[k, n:].any()
    if conf == 0.999:
        assert not counts.any()
    elif max_det == 20:
        assert (counts == max_det).all()
    else:
        assert (counts > 0).all() and (counts < max_det).all()


class _Lit(torch.nn.Module):
    """A decoded model whose detections are set by its input: box ``k`` (of 6 apart, class 1)
    has objectness ``images[:, 0, 0, k]``."""

    def forward(self, images):
        n = 6
        centres = torch.arange(n, dtype=torch.float32) * 10 + 5
        boxes = torch.stack([centres, centres, torch.full((n,), 8.0), torch.full((n,), 8.0)], 1)
        classes = torch.zeros(images.shape[0], n, 3)
        classes[..., 1] = 1.0
        objectness = images[:, 0, 0, :n, None]
        return torch.cat([boxes.expand(images.shape[0], n, 4), objectness, classes], -1)


def _lit(k: int, batch: int) -> torch.Tensor:
    x = torch.zeros(batch, 3, 64, 64)
    x[:, 0, 0, :k] = 0.9
    return x


@pytest.mark.parametrize("max_det", [10, 2])
def test_nms_graph_does_not_keep_the_detection_count_it_was_traced_with(tmp_path, max_det):
    """Traced on an input with 0, 1, 2 or 3 detections, the graph runs any count, any batch
    (traced on one detection, a boolean-mask index fixed a Reshape to it)."""
    import onnxruntime as ort

    from yolov4.core.postprocess import PostprocessConfig
    from yolov4.export.job import export_onnx
    from yolov4.export.onnx_nms import NmsModel

    model = NmsModel(_Lit(), PostprocessConfig(conf=0.25, iou=0.45, max_det=max_det))
    for traced in range(4):
        path = tmp_path / f"nms{traced}.onnx"
        export_onnx(model, path, _lit(traced, 1), 17, ("detections", "num_detections"))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        for k in range(5):
            for batch in (1, 2):
                dets, counts = session.run(None, {"images": _lit(k, batch).numpy()})
                want, want_counts = model(_lit(k, batch))
                assert (counts == min(k, max_det)).all() and (counts == want_counts.numpy()).all()
                np.testing.assert_allclose(dets, want.numpy(), atol=1e-6)


def _copy(art, tmp_path, name="copy"):
    import shutil

    copy = tmp_path / name
    shutil.copytree(art, copy)
    return copy


def _with_metadata(art, tmp_path, edit, name="copy"):
    copy = _copy(art, tmp_path, name)
    meta = json.loads((copy / "metadata.json").read_text())
    meta = edit(meta)
    (copy / "metadata.json").write_text(json.dumps(meta))
    return copy


def _set(path: str | tuple[str, ...], value):
    """An edit setting ``a.b`` (or the keys of a tuple) to ``value`` (``...`` deletes the key)."""

    def edit(meta):
        *parents, key = path.split(".") if isinstance(path, str) else path
        node = meta
        for p in parents:
            node = node[p]
        if value is ...:
            del node[key]
        else:
            node[key] = value
        return meta

    return edit


MALFORMED = {
    "not an object": (lambda m: [m], r"expected a JSON object, found list"),
    "files not a mapping": (_set("files", ["model.onnx"]), r"'files'.*expected an object"),
    "file without sha256": (
        _set(("files", "model.onnx"), {"bytes": 3}),
        r"'files\.model\.onnx\.sha256'",
    ),
    "sha256 not a digest": (
        _set(("files", "model.onnx", "sha256"), 12),
        r"'files\.model\.onnx\.sha256'.*found 12",
    ),
    "file outside the artifact": (
        _set("files", {"../best.pt": {"sha256": "0" * 64}}),
        r"'files'.*relative paths inside the artifact.*'\.\./best\.pt'",
    ),
    "file out through a folder": (
        _set("files", {"triton/../../best.pt": {"sha256": "0" * 64}}),
        r"'files'.*relative paths inside the artifact.*'triton/\.\./\.\./best\.pt'",
    ),
    "absolute file": (
        _set("files", {"/etc/passwd": {"sha256": "0" * 64}}),
        r"'files'.*relative paths inside the artifact.*'/etc/passwd'",
    ),
    "unknown format": (_set("formats", ["tflite"]), r"'formats'.*names among.*'tflite'"),
    "format without its files": (
        _set("formats", ["onnx", "triton"]),
        r"format 'triton' is listed under 'formats' but its files",
    ),
    "no class names": (_set("class_names", ...), r"'class_names'.*missing"),
    "empty class names": (_set("class_names", []), r"'class_names'.*non-empty list of strings"),
    "class name not a string": (
        _set("class_names", ["a", 2, "c", "d"]),
        r"'class_names\[1\]'.*found 2",
    ),
    "repeated class names": (
        _set("class_names", ["a", "a", "c", "d"]),
        r"class_names: class names must be unique, \['a'\] repeat",
    ),
    "no preprocess": (_set("preprocess", ...), r"'preprocess'.*missing"),
    "preprocess not an object": (
        _set("preprocess", "letterbox"),
        r"'preprocess'.*expected an object",
    ),
    "bad preprocess mode": (_set("preprocess.mode", "zoom"), r"'preprocess'.*mode"),
    "input size of 3": (_set("input_size", [96, 128, 3]), r"'input_size'.*got \[96, 128, 3\]"),
    "input size not numbers": (_set("input_size", ["96", 128]), r"'input_size'.*multiples of 32"),
    "input size not /32": (_set("input_size", [100, 128]), r"'input_size'.*got \[100, 128\]"),
    "no model": (_set("model", ...), r"'model'.*missing"),
    "num_classes a string": (_set("model.num_classes", "4"), r"'model\.num_classes'.*found '4'"),
    "thresholds not an object": (_set("thresholds", 0.5), r"'thresholds'.*expected an object"),
    "conf a string": (
        _set("thresholds.conf", "high"),
        r"'thresholds'.*conf must be a number in \[0, 1\], got 'high'",
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_metadata_is_an_export_error_naming_the_key(exported, tmp_path, case):
    edit, match = MALFORMED[case]
    copy = _with_metadata(exported[1], tmp_path, edit)
    with pytest.raises(ExportError, match=match) as e:
        Predictor.from_artifact(copy)
    assert "metadata.json" in str(e.value)


def test_class_names_are_checked_against_the_model_wherever_they_meet(exported, tmp_path):
    ckpt, art = exported
    # an artifact whose metadata lists 3 names for a 4-class model (the files are untouched)
    copy = _with_metadata(art, tmp_path, _set("class_names", NAMES[:3]))
    with pytest.raises(ExportError, match=r"3 class names.*4 classes"):
        Predictor.from_artifact(copy)
    # ... and metadata that agrees with itself but not with the model file's outputs
    both = _with_metadata(
        art,
        tmp_path,
        lambda m: {**m, "class_names": NAMES[:3], "model": {**m["model"], "num_classes": 3}},
        "both",
    )
    with pytest.raises(ExportError, match=r"3 class names.*model\.onnx.*4 classes"):
        Predictor.from_artifact(both)
    # export: a loaded checkpoint whose names were changed after loading
    import dataclasses

    from yolov4.core.checkpoint import load_checkpoint

    bad = dataclasses.replace(load_checkpoint(ckpt), class_names=NAMES[:3])
    with pytest.raises(ExportError, match=r"3 class names for a model with num_classes=4"):
        export_artifact(bad, tmp_path / "e")
    assert not (tmp_path / "e").exists()
    # a checkpoint file edited by hand
    raw = torch.load(ckpt, weights_only=True)
    raw["class_names"] = NAMES[:3]
    torch.save(raw, tmp_path / "three.pt")
    with pytest.raises(YoloError, match=r"names"):
        Predictor.from_checkpoint(tmp_path / "three.pt")

    # a Predictor built by hand: a class id past the names is an error, not an IndexError
    def four(x):  # one box of class 3
        return torch.tensor([[[10.0, 10.0, 5.0, 5.0, 0.9, 0, 0, 0, 0.9]]]).expand(len(x), 1, 9)

    from yolov4.core.preprocess import PreprocessConfig

    p = Predictor(four, NAMES[:3], PreprocessConfig(input_size=(32, 32)))
    with pytest.raises(ExportError, match=r"class index 3.*3 class names"):
        p(np.zeros((32, 32, 3), np.uint8))


def test_metadata_of_another_input_size_than_the_graphs_is_named(exported, tmp_path):
    """metadata.json edited to 64x64 for a graph of 96x128: yolov4-serve and the Predictor
    stopped in onnxruntime's own 20-line error about the input shape."""
    _, art = exported

    def resized(m):
        return {**m, "input_size": [64, 64], "preprocess": {**m["preprocess"], "input_size": [64, 64]}}  # fmt: skip

    copy = _with_metadata(art, tmp_path, resized, "resized")
    with pytest.raises(
        ExportError, match=r"model.onnx takes 128x96 \(WxH\) images but metadata.json says"
    ):
        Predictor.from_artifact(copy)
    # the TorchScript network is fully convolutional: it runs at the edited size
    assert Predictor.from_artifact(copy, backend="torchscript").preprocess_config.input_size == (64, 64)  # fmt: skip


@pytest.mark.parametrize("backend", ["onnxruntime", "torchscript"])
def test_an_artifact_predictor_says_how_to_use_it_in_another_process(exported, backend):
    """Pickling one (spawn-mode workers) failed in each runtime's own words ("cannot pickle
    'InferenceSession'"); a checkpoint Predictor pickles."""
    import pickle

    _, art = exported
    with pytest.raises(TypeError, match=rf"Predictor on {backend} cannot be pickled .* build it"):
        pickle.dumps(Predictor.from_artifact(art, backend=backend))


def test_non_finite_outputs_fail_the_export(exported, tmp_path):
    """A NaN weight: max(0.0, nan) == 0.0 must not report a difference of 0."""
    ckpt, _ = exported
    import copy as copy_mod
    import dataclasses

    from yolov4.core.checkpoint import load_checkpoint

    loaded = load_checkpoint(ckpt)
    model = copy_mod.deepcopy(loaded.model)
    with torch.no_grad():
        model.head_convs()[0].conv.weight[0, 0, 0, 0] = float("nan")
    nan_ckpt = dataclasses.replace(loaded, model=model)
    for formats in (["onnx"], ["torchscript"], ["onnx_nms"]):
        with pytest.raises(ExportError, match=r"model\S*\.\w+: \d[\d,]* non-finite values") as e:
            export_artifact(nan_ckpt, tmp_path / "e", formats=formats)
        assert "NaN or infinite" in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_export_leaves_the_callers_model_as_it_was(tmp_path):
    """A loaded Checkpoint handed to export_artifact keeps its dtype, BN layers and weights."""
    from yolov4.core.checkpoint import load_checkpoint

    model = build_model("yolov4-tiny", num_classes=2, input_size=[64, 64])
    path = save_checkpoint(tmp_path / "m.pt", model, ["a", "b"])
    ckpt = load_checkpoint(path)
    ckpt.model.double()
    before = {k: v.clone() for k, v in ckpt.model.state_dict().items()}
    export_artifact(ckpt, tmp_path / "export", formats=["onnx"])
    after = ckpt.model.state_dict()
    assert after.keys() == before.keys()  # BN not folded into the caller's model
    assert all(v.dtype == torch.float64 for v in after.values() if v.is_floating_point())
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_nms_graph_refuses_a_non_iou_nms(exported, tmp_path):
    with pytest.raises(ExportError, match="NonMaxSuppression"):
        export_artifact(exported[0], tmp_path / "x", ["onnx_nms"], thresholds={"nms_kind": "diou"})
    assert not (tmp_path / "x").exists()
