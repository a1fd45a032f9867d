"""The export formats table: the Triton repository and the uint8-input ONNX it declares, and a
format added through the table alone (exported, validated, loaded, served)."""

from __future__ import annotations

import io
import shutil
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from google.protobuf import text_format
from PIL import Image
from tritonclient.grpc import model_config_pb2

from yolov4 import build_model, load_checkpoint, save_checkpoint
from yolov4.core.artifact import FORMATS, ArtifactFormat, read_metadata, register_format
from yolov4.core.preprocess import PreprocessConfig, image_to_tensor, preprocess, resize_image
from yolov4.errors import ExportError
from yolov4.export.artifact import export_artifact
from yolov4.export.formats import predictor_parity
from yolov4.export.job import export_onnx
from yolov4.export.onnx_uint8 import Uint8Model
from yolov4.export.onnx_uint8 import example as uint8_example
from yolov4.export.parity import PARITY_RTOL, SCORE_TOL
from yolov4.inference import Predictor
from yolov4.inference.backends import OpenVinoBackend
from yolov4.ops.letterbox import letterbox_params

NAMES = ["circle", "rectangle", "triangle"]
SIZE = [64, 96]
CONF = 0.3  # the randomised model gives some boxes above it

# ONNX TensorProto element types <-> Triton's DataType, from the two schemas' own enums
ONNX_TO_TRITON = {
    onnx.TensorProto.FLOAT: model_config_pb2.TYPE_FP32,
    onnx.TensorProto.INT64: model_config_pb2.TYPE_INT64,
    onnx.TensorProto.UINT8: model_config_pb2.TYPE_UINT8,
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, randomize):
    d = tmp_path_factory.mktemp("formats")
    model = randomize(build_model("yolov4-tiny", num_classes=3), seed=3)
    pre = {"input_size": SIZE, "mode": "letterbox", "channel_order": "bgr"}
    return load_checkpoint(save_checkpoint(d / "best.pt", model, NAMES, pre))


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "artifact"
    return export_artifact(checkpoint, out, ["triton", "onnx_uint8"], thresholds={"conf": CONF})


def _graph(path: Path) -> dict[str, tuple[int, list]]:
    g = onnx.load(str(path)).graph
    return {
        v.name: (
            v.type.tensor_type.elem_type,
            [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim],
        )
        for v in (*g.input, *g.output)
    }


