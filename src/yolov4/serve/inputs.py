"""What a request carries, checked at the HTTP boundary: body bytes, images, query parameters.

Every problem raises :class:`ApiError` (status, machine-readable code, message naming what was
expected and what was found); the app turns it into ``{"error": {"code", "message"}}``.
Bodies are counted while they stream in: a declared ``Content-Length`` over the limit is refused
before a byte is read, and a chunked body as soon as the count passes the limit, so an
over-limit upload never sits whole in memory.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request

from yolov4.errors import InputError, shown
from yolov4.inference.predictor import class_ids

__all__ = [
    "ApiError",
    "Upload",
    "read_uploads",
    "sniff_format",
    "parse_classes",
    "check_query",
    "query_ranges",
    "invalid_parameter",
]

RAW_TYPES = ("application/octet-stream", "image/")  # a raw image body
MULTIPART = "multipart/form-data"
MAX_FORM_FIELDS = 16  # non-file form fields tolerated in a multipart body
FORM_OVERHEAD = 64 * 1024  # part headers, boundaries and small fields around one image
# leading bytes of each format the decoder accepts (JPEG, PNG, BMP, TIFF LE/BE, WebP in RIFF)
SIGNATURES = {
    "jpeg": (b"\xff\xd8\xff",),
    "png": (b"\x89PNG\r\n\x1a\n",),
    "bmp": (b"BM",),
    "tiff": (b"II*\x00", b"MM\x00*"),
}
# formats people send that the decoder does not take, named in the 415 message
OTHER_SIGNATURES = {
    "gif": (b"GIF87a", b"GIF89a"),
    "heic/avif": (b"\x00\x00\x00\x18ftyp", b"\x00\x00\x00\x1cftyp", b"\x00\x00\x00\x20ftyp"),
    "pdf": (b"%PDF",),
    "svg/xml": (b"<?xml", b"<svg"),
    "ico": (b"\x00\x00\x01\x00",),
}


class ApiError(Exception):
    """An HTTP error with a JSON body ``{"error": {"code": code, "message": message}}``."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


@dataclass
class Upload:
    """One uploaded image: its encoded ``data`` and a ``name`` for messages (file name or index)."""

    data: bytes
    name: str


def sniff_format(data: bytes, where: str) -> str:
    """The image format from the leading bytes; 400 for empty data, 415 for anything the decoder
    does not take (named when recognised)."""
    if not data:
        raise ApiError(400, "empty_image", f"{where}: empty image data (0 bytes)")
    for fmt, sigs in SIGNATURES.items():
        if data.startswith(sigs):
            return fmt
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    found = next(
        (f for f, sigs in OTHER_SIGNATURES.items() if data.lstrip().startswith(sigs)), None
    )
    what = f"a {found.upper()} file" if found else f"{len(data):,} bytes starting {data[:8]!r}"
    raise ApiError(
        415,
        "unsupported_format",
        f"{where}: expected a JPEG, PNG, BMP, TIFF or WebP image, got {what}",
    )


def _declared_length(request: Request, limit: int, why: str = "") -> None:
    raw = request.headers.get("content-length")
    if raw is None:
        return
    if not raw.isdigit():
        raise ApiError(400, "bad_content_length", f"Content-Length must be an integer, got {raw!r}")
    if int(raw) > limit:
        raise ApiError(
            413,
            "payload_too_large",
            f"the body is {int(raw):,} bytes; the limit is {limit:,} bytes{why}",
        )


async def _limited(request: Request, limit: int, why: str = "") -> AsyncIterator[bytes]:
    """The body's chunks, refused with 413 as soon as more than ``limit`` bytes arrived
    (``why``: where the limit comes from, in the message)."""
    _declared_length(request, limit, why)
    total = 0
    try:
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise ApiError(
                    413,
                    "payload_too_large",
                    f"the body is over the limit of {limit:,} bytes{why} (refused after {total:,})",
                )
            yield chunk
    except ClientDisconnect:
        raise ApiError(400, "client_disconnected", "the client closed the connection") from None


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


async def read_uploads(
    request: Request, max_bytes: int, max_images: int = 1, max_body: int | None = None
) -> list[Upload]:
    """The images of a request: a raw image body (one) or multipart file fields (up to
    ``max_images``, each at most ``max_bytes``). The whole multipart body may hold at most
    ``max_body`` bytes (default ``max_bytes`` plus :data:`FORM_OVERHEAD`). Raises
    :class:`ApiError` 400/413/415."""
    media = _media_type(request)
    if media == MULTIPART:
        if max_body is not None:
            limit, why = max_body, " (--max-batch-bytes)"
        else:
            limit = max_bytes + FORM_OVERHEAD
            why = f": {max_bytes:,} per image (--max-bytes) and {FORM_OVERHEAD:,} for the form"
        return await _read_multipart(request, max_bytes, max_images, limit, why)
    if media and not media.startswith(RAW_TYPES):
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type {media!r} is not accepted: send the image as a multipart file field "
            "(curl -F file=@photo.jpg) or as the raw body with Content-Type image/* or "
            "application/octet-stream (curl --data-binary @photo.jpg -H 'Content-Type: image/jpeg')",
        )
    if max_images != 1:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"a batch is a multipart/form-data body with one file field per image, got {media or 'no Content-Type'!r}",
        )
    data = b"".join([chunk async for chunk in _limited(request, max_bytes, " (--max-bytes)")])
    if not data:
        raise ApiError(400, "empty_body", "the request body is empty: send an image")
    return [Upload(data, "image 0")]


