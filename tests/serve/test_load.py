"""Load and limits over real HTTP: health checks answer while inference is busy, a full queue
gets 503 with Retry-After, over-limit bodies are refused before they are read whole, SIGTERM
stops ``yolov4-serve`` (a subprocess: the command end to end) after its in-flight requests
finish, with exit status 0."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.inference.predict_cases import as_rows, assert_same_detections
from tests.serve.conftest import (
    START_TIMEOUT_S,
    encode,
    free_port,
    pinned,
    scene,
    serve,
    serve_here,
)

BATCH = 20  # images in the "slow batch": a second or more of inference on 2 cores
LIMIT = 1_000_000  # --max-bytes of this module's server
WAIT_S = 60
READ_TIMEOUT_S = 1


@pytest.fixture(scope="module")
def busy_server(artifact, tmp_path_factory):
    """One inference job at a time (--max-queue 1) and room for the slow batch."""
    log = tmp_path_factory.mktemp("serve-load") / "server.log"
    args = ["--max-queue", "1", "--max-batch", str(BATCH), "--max-bytes", str(LIMIT),
            "--read-timeout", str(READ_TIMEOUT_S)]  # fmt: skip
    with serve_here(artifact, log, *args) as s:
        yield s


@pytest.fixture(scope="module")
def slow_batch() -> list:
    return [("files", (f"{i}.jpg", encode(scene(768, 1024, seed=i), "JPEG"))) for i in range(BATCH)]


def wait_until_running(client: httpx.Client) -> None:
    deadline = time.monotonic() + WAIT_S
    while "yolov4_inference_running 1" not in client.get("/metrics").text:
        assert time.monotonic() < deadline, "the batch never started running"
        time.sleep(0.02)


def in_flight(server, files):
    """Start the slow batch in a thread -> (executor, future of its response)."""
    pool = ThreadPoolExecutor(1)
    future = pool.submit(
        lambda: httpx.post(server.url + "/v1/detect/batch", files=files, timeout=300)
    )
    return pool, future


def test_healthz_answers_while_a_slow_batch_runs(busy_server, slow_batch):
    pool, batch = in_flight(busy_server, slow_batch)
    with pool, busy_server.client() as c:
        wait_until_running(c)
        health = c.get("/healthz", timeout=5)
        still_running = "yolov4_inference_running 1" in c.get("/metrics").text
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        assert still_running and not batch.done()  # answered during inference, not after
        r = batch.result(timeout=300)
    assert r.status_code == 200 and len(r.json()["results"]) == BATCH


def test_a_full_queue_gets_503_with_retry_after(busy_server, slow_batch):
    good = encode(scene(240, 320), "JPEG")
    pool, batch = in_flight(busy_server, slow_batch)
    with pool, busy_server.client() as c:
        wait_until_running(c)
        r = c.post("/v1/detect", files={"file": ("x.jpg", good)})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert (
            r.json()["error"]["code"] == "overloaded"
            and "--max-queue" in r.json()["error"]["message"]
        )
        with connect(busy_server) as sock:  # refused before its (never sent) body is read
            sock.sendall(
                b"POST /v1/detect HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"
                b"Content-Length: 500000\r\n\r\n"
            )
            status, body = http_response(sock)
        assert status == 503 and body["error"]["code"] == "overloaded"
        assert batch.result(timeout=300).status_code == 200
        assert c.post("/v1/detect", files={"file": ("x.jpg", good)}).status_code == 200


def http_response(sock: socket.socket) -> tuple[int, dict]:
    """Read one response (status, JSON body) from a raw socket until the server closes it."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        if body and len(body) >= int(dict_headers(head).get("content-length", 1 << 30)):
            break
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def dict_headers(head: bytes) -> dict:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines if ":" in x)}


def connect(server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=WAIT_S)
    return sock


@pytest.mark.parametrize("content_type", ["image/jpeg", "multipart/form-data; boundary=B"])
def test_a_declared_length_over_the_limit_is_refused_before_the_body(busy_server, content_type):
    with connect(busy_server) as sock:  # 10 GB announced, 1 kB sent: the answer comes anyway
        sock.sendall(
            b"POST /v1/detect HTTP/1.1\r\nHost: t\r\nContent-Type: "
            + content_type.encode()
            + b"\r\nContent-Length: 10000000000\r\n\r\n"
            + b"\xff\xd8\xff"
            + bytes(1000)
        )
        status, body = http_response(sock)
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    assert "10,000,000,000" in body["error"]["message"]


