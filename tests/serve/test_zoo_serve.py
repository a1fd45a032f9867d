"""``yolov4-serve`` over an artifact of a zoo network other than yolov4-tiny (yolov4-tiny-3l: 3
heads, group routes): it reports the network's name and architecture, and answers as the
Predictor does on the same bytes."""

from __future__ import annotations

import pytest

from tests.serve.conftest import encode, scene, serve_here
from tests.zoo_cases import zoo_model
from yolov4 import save_checkpoint
from yolov4.export.artifact import export_artifact
from yolov4.inference import Predictor

NAMES = ["circle", "square", "cross"]
NAME = "yolov4-tiny-3l"
SIZE = [96, 128]


@pytest.fixture(scope="module")
def zoo_artifact(tmp_path_factory):
    d = tmp_path_factory.mktemp("zoo-serve")
    model = zoo_model(NAME, len(NAMES), SIZE, seed=5)
    ckpt = save_checkpoint(d / "best.pt", model, NAMES, {"input_size": SIZE})
    return export_artifact(ckpt, d / "export", ["onnx"])


def test_a_zoo_artifact_is_served_under_its_name(zoo_artifact, tmp_path):
    predictor = Predictor.from_artifact(zoo_artifact)
    data = encode(scene(240, 320, seed=2), "PNG")
    [dets] = predictor(data, conf=0.3)
    want = dets.to_dict()
    assert want["detections"]  # there is something to compare
    with serve_here(zoo_artifact, tmp_path / "server.log") as server, server.client() as c:
        info = c.get("/v1/model").json()
        ready = c.get("/readyz").json()
        r = c.post("/v1/detect", params={"conf": 0.3}, files={"file": ("a.png", data)})
        log = server.log_text()
    assert info["model"]["name"] == ready["model"]["name"] == NAME
    arch = info["architecture"]
    assert arch["name"] == NAME and arch["strides"] == [8, 16, 32] and len(arch["masks"]) == 3
    assert info["input_size"] == SIZE and info["class_names"] == NAMES
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"]["name"] == NAME
    assert {"detections": body["detections"], "image": body["image"]} == want
    assert f"ready: {NAME}" in log
