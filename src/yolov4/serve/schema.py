"""The OpenAPI side of the routes: response bodies as pydantic models, the error responses each
route can give, and the request bodies FastAPI cannot see (the images are read as a stream).

The models only document; the routes build their JSON themselves. The conformance fuzzer
(``benchmarks/fuzz_api.py``) checks the two agree.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ErrorResponse",
    "DetectResponse",
    "BatchResponse",
    "HealthResponse",
    "ModelSummary",
    "ReadyResponse",
    "errors",
    "IMAGE_BODY",
    "BATCH_BODY",
    "JPEG",
    "PROMETHEUS",
]


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable, e.g. image_too_large", examples=["no_image"])
    message: str = Field(description="what was expected and what was found")


class ErrorResponse(BaseModel):
    """Every 4xx/5xx body: ``{"error": {"code", "message"}}``."""

    error: ErrorDetail


class Detection(BaseModel):
    box: list[float] = Field(
        min_length=4, max_length=4, description="x1, y1, x2, y2 in the uploaded image's pixels"
    )
    score: float
    class_id: int
    class_name: str


class ImageSize(BaseModel):
    width: int
    height: int


class ModelInfo(BaseModel):
    name: str | None
    version: str | None
    sha256: str | None = Field(description="of the served model file, 16 hex digits")
    backend: str
    precision: str = Field(description="fp32, bf16 or int8: the artifact's model served")


class Architecture(BaseModel):
    """The model config (``yolov4.models.ModelConfig`` keys: anchors, masks, strides, ...)."""

    model_config = ConfigDict(extra="allow")

    name: str
    cfg_sha256: str | None = Field(
        description="sha256 of the darknet cfg text (UTF-8); null for a zoo model, whose cfg "
        "ships with the package"
    )
    cfg_bytes: int | None = Field(description="size of the cfg text in bytes (UTF-8)")
    cfg: str | None = Field(None, description="the cfg text, only with include=cfg")


class ModelSummary(BaseModel):
    """``GET /v1/model``: the artifact's metadata, the served model and the request limits."""

    model: ModelInfo
    architecture: Architecture | None
    class_names: list[str]
    num_classes: int
    input_size: list[int]
    preprocess: dict[str, Any]
    thresholds: dict[str, Any]
    strides: list[int] | None = None
    anchors: list[Any] | None = None
    format: str | None = None
    created: str | None = None
    versions: dict[str, Any] | None = None
    files: dict[str, Any] | None = None
    parity: dict[str, Any] | None = None
    precisions: dict[str, Any] | None = None
    default_precision: str | None = None
    conf_source: dict[str, Any] | None = Field(None, description="where thresholds.conf came from")
    limits: dict[str, int] = Field(
        description="max_bytes, max_pixels, max_batch, max_batch_bytes, max_det"
    )


class ImageResult(BaseModel):
    detections: list[Detection]
    image: ImageSize


class DetectResponse(ImageResult):
    model: ModelInfo
    timing_ms: dict[str, float] = Field(
        description="queue, decode, preprocess, model, postprocess, total"
    )


class BatchResponse(BaseModel):
    results: list[ImageResult] = Field(description="in upload order")
    model: ModelInfo
    timing_ms: dict[str, float]


class HealthResponse(BaseModel):
    status: str = Field(examples=["ok"])


class ReadyResponse(BaseModel):
    status: str = Field(examples=["ready"])
    model: ModelInfo


ERRORS = {  # status: when it happens
    400: "empty body or image, no file field, malformed multipart or Content-Length, an image "
    "that does not decode, a client that disconnected",
    408: "the body did not arrive within --read-timeout",
    413: "a body over --max-bytes / --max-batch-bytes, or an image over --max-pixels / the "
    "request's --max-request-pixels budget",
    415: "a Content-Type or an image format the service does not take",
    422: "a query parameter that is unknown or out of range, or a class name the model lacks",
    503: "the model is loading or every admission slot is taken (see Retry-After)",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` entries of these error statuses, each an :class:`ErrorResponse`."""
    return {s: {"model": ErrorResponse, "description": ERRORS[s]} for s in statuses}


BINARY = {"type": "string", "format": "binary"}
JPEG = {"image/jpeg": {"schema": BINARY}}  # ?render=true
PROMETHEUS = {"text/plain": {"schema": {"type": "string"}}}  # text exposition format 0.0.4
RAW_IMAGE_TYPES = (
    "image/jpeg",
    "image/png",
    "image/bmp",
    "image/tiff",
    "image/webp",
    "application/octet-stream",
)


def _body(form: dict[str, Any], raw: bool) -> dict[str, Any]:
    content = {"multipart/form-data": {"schema": form}}
    if raw:
        content.update({t: {"schema": BINARY} for t in RAW_IMAGE_TYPES})
    return {"requestBody": {"required": True, "content": content}}


IMAGE_BODY = _body(  # one image: a multipart "file" field or the raw body
    {"type": "object", "properties": {"file": BINARY}, "required": ["file"]}, raw=True
)
BATCH_BODY = _body(  # several images: one multipart file field each (any name; "files" here)
    {
        "type": "object",
        "properties": {"files": {"type": "array", "items": BINARY, "minItems": 1}},
        "required": ["files"],
    },
    raw=False,
)
