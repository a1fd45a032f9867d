"""In-process checks of what the subprocess tests cannot provoke: an unexpected exception in the
model gives a generic 500 naming only the request id (logged with its traceback), and the
runner's admission count."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sys
import threading
import warnings

import numpy as np
import pytest
import torch

from tests.serve.conftest import encode, scene
from yolov4.core.preprocess import PreprocessConfig
from yolov4.errors import InputError
from yolov4.inference import Predictor
from yolov4.serve import ServeSettings, create_app
from yolov4.serve.runner import InferenceRunner, Overloaded

with warnings.catch_warnings():  # starlette would rather see httpx2; httpx is what we install
    warnings.filterwarnings("ignore", message="Using `httpx` with")
    from fastapi.testclient import TestClient


class Flaky:
    """A backend that works for the warm-up, then fails like a broken runtime would."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("secret internal detail")
        return torch.zeros(images.shape[0], 1, 6)


def test_an_unexpected_error_is_a_generic_500_with_the_request_id(caplog):
    predictor = Predictor(Flaky(), ["thing"], PreprocessConfig(input_size=(64, 64)))
    app = create_app(ServeSettings(), predictor)
    with caplog.at_level(logging.INFO, "yolov4.serve"), TestClient(app) as c:
        r = c.post(
            "/v1/detect", content=encode(scene(64, 64), "PNG"), headers={"X-Request-ID": "req-42"}
        )
        assert c.get("/healthz").status_code == 200  # still serving
    assert r.status_code == 500 and r.headers["x-request-id"] == "req-42"
    assert r.json() == {
        "error": {"code": "internal", "message": "internal server error (request id req-42)"}
    }
    assert "secret" not in r.text
    failed = [rec for rec in caplog.records if "req-42" in rec.getMessage() and rec.exc_info]
    assert failed and "secret internal detail" in str(failed[0].exc_info[1])


def empty_predictor(metadata: dict) -> Predictor:
    """A one-class Predictor that detects nothing, with ``metadata`` as its artifact's."""
    return Predictor(
        lambda x: torch.zeros(x.shape[0], 1, 6),
        ["thing"],
        PreprocessConfig(input_size=(64, 64)),
        metadata=metadata,
    )


def test_v1_model_gives_a_user_cfg_as_its_hash_and_size_and_the_text_on_request():
    text = "[net]\n# caf\u00e9: a user's cfg\n" + "[convolutional]\nfilters=16\n" * 20_000
    data = text.encode("utf-8")
    meta = {"model": {"name": "custom", "num_classes": 1, "cfg": text}, "class_names": ["thing"]}
    with TestClient(create_app(ServeSettings(), empty_predictor(meta))) as c:
        summary, full = c.get("/v1/model"), c.get("/v1/model", params={"include": "cfg"})
        bad = c.get("/v1/model", params={"include": "weights"})
        schema = c.get("/openapi.json").json()
    arch = summary.json()["architecture"]
    assert summary.status_code == 200 and len(summary.content) < 4096 < len(data)
    assert "cfg" not in arch and arch["name"] == "custom"
    assert arch["cfg_sha256"] == hashlib.sha256(data).hexdigest()
    assert arch["cfg_bytes"] == len(data) > len(text)  # UTF-8 bytes, not characters
    assert full.status_code == 200 and full.json()["architecture"]["cfg"] == text
    assert full.json()["architecture"]["cfg_sha256"] == arch["cfg_sha256"]
    assert bad.status_code == 422 and "include" in bad.json()["error"]["message"]
    responses = schema["paths"]["/v1/model"]["get"]["responses"]
    assert responses["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ModelSummary"
    )
    props = schema["components"]["schemas"]["Architecture"]["properties"]
    assert {"cfg_sha256", "cfg_bytes", "cfg"} <= set(props)


