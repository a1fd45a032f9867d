"""The service's doors against careless and hostile clients, over real HTTP on loopback: a
per-request pixel budget, head and keep-alive timeouts, a connection limit that idle sockets
cannot fill, an OpenAPI document
that matches what the service does, ``/docs`` without a network, memory that settles after batch
traffic, and a one-line error for a malformed artifact."""

from __future__ import annotations

import json
import re
import shutil
import socket
import time

import httpx
import pytest
from PIL import Image

from tests.serve.conftest import encode, free_port, scene, serve, serve_here

MAX_PIXELS = 2_000_000  # the guarded server's per-image limit
REQUEST_PIXELS = 3_000_000  # its per-request budget
HEAD_TIMEOUT_S = 1
KEEP_ALIVE_S = 1
MAX_CONNECTIONS = 6
MAX_HEAD_BYTES = 4096
CROWDED_CONNECTIONS = 4  # the connection limit of the server whose timeouts never fire here
WAIT_S = 10  # longest any drop or answer below may take (the timeouts are 1 s)
MIB = 1 << 20


@pytest.fixture(scope="module")
def guarded(artifact, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve-guarded") / "server.log"
    args = ["--max-pixels", str(MAX_PIXELS), "--max-request-pixels", str(REQUEST_PIXELS),
            "--max-batch", "8", "--head-timeout", str(HEAD_TIMEOUT_S),
            "--keep-alive-timeout", str(KEEP_ALIVE_S),
            "--max-connections", str(MAX_CONNECTIONS),
            "--max-head-bytes", str(MAX_HEAD_BYTES)]  # fmt: skip
    with serve_here(artifact, log, *args) as s:
        yield s


@pytest.fixture(scope="module")
def crowded(artifact, tmp_path_factory):
    """A small connection limit, and timeouts long enough that no connection is closed by
    them during a test: only the limit closes connections."""
    log = tmp_path_factory.mktemp("serve-crowded") / "server.log"
    args = ["--max-connections", str(CROWDED_CONNECTIONS), "--head-timeout", "60",
            "--keep-alive-timeout", "60", "--read-timeout", "60"]  # fmt: skip
    with serve_here(artifact, log, *args) as s:
        yield s


def png(side: int, seed: int = 0) -> bytes:
    return encode(scene(side, side, seed=seed), "PNG")


def connect(server) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=WAIT_S)


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and the seconds it took."""
    start, data = time.monotonic(), b""
    while chunk := sock.recv(65536):
        data += chunk
    return data, time.monotonic() - start


def status_and_error(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)["error"]


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak since start) of a process, in MiB (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        line = next(x for x in f if x.startswith(field + ":"))
    return int(line.split()[1]) / 1024


# -- item 2: a per-request pixel budget, images decoded one by one ------------------------------


def test_a_batch_over_the_pixel_budget_gets_413_naming_it_before_the_rest_is_decoded(guarded):
    side = 1200  # 1.44 M pixels: two fit the 3 M budget, a third does not
    truncated = png(300)[:500]  # would be a 400 if it were ever decoded
    files = [("files", (f"{i}.png", png(side, seed=i))) for i in range(3)]
    with guarded.client() as c:
        ok = c.post("/v1/detect/batch", files=files[:2])
        r = c.post("/v1/detect/batch", files=[*files, ("files", ("t.png", truncated))])
    assert ok.status_code == 200, ok.text
    assert r.status_code == 413, r.text
    error = r.json()["error"]
    assert error["code"] == "image_too_large"
    assert "image 2 (2.png)" in error["message"] and f"{REQUEST_PIXELS:,}" in error["message"]
    assert "pixel budget" in error["message"] and "(--max-request-pixels)" in error["message"]


@pytest.mark.slow
def test_the_pixel_budget_bounds_the_memory_of_one_batch_request(artifact, tmp_path):
    """The issue's attack scaled down: 12 PNGs of 4000x4000 (a few kB each) would take ~600 MB
    decoded at once; the 32 M-pixel budget stops the third one."""
    bomb = encode(Image.new("L", (4000, 4000)), "PNG")
    files = [("files", (f"{i}.png", bomb)) for i in range(12)]
    args = ("--max-pixels", "16000000", "--max-request-pixels", "32000000", "--max-batch", "16")
    with serve(artifact, tmp_path / "server.log", *args) as server, server.client() as c:
        assert c.post("/v1/detect", files={"file": ("x.png", png(256))}).status_code == 200
        before = rss_mib(server.proc.pid, "VmHWM")
        r = c.post("/v1/detect/batch", files=files)
        peak = rss_mib(server.proc.pid, "VmHWM") - before
    assert r.status_code == 413 and "32,000,000" in r.json()["error"]["message"]
    assert peak < 300, f"the request raised the server's peak memory by {peak:.0f} MiB"


# -- item 3: head and keep-alive timeouts, a connection limit -----------------------------------


def test_a_connection_that_never_finishes_its_request_head_is_dropped(guarded):
    with connect(guarded) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ")  # and never the rest
        raw, seconds = read_until_closed(sock)
    assert seconds < HEAD_TIMEOUT_S + 3
    status, error = status_and_error(raw)
    assert status == 408 and error["code"] == "request_timeout"
    assert f"{HEAD_TIMEOUT_S:g} s (--head-timeout)" in error["message"]
    with connect(guarded) as sock:  # one that sends nothing at all is closed too
        raw, seconds = read_until_closed(sock)
    assert raw == b"" and seconds < HEAD_TIMEOUT_S + 3


def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(guarded):
    with connect(guarded) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        raw, seconds = read_until_closed(sock)
    assert raw.startswith(b"HTTP/1.1 200") and seconds < KEEP_ALIVE_S + 3


HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"


def healthz_on(sock: socket.socket) -> int:
    """``GET /healthz`` on an open connection, left open (keep-alive) -> the status."""
    sock.sendall(HEALTHZ)
    data = b""
    while not re.search(rb"\r\n\r\n\{.*\}", data, re.S):  # the head and the JSON body
        chunk = sock.recv(65536)
        assert chunk, f"the connection was closed after {data!r}"
        data += chunk
    return int(data.split()[1])


def is_open(sock: socket.socket) -> bool:
    """Whether the server keeps ``sock`` open (nothing to read, no end of stream)."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(WAIT_S)


