"""The FastAPI app over a :class:`~yolov4.inference.Predictor` (see ``yolov4.serve``).

Routes: ``POST /v1/detect``, ``POST /v1/detect/batch``, ``GET /v1/model``, ``GET|HEAD
/healthz``, ``GET|HEAD /readyz``, ``GET /metrics``, ``/openapi.json``, and ``/docs`` (Swagger UI
served from the ``swagger-ui-bundle`` package, so it works without a network). Every error is
``{"error": {"code", "message"}}`` with a 4xx status for anything the client can fix; the
OpenAPI document lists each route's error statuses (``serve/schema.py``).

(No ``from __future__ import annotations`` here: FastAPI reads the route signatures, whose
``Annotated`` dependency is local to :func:`_add_detect_routes`.)
"""

import asyncio
import json
import logging
import os
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse
from starlette.exceptions import HTTPException

from yolov4.core.images import ImageTooLarge
from yolov4.errors import InputError
from yolov4.inference import Predictor
from yolov4.serve.batcher import MicroBatcher
from yolov4.serve.docs import add_docs, distinct_head_operation_ids
from yolov4.serve.inputs import (
    ApiError,
    check_query,
    invalid_parameter,
    parse_classes,
    query_ranges,
    read_uploads,
    sniff_format,
)
from yolov4.serve.jobs import DetectJob, model_info, model_summary
from yolov4.serve.observability import METRICS_DIR_ENV, Metrics, RequestLog, error_body
from yolov4.serve.runner import InferenceRunner, Overloaded
from yolov4.serve.schema import (
    BATCH_BODY,
    IMAGE_BODY,
    JPEG,
    PROMETHEUS,
    BatchResponse,
    DetectResponse,
    HealthResponse,
    ModelSummary,
    ReadyResponse,
    errors,
)
from yolov4.serve.settings import ServeSettings

__all__ = ["create_app", "app_from_env"]

log = logging.getLogger("yolov4.serve")
QUERY_PARAMS = {"conf", "iou", "max_det", "classes", "render"}
DETECT_ERRORS = errors(400, 408, 413, 415, 422, 503)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status, headers, media_type="application/json")


def error_response(status: int, code: str, message: str, headers=None) -> Response:
    return Response(error_body(code, message), status, headers, media_type="application/json")


class Service:
    """What the routes share: the Predictor, the runner, metrics, readiness."""

    def __init__(self, settings: ServeSettings, predictor: Predictor | None) -> None:
        self.settings = settings
        self.predictor = predictor
        self.runner: InferenceRunner | None = None
        self.model: dict[str, Any] = {}  # model_info(), once loaded
        self.ready = False
        runner = lambda attr: lambda: getattr(self.runner, attr) if self.runner else 0  # noqa: E731
        self.metrics = Metrics(
            {
                "yolov4_inference_queue_depth": (
                    "gauge",
                    "Admitted requests not running yet (reading their body or waiting).",
                    runner("waiting"),
                ),
                "yolov4_inference_running": (
                    "gauge",
                    "Requests in inference now.",
                    runner("running"),
                ),
                "yolov4_model_calls_total": (
                    "counter",
                    "Predictor calls (fewer than requests when micro-batching).",
                    runner("calls"),
                ),
                "yolov4_ready": (
                    "gauge",
                    "1 once the model is loaded and warmed up.",
                    lambda: int(self.ready),
                ),
            },
            share_dir=os.environ.get(METRICS_DIR_ENV) or None,  # --workers N: their counts summed
        )

    async def start(self) -> None:
        s = self.settings
        if self.predictor is None:
            self.predictor = await asyncio.to_thread(
                Predictor.from_artifact,
                s.artifact_dir,
                s.backend,
                precision=s.precision,
                threads=s.model_threads(),
                max_pixels=s.max_pixels,
            )
        self.predictor.max_pixels = s.max_pixels
        if s.micro_batch > 1:
            self.runner = MicroBatcher(s.threads, s.max_queue, s.micro_batch)
        else:
            self.runner = InferenceRunner(s.threads, s.max_queue)
        self.model = model_info(self.predictor)
        warm = DetectJob(self.predictor, s.max_pixels, warmup=True)
        async with self.runner.admission():  # first run allocates; /readyz flips after it
            await self.runner.run(warm)
        self.ready = True
        log.info(
            "ready: %s (%s) on %s, %s%s",
            self.model["name"],
            self.model["sha256"],
            self.model["backend"],
            self.model["precision"],
            f" ({why})" if (why := getattr(self.predictor, "precision_reason", None)) else "",
        )

    async def detect(
        self, request: Request, max_images: int, params: dict
    ) -> tuple[list, DetectJob]:
        """Read, check and run the request's images -> (per-image dicts, the finished job)."""
        if not self.ready:
            raise ApiError(503, "not_ready", "the model is loading", self._retry())
        s = self.settings
        max_body = s.max_batch_bytes if max_images > 1 else None
        try:
            async with self.runner.admission():  # before the body: a full service reads nothing
                uploads = await asyncio.wait_for(
                    read_uploads(request, s.max_bytes, max_images, max_body), s.read_timeout_s
                )
                for u in uploads:
                    sniff_format(u.data, u.name)
                job = DetectJob(
                    self.predictor,
                    s.max_pixels,
                    uploads=uploads,
                    max_request_pixels=s.max_request_pixels,
                    model_batch=s.model_batch,
                    **params,
                )
                results, job.timing["queue"] = await self.runner.run(job)
        except asyncio.TimeoutError:
            raise ApiError(
                408,
                "request_timeout",
                f"the body did not arrive within {s.read_timeout_s:g} s (--read-timeout)",
            ) from None
        except Overloaded as e:
            raise ApiError(503, "overloaded", f"{e}; retry later", self._retry()) from None
        except ImageTooLarge as e:
            raise ApiError(413, "image_too_large", str(e)) from None
        except InputError as e:
            raise ApiError(400, "invalid_image", str(e)) from None
        self.metrics.add_images(len(uploads))
        return results, job

    def _retry(self) -> dict[str, str]:
        return {"Retry-After": str(self.settings.retry_after_s)}