def test_v1_model_names_the_conf_source_file_without_its_folders():
    source = {"file": "/home/ana/runs/coco/pr_f1.json", "key": "best_f1.all.conf", "conf": 0.3}
    meta = {"model": {"name": "yolov4-tiny"}, "conf_source": source}
    with TestClient(create_app(ServeSettings(), empty_predictor(meta))) as c:
        summary = c.get("/v1/model")
    assert summary.status_code == 200 and "/home/ana" not in summary.text
    assert summary.json()["conf_source"] == {**source, "file": "pr_f1.json"}
    assert meta["conf_source"]["file"] == "/home/ana/runs/coco/pr_f1.json"  # metadata kept


def test_the_runner_admits_at_most_max_queue_requests():
    release = threading.Event()

    async def admitted(runner: InferenceRunner, fn):
        async with runner.admission():
            return await runner.run(fn)

    async def scenario():
        runner = InferenceRunner(threads=1, max_queue=2)
        first = asyncio.ensure_future(admitted(runner, release.wait))
        second = asyncio.ensure_future(admitted(runner, lambda: 7))
        await asyncio.sleep(0.05)
        assert (runner.admitted, runner.running, runner.waiting) == (2, 1, 1)
        with pytest.raises(Overloaded, match=r"2 requests in progress \(limit 2, --max-queue\)"):
            async with runner.admission():
                pass
        release.set()
        (_, _), (value, waited_ms) = await first, await second
        assert value == 7 and waited_ms > 0 and (runner.admitted, runner.running) == (0, 0)
        runner.shutdown()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "flag", ["--max-queue", "--threads", "--max-bytes", "--workers", "--worker-healthcheck-timeout"]
)
def test_the_cli_refuses_non_positive_limits(flag, capsys):
    from yolov4.serve.__main__ import parse_args

    with pytest.raises(SystemExit) as e:
        parse_args(["some/dir", flag, "0"])
    assert e.value.code == 2 and f"{flag} must be >= 1" in capsys.readouterr().err


def test_the_worker_healthcheck_timeout_grows_with_the_measured_start_and_the_workers():
    from yolov4.serve.__main__ import HEALTHCHECK_MIN_S, worker_healthcheck_timeout

    assert worker_healthcheck_timeout(1.0, 2, 2) == HEALTHCHECK_MIN_S
    assert worker_healthcheck_timeout(43.0, 2, 2) == 129  # 3x the parent's start
    assert worker_healthcheck_timeout(20.0, 4, 2) == 120  # 4 workers on 2 cores: 2x slower
    assert worker_healthcheck_timeout(20.0, 2, 16) == 60  # more cores than workers: no gain


@pytest.mark.parametrize("given, expected", [(None, 150), (77, 77)])
def test_the_cli_gives_uvicorn_the_worker_healthcheck_timeout(monkeypatch, given, expected):
    """--workers N hands uvicorn a health-check timeout from the measured start-up (50 s on
    2 cores here), or the one given."""
    import uvicorn

    import yolov4.serve.__main__ as cli
    from yolov4.serve.settings import SETTINGS_ENV

    calls = []
    monkeypatch.setenv(SETTINGS_ENV, "")  # main sets it for the workers; restored after
    monkeypatch.setattr(Predictor, "from_artifact", classmethod(lambda cls, *a, **k: object()))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    monkeypatch.setattr(cli, "seconds_since_start", lambda: 50.0)
    monkeypatch.setattr(cli, "usable_cpus", lambda: 2)
    monkeypatch.setattr(cli, "cannot_listen", lambda host, port: None)
    argv = ["some/artifact", "--workers", "2"]
    argv += [] if given is None else ["--worker-healthcheck-timeout", str(given)]
    assert cli.main(argv) == 0
    [(app, kwargs)] = calls
    assert app == "yolov4.serve.app:app_from_env" and kwargs["workers"] == 2
    assert kwargs["timeout_worker_healthcheck"] == expected
    assert "YOLOV4_SERVE_METRICS_DIR" not in os.environ  # the shared metrics folder: removed