def test_a_chunked_body_is_refused_once_it_passes_the_limit(busy_server):
    chunk = 64 * 1024
    sent = 0
    with connect(busy_server) as sock:
        sock.sendall(
            b"POST /v1/detect HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        try:  # never the final 0-length chunk: the body does not end
            while sent <= LIMIT + 4 * chunk:
                sock.sendall(b"%x\r\n" % chunk + b"\xff" * chunk + b"\r\n")
                sent += chunk
        except OSError:  # the server answered and closed while we were still sending
            pass
        status, body = http_response(sock)
    assert status == 413 and body["error"]["code"] == "payload_too_large"
    assert "refused after" in body["error"]["message"]
    with busy_server.client() as c:
        assert c.get("/healthz").status_code == 200


def test_a_body_that_does_not_arrive_in_time_gets_408_and_frees_its_slot(busy_server):
    with connect(busy_server) as sock:  # announces 1000 bytes, sends 10, then stalls
        sock.sendall(
            b"POST /v1/detect HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"
            b"Content-Length: 1000\r\n\r\n" + b"\xff\xd8\xff" + bytes(7)
        )
        status, body = http_response(sock)
    assert status == 408 and body["error"]["code"] == "request_timeout"
    assert body["error"]["message"].endswith("(--read-timeout)")
    with busy_server.client() as c:  # the only admission slot (--max-queue 1) is free again
        r = c.post("/v1/detect", files={"file": ("x.jpg", encode(scene(240, 320), "JPEG"))})
    assert r.status_code == 200


def test_sigterm_lets_in_flight_requests_finish_and_exits_0(artifact, tmp_path, slow_batch):
    """``python -m yolov4.serve`` end to end: ready, a batch in flight, SIGTERM: no new
    connection is accepted, the batch is answered in full, and the process exits 0."""
    with serve(artifact, tmp_path / "server.log", "--max-batch", str(BATCH)) as server:
        pool, batch = in_flight(server, slow_batch[:16])
        with pool, server.client() as c:
            wait_until_running(c)
            server.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + WAIT_S
            while "Waiting for connections to close" not in server.log_text():
                assert time.monotonic() < deadline, server.log_text()
                time.sleep(0.02)
            with pytest.raises(ConnectionRefusedError):  # it stopped listening first
                connect(server)
            assert not batch.done()  # the drain waits for it
            r = batch.result(timeout=300)
        assert server.proc.wait(WAIT_S) == 0, server.log_text()
    assert r.status_code == 200 and len(r.json()["results"]) == 16
    assert "Application shutdown complete" in server.log_text()


@pytest.mark.parametrize("case", ["not an artifact", "backend not exported"])
def test_a_bad_artifact_stops_the_cli_with_its_message(artifact, tmp_path, case, capsys):
    from yolov4.serve.__main__ import main

    args = (
        [str(tmp_path)]
        if case == "not an artifact"
        else [str(artifact), "--backend", "torchscript"]
    )
    code = main([*args, "--port", str(free_port())])
    err = capsys.readouterr().err
    words = "not an export artifact" if case == "not an artifact" else "has no model.torchscript"
    assert code == 2 and words in err, err
    assert err.startswith("yolov4-serve: error: ") and err.count("\n") == 1, err


@pytest.mark.slow  # starts several server processes
def test_several_worker_processes_serve(artifact, tmp_path):
    good = encode(scene(240, 320), "JPEG")
    args = ("--workers", "2", "--head-timeout", "1")
    log = tmp_path / "server.log"
    # the parent loads the model (to check the artifact), then each worker does
    with (
        serve(artifact, log, *args, start_timeout=2 * START_TIMEOUT_S) as server,
        server.client() as c,
    ):
        codes = [
            c.post("/v1/detect", files={"file": ("x.jpg", good)}).status_code for _ in range(4)
        ]
        assert codes == [200] * 4
        for _ in range(4):  # whichever worker answers: the service's totals
            assert "\nyolov4_images_total 4\n" in c.get("/metrics").text
        with connect(server) as sock:  # the workers have the head timeout too
            start = time.monotonic()
            assert sock.recv(1) == b"" and time.monotonic() - start < 5


# what pip writes for the yolov4-serve console script: a spawned worker runs it again (as
# __mp_main__), importing torch before it can answer uvicorn's health check
CONSOLE_SCRIPT = """import sys
from yolov4.serve.__main__ import main
if __name__ == "__main__":
    sys.exit(main())
"""
BUSY_START_TIMEOUT_S = 480  # the parent, then two workers, on 2 cores beside 4 busy loops


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_two_workers_become_ready_beside_a_busy_neighbour(artifact, tmp_path):
    """The service, its workers and 4 busy-looping processes share 2 cores (load ~6): both
    workers load their model and none is restarted by uvicorn's health check."""
    cpus = sorted(os.sched_getaffinity(0))[:2]
    script = tmp_path / "yolov4-serve"
    script.write_text(CONSOLE_SCRIPT)
    busy = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], preexec_fn=pinned(cpus))
        for _ in range(4)
    ]
    log = tmp_path / "server.log"
    command = [sys.executable, str(script)]
    try:
        with serve(
            artifact,
            log,
            "--workers",
            "2",
            command=command,
            start_timeout=BUSY_START_TIMEOUT_S,
            cpus=cpus,
        ) as server:
            deadline = time.monotonic() + BUSY_START_TIMEOUT_S
            while server.log_text().count("ready: ") < 2 and time.monotonic() < deadline:
                time.sleep(0.5)
            with server.client() as c:
                ready = [c.get("/readyz").status_code for _ in range(4)]
            text = server.log_text()
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert text.count("ready: ") == 2, text  # each worker logs it once, model loaded and warm
    assert ready == [200] * 4
    assert text.count("Started server process") == 2, text  # no worker was started again
    assert "died" not in text and "failed to start" not in text, text
    assert "health-check timeout" in text