def create_app(settings: ServeSettings, predictor: Predictor | None = None) -> FastAPI:
    """The app; the Predictor is loaded from ``settings.artifact_dir`` at start-up unless given."""
    service = Service(settings, predictor)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.start()
        yield
        service.ready = False
        service.runner.shutdown()  # in-flight requests have finished (uvicorn drains first)

    app = FastAPI(
        title="yolov4",
        summary="YOLOv4 object detection over an export artifact",
        version=_package_version(),
        lifespan=lifespan,
        docs_url=None,  # served below from local assets
        redoc_url=None,  # ReDoc has no offline bundle here
    )
    app.state.service = service
    add_docs(app)
    distinct_head_operation_ids(app)
    app.add_middleware(RequestLog, metrics=service.metrics)
    _add_error_handlers(app)
    _add_detect_routes(app, service)
    _add_status_routes(app, service)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"error": {"code", "message"}}``: API errors, invalid parameters, and
    Starlette's own 404/405."""

    @app.exception_handler(ApiError)
    async def on_api_error(request: Request, e: ApiError) -> Response:
        return error_response(e.status, e.code, e.message, e.headers)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request: Request, e: RequestValidationError) -> Response:
        ranges = query_ranges(request.app.state.service.settings.max_det)
        msgs = [invalid_parameter(err, ranges) for err in e.errors()]
        return error_response(422, "invalid_parameter", "; ".join(msgs))

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, e: HTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(e.status_code, "http_error")
        return error_response(  # e.headers: 405's Allow
            e.status_code, code, f"{request.method} {request.url.path}: {e.detail}", e.headers
        )


def _thresholds(service: Service) -> Callable[..., dict[str, Any]]:
    """The dependency both detect routes share: the Predictor keyword arguments from the query,
    bounded by ``service``'s settings."""
    bounds = {
        k: {"ge": lo, "le": hi} for k, (_, lo, hi) in query_ranges(service.settings.max_det).items()
    }

    def thresholds(
        request: Request,
        conf: float | None = Query(
            None, **bounds["conf"], description="score threshold (default: the artifact's)"
        ),
        iou: float | None = Query(
            None, **bounds["iou"], description="NMS IoU threshold (default: the artifact's)"
        ),
        max_det: int | None = Query(
            None, **bounds["max_det"], description="most detections per image"
        ),
        classes: str | None = Query(
            None,
            description="comma-separated classes to keep, by id or name: 0,2 or person,car",
        ),
    ) -> dict[str, Any]:
        """The Predictor keyword arguments from the query (shared by both detect routes)."""
        allowed = QUERY_PARAMS if request.url.path == "/v1/detect" else QUERY_PARAMS - {"render"}
        check_query(request, allowed)
        ids = parse_classes(classes, service.predictor.class_names)
        return {"conf": conf, "iou": iou, "max_det": max_det, "classes": ids}

    return thresholds