def test_idle_connections_give_way_to_a_new_one_longest_idle_first(crowded):
    """A flood of silent connections (and keep-alive ones between requests) at the limit:
    each new connection closes the one idle the longest, so /healthz answers at once."""
    socks = []
    try:
        flood = [connect(crowded) for _ in range(10 * CROWDED_CONNECTIONS)]
        socks += flood
        probe = connect(crowded)
        socks.append(probe)
        assert healthz_on(probe) == 200
        kept = flood[-(CROWDED_CONNECTIONS - 1) :]  # the newest, with the probe: the limit
        for sock in flood[: -(CROWDED_CONNECTIONS - 1)]:
            assert sock.recv(1) == b""  # closed by the server
        assert all(is_open(sock) for sock in [*kept, probe])
        # the probe, idle since its response, is younger than the silent ones: they go first
        second = connect(crowded)
        socks.append(second)
        assert healthz_on(second) == 200
        assert kept[0].recv(1) == b""
        assert all(is_open(sock) for sock in [*kept[1:], probe, second])
    finally:
        for sock in socks:
            sock.close()


def test_a_connection_over_the_limit_gets_503_when_none_is_idle(crowded):
    """Connections with a request in progress are not closed for a new one: it is refused."""
    head = (b"POST /v1/detect HTTP/1.1\r\nHost: t\r\nContent-Type: image/jpeg\r\n"
            b"Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n")  # fmt: skip
    busy = [connect(crowded) for _ in range(CROWDED_CONNECTIONS)]
    try:
        for sock in busy:  # the service reads the body: the request is in progress
            sock.sendall(head)
            assert sock.recv(64).startswith(b"HTTP/1.1 100 ")
        with connect(crowded) as over:
            over.sendall(HEALTHZ)
            raw, _ = read_until_closed(over)
        status, error = status_and_error(raw)
        assert status == 503 and error["code"] == "too_many_connections"
        assert (
            f"{CROWDED_CONNECTIONS} connections are open (the limit, --max-connections)"
            in error["message"]
        )
        assert "none idle" in error["message"]
        assert all(is_open(sock) for sock in busy)
    finally:
        for sock in busy:
            sock.close()
    deadline = time.monotonic() + WAIT_S  # the closed ones free their places
    while (status := httpx.get(crowded.url + "/healthz", timeout=WAIT_S).status_code) != 200:
        assert status == 503 and time.monotonic() < deadline, status
        time.sleep(0.1)


