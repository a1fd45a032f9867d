"""The service's OpenAPI document and ``/docs`` page: Swagger UI served from the
``swagger-ui-bundle`` package's files, so it works without a network, and distinct operation ids
for the routes that answer both ``GET`` and ``HEAD``."""

import logging
import warnings
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse

__all__ = ["DOCS_ASSETS", "add_docs", "distinct_head_operation_ids"]

log = logging.getLogger("yolov4.serve")
DOCS_ASSETS = "/docs/assets"


def add_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI from the ``swagger-ui-bundle`` package's files (no CDN), or from
    its CDN when that package is not installed."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        log.warning("swagger-ui-bundle is not installed: /docs loads Swagger UI from its CDN")
        urls = {}
    else:
        from starlette.staticfiles import StaticFiles

        app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")
        urls = {
            "swagger_js_url": f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            "swagger_css_url": f"{DOCS_ASSETS}/swagger-ui.css",
            "swagger_favicon_url": f"{DOCS_ASSETS}/favicon-32x32.png",
        }
    redirect = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=redirect,
            swagger_ui_parameters={"validatorUrl": None},  # no badge from swagger.io
            **urls,
        )

    @app.get(redirect, include_in_schema=False)
    async def docs_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()


def distinct_head_operation_ids(app: FastAPI) -> None:
    """A ``GET``+``HEAD`` route is one route, whose two operations FastAPI gives its one
    ``operation_id``: the ``HEAD`` one becomes ``<id>_head`` (a route per method would lose
    the full ``Allow`` of a 405)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Duplicate Operation ID")
                schema = generate()
            for item in schema["paths"].values():
                if "head" in item and item["head"]["operationId"] == item["get"]["operationId"]:
                    item["head"]["operationId"] += "_head"
        return app.openapi_schema

    app.openapi = openapi