def test_metrics_of_several_workers_are_summed_whichever_answers(tmp_path):
    """Each scrape of a --workers N service reaches one worker: its counters are the sum of
    every worker's (they were the answering worker's own, so the totals jumped back and forth)."""
    from yolov4.serve.observability import Metrics

    calls = {"a": 5, "b": 2}
    workers = {
        name: Metrics(
            {"yolov4_model_calls_total": ("counter", "calls", lambda n=name: calls[n]),
             "yolov4_ready": ("gauge", "ready", lambda: 1)},
            share_dir=tmp_path, worker=name,
        )
        for name in ("a", "b")
    }  # fmt: skip
    for _ in range(3):
        workers["a"].observe("POST", "/v1/detect", 200, 0.2)
    workers["a"].add_images(3)
    workers["b"].observe("POST", "/v1/detect", 200, 0.02)
    workers["b"].add_images(1)
    for m in workers.values():
        text = m.render()
        assert 'yolov4_http_requests_total{method="POST",path="/v1/detect",status="200"} 4' in text
        assert "yolov4_images_total 4" in text and "yolov4_model_calls_total 7" in text
        assert "yolov4_http_request_duration_seconds_count 4" in text
        assert 'yolov4_http_request_duration_seconds_bucket{le="0.025"} 1' in text
        assert "yolov4_ready 1" in text  # a gauge: the answering worker's own
    alone = Metrics()
    alone.observe("GET", "/healthz", 200, 0.001)
    assert 'path="/healthz",status="200"} 1' in alone.render()


def test_spawned_workers_do_not_run_the_console_script_again(monkeypatch, tmp_path):
    """pip's ``yolov4-serve`` script is ``__main__`` without a spec: spawn would run it (and
    import torch) in each worker before the health check; with the spec of
    ``yolov4.serve.__main__`` spawn imports nothing for it."""
    import multiprocessing.spawn
    import types

    from yolov4.serve.__main__ import light_spawn_main

    script = types.ModuleType("__main__")
    script.__file__, script.__spec__ = str(tmp_path / "yolov4-serve"), None
    monkeypatch.setitem(sys.modules, "__main__", script)
    assert "init_main_from_path" in multiprocessing.spawn.get_preparation_data("w")
    light_spawn_main()
    data = multiprocessing.spawn.get_preparation_data("w")
    assert data["init_main_from_name"] == "yolov4.serve.__main__"
    assert "init_main_from_path" not in data


def test_the_micro_batcher_serves_waiting_compatible_requests_in_one_call():
    from yolov4.serve.batcher import MicroBatcher
    from yolov4.serve.inputs import Upload
    from yolov4.serve.jobs import DetectJob

    release, batch_sizes = threading.Event(), []

    def backend(images: torch.Tensor) -> torch.Tensor:
        batch_sizes.append(images.shape[0])
        if len(batch_sizes) == 2:  # the first real request: hold the only thread
            release.wait(10)
        return torch.zeros(images.shape[0], 1, 6)

    predictor = Predictor(backend, ["thing"], PreprocessConfig(input_size=(64, 64)))
    png = encode(scene(48, 64), "PNG")

    def job(conf=None, data=png, n=1):
        uploads = [Upload(data, f"image {i}") for i in range(n)]
        return DetectJob(predictor, 10**6, uploads=uploads, conf=conf)

    async def scenario():
        runner = MicroBatcher(threads=1, max_queue=16, max_images=4)
        await runner.run(DetectJob(predictor, 10**6, warmup=True))
        jobs = [
            job(),
            job(n=2),
            job(),
            job(data=b"\x89PNG\r\n\x1a\nbroken"),
            job(conf=0.9),
            job(n=2),
        ]
        tasks = [asyncio.ensure_future(runner.run(jobs[0]))]
        while len(batch_sizes) < 2:  # the first request holds the thread ...
            await asyncio.sleep(0.01)
        tasks += [asyncio.ensure_future(runner.run(j)) for j in jobs[1:]]
        await asyncio.sleep(0.1)  # ... while the others queue up
        assert len(runner.pending) == 5
        release.set()
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        runner.shutdown()
        return outcomes

    outcomes = asyncio.run(scenario())
    # warm-up 1; the first alone; then 2 + 1 + (the broken one, dropped) share a call (4 images
    # max, so the last 2-image job waits); conf=0.9 cannot share; the last 2 images alone
    assert batch_sizes == [1, 1, 3, 1, 2]
    assert isinstance(outcomes[3], InputError) and "image 0" in str(outcomes[3])
    for i in (0, 1, 2, 4, 5):
        results, _ = outcomes[i]
        assert len(results) == [1, 2, 1, None, 1, 2][i]
        assert all(r["image"] == {"width": 64, "height": 48} for r in results)


