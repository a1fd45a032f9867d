"""The service's answers over real HTTP: identical to the Predictor on the same bytes, for one
image, a batch, every query parameter and every accepted image kind; the other endpoints."""

from __future__ import annotations

import asyncio
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.serve.conftest import LOW_CONF, NAMES, encode, scene

JPEG = {"Content-Type": "image/jpeg"}


def expected(predictor, data: bytes, **params) -> dict:
    [dets] = predictor(data, **params)
    return dets.to_dict()


def strip(body: dict) -> dict:
    return {"detections": body["detections"], "image": body["image"]}


def test_detect_matches_the_predictor_multipart_and_raw(server, predictor):
    data = encode(scene(480, 640), "JPEG", quality=92)
    want = expected(predictor, data, conf=LOW_CONF)
    assert len(want["detections"]) > 10  # there is something to compare
    with server.client() as c:
        multipart = c.post("/v1/detect", params={"conf": LOW_CONF}, files={"file": ("a.jpg", data)})
        raw = c.post("/v1/detect", params={"conf": LOW_CONF}, content=data, headers=JPEG)
    for r in (multipart, raw):
        assert r.status_code == 200, r.text
        body = r.json()
        assert strip(body) == want  # same boxes, in the uploaded image's pixels, same order
        assert body["image"] == {"width": 640, "height": 480}
        assert body["model"]["name"] == "yolov4-tiny" and len(body["model"]["sha256"]) == 16
        assert {"queue", "decode", "preprocess", "model", "postprocess", "total"} <= set(
            body["timing_ms"]
        )
        for d in body["detections"]:
            x1, y1, x2, y2 = d["box"]
            assert 0 <= x1 <= x2 <= 640 and 0 <= y1 <= y2 <= 480
            assert d["class_name"] == NAMES[d["class_id"]] and d["score"] >= LOW_CONF


@pytest.mark.parametrize(
    "params",
    [
        {},  # the artifact's default thresholds
        {"conf": 0.3, "iou": 0.2},
        {"conf": LOW_CONF, "max_det": 5},
        {"conf": LOW_CONF, "classes": "0,2"},
        {"conf": LOW_CONF, "classes": "circle,cross"},  # by name
        {"conf": LOW_CONF, "classes": "square, 0"},  # names and ids mixed
    ],
)
def test_query_parameters_reach_the_predictor(server, predictor, params):
    data = encode(scene(300, 500, seed=1), "PNG")
    kwargs = dict(params)
    if "classes" in kwargs:
        tokens = [c.strip() for c in kwargs["classes"].split(",")]
        kwargs["classes"] = [int(c) if c.isdigit() else NAMES.index(c) for c in tokens]
    want = expected(predictor, data, **kwargs)
    with server.client() as c:
        r = c.post("/v1/detect", params=params, files={"file": ("b.png", data)})
    assert r.status_code == 200, r.text
    assert strip(r.json()) == want
    if "max_det" in params:
        assert len(want["detections"]) == 5
    if "classes" in params:
        assert {d["class_id"] for d in want["detections"]} <= set(kwargs["classes"])


def image_kinds() -> dict[str, bytes]:
    rgb = scene(240, 320, seed=2)
    gray = rgb.mean(2).astype(np.uint8)
    return {
        "grayscale png": encode(gray, "PNG"),
        "rgba png": encode(np.dstack([rgb, np.full(gray.shape, 200, np.uint8)]), "PNG"),
        "16-bit png": encode(Image.fromarray(gray.astype(np.uint16) * 257), "PNG"),
        "palette png": encode(Image.fromarray(rgb).convert("P"), "PNG"),
        "bmp": encode(rgb, "BMP"),
        "tiff": encode(rgb, "TIFF"),
        "webp": encode(rgb, "WEBP", lossless=True),
    }


@pytest.mark.parametrize("kind", list(image_kinds()))
def test_every_image_kind_is_served_like_the_predictor(server, predictor, kind):
    data = image_kinds()[kind]
    with server.client() as c:
        r = c.post("/v1/detect", params={"conf": LOW_CONF}, files={"file": ("x", data)})
    assert r.status_code == 200, r.text
    assert strip(r.json()) == expected(predictor, data, conf=LOW_CONF)
    assert r.json()["image"] == {"width": 320, "height": 240}