@pytest.mark.parametrize("whole", [False, True], ids=["unfinished", "whole-in-one-read"])
def test_a_request_head_over_the_limit_gets_a_json_400(guarded, whole):
    with connect(guarded) as sock:
        head = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 2 * MAX_HEAD_BYTES
        sock.sendall(head + (b"\r\nConnection: close\r\n\r\n" if whole else b""))
        raw, _ = read_until_closed(sock)
    status, error = status_and_error(raw)
    assert status == 400 and error["code"] == "bad_request"
    assert f"{MAX_HEAD_BYTES:,} bytes (--max-head-bytes)" in error["message"]
    with guarded.client() as c:
        assert c.get("/healthz").status_code == 200


def test_the_cli_shows_the_connection_and_budget_settings(capsys):
    from yolov4.serve.__main__ import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = capsys.readouterr().out
    for flag in ("--max-request-pixels", "--head-timeout", "--keep-alive-timeout",
                 "--max-connections", "--max-head-bytes", "--model-batch"):  # fmt: skip
        assert flag in text
    args = parse_args(["some/dir"])
    assert 0 < args.head_timeout_s <= 60 and 0 < args.keep_alive_timeout_s <= 60
    assert 0 < args.max_connections <= 1024 and args.max_request_pixels >= args.max_pixels


# -- item 13: /docs offline, the OpenAPI document, 405 Allow, HEAD, 16-bit big-endian TIFF ---


def test_docs_work_without_a_network(guarded):
    with guarded.client() as c:
        page = c.get("/docs")
        assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
        fetched = {a: c.get(a) for a in assets}
    assert page.status_code == 200 and "swagger" in page.text.lower()
    assert not re.search(r"https?://", page.text), "the page loads something from the network"
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset, r in fetched.items():
        assert r.status_code == 200 and len(r.content) > 100, asset