@pytest.mark.slow
def test_the_torchscript_backend_serves_like_its_predictor(artifact, tmp_path):
    from yolov4.export.artifact import export_artifact
    from yolov4.inference import Predictor

    art = export_artifact(artifact.parent / "best.pt", tmp_path / "export", formats=["torchscript"])
    data = encode(scene(240, 320), "JPEG")
    [want] = Predictor.from_artifact(art, backend="torchscript")(data, conf=0.01)
    args = ("--backend", "torchscript")
    with serve(art, tmp_path / "server.log", *args) as server, server.client() as c:
        r = c.post("/v1/detect", params={"conf": 0.01}, files={"file": ("x.jpg", data)})
    assert r.status_code == 200 and r.json()["model"]["backend"] == "torchscript"
    # one to one, in either order where two scores tie after rounding: the service's process
    # runs torch on its own thread count, the test process on one (floats of the last digit)
    assert_same_detections(as_rows(r.json()["detections"]), as_rows(want.to_dict()["detections"]))


@pytest.mark.slow
def test_micro_batched_concurrent_requests_match_the_predictor(artifact, tmp_path, predictor):
    import asyncio

    datas = [encode(scene(360, 480, seed=20 + i), "JPEG") for i in range(4)]
    want = [predictor(d, conf=0.05)[0].to_dict()["detections"] for d in datas]

    async def run(url):
        async with httpx.AsyncClient(base_url=url, timeout=120) as c:
            return await asyncio.gather(
                *(
                    c.post("/v1/detect", params={"conf": 0.05}, files={"file": ("x", datas[i % 4])})
                    for i in range(16)
                )
            )

    with serve(artifact, tmp_path / "server.log", "--micro-batch", "8") as server:
        responses = asyncio.run(run(server.url))
        metrics = httpx.get(server.url + "/metrics").text
    assert [r.status_code for r in responses] == [200] * 16
    calls = int(re.search(r"^yolov4_model_calls_total (\d+)$", metrics, re.M).group(1))
    assert calls < 1 + 16  # warm-up + fewer calls than requests: they shared batches
    for i, r in enumerate(responses):  # a batch may round differently in the last digit
        got, exp = as_rows(r.json()["detections"]), as_rows(want[i % 4])
        assert_same_detections(got, exp, box_atol=0.05, score_atol=1e-4)
