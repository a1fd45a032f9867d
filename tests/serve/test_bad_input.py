"""Every bad input gets its 4xx with ``{"error": {"code", "message"}}`` naming the problem, and
the service keeps serving: a valid request right after each one succeeds."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from tests.serve.conftest import MAX_BATCH_BYTES, MAX_BYTES, MAX_PIXELS, encode, scene
from yolov4.serve.settings import ServeSettings

GOOD = encode(scene(240, 320), "JPEG")
NEAR_LIMIT = b"\xff\xd8\xff" + bytes(MAX_BYTES - 100_000)  # one image under the per-image limit
JPEG = {"Content-Type": "image/jpeg"}


def raw(data: bytes, content_type: str | None = "image/jpeg", **params) -> dict:
    headers = {"Content-Type": content_type} if content_type else {}
    return {"content": data, "headers": headers, "params": params}


def upload(data: bytes, name: str = "x.jpg", **params) -> dict:
    return {"files": {"file": (name, data)}, "params": params}


def bomb() -> bytes:
    """A PNG of a few kB whose header says 2000x2000 = 4M pixels (over MAX_PIXELS)."""
    side = int((MAX_PIXELS * 4 / 3) ** 0.5) + 1
    return encode(Image.new("L", (side, side)), "PNG")


def truncated_png() -> bytes:
    data = encode(scene(120, 160), "PNG")
    return data[: len(data) // 2]


CASES = {  # name: (path, request kwargs, status, error code, words in the message)
    "empty body": ("/v1/detect", raw(b""), 400, "empty_body", "empty"),
    "empty file": ("/v1/detect", upload(b""), 400, "empty_image", "0 bytes"),
    "non-image bytes": (
        "/v1/detect",
        raw(b"hello, this is text" * 10),
        415,
        "unsupported_format",
        "JPEG",
    ),
    "truncated jpeg": (
        "/v1/detect",
        raw(GOOD[: len(GOOD) // 2]),
        400,
        "invalid_image",
        "truncated",
    ),
    "truncated png": (
        "/v1/detect",
        upload(truncated_png(), "t.png"),
        400,
        "invalid_image",
        "t.png",
    ),
    "gif": (
        "/v1/detect",
        upload(encode(scene(40, 40), "GIF"), "a.gif"),
        415,
        "unsupported_format",
        "GIF",
    ),
    "svg": (
        "/v1/detect",
        raw(b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml"),
        415,
        "unsupported_format",
        "SVG",
    ),
    "over byte limit": (
        "/v1/detect",
        raw(b"\xff\xd8\xff" + bytes(MAX_BYTES)),
        413,
        "payload_too_large",
        f"the limit is {MAX_BYTES:,} bytes (--max-bytes)",
    ),
    "over byte limit (multipart)": (  # the limit named was max_bytes + an unexplained 64 KiB
        "/v1/detect",
        upload(b"\xff\xd8\xff" + bytes(MAX_BYTES + 70_000)),
        413,
        "payload_too_large",
        f"{MAX_BYTES:,} per image (--max-bytes) and 65,536 for the form",
    ),
    "batch over its byte limit": (
        "/v1/detect/batch",
        {"files": [("f", ("x.jpg", NEAR_LIMIT))] * (MAX_BATCH_BYTES // len(NEAR_LIMIT) + 1)},
        413,
        "payload_too_large",
        f"{MAX_BATCH_BYTES:,}",
    ),
    "batch image over the per-image limit": (
        "/v1/detect/batch",
        {"files": [("f", ("ok.jpg", GOOD)), ("f", ("big.jpg", NEAR_LIMIT + bytes(200_000)))]},
        413,
        "payload_too_large",
        f"image 1 (big.jpg): {len(NEAR_LIMIT) + 200_000:,} bytes; the limit is {MAX_BYTES:,} "
        "bytes per image (--max-bytes)",
    ),
    "decompression bomb": (
        "/v1/detect",
        upload(bomb(), "bomb.png"),
        413,
        "image_too_large",
        f"is over the limit of {MAX_PIXELS:,} pixels per image (--max-pixels)",
    ),
    "conf > 1": ("/v1/detect", raw(GOOD, conf=1.5), 422, "invalid_parameter", "conf"),
    "conf < 0": ("/v1/detect", raw(GOOD, conf=-0.1), 422, "invalid_parameter", "conf"),
    "conf not a number": (
        "/v1/detect",
        raw(GOOD, conf="high"),
        422,
        "invalid_parameter",
        "conf: expected a number in [0, 1], got 'high'",
    ),
    # NaN fails every comparison: the message said "less than or equal to 1"
    "conf nan": (
        "/v1/detect",
        raw(GOOD, conf="nan"),
        422,
        "invalid_parameter",
        "conf: expected a number in [0, 1], got NaN ('nan')",
    ),
    "iou -inf": (
        "/v1/detect",
        raw(GOOD, iou="-inf"),
        422,
        "invalid_parameter",
        "iou: expected a number in [0, 1], got -infinity ('-inf')",
    ),
    "iou > 1": ("/v1/detect", raw(GOOD, iou=2), 422, "invalid_parameter", "iou"),
    "max_det 0": (
        "/v1/detect",
        raw(GOOD, max_det=0),
        422,
        "invalid_parameter",
        f"max_det: expected an integer in [1, {ServeSettings().max_det}], got '0'",
    ),
    "max_det huge": ("/v1/detect", raw(GOOD, max_det=10**9), 422, "invalid_parameter", "max_det"),
    "class out of range": ("/v1/detect", raw(GOOD, classes="0,7"), 422, "invalid_parameter", "[7]"),
    # "classes=," kept no class: an empty answer that read as "nothing found"
    "classes empty entry": (
        "/v1/detect",
        raw(GOOD, classes=","),
        422,
        "invalid_parameter",
        "empty entry",
    ),
    "unknown class name": (
        "/v1/detect",
        raw(GOOD, classes="circle,cat"),
        422,
        "invalid_parameter",
        "unknown class names ['cat']; the model's are: circle, square, cross",
    ),
    "model: unknown parameter (a misspelt include)": (
        "/v1/model",
        {"method": "GET", "params": {"inlcude": "cfg"}},
        422,
        "invalid_parameter",
        "unknown query parameters ['inlcude']",
    ),
    "include unknown": (
        "/v1/model",
        {"method": "GET", "params": {"include": "text"}},
        422,
        "invalid_parameter",
        "include",
    ),
    "unknown parameter": (
        "/v1/detect",
        raw(GOOD, confidence=0.5),
        422,
        "invalid_parameter",
        "confidence",
    ),
    "parameter given twice": (
        "/v1/detect",
        {**raw(GOOD), "params": [("conf", "0.1"), ("iou", "0.5"), ("conf", "0.9")]},
        422,
        "invalid_parameter",
        "query parameters given more than once: ['conf']",
    ),
    "render on a batch": (
        "/v1/detect/batch",
        upload(GOOD, render="true"),
        422,
        "invalid_parameter",
        "render",
    ),
    "json content type": (
        "/v1/detect",
        raw(b'{"image": "..."}', "application/json"),
        415,
        "unsupported_media_type",
        "application/json",
    ),
    "form-urlencoded (curl -d)": (
        "/v1/detect",
        raw(GOOD, "application/x-www-form-urlencoded"),
        415,
        "unsupported_media_type",
        "--data-binary",
    ),
    "multipart without a file": (
        "/v1/detect",
        {"data": {"note": "hi"}, "files": {"other": ("", b"")}},
        400,
        "no_image",
        "note",
    ),
    "a text field named file (curl -F 'file=<photo.jpg')": (
        "/v1/detect",
        {"files": {"file": (None, b"not uploaded as a file")}},  # a part without a filename
        400,
        "no_image",
        "only text fields ['file'] (a part without a filename is text)",
    ),
    "multipart without boundary": (
        "/v1/detect",
        raw(GOOD, "multipart/form-data"),
        400,
        "bad_multipart",
        "boundary",
    ),
    "batch as a raw body": (
        "/v1/detect/batch",
        raw(GOOD),
        415,
        "unsupported_media_type",
        "multipart",
    ),
    # a limit hit, not a malformed body (it was 400 "Too many files" from the parser)
    "batch over max_batch": (
        "/v1/detect/batch",
        {"files": [("f", ("x.jpg", GOOD))] * 9},
        413,
        "too_many_images",
        "more than 8 images in one request (--max-batch)",
    ),
    "two images to /v1/detect": (
        "/v1/detect",
        {"files": [("f", ("x.jpg", GOOD))] * 2},
        413,
        "too_many_images",
        "send several to /v1/detect/batch",
    ),
    "GET on a POST route": ("/v1/detect", {"method": "GET"}, 405, "method_not_allowed", "GET"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_gets_its_4xx_and_the_service_keeps_serving(server, case):
    path, kwargs, status, code, words = CASES[case]
    kwargs = dict(kwargs)
    method = kwargs.pop("method", "POST")
    with server.client() as c:
        r = c.request(method, path, **kwargs)
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == "application/json"
        error = r.json()["error"]
        assert error["code"] == code and words in error["message"], error
        assert "Traceback" not in r.text
        after = c.post("/v1/detect", content=GOOD, headers=JPEG)
    assert after.status_code == 200, after.text


def test_no_bad_input_caused_a_500(server):
    with server.client() as c:
        for case in ("non-image bytes", "truncated jpeg", "decompression bomb"):
            path, kwargs, *_ = CASES[case]
            c.post(path, **kwargs)
        metrics = c.get("/metrics").text
    assert 'status="500"' not in metrics
    assert "Traceback" not in server.log_text()


def test_16_bit_grayscale_with_full_range_is_accepted(server):
    ramp = (np.arange(256 * 256, dtype=np.uint32).reshape(256, 256) % 65536).astype(np.uint16)
    with server.client() as c:
        r = c.post("/v1/detect", files={"file": ("r.png", encode(Image.fromarray(ramp), "PNG"))})
    assert r.status_code == 200 and r.json()["image"] == {"width": 256, "height": 256}