def _add_detect_routes(app: FastAPI, service: Service) -> None:
    """``POST /v1/detect`` and ``POST /v1/detect/batch`` with their shared query parameters."""
    settings = service.settings
    Thresholds = Annotated[dict, Depends(_thresholds(service))]

    @app.post(
        "/v1/detect",
        openapi_extra=IMAGE_BODY,
        response_model=None,
        responses={200: {"model": DetectResponse, "content": JPEG}, **DETECT_ERRORS},
    )
    async def detect(
        request: Request,
        params: Thresholds,
        render: bool = Query(False, description="return a JPEG with the boxes drawn"),
    ) -> Response:
        """Detect objects in one image (multipart ``file`` field or the raw body).

        Returns ``{"detections": [{"box": [x1, y1, x2, y2], "score", "class_id",
        "class_name"}], "image": {"width", "height"}, "model": {"name", "version", "sha256",
        "backend"}, "timing_ms": {"queue", "decode", "preprocess", "model", "postprocess",
        "total"}}``; boxes are in the uploaded image's pixels as a viewer displays it (EXIF
        orientation applied). With ``render=true``: the image as JPEG with the boxes drawn."""
        quality = settings.jpeg_quality if render else None
        [result], job = await service.detect(request, 1, {**params, "render_quality": quality})
        if render:
            return Response(job.jpeg, media_type="image/jpeg")
        body = {**result, "model": service.model, "timing_ms": job.finish(request.state.start)}
        return json_response(body)

    @app.post(
        "/v1/detect/batch",
        openapi_extra=BATCH_BODY,
        response_model=None,
        responses={200: {"model": BatchResponse}, **DETECT_ERRORS},
    )
    async def detect_batch(request: Request, params: Thresholds) -> Response:
        """Detect objects in several images (multipart, one file field each, up to
        ``max_batch``), run as one batch: ``{"results": [{"detections", "image"}, ...] in
        upload order, "model", "timing_ms"}``."""
        results, job = await service.detect(request, settings.max_batch, params)
        body = {
            "results": results,
            "model": service.model,
            "timing_ms": job.finish(request.state.start),
        }
        return json_response(body)


def _add_model_route(app: FastAPI, service: Service) -> None:
    """``GET /v1/model``."""
    settings = service.settings

    @app.get(
        "/v1/model",
        response_model=None,
        responses={200: {"model": ModelSummary}, **errors(422, 503)},
    )
    async def model(
        request: Request,
        include: Literal["cfg"] | None = Query(
            None, description="cfg: add the architecture's darknet cfg text"
        ),
    ) -> Response:
        """The artifact's metadata: classes, input size, preprocessing, default thresholds; the
        architecture's cfg as ``cfg_sha256`` and ``cfg_bytes`` (its text with
        ``include=cfg``)."""
        unknown = sorted(set(request.query_params) - {"include"})
        if unknown:  # as the detect routes: a misspelt include= is not ignored
            raise ApiError(
                422,
                "invalid_parameter",
                f"unknown query parameters {unknown}; expected ['include']",
            )
        if service.predictor is None:
            raise ApiError(503, "not_ready", "the model is loading", service._retry())
        body = model_summary(service.predictor, service.model, settings, include == "cfg")
        return json_response(body)


def _add_status_routes(app: FastAPI, service: Service) -> None:
    """``GET /v1/model``, ``/healthz``, ``/readyz`` and ``/metrics``."""
    _add_model_route(app, service)

    @app.api_route(
        "/healthz",
        methods=["GET", "HEAD"],
        operation_id="healthz",
        response_model=None,
        responses={200: {"model": HealthResponse}},
    )
    async def healthz() -> Response:
        """Liveness: the process answers (also while inference is busy)."""
        return json_response({"status": "ok"})

    @app.api_route(
        "/readyz",
        methods=["GET", "HEAD"],
        operation_id="readyz",
        response_model=None,
        responses={200: {"model": ReadyResponse}, **errors(503)},
    )
    async def readyz() -> Response:
        """Readiness: 200 once the model is loaded and warmed up, else 503."""
        if not service.ready:
            return error_response(503, "not_ready", "the model is loading", service._retry())
        return json_response({"status": "ready", "model": service.model})

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        response_model=None,
        responses={200: {"content": PROMETHEUS}},
    )
    async def metrics() -> Response:
        """Prometheus text format: requests by status, latency histogram, queue depth."""
        return Response(service.metrics.render(), media_type="text/plain; version=0.0.4")


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("yolov4")
    except PackageNotFoundError:
        return "0"


def app_from_env() -> FastAPI:
    """Factory for uvicorn worker processes (``--workers N``): settings from the environment."""
    return create_app(ServeSettings.from_env())