def test_a_port_in_use_is_refused_before_the_model_loads(monkeypatch, capsys):
    import socket

    import yolov4.serve.__main__ as cli

    loaded = []
    monkeypatch.setattr(
        Predictor, "from_artifact", classmethod(lambda cls, *a, **k: loaded.append(a))
    )
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert cli.main(["some/artifact", "--host", "127.0.0.1", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use (another " in err
    assert "give another --port" in err and "--host" not in err
    assert loaded == []
    assert cli.cannot_listen("127.0.0.1", port) is None  # released: free again


def test_a_host_that_is_not_this_machines_is_refused_naming_host(monkeypatch, capsys):
    """EADDRNOTAVAIL named --port as the fix; the address is what to change."""
    import yolov4.serve.__main__ as cli

    loaded = []
    monkeypatch.setattr(
        Predictor, "from_artifact", classmethod(lambda cls, *a, **k: loaded.append(a))
    )
    # TEST-NET-1 (RFC 5737): documentation only, never an address of this machine
    assert cli.main(["some/artifact", "--host", "192.0.2.1", "--port", "8745"]) == 2
    err = capsys.readouterr().err
    assert "cannot listen on 192.0.2.1:8745: " in err  # then the system's words for EADDRNOTAVAIL
    assert "give --host one of its addresses, e.g. 0.0.0.0" in err and "--port" not in err
    assert loaded == []


def test_a_privileged_port_names_the_ports_that_need_none(monkeypatch):
    """EACCES (a port below 1024 for a user without the privilege), as the system raises it."""
    import errno
    import socket

    import yolov4.serve.__main__ as cli

    def refuse(self, address):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(socket.socket, "bind", refuse)
    message = cli.cannot_listen("127.0.0.1", 80)
    assert message == (
        "cannot listen on 127.0.0.1:80: Permission denied "
        "(ports below 1024 need privileges: give --port 1024 or above)"
    )


def test_uploads_1_and_3_pixels_high_are_answered_as_the_predictor_reads_their_files():
    """A decoded upload is (H, W, 3) whatever its shape: a 1x1 PNG or a 640x3 JPEG, whose
    arrays also read as (C, H, W), is detected on, not refused as an ambiguous array."""
    from yolov4.serve.inputs import Upload
    from yolov4.serve.jobs import DetectJob

    def backend(images: torch.Tensor) -> torch.Tensor:  # one box, scored by the mean pixel
        out = torch.zeros(images.shape[0], 1, 6)
        out[:, 0, :4] = torch.tensor([32.0, 32.0, 16.0, 16.0])
        out[:, 0, 4], out[:, 0, 5] = images.mean((1, 2, 3)), 1.0
        return out

    predictor = Predictor(backend, ["thing"], PreprocessConfig(input_size=(64, 64)))
    wide = np.repeat(np.linspace(0, 255, 640).astype(np.uint8)[None, :, None], 3, 0).repeat(3, 2)
    files = [encode(np.full((1, 1, 3), 200, np.uint8), "PNG"), encode(wide, "JPEG")]
    results = DetectJob(predictor, 10**6, uploads=[Upload(d, "x") for d in files], conf=0.01)()
    assert results == [d.to_dict() for d in predictor(files, conf=0.01)]
    assert [r["image"]["height"] for r in results] == [1, 3] and all(
        r["detections"] for r in results
    )
