"""The service's settings: one dataclass, from which ``yolov4-serve``'s options are generated.

Each field that the command line sets carries its option in its metadata (:func:`option`):
the flag is the field name with dashes (a ``_s`` unit suffix dropped: ``read_timeout_s`` is
``--read-timeout``), the type the field's annotation, the default the field's, and the help
and bounds declared beside it. :func:`add_arguments` builds the parser's options from them and
:func:`settings_from_args` turns the parsed values into a :class:`ServeSettings`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import types
import typing
from dataclasses import asdict, dataclass, field
from typing import Any

from yolov4.core.artifact import AUTO_PRECISION, PRECISIONS, backend_names

__all__ = [
    "ServeSettings",
    "SETTINGS_ENV",
    "HelpFormatter",
    "add_arguments",
    "settings_from_args",
    "option",
]

SETTINGS_ENV = "YOLOV4_SERVE_SETTINGS"  # JSON settings handed to uvicorn worker processes
MIB = 1 << 20
BACKENDS = backend_names()  # --backend: the runtimes of the export formats table
LOG_LEVELS = ("debug", "info", "warning", "error")


def option(
    help: str,
    *,
    choices: tuple[Any, ...] | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
    positive: bool = False,
    positional: str | None = None,
) -> dict[str, Any]:
    """A field's command-line option: its ``help``, ``choices``, ``minimum`` and ``maximum``
    (integer bounds, inclusive), ``positive`` (a number that must be > 0), or ``positional``
    (the metavar of a positional argument instead of a flag)."""
    return {
        "option": {
            "help": help,
            "choices": choices,
            "minimum": minimum,
            "maximum": maximum,
            "positive": positive,
            "positional": positional,
        }
    }


def _flag(name: str) -> str:
    return "--" + name.removesuffix("_s").replace("_", "-")


@dataclass
class ServeSettings:
    """Everything ``yolov4-serve`` can be told; each field's ``help`` is its documentation.

    Fields without an option (``max_det``, ``retry_after_s``, ``jpeg_quality``) are set from
    Python only. ``max_det``: upper bound of the ``max_det`` query parameter;
    ``retry_after_s``: the ``Retry-After`` header of a 503; ``jpeg_quality``: quality of
    ``?render=true`` images.
    """

    artifact_dir: str = field(
        default="", metadata=option("export directory (metadata.json)", positional="ARTIFACT_DIR")
    )
    host: str = field(default="127.0.0.1", metadata=option("address to bind"))
    port: int = field(default=8000, metadata=option("port", minimum=1, maximum=65535))
    backend: str | None = field(
        default=None,
        metadata=option(
            "runtime (default: the precision's first: fp32 onnxruntime, bf16/int8 openvino)",
            choices=BACKENDS,
        ),
    )
    precision: str | None = field(
        default=None,
        metadata=option(
            "model precision (default: the artifact's default_precision; auto: the fastest the "
            "artifact holds for this CPU, logged at start)",
            choices=(*PRECISIONS, AUTO_PRECISION),
        ),
    )
    runtime_threads: int | None = field(
        default=None,
        metadata=option(
            "intra-op threads of each model call (onnxruntime's intra_op_num_threads, OpenVINO's "
            "INFERENCE_NUM_THREADS; default: cores / --threads, so that --threads calls at once do "
            "not oversubscribe the cores; TorchScript's pool is PyTorch's, process-wide)",
            minimum=1,
        ),
    )
    workers: int = field(
        default=1, metadata=option("processes, each with its own model", minimum=1)
    )
    worker_healthcheck_timeout_s: int | None = field(
        default=None,
        metadata=option(
            "with --workers > 1: seconds a worker may leave uvicorn's health check unanswered "
            "before it is restarted, and may take to become ready when restarted (SIGHUP); "
            "default: 3x this process's own start-up time, at least 30",
            minimum=1,
        ),
    )
    threads: int = field(
        default=1,
        metadata=option("inference threads per process; requests beyond them wait", minimum=1),
    )
    max_queue: int = field(
        default=64,
        metadata=option(
            "requests admitted at once (reading, waiting, running); one more gets 503 with "
            "Retry-After instead of piling up memory",
            minimum=1,
        ),
    )
    micro_batch: int = field(
        default=1,
        metadata=option(
            "images one model call may serve across waiting requests (1: off)", minimum=1
        ),
    )
    max_batch: int = field(
        default=32, metadata=option("images per /v1/detect/batch request", minimum=1)
    )
    max_bytes: int = field(
        default=20 * MIB,
        metadata=option(
            "bytes per encoded image; a body over it gets 413 before it is read whole", minimum=1
        ),
    )
    max_batch_bytes: int = field(
        default=64 * MIB, metadata=option("bytes per /v1/detect/batch request body", minimum=1)
    )
    max_pixels: int = field(
        default=50_000_000,
        metadata=option(
            "decoded H*W per image; over it (decompression bombs) 413 from the image header alone",
            minimum=1,
        ),
    )
    # two images at the per-image limit: ~300 MB of decoded RGB at most
    max_request_pixels: int = field(
        default=100_000_000,
        metadata=option(
            "decoded H*W of all the images of one request together; a batch is decoded image "
            "by image and refused (413) at the first image over it (3 bytes of memory a pixel)",
            minimum=1,
        ),
    )
    # 4 and 8 images per call ran equally fast on 2 cores (416x416)
    model_batch: int = field(
        default=4,
        metadata=option(
            "images per model call; larger batches run in several calls (the runtime keeps the "
            "memory of its largest call: onnxruntime's arena ~400 MB more after 16 images at "
            "416x416)",
            minimum=1,
        ),
    )
    read_timeout_s: float = field(
        default=30.0,
        metadata=option(
            "seconds to receive a body; a slower upload (which holds an admission slot) gets 408",
            positive=True,
        ),
    )
    head_timeout_s: float = field(
        default=10.0,
        metadata=option(
            "seconds for a connection to send its request head (408 and closed after); a silent "
            "connection is closed",
            positive=True,
        ),
    )
    keep_alive_timeout_s: float = field(
        default=5.0,  # uvicorn's default
        metadata=option(
            "seconds an idle keep-alive connection stays open (uvicorn's timeout_keep_alive)",
            positive=True,
        ),
    )
    max_connections: int = field(
        default=512,  # half the usual 1024 file descriptors of a process
        metadata=option(
            "open connections per process; one more closes the longest-idle one (no request in "
            "progress), or gets 503 and is closed when none is idle",
            minimum=1,
        ),
    )
    max_head_bytes: int = field(
        default=16 * 1024,  # h11's default
        metadata=option(
            "bytes of request line and headers (h11's max_incomplete_event_size; 400 over it)",
            minimum=1,
        ),
    )
    graceful_timeout_s: float = field(
        default=30.0,
        metadata=option("seconds to drain in-flight requests on SIGINT/SIGTERM", positive=True),
    )
    log_level: str = field(
        default="info", metadata=option("Python logging level", choices=LOG_LEVELS)
    )
    max_det: int = 1000
    retry_after_s: int = 1
    jpeg_quality: int = 90

    def model_threads(self) -> int:
        """:attr:`runtime_threads`, or the cores shared out among the :attr:`threads` calls."""
        return self.runtime_threads or max(1, (os.cpu_count() or 1) // self.threads)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServeSettings:
        """The settings a parent ``yolov4-serve`` put in :data:`SETTINGS_ENV`."""
        raw = os.environ.get(SETTINGS_ENV)
        if not raw:
            raise RuntimeError(f"{SETTINGS_ENV} is not set; start the service with yolov4-serve")
        return cls(**json.loads(raw))


def _options() -> list[tuple[dataclasses.Field, type, dict[str, Any]]]:
    """``(field, value type, option)`` of each field that has an option, in field order."""
    hints = typing.get_type_hints(ServeSettings)
    out = []
    for f in dataclasses.fields(ServeSettings):
        if "option" not in f.metadata:
            continue
        kind = hints[f.name]
        if isinstance(kind, types.UnionType):  # X | None: the value's type is X
            kind = next(t for t in typing.get_args(kind) if t is not type(None))
        out.append((f, kind, f.metadata["option"]))
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One option (or positional argument) per :class:`ServeSettings` field that declares one,
    stored under the field's name, with its type, default, choices and help."""
    for f, kind, opt in _options():
        if opt["positional"]:
            parser.add_argument(f.name, metavar=opt["positional"], type=kind, help=opt["help"])
            continue
        flag = _flag(f.name)
        parser.add_argument(
            flag,
            dest=f.name,
            metavar=None if opt["choices"] else flag[2:].replace("-", "_").upper(),
            type=kind,
            default=f.default,
            choices=opt["choices"],
            help=opt["help"],
        )


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default after its help, unless the help says what ``None`` means."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def settings_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ServeSettings:
    """The :class:`ServeSettings` of parsed ``args``; a value out of its declared bounds is
    ``parser.error`` naming the flag (exit code 2)."""
    for f, _, opt in _options():
        value = getattr(args, f.name)
        if value is None:
            continue
        if opt["minimum"] is not None and value < opt["minimum"]:
            parser.error(f"{_flag(f.name)} must be >= {opt['minimum']}, got {value}")
        if opt["maximum"] is not None and value > opt["maximum"]:
            parser.error(f"{_flag(f.name)} must be <= {opt['maximum']}, got {value}")
        if opt["positive"] and not value > 0:
            parser.error(f"{_flag(f.name)} must be > 0, got {value}")
    return ServeSettings(**{f.name: getattr(args, f.name) for f, _, _ in _options()})