def test_openapi_describes_the_real_contract(guarded):
    with guarded.client() as c:
        schema = c.get("/openapi.json").json()
    paths = schema["paths"]
    error = schema["components"]["schemas"]["ErrorResponse"]
    assert error["required"] == ["error"]
    for path in ("/v1/detect", "/v1/detect/batch"):
        op = paths[path]["post"]
        for status in ("400", "408", "413", "415", "422", "503"):
            content = op["responses"][status]["content"]
            assert list(content) == ["application/json"], (path, status)
            assert content["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
        form = op["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert op["requestBody"]["required"] is True
        assert form["required"] == (["file"] if path == "/v1/detect" else ["files"])
    assert set(paths["/v1/detect"]["post"]["responses"]["200"]["content"]) == {
        "application/json",
        "image/jpeg",
    }
    assert set(paths["/v1/detect/batch"]["post"]["responses"]["200"]["content"]) == {
        "application/json"
    }
    assert set(paths["/metrics"]["get"]["responses"]["200"]["content"]) == {"text/plain"}
    assert "503" in paths["/readyz"]["get"]["responses"]
    assert "head" in paths["/healthz"]


def test_405_keeps_the_allow_header(guarded):
    with guarded.client() as c:
        r = c.get("/v1/detect")
        put = c.put("/healthz")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    assert r.json()["error"]["code"] == "method_not_allowed"
    assert put.status_code == 405 and set(put.headers["allow"].split(", ")) == {"GET", "HEAD"}


def test_head_healthz_is_served(guarded):
    with guarded.client() as c:
        health, ready = c.head("/healthz"), c.head("/readyz")
    assert health.status_code == 200 and health.content == b""
    assert health.headers["content-type"] == "application/json"
    assert ready.status_code == 200


def test_16_bit_big_endian_tiff_is_accepted(guarded):
    import numpy as np

    ramp = (np.arange(128 * 128).reshape(128, 128) * 4).astype(">u2")
    data = encode(Image.frombytes("I;16B", (128, 128), ramp.tobytes()), "TIFF")
    assert data[:4] == b"MM\x00*"  # big-endian TIFF
    with guarded.client() as c:
        r = c.post("/v1/detect", files={"file": ("be.tif", data)})
    assert r.status_code == 200, r.text
    assert r.json()["image"] == {"width": 128, "height": 128}


# -- item 14: memory settles after batch traffic ------------------------------------------------


@pytest.mark.slow
def test_memory_settles_after_batch_traffic(artifact, tmp_path):
    small = {"file": ("x.jpg", encode(scene(480, 640), "JPEG"))}
    batch = [("files", (f"{i}.jpg", encode(scene(1536, 2048, seed=i), "JPEG"))) for i in range(8)]
    with serve(artifact, tmp_path / "server.log", "--max-batch", "16") as server:
        with server.client() as c:
            for _ in range(3):
                assert c.post("/v1/detect", files=small).status_code == 200
            before = rss_mib(server.proc.pid)
            for _ in range(2):
                assert c.post("/v1/detect/batch", files=batch).status_code == 200
            for _ in range(3):
                assert c.post("/v1/detect", files=small).status_code == 200
        time.sleep(1)
        grown = rss_mib(server.proc.pid) - before
    assert grown < 100, f"the server kept {grown:.0f} MiB after the batch traffic"


# -- item 8 (serving side): a malformed metadata.json stops the CLI with one line ---------------


def _not_an_object(meta: dict) -> object:
    return [meta]


def _no_sha256(meta: dict) -> dict:
    for entry in meta["files"].values():
        entry.pop("sha256", None)
    return meta


def _drop(key: str):
    def edit(meta: dict) -> dict:
        meta.pop(key, None)
        return meta

    return edit


def _bad_input_size(meta: dict) -> dict:
    meta["preprocess"]["input_size"] = [-3, "x"]
    meta["input_size"] = [-3, "x"]
    return meta


METADATA_EDITS = {
    "not an object": _not_an_object,
    "file entry without sha256": _no_sha256,
    "no class names": _drop("class_names"),
    "no preprocess": _drop("preprocess"),
    "bad input size": _bad_input_size,
    "not JSON": None,
}


@pytest.mark.parametrize("case", list(METADATA_EDITS))
def test_a_malformed_metadata_json_stops_the_cli_with_one_line(
    artifact, tmp_path, case, capsys, monkeypatch
):
    from yolov4.serve import __main__ as cli

    def never(*args, **kwargs):
        raise AssertionError("the service started on a malformed artifact")

    monkeypatch.setattr(cli, "serve_until_stopped", never)

    bad = tmp_path / "export"
    shutil.copytree(artifact, bad)
    path = bad / "metadata.json"
    edit = METADATA_EDITS[case]
    text = "{not json" if edit is None else json.dumps(edit(json.loads(path.read_text())))
    path.write_text(text)
    code = cli.main([str(bad), "--port", str(free_port())])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("yolov4-serve: error: ") and err.count("\n") == 1, err
    assert "metadata.json" in err or str(bad) in err, err
