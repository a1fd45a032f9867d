"""``yolov4-serve ARTIFACT_DIR [--host --port --backend --workers ...]`` (also ``python -m
yolov4.serve``): check the artifact, then serve it with uvicorn until SIGINT/SIGTERM, which
stops accepting connections and lets in-flight requests finish (``--graceful-timeout``).

A bad artifact (missing, altered, malformed ``metadata.json``) stops it with one line,
``yolov4-serve: error: ...``, and exit code 2.
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import os
import sys
import time

from yolov4.errors import YoloError
from yolov4.serve.settings import SETTINGS_ENV, ServeSettings

__all__ = ["main", "parse_args", "worker_healthcheck_timeout"]

# yolov4.inference.backends.BACKENDS and yolov4.core.artifact.PRECISIONS (not imported: --help
# stays light; a test checks they agree)
BACKENDS = ("onnxruntime", "openvino", "torchscript")
PRECISIONS = ("fp32", "bf16", "int8", "int8_bf16")
HEALTHCHECK_MIN_S = 30  # uvicorn's own default is 5 s
HEALTHCHECK_FACTOR = 3  # margin over the measured start-up for a load that rises meanwhile
_IMPORTED = time.monotonic()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = ServeSettings()
    p = argparse.ArgumentParser(
        prog="yolov4-serve",
        description="HTTP object detection over a yolov4 export artifact.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("artifact_dir", metavar="ARTIFACT_DIR", help="export directory (metadata.json)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument("--port", type=int, default=8000, help="port")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default=d.backend,
        help="runtime (default: the precision's first: fp32 onnxruntime, bf16/int8 openvino)",
    )
    p.add_argument(
        "--precision",
        choices=(*PRECISIONS, "auto"),
        default=d.precision,
        help="model precision (default: the artifact's default_precision; auto: the fastest "
        "the artifact holds for this CPU, logged at start)",
    )
    p.add_argument(
        "--runtime-threads",
        type=int,
        default=d.runtime_threads,
        help="intra-op threads of each model call (default: cores / --threads)",
    )
    p.add_argument("--workers", type=int, default=1, help="processes, each with its own model")
    p.add_argument(
        "--worker-healthcheck-timeout",
        type=int,
        default=None,
        help="with --workers > 1: seconds a worker may leave uvicorn's health check "
        "unanswered before it is restarted, and may take to become ready when restarted "
        "(SIGHUP); default: 3x this process's own start-up time, at least 30",
    )
    p.add_argument("--threads", type=int, default=d.threads, help="inference threads per process")
    p.add_argument(
        "--max-queue",
        type=int,
        default=d.max_queue,
        help="requests admitted at once (reading, waiting, running); one more gets 503",
    )
    p.add_argument(
        "--micro-batch",
        type=int,
        default=d.micro_batch,
        help="images one model call may serve across waiting requests (1: off)",
    )
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="images per batch request")
    p.add_argument(
        "--max-bytes",
        type=int,
        default=d.max_bytes,
        help="bytes per image (413 over it)",
    )
    p.add_argument(
        "--max-batch-bytes",
        type=int,
        default=d.max_batch_bytes,
        help="bytes per batch request body",
    )
    p.add_argument(
        "--max-pixels", type=int, default=d.max_pixels, help="decoded H*W per image (413 over it)"
    )
    p.add_argument(
        "--max-request-pixels",
        type=int,
        default=d.max_request_pixels,
        help="decoded H*W of all the images of one request together; a batch is decoded image "
        "by image and refused (413) at the first image over it (3 bytes of memory a pixel)",
    )
    p.add_argument(
        "--model-batch",
        type=int,
        default=d.model_batch,
        help="images per model call; larger batches run in several calls (the runtime keeps "
        "the memory of its largest call)",
    )
    p.add_argument(
        "--read-timeout",
        type=float,
        default=d.read_timeout_s,
        help="seconds to receive a body (408)",
    )
    p.add_argument(
        "--head-timeout",
        type=float,
        default=d.head_timeout_s,
        help="seconds for a connection to send its request head (408 and closed after)",
    )
    p.add_argument(
        "--keep-alive-timeout",
        type=float,
        default=d.keep_alive_timeout_s,
        help="seconds an idle keep-alive connection stays open",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=d.max_connections,
        help="open connections per process; one more gets 503 and is closed",
    )
    p.add_argument(
        "--max-head-bytes",
        type=int,
        default=d.max_head_bytes,
        help="bytes of request line and headers (400 over it)",
    )
    p.add_argument("--graceful-timeout", type=float, default=30.0, help="seconds to drain on stop")
    p.add_argument(
        "--log-level", default=d.log_level, choices=["debug", "info", "warning", "error"]
    )
    args = p.parse_args(argv)
    positive = (
        "workers",
        "threads",
        "max_queue",
        "micro_batch",
        "max_batch",
        "max_bytes",
        "max_batch_bytes",
        "max_pixels",
        "max_request_pixels",
        "model_batch",
        "max_connections",
        "max_head_bytes",
    )
    for name in positive:
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.worker_healthcheck_timeout is not None and args.worker_healthcheck_timeout < 1:
        p.error(f"--worker-healthcheck-timeout must be >= 1, got {args.worker_healthcheck_timeout}")
    if args.runtime_threads is not None and args.runtime_threads < 1:
        p.error(f"--runtime-threads must be >= 1, got {args.runtime_threads}")
    for name in ("read_timeout", "head_timeout", "keep_alive_timeout"):
        if not getattr(args, name) > 0:
            p.error(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    return args


def worker_healthcheck_timeout(startup_s: float, workers: int, cpus: int) -> int:
    """uvicorn's ``timeout_worker_healthcheck`` for ``workers`` processes, from ``startup_s``,
    the seconds this process took from its start to a loaded model.

    A worker spends about that long importing and loading before it serves; uvicorn pings it
    from the start, and until its interpreter has imported the entry point (``yolov4-serve``
    imports torch) nothing answers. ``workers`` processes start at once and share ``cpus``
    cores, each up to ``workers / cpus`` times slower; :data:`HEALTHCHECK_FACTOR` more covers a
    load that rises meanwhile. Never under :data:`HEALTHCHECK_MIN_S`. The cost of a long
    timeout is only that a hung (not dead) worker is replaced later: a worker that exits is
    replaced at once."""
    slowdown = max(1.0, workers / max(1, cpus))
    return max(HEALTHCHECK_MIN_S, math.ceil(HEALTHCHECK_FACTOR * startup_s * slowdown))


def light_spawn_main() -> None:
    """Let spawned workers skip re-running this process's ``__main__``.

    multiprocessing's spawn runs the parent's main script again in each worker before the
    worker can answer uvicorn's health check, and pip's ``yolov4-serve`` script imports the
    package (torch) for seconds. Given this module's spec, ``__main__`` is re-imported by name,
    which spawn skips for any ``*.__main__`` module (as for ``python -m yolov4.serve``); the
    workers import the app after their health-check thread runs."""
    main = sys.modules.get("__main__")
    if main is not None and getattr(main, "__spec__", None) is None:
        main.__spec__ = sys.modules[__name__].__spec__


def seconds_since_start() -> float:
    """Wall seconds since the start of this process (Linux ``/proc``), else since the import of
    this module."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.monotonic() - _IMPORTED