def _images(n: int, seed: int) -> list[np.ndarray]:
    """Images at the network size: the letterbox is the identity, boxes stay in input pixels."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8) for _ in range(n)]


def test_triton_config_parses_with_tritons_schema_and_matches_the_graph(exported):
    meta = read_metadata(exported)
    t = meta["triton"]
    config = text_format.Parse((exported / t["config"]).read_text(), model_config_pb2.ModelConfig())
    assert config.name == t["model"] == Path(t["config"]).parent.name
    assert config.backend == "onnxruntime" and config.max_batch_size > 1
    assert config.HasField("dynamic_batching")
    graph = _graph(exported / t["model_file"])
    declared = [*config.input, *config.output]
    assert sorted(x.name for x in declared) == sorted(graph)  # every tensor, no other
    assert [x.name for x in config.output] == ["detections", "num_detections"]  # final boxes
    for x in declared:
        elem, dims = graph[x.name]
        assert ONNX_TO_TRITON[elem] == x.data_type, x.name
        assert dims[0] == "batch"  # the batch dimension Triton's batcher fills
        shape = list(x.reshape.shape) if x.HasField("reshape") else list(x.dims)
        assert shape == dims[1:], (x.name, shape, dims)
    assert list(config.input[0].dims) == [3, *SIZE]


def test_triton_batch_through_onnxruntime_equals_the_predictors_detections(exported, checkpoint):
    meta = read_metadata(exported)
    config = text_format.Parse(
        (exported / meta["triton"]["config"]).read_text(), model_config_pb2.ModelConfig()
    )
    session = ort.InferenceSession(str(exported / meta["triton"]["model_file"]))
    images = _images(3, seed=1)
    predictor = Predictor.from_checkpoint(checkpoint)
    batch = torch.stack([preprocess(im, predictor.preprocess_config)[0] for im in images]).numpy()
    names = [o.name for o in config.output]
    rows, counts = session.run(names, {config.input[0].name: batch})
    expected = predictor(images, conf=CONF)
    assert sum(len(d) for d in expected) > 0  # a real comparison
    scale = max(SIZE)
    for k, dets in enumerate(expected):
        assert int(counts[k]) == len(dets)
        got = rows[k, : counts[k]]
        order = np.argsort(-dets.scores)
        np.testing.assert_allclose(got[:, :4], dets.boxes[order], atol=PARITY_RTOL * scale)
        np.testing.assert_allclose(got[:, 4], dets.scores[order], atol=2e-3)
        np.testing.assert_array_equal(got[:, 5].astype(int), dets.class_ids[order])
        assert not rows[k, counts[k] :].any()
    client = (exported / meta["triton"]["client_metadata"]).read_text()
    assert '"channel_order": "bgr"' in client and '"class_names"' in client


def test_uint8_onnx_takes_letterboxed_pixels_and_equals_the_float_path(exported, checkpoint):
    meta = read_metadata(exported)
    info = meta["uint8_input"]
    assert info["input"]["layout"] == "NHWC" and info["in_graph"]["channel_order"] == "bgr"
    elem, dims = _graph(exported / info["file"])["images"]
    assert elem == onnx.TensorProto.UINT8 and dims == ["batch", *SIZE, 3]
    predictor = Predictor.from_checkpoint(checkpoint)
    config: PreprocessConfig = predictor.preprocess_config
    rng = np.random.default_rng(2)
    originals = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((40, 90), (70, 50))]
    canvases, floats = [], []
    for im in originals:  # the Predictor's own letterbox, then each model's input form
        params = letterbox_params(im.shape[:2], config.input_size, config.mode)
        canvases.append(resize_image(im, params, config.input_size, config.pad_value))
        floats.append(preprocess(im, config)[0])
    session = ort.InferenceSession(str(exported / info["file"]))
    got = session.run(None, {"images": np.stack(canvases)})[0]
    want = predictor.backend(torch.stack(floats)).numpy()
    scale = float(np.abs(want[..., :4]).max())
    assert got.shape == want.shape
    assert float(np.abs(got[..., :4] - want[..., :4]).max()) <= PARITY_RTOL * scale  # boxes
    assert float(np.abs(got[..., 4:] - want[..., 4:]).max()) <= SCORE_TOL  # probabilities
    assert meta["parity"]["model_uint8.onnx"]["max_score_diff"] <= SCORE_TOL


@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
def test_uint8_input_describes_the_resize_of_its_mode(mode):
    """A stretch artifact recorded "stretch to the input size, pad_value 127": stretch pads
    nothing, so its entry names no pad value."""
    from types import SimpleNamespace

    from yolov4.export.onnx_uint8 import describe

    config = PreprocessConfig(input_size=SIZE, mode=mode, pad_value=127)
    resized = describe(SimpleNamespace(preprocess=config, size=SIZE))["input"]["resized"]
    if mode == "letterbox":
        assert resized == "letterbox to the input size, pad_value 127"
    else:
        assert resized == "stretch to the input size, no border" and "pad" not in resized


class Probe(torch.nn.Module):
    """Returns what it is fed: the network input the uint8 graph makes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@pytest.mark.parametrize("order, scale", [("rgb", 1 / 255), ("bgr", 1 / 255), ("bgr", 0.5)])
def test_uint8_graph_feeds_the_network_what_image_to_tensor_makes(tmp_path, order, scale):
    """The preprocessing inside the graph, alone: channel order, NHWC -> NCHW and scale as
    :func:`image_to_tensor` applies them (a network's output may hardly move when they are
    wrong, so they are checked on their own)."""
    config = PreprocessConfig(input_size=(32, 48), channel_order=order, scale=scale)
    path = tmp_path / "probe.onnx"
    export_onnx(Uint8Model(Probe(), config), path, uint8_example([32, 48]), 17)
    images = uint8_example([32, 48], 2, torch.Generator().manual_seed(0)).numpy()
    got = ort.InferenceSession(str(path)).run(None, {"images": images})[0]
    want = torch.stack([image_to_tensor(im, config) for im in images]).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)


# -- a format added through the table alone -----------------------------------------------

DUMMY_FILE = "model_dummy.pt"


class PickledBackend:
    """Runs the whole pickled DecodedModel of ``model_dummy.pt`` (the dummy format)."""

    name = "pickled"
    precision = "fp32"

    def __init__(self, path: Path) -> None:
        self.model = torch.load(path, weights_only=False).eval()
        self.device = torch.device("cpu")

    @classmethod
    def load(cls, path, device, precision, threads):
        return cls(path)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(images)


