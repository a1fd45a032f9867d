"""yolov4-serve over an artifact with an INT8 model: it serves the precision the
artifact selects, or the one --precision names, in the runtime that runs it, reports both in
every answer and in /v1/model, and refuses a runtime that cannot run the precision."""

from __future__ import annotations

import pytest

from tests.serve.conftest import LOW_CONF, encode, scene, serve
from yolov4.core.artifact import PRECISIONS
from yolov4.inference import Predictor
from yolov4.inference.backends import BACKENDS
from yolov4.serve import __main__ as cli
from yolov4.serve import settings

JPEG = {"Content-Type": "image/jpeg"}


def check_served(server, predictor, backend: str, precision: str, file: str) -> None:
    data = encode(scene(240, 320, seed=2), "JPEG", quality=92)
    [want] = predictor(data, conf=LOW_CONF)
    with server.client() as c:
        info = c.get("/v1/model").json()
        r = c.post("/v1/detect", params={"conf": LOW_CONF}, content=data, headers=JPEG)
    assert r.status_code == 200, r.text
    model = info["model"]
    assert (model["backend"], model["precision"]) == (backend, precision)
    assert model["sha256"] == info["files"][file]["sha256"][:16]
    assert info["default_precision"] == "int8"
    assert info["precisions"]["int8"]["accuracy"]["gate_points"] == 1.0
    body = r.json()
    assert body["model"] == model
    assert body["detections"] == want.to_dict()["detections"]
    assert len(body["detections"]) > 0


@pytest.mark.slow
def test_serves_the_artifacts_int8_in_openvino(int8_artifact, tmp_path):
    predictor = Predictor.from_artifact(int8_artifact)
    with serve(int8_artifact, tmp_path / "server.log") as server:
        check_served(server, predictor, "openvino", "int8", "model_int8.xml")


@pytest.mark.slow  # a second server start (~10 s idle, ~50 s on a busy 2-core machine)
def test_serves_fp32_in_openvino_when_told(int8_artifact, tmp_path):
    predictor = Predictor.from_artifact(int8_artifact, backend="openvino", precision="fp32")
    args = ("--backend", "openvino", "--precision", "fp32", "--threads", "2")
    with serve(int8_artifact, tmp_path / "server.log", *args) as server:
        check_served(server, predictor, "openvino", "fp32", "model.onnx")


def test_refuses_a_runtime_that_cannot_run_the_precision(int8_artifact, capsys):
    code = cli.main([str(int8_artifact), "--backend", "onnxruntime"])
    assert code == 2
    err = capsys.readouterr().err
    assert "int8 model runs in ['openvino'], not 'onnxruntime'" in err


def test_cli_choices_are_the_packages():
    """The settings keep their own copies (a light --help); they must not drift."""
    assert settings.BACKENDS == BACKENDS and settings.PRECISIONS == PRECISIONS
    args = cli.parse_args(["x", "--threads", "2"])
    assert (args.backend, args.precision, args.runtime_threads) == (None, None, None)
    with pytest.raises(SystemExit):
        cli.parse_args(["x", "--runtime-threads", "0"])