def usable_cpus() -> int:
    """Cores this process may run on (its affinity, where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def log_config(level: str) -> dict:
    """uvicorn's logging config plus the service's own ``yolov4.serve`` logger."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["default"]["fmt"] = "%(asctime)s %(levelprefix)s %(name)s: %(message)s"
    config["loggers"]["yolov4.serve"] = {
        "handlers": ["default"],
        "level": level.upper(),
        "propagate": False,
    }
    return config


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = ServeSettings(
        artifact_dir=os.fspath(args.artifact_dir),
        backend=args.backend,
        precision=args.precision,
        runtime_threads=args.runtime_threads,
        max_bytes=args.max_bytes,
        max_batch_bytes=args.max_batch_bytes,
        max_pixels=args.max_pixels,
        max_request_pixels=args.max_request_pixels,
        max_batch=args.max_batch,
        model_batch=args.model_batch,
        threads=args.threads,
        max_queue=args.max_queue,
        read_timeout_s=args.read_timeout,
        head_timeout_s=args.head_timeout,
        keep_alive_timeout_s=args.keep_alive_timeout,
        max_connections=args.max_connections,
        max_head_bytes=args.max_head_bytes,
        micro_batch=args.micro_batch,
        log_level=args.log_level,
    )
    import uvicorn

    from yolov4.inference import Predictor
    from yolov4.serve.app import create_app
    from yolov4.serve.protocol import GuardedH11Protocol

    try:  # a bad artifact fails here, with its message, not inside a worker
        predictor = Predictor.from_artifact(
            settings.artifact_dir,
            settings.backend,
            precision=settings.precision,
            threads=settings.model_threads(),
            max_pixels=settings.max_pixels,
        )
    except YoloError as e:
        return _fail(str(e))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        # what the artifact checks do not catch yet: still a message, not a traceback
        return _fail(
            f"cannot load the artifact {settings.artifact_dir}: its metadata.json or files are "
            f"malformed or unreadable ({type(e).__name__}: {e})"
        )
    common = dict(
        host=args.host,
        port=args.port,
        log_config=log_config(args.log_level),
        log_level=args.log_level,
        access_log=False,  # the service logs each request with its id and latency
        timeout_graceful_shutdown=args.graceful_timeout,
        timeout_keep_alive=settings.keep_alive_timeout_s,
        h11_max_incomplete_event_size=settings.max_head_bytes,
    )
    if args.workers == 1:
        guarded = functools.partial(
            GuardedH11Protocol,
            head_timeout_s=settings.head_timeout_s,
            max_connections=settings.max_connections,
        )
        uvicorn.run(create_app(settings, predictor), http=guarded, **common)
    else:  # the workers import the app and the protocol by name (light to unpickle)
        del predictor
        light_spawn_main()
        startup_s = seconds_since_start()
        timeout = args.worker_healthcheck_timeout or worker_healthcheck_timeout(
            startup_s, args.workers, usable_cpus()
        )
        print(
            f"yolov4-serve: {args.workers} workers, health-check timeout {timeout} s "
            f"(this process loaded the model {startup_s:.1f} s after its start)",
            file=sys.stderr,
        )
        os.environ[SETTINGS_ENV] = settings.to_env()
        uvicorn.run(
            "yolov4.serve.app:app_from_env",
            factory=True,
            workers=args.workers,
            http="yolov4.serve.protocol:GuardedH11Protocol",
            timeout_worker_healthcheck=timeout,
            **common,
        )
    return 0


def _fail(message: str) -> int:
    """Print the one-line error of a bad start; -> the exit code."""
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    print(f"yolov4-serve: error: {line}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