def test_exif_rotated_photo_is_answered_in_the_displayed_orientation(server, predictor):
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° CW to display
    data = encode(scene(240, 320, seed=3), "JPEG", exif=exif, quality=95)
    with server.client() as c:
        r = c.post("/v1/detect", params={"conf": LOW_CONF}, content=data, headers=JPEG)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["image"] == {"width": 240, "height": 320}  # as a viewer shows it
    assert strip(body) == expected(predictor, data, conf=LOW_CONF)
    assert all(d["box"][2] <= 240 and d["box"][3] <= 320 for d in body["detections"])


def test_batch_matches_the_predictor_image_by_image(server, predictor):
    datas = [
        encode(scene(h, w, seed=i), fmt)
        for i, (h, w, fmt) in enumerate([(480, 640, "JPEG"), (200, 700, "PNG"), (512, 384, "JPEG")])
    ]
    want = [d.to_dict() for d in predictor(datas, conf=LOW_CONF)]
    files = [("files", (f"{i}.img", d)) for i, d in enumerate(datas)]
    with server.client() as c:
        r = c.post("/v1/detect/batch", params={"conf": LOW_CONF}, files=files)
    assert r.status_code == 200, r.text
    assert r.json()["results"] == want


def test_render_returns_the_image_with_boxes(server):
    data = encode(scene(240, 320), "PNG")
    with server.client() as c:
        r = c.post(
            "/v1/detect", params={"render": "true", "conf": 0.3}, files={"file": ("x", data)}
        )
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    im = Image.open(io.BytesIO(r.content))
    assert im.format == "JPEG" and im.size == (320, 240)


def test_model_health_ready_docs_metrics(server, artifact):
    with server.client(headers={"X-Request-ID": "abc-123"}) as c:
        model = c.get("/v1/model")
        health, ready = c.get("/healthz"), c.get("/readyz")
        docs, schema = c.get("/docs"), c.get("/openapi.json")
        metrics = c.get("/metrics")
        missing = c.get("/v2/nothing")
    body = model.json()
    assert body["class_names"] == NAMES and body["input_size"] == [416, 416]
    assert body["thresholds"]["conf"] == 0.25 and body["preprocess"]["mode"] == "letterbox"
    assert body["limits"]["max_batch"] == 8 and body["num_classes"] == 3
    arch = body["architecture"]  # a zoo model: its cfg ships with the package
    assert arch["name"] == "yolov4-tiny" and "cfg" not in arch
    assert arch["cfg_sha256"] is None and arch["cfg_bytes"] is None
    assert model.headers["x-request-id"] == "abc-123"
    assert health.json() == {"status": "ok"} and ready.json()["status"] == "ready"
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    paths = schema.json()["paths"]
    assert {"/v1/detect", "/v1/detect/batch", "/v1/model", "/healthz", "/readyz"} <= set(paths)
    assert "multipart/form-data" in paths["/v1/detect"]["post"]["requestBody"]["content"]
    text = metrics.text
    assert metrics.headers["content-type"].startswith("text/plain")
    for name in (
        "# TYPE yolov4_http_requests_total counter",
        'yolov4_http_requests_total{method="GET",path="/v1/model",status="200"}',
        "# TYPE yolov4_http_request_duration_seconds histogram",
        'yolov4_http_request_duration_seconds_bucket{le="+Inf"}',
        "yolov4_inference_queue_depth 0",
        "yolov4_ready 1",
    ):
        assert name in text
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert "abc-123 GET /v1/model 200" in server.log_text()  # access log with the request id


def test_32_concurrent_requests_all_succeed_with_consistent_results(server, predictor):
    datas = [encode(scene(360, 480, seed=10 + i), "JPEG") for i in range(4)]
    want = [expected(predictor, d, conf=0.05) for d in datas]

    async def one(client: httpx.AsyncClient, i: int):
        return i % 4, await client.post(
            "/v1/detect", params={"conf": 0.05}, files={"file": ("x.jpg", datas[i % 4])}
        )

    async def run():
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as c:
            return await asyncio.gather(*(one(c, i) for i in range(32)))

    results = asyncio.run(run())
    assert [r.status_code for _, r in results] == [200] * 32
    for k, r in results:
        assert strip(r.json()) == want[k]