@pytest.fixture
def dummy_format():
    fmt = register_format(
        ArtifactFormat(
            name="dummy",
            files=(DUMMY_FILE,),
            model_file=DUMMY_FILE,
            write=lambda job, folder: torch.save(job.model, folder / DUMMY_FILE),
            check=lambda job, folder: predictor_parity(FORMATS["dummy"], job, folder),
            backends={"pickled": PickledBackend},
            precisions={"fp32": ("pickled",)},
            describe=lambda job: {"dummy": {"file": DUMMY_FILE}},
        )
    )
    yield fmt
    del FORMATS["dummy"]


def test_a_format_registered_in_the_table_is_exported_validated_loaded_and_served(
    dummy_format, checkpoint, tmp_path
):
    from yolov4.serve import ServeSettings, create_app

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with")
        from fastapi.testclient import TestClient

    art = export_artifact(checkpoint, tmp_path / "export", ["dummy"], thresholds={"conf": CONF})
    meta = read_metadata(art)  # validated against the table: its files, runtime, precision
    assert meta["formats"] == ["dummy"] and meta["dummy"] == {"file": DUMMY_FILE}
    assert meta["precisions"] == {"fp32": {"file": DUMMY_FILE, "backends": ["pickled"]}}
    assert meta["parity"][DUMMY_FILE]["max_rel_diff"] <= PARITY_RTOL
    predictor = Predictor.from_artifact(art)  # the table's runtime for its fp32 file
    assert isinstance(predictor.backend, PickledBackend) and predictor.model_file == DUMMY_FILE
    image = _images(1, seed=4)[0]
    [want] = Predictor.from_checkpoint(checkpoint)(image, conf=CONF)
    [got] = predictor(image, conf=CONF)
    assert len(want) > 0
    np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-3)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "PNG")
    settings = ServeSettings(artifact_dir=str(art), backend="pickled")
    with TestClient(create_app(settings)) as c:
        r = c.post("/v1/detect", content=buf.getvalue(), params={"conf": CONF})
    assert r.status_code == 200, r.text
    boxes = np.array([d["box"] for d in r.json()["detections"]])
    np.testing.assert_allclose(np.sort(boxes, 0), np.sort(want.boxes, 0), atol=1e-2)


def test_the_table_refuses_a_format_that_takes_anothers_file_or_runtime():
    taken = ArtifactFormat("again", ("model.onnx",), write=print, check=dict)
    with pytest.raises(ExportError, match="files \\['model.onnx'\\] belong to 'onnx'"):
        register_format(taken)
    other = ArtifactFormat(
        "other", ("x.bin",), write=print, check=dict, backends={"onnxruntime": PickledBackend}
    )
    with pytest.raises(ExportError, match="backend 'onnxruntime' is 'onnx'"):
        register_format(other)
    assert "again" not in FORMATS and "other" not in FORMATS


def test_reexport_removes_the_old_repository_and_keeps_user_files_in_it(
    exported, checkpoint, tmp_path, monkeypatch
):
    monkeypatch.setattr(OpenVinoBackend, "available", staticmethod(lambda: False))  # speed
    out = tmp_path / "artifact"
    shutil.copytree(exported, out)
    (out / "triton" / "notes").mkdir()
    (out / "triton" / "notes" / "mine.txt").write_text("kept")
    (out / "triton" / "yolov4" / "mine.txt").write_text("kept too")
    export_artifact(checkpoint, out, ["onnx"])
    left = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert left == [
        "metadata.json",
        "model.onnx",
        "triton/notes/mine.txt",
        "triton/yolov4/mine.txt",
    ]
    assert read_metadata(out)["formats"] == ["onnx"]


def test_export_summary_names_every_file_written(exported):
    """export.py's per-file lines cover the uint8 graph and the Triton repository, and every
    file the metadata lists (model.onnx, which both build on, included)."""
    from yolov4.cli.export import _summary

    lines = _summary(read_metadata(exported))
    named = {line.strip().partition(":")[0] for line in lines}
    assert "model_uint8.onnx" in named and "triton/" in named
    for file in read_metadata(exported)["files"]:
        assert file in named or any(file.startswith(n) for n in named if n.endswith("/")), file


def test_nms_graph_parity_says_how_many_boxes_it_compared(checkpoint, exported, tmp_path):
    """A network that scores nothing over conf compares no box: the record says so, not a
    0 difference that reads as an exact match."""
    from yolov4.export.parity import NO_BOXES

    record = read_metadata(exported)["parity"]["triton/yolov4/1/model.onnx"]
    assert record["boxes_compared"] > 0 and "boxes" not in record
    nothing = export_artifact(checkpoint, tmp_path / "a", ["onnx_nms"], thresholds={"conf": 0.999})
    record = read_metadata(nothing)["parity"]["model_nms.onnx"]
    assert record["boxes_compared"] == 0 and record["boxes"] == NO_BOXES
