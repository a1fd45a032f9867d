"""The OpenVINO backend: model.onnx read directly agrees with PyTorch and onnxruntime as the
export's parity requires; threads reach each runtime's pool; artifacts from before precisions
existed still load."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from yolov4 import build_model, save_checkpoint
from yolov4.core.artifact import read_metadata
from yolov4.errors import ExportError
from yolov4.export import artifact as artifact_mod
from yolov4.export.artifact import export_artifact
from yolov4.inference import Predictor
from yolov4.inference.backends import (
    BACKENDS,
    OnnxBackend,
    OpenVinoBackend,
    load_backend,
    openvino_core,
)

NAMES = ["circle", "rectangle", "triangle"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, randomize):
    d = tmp_path_factory.mktemp("openvino")
    torch.manual_seed(3)
    model = randomize(build_model("yolov4-tiny", num_classes=3), seed=3)
    ckpt = save_checkpoint(
        d / "best.pt", model, NAMES, {"input_size": [96, 128], "mode": "letterbox"}
    )
    return ckpt, export_artifact(ckpt, d / "export")


def test_openvino_agrees_with_torch_and_onnxruntime(exported):
    ckpt, art = exported
    meta = read_metadata(art)
    assert meta["precisions"]["fp32"]["backends"] == ["onnxruntime", "openvino", "torchscript"]
    assert meta["parity"]["model.onnx@openvino"]["max_rel_diff"] <= artifact_mod.PARITY_RTOL
    ov = Predictor.from_artifact(art, backend="openvino")
    assert (ov.backend.name, ov.precision, ov.model_file) == ("openvino", "fp32", "model.onnx")
    assert ov.backend.executed == "f32"  # fp32 stays f32 even where OpenVINO defaults to bf16
    ref = Predictor.from_checkpoint(ckpt)
    ort = Predictor.from_artifact(art)
    x = torch.rand(3, 3, 96, 128, generator=torch.Generator().manual_seed(0))
    want = ref.backend(x)
    scale = float(want.abs().max())
    for p in (ov, ort):
        assert float((p.backend(x) - want).abs().max()) <= artifact_mod.PARITY_RTOL * scale
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in ((80, 150), (120, 64))]
    got, base = ov(images, conf=0.3), ort(images, conf=0.3)
    assert sum(len(d) for d in base) > 0
    for a, b in zip(got, base, strict=True):
        np.testing.assert_array_equal(a.class_ids, b.class_ids)
        np.testing.assert_allclose(a.boxes, b.boxes, atol=0.05)
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)


def test_threads_reach_the_runtime_pools(exported):
    _, art = exported
    ov = load_backend(art / "model.onnx", "openvino", threads=1)
    assert int(ov.compiled.get_property("INFERENCE_NUM_THREADS")) == 1
    ort = OnnxBackend(art / "model.onnx", threads=1)
    assert ort.session.get_session_options().intra_op_num_threads == 1
    assert ort.session.get_session_options().inter_op_num_threads == 1


def test_openvino_is_thread_safe(exported):
    """The service calls one Predictor from several threads: each gets its own request."""
    from concurrent.futures import ThreadPoolExecutor

    _, art = exported
    backend = OpenVinoBackend(art / "model.onnx")
    xs = [torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    alone = [backend(x) for x in xs]
    with ThreadPoolExecutor(3) as pool:
        together = list(pool.map(backend, xs))
    for a, b in zip(alone, together, strict=True):
        torch.testing.assert_close(a, b)


def test_artifact_without_precisions_is_fp32(exported, tmp_path):
    """metadata.json of an artifact exported before precisions existed: fp32, onnxruntime."""
    import shutil

    _, art = exported
    old = tmp_path / "old"
    shutil.copytree(art, old)
    meta = json.loads((old / "metadata.json").read_text())
    del meta["precisions"], meta["default_precision"]
    (old / "metadata.json").write_text(json.dumps(meta))
    p = Predictor.from_artifact(old)
    assert (p.backend.name, p.precision) == ("onnxruntime", "fp32")
    assert Predictor.from_artifact(old, backend="openvino").backend.name == "openvino"
    with pytest.raises(ExportError, match=r"no int8 model \(precisions: \['fp32'\]\)"):
        Predictor.from_artifact(old, precision="int8")


def test_unknown_backend_and_precision_named(exported):
    _, art = exported
    with pytest.raises(
        ExportError,
        match=re.escape(f"backend must be one of {BACKENDS}, got 'tensorrt'"),
    ):
        Predictor.from_artifact(art, backend="tensorrt")
    with pytest.raises(ExportError, match=r"precision must be one of .* got 'fp16'"):
        Predictor.from_artifact(art, precision="fp16")
    with pytest.raises(
        ExportError, match=r"backend 'onnxruntime' runs fp32 only, got precision 'int8'"
    ):
        load_backend(art / "model.onnx", "onnxruntime", precision="int8")


def test_bf16_refused_without_native_bf16(exported):
    """This machine has no AVX512-BF16/AMX: OpenVINO would silently run f32, so the backend
    refuses, naming the flags it lacks and has; a bf16 CPU runs it in bf16."""
    from yolov4.inference.backends import BF16_CPU_FLAGS, bf16_native, cpu_features

    _, art = exported
    features = cpu_features()
    if bf16_native(features):
        assert OpenVinoBackend(art / "model.onnx", "bf16").executed == "bf16"
        return
    with pytest.raises(ExportError, match=" or ".join(BF16_CPU_FLAGS)) as e:
        OpenVinoBackend(art / "model.onnx", "bf16")
    assert features["cpu"] in str(e.value) and "OpenVINO would run it in f32" in str(e.value)


def test_without_openvino_fp32_exports_and_reduced_precisions_name_the_extra(
    exported, tmp_path, monkeypatch
):
    """OpenVINO is the optional extra yolov4[openvino]: without it an fp32 export still works
    (onnxruntime, TorchScript) and what needs it says how to install it."""
    import sys

    ckpt, art = exported
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    meta = read_metadata(export_artifact(ckpt, tmp_path / "export", formats=["onnx"]))
    assert meta["precisions"]["fp32"]["backends"] == ["onnxruntime"]
    assert "model.onnx@openvino" not in meta["parity"] and "openvino" not in meta["versions"]
    with pytest.raises(ExportError, match=r"pip install 'yolov4\[openvino\]'"):
        export_artifact(ckpt, tmp_path / "int8", precisions=["int8"], evaluate=print)
    with pytest.raises(ExportError, match=r"pip install 'yolov4\[openvino\]'"):
        Predictor.from_artifact(art, backend="openvino")


# two OpenVINO Predictors released in the order they were made, then Ctrl-C's signal
SIGNAL_AFTER_TWO_PREDICTORS = textwrap.dedent(
    """
    import gc, os, signal, sys, time
    # Python's own Ctrl-C handler, which it installs at start-up only where SIGINT is not
    # ignored (a job a shell starts in the background inherits it ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from yolov4.inference import Predictor
    first = Predictor.from_artifact(sys.argv[1], backend="openvino")
    second = Predictor.from_artifact(sys.argv[1], backend="openvino")
    del first
    gc.collect()
    del second
    gc.collect()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    """
)


@pytest.mark.slow
def test_a_signal_after_openvino_predictors_are_released_is_handled(exported):
    """OpenVINO's CPU plugin swaps the thread's signal stack for one of its own per Core and puts
    the old one back when that Core goes: with a Core per Predictor, releasing two in the order
    they were made leaves the process on a freed signal stack and Ctrl-C ends it with SIGSEGV
    (exit -11). With the one shared Core the signal is a KeyboardInterrupt."""
    _, art = exported
    run = subprocess.run(
        [sys.executable, "-c", SIGNAL_AFTER_TWO_PREDICTORS, str(art)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    assert run.stdout.strip() == "interrupted"


def test_every_openvino_call_uses_the_one_core():
    """``openvino.Core()`` is made in one place, :func:`openvino_core`, so a process never holds
    two (see the test above)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:  # threads loading backends at once share it too
        cores = list(pool.map(lambda _: openvino_core(), range(8)))
    assert all(c is openvino_core() for c in cores)
    src = Path(__file__).parents[2] / "src/yolov4"
    made = []
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Core":
                made.append(f"{path.relative_to(src)}:{node.lineno}")
    assert made == ["inference/backends.py:" + str(_core_line(src / "inference/backends.py"))]


def _core_line(path: Path) -> int:
    lines = path.read_text().splitlines()
    return next(i for i, line in enumerate(lines, 1) if "import_openvino().Core()" in line)
