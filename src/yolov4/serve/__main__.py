"""``yolov4-serve ARTIFACT_DIR [--host --port --backend --workers ...]`` (also ``python -m
yolov4.serve``): check the artifact, then serve it with uvicorn until SIGINT/SIGTERM, which
stops accepting connections, lets in-flight requests finish (``--graceful-timeout``) and exits 0.

A bad artifact (missing, altered, malformed ``metadata.json``) stops it with one line,
``yolov4-serve: error: ...``, and exit code 2.
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import os
import shutil
import signal
import sys
import tempfile
import time

from yolov4.errors import YoloError
from yolov4.serve.observability import METRICS_DIR_ENV
from yolov4.serve.settings import (
    SETTINGS_ENV,
    HelpFormatter,
    ServeSettings,
    add_arguments,
    settings_from_args,
)

__all__ = [
    "main",
    "parse_args",
    "load_predictor",
    "one_process_server",
    "serve_until_stopped",
    "worker_healthcheck_timeout",
    "cannot_listen",
]

HEALTHCHECK_MIN_S = 30  # uvicorn's own default is 5 s
HEALTHCHECK_FACTOR = 3  # margin over the measured start-up for a load that rises meanwhile
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # a graceful stop (uvicorn's handled signals)
_IMPORTED = time.monotonic()


def parse_args(argv: list[str] | None = None) -> ServeSettings:
    """``yolov4-serve``'s command line -> :class:`ServeSettings` (its options are generated from
    the dataclass's fields: :func:`yolov4.serve.settings.add_arguments`)."""
    p = argparse.ArgumentParser(
        prog="yolov4-serve",
        description="HTTP object detection over a yolov4 export artifact.",
        formatter_class=HelpFormatter,
    )
    add_arguments(p)
    return settings_from_args(p, p.parse_args(argv))


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


def cannot_listen(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on, with the option that fixes it (another process
    holds the port: ``--port``; an address that is not this machine's: ``--host``; a port
    below 1024 without the privilege), or ``None``: checked before the model loads, as uvicorn
    binds (with ``SO_REUSEADDR``)."""
    import errno
    import socket

    hints = {
        errno.EADDRINUSE: "another yolov4-serve or service? give another --port",
        errno.EADDRNOTAVAIL: "not an address of this machine: give --host one of its "
        "addresses, e.g. 0.0.0.0 (every interface) or 127.0.0.1 (this machine only)",
        errno.EACCES: "ports below 1024 need privileges: give --port 1024 or above",
    }
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as e:
        return f"cannot resolve --host {host}: {e}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as e:
            hint = hints.get(e.errno)
            return f"cannot listen on {host}:{port}: {e.strerror or e}" + (
                f" ({hint})" if hint else ""
            )
    return None


def load_predictor(settings: ServeSettings):
    """The :class:`~yolov4.inference.Predictor` ``settings`` describe (artifact, backend,
    precision, threads, pixel limit); a bad artifact raises its error."""
    from yolov4.inference import Predictor

    return Predictor.from_artifact(
        settings.artifact_dir,
        settings.backend,
        precision=settings.precision,
        threads=settings.model_threads(),
        max_pixels=settings.max_pixels,
    )


def uvicorn_options(settings: ServeSettings) -> dict:
    """uvicorn's settings from the service's, for one process or several."""
    return dict(
        host=settings.host,
        port=settings.port,
        log_config=log_config(settings.log_level),
        log_level=settings.log_level,
        access_log=False,  # the service logs each request with its id and latency
        timeout_graceful_shutdown=settings.graceful_timeout_s,
        timeout_keep_alive=settings.keep_alive_timeout_s,
        h11_max_incomplete_event_size=settings.max_head_bytes,
    )


def one_process_server(settings: ServeSettings, predictor, **options):
    """The ``uvicorn.Server`` of ``--workers 1``: the app over ``predictor`` behind the guarded
    protocol; ``options`` override :func:`uvicorn_options` (e.g. ``log_config=None`` to leave
    the caller's logging alone)."""
    import uvicorn

    from yolov4.serve.app import create_app
    from yolov4.serve.protocol import GuardedH11Protocol

    guarded = functools.partial(
        GuardedH11Protocol,
        head_timeout_s=settings.head_timeout_s,
        max_connections=settings.max_connections,
    )
    app = create_app(settings, predictor)
    config = uvicorn.Config(app, http=guarded, **{**uvicorn_options(settings), **options})
    return uvicorn.Server(config)


def serve_until_stopped(server) -> int:
    """Run a ``uvicorn.Server`` until SIGINT or SIGTERM has stopped it gracefully (no new
    connections, in-flight requests finished within ``--graceful-timeout``) -> the exit code: 0,
    or uvicorn's 3 when it never started.

    uvicorn raises the signal it stopped on again for the handler that was installed before it;
    with Python's default that ends the process with 143 (SIGTERM) where servers exit 0 after a
    graceful stop. That handler is here the server's own, which a signal arriving before uvicorn
    installs its handlers also stops."""
    from uvicorn.config import STARTUP_FAILURE

    previous = {sig: signal.signal(sig, server.handle_exit) for sig in STOP_SIGNALS}
    try:
        server.run()  # a second SIGINT during the drain forces the exit (uvicorn's handler)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0 if server.started else STARTUP_FAILURE


def main(argv: list[str] | None = None) -> int:
    settings = parse_args(argv)
    refused = cannot_listen(settings.host, settings.port)
    if refused is not None:  # before the minutes a model can take to load
        return _fail(refused)
    try:  # a bad artifact fails here, with its message, not inside a worker
        predictor = load_predictor(settings)
    except YoloError as e:
        return _fail(str(e))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        # what the artifact checks do not catch yet: still a message, not a traceback
        return _fail(
            f"cannot load the artifact {settings.artifact_dir}: its metadata.json or files are "
            f"malformed or unreadable ({type(e).__name__}: {e})"
        )
    if settings.workers == 1:
        return serve_until_stopped(one_process_server(settings, predictor))
    del predictor  # the workers import the app and the protocol by name (light to unpickle)
    return _serve_workers(settings)


def _serve_workers(settings: ServeSettings) -> int:
    """``--workers N``: uvicorn's supervisor over N processes, which exits 0 on SIGINT/SIGTERM
    once it has stopped its workers."""
    import uvicorn

    light_spawn_main()
    startup_s = seconds_since_start()
    timeout = settings.worker_healthcheck_timeout_s or worker_healthcheck_timeout(
        startup_s, settings.workers, usable_cpus()
    )
    print(
        f"yolov4-serve: {settings.workers} workers, health-check timeout {timeout} s "
        f"(this process loaded the model {startup_s:.1f} s after its start)",
        file=sys.stderr,
    )
    os.environ[SETTINGS_ENV] = settings.to_env()
    # each worker writes its counts here; the one a scrape reaches sums them all
    shared = tempfile.mkdtemp(prefix="yolov4-serve-metrics-")
    os.environ[METRICS_DIR_ENV] = shared
    try:
        uvicorn.run(
            "yolov4.serve.app:app_from_env",
            factory=True,
            workers=settings.workers,
            http="yolov4.serve.protocol:GuardedH11Protocol",
            timeout_worker_healthcheck=timeout,
            **uvicorn_options(settings),
        )
    finally:
        os.environ.pop(METRICS_DIR_ENV, None)
        shutil.rmtree(shared, ignore_errors=True)
    return 0


def _fail(message: str) -> int:
    """Print the one-line error of a bad start; -> the exit code."""
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    print(f"yolov4-serve: error: {line}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