async def _read_multipart(
    request: Request, max_bytes: int, max_images: int, limit: int, why: str = ""
) -> list[Upload]:
    parser = MultiPartParser(
        request.headers,
        _limited(request, limit, why),
        max_files=max_images,
        max_fields=MAX_FORM_FIELDS,
    )
    try:
        form = await parser.parse()
    except MultiPartException as e:
        if "too many files" in e.message.lower():  # a limit, not a malformed body
            raise ApiError(
                413,
                "too_many_images",
                "one image per request here: send several to /v1/detect/batch"
                if max_images == 1
                else f"more than {max_images} images in one request (--max-batch)",
            ) from None
        raise ApiError(
            400, "bad_multipart", f"cannot parse the multipart body: {e.message}"
        ) from None
    try:
        files = [v for _, v in form.multi_items() if isinstance(v, UploadFile)]
        if not files:
            raise ApiError(
                400,
                "no_image",
                f"the multipart body has no file upload, only text fields "
                f"{sorted(form.keys())} (a part without a filename is text); send the image as "
                "a file, e.g. curl -F file=@photo.jpg",
            )
        uploads = []
        for i, f in enumerate(files):
            where = f"image {i}" + (f" ({f.filename})" if f.filename else "")
            if f.size is not None and f.size > max_bytes:
                raise ApiError(
                    413,
                    "payload_too_large",
                    f"{where}: {f.size:,} bytes; the limit is {max_bytes:,} bytes per image "
                    "(--max-bytes)",
                )
            uploads.append(Upload(await f.read(), where))
        return uploads
    finally:
        await form.close()


def check_query(request: Request, allowed: set[str] | frozenset[str]) -> None:
    """A query parameter not in ``allowed``, or one given more than once, is a 422 naming
    them."""
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise ApiError(
            422,
            "invalid_parameter",
            f"unknown query parameters {unknown}; expected {sorted(allowed)}",
        )
    keys = [key for key, _ in request.query_params.multi_items()]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:  # FastAPI would keep the last value silently
        raise ApiError(
            422,
            "invalid_parameter",
            f"query parameters given more than once: {repeated}; give each once "
            "(classes takes a comma-separated list: classes=0,2)",
        )


def parse_classes(raw: str | None, class_names: Sequence[str]) -> list[int] | None:
    """``"0,2,5"``, ``"person,car"`` or both mixed -> class ids; a token that is an integer
    is an id, any other a class name; ``None`` (no ``classes`` parameter) keeps every class.
    422 for an id out of range, an unknown name, an empty value (``classes=``) or an empty
    entry (``classes=0,,2``): an empty filter would keep no class."""
    if raw is None:
        return None
    if raw.strip() == "":
        raise ApiError(
            422,
            "invalid_parameter",
            f"classes={raw!r}: an empty filter would keep no class; leave classes out to keep "
            "every class, or give ids or names separated by commas, e.g. classes=0,2",
        )
    tokens = [t.strip() for t in raw.split(",")]
    if not all(tokens):  # "classes=," or "0,,2": an empty filter would keep no class
        raise ApiError(
            422,
            "invalid_parameter",
            f"classes={raw!r}: an empty entry; expected class ids or names separated by commas, "
            "e.g. classes=0,2 or classes=person,car",
        )
    try:
        return class_ids([int(t) if _is_int(t) else t for t in tokens], class_names)
    except InputError as e:
        raise ApiError(422, "invalid_parameter", str(e)) from None


def _is_int(token: str) -> bool:
    return token.lstrip("+-").isdigit()


def query_ranges(max_det: int) -> dict[str, tuple[str, int, int]]:
    """The numeric query parameters: ``name -> (kind, lowest, highest)``, inclusive (the
    routes' ``Query`` bounds and the words of their 422)."""
    return {
        "conf": ("a number", 0, 1),
        "iou": ("a number", 0, 1),
        "max_det": ("an integer", 1, max_det),
    }


def _shown(value: Any) -> str:
    """A query value as the message quotes it, NaN and infinity named (``conf=nan`` fails
    every comparison: "less than or equal to 1" would hide why)."""
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return repr(value)
        if not math.isfinite(number):
            return f"{shown(number)} ({value!r})"
    return repr(value)


def invalid_parameter(error: dict[str, Any], ranges: dict[str, tuple[str, int, int]]) -> str:
    """The message of one of FastAPI's validation ``error`` s: for a parameter of ``ranges``
    the kind and range expected and the value given, else pydantic's words and the value."""
    name = ".".join(str(x) for x in error["loc"][1:])
    if name in ranges:
        kind, lowest, highest = ranges[name]
        return f"{name}: expected {kind} in [{lowest}, {highest}], got {_shown(error.get('input'))}"
    return f"{name}: {error['msg']} (got {error.get('input')!r})"
