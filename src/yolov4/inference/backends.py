"""Inference backends: ``backend(images (B, 3, H, W) float32) -> predictions (B, N, 5 + C)``.

Which runtime runs which artifact file at which precision is declared by the formats table
(:mod:`yolov4.export.formats`, read through :data:`yolov4.core.artifact.FORMATS`); each
backend class opens a file with ``load(path, device, precision, threads)``. All of them
return the same thing, the decoded predictions in input pixels (see
:mod:`yolov4.core.artifact`): PyTorch (a fused model + decode), onnxruntime (``model.onnx``),
OpenVINO (``model.onnx`` read directly in fp32 or bf16, ``model_int8.xml`` in INT8) and
TorchScript (``model.torchscript``).

Threads: ``threads`` is each runtime's intra-op pool, the cores one model call may use:
onnxruntime's ``intra_op_num_threads`` (``inter_op_num_threads`` 1), OpenVINO's
``INFERENCE_NUM_THREADS`` (one stream, latency hint). PyTorch's pool is process-wide
(``torch.set_num_threads``), so TorchBackend and TorchScriptBackend leave it to the caller.
``None`` leaves each runtime its default (every core). A process serving ``k`` calls at once
should give each ``cores / k`` threads, or the pools oversubscribe the cores.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any

import torch

from yolov4.core.artifact import FORMATS, backend_names
from yolov4.core.model import DecodedModel
from yolov4.errors import ConfigError, ExportError

__all__ = [
    "check_device",
    "TorchBackend",
    "OnnxBackend",
    "OpenVinoBackend",
    "TorchScriptBackend",
    "load_backend",
    "cpu_features",
    "bf16_native",
    "bf16_refusal",
    "import_openvino",
    "openvino_available",
    "openvino_core",
    "BF16_CPU_FLAGS",
    "backend_names",
]


def __getattr__(name: str) -> Any:
    """``BACKENDS``: the runtimes of the formats table (:func:`backend_names`), as registered
    when it is read."""
    if name == "BACKENDS":
        return backend_names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# /proc/cpuinfo flags of native bf16 arithmetic (AVX512-BF16: Cooper Lake, Zen 4; AMX: Sapphire
# Rapids); OpenVINO lists "BF16" in the CPU's OPTIMIZATION_CAPABILITIES when it has one of them
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# the flags reported next to a measurement: what decides fp32 / INT8 / bf16 speed on x86-64
REPORTED_CPU_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_bf16",
    "amx_int8",
)
# INT8 IR: the non-quantized operations in f32 (int8) or bf16 (int8_bf16)
OV_PRECISION = {"fp32": "f32", "bf16": "bf16", "int8": "f32", "int8_bf16": "bf16"}


def import_openvino() -> Any:
    """The ``openvino`` module, or :class:`ExportError` saying how to install it (an extra)."""
    try:
        import openvino
    except ImportError as e:
        raise ExportError(
            f"the openvino backend and bf16/int8 precisions need OpenVINO: pip install "
            f"'yolov4[openvino]' ({e})"
        ) from None
    return openvino


_CORE_LOCK = threading.Lock()
_CORE: list[Any] = []


def openvino_core() -> Any:
    """The process's one ``openvino.Core``, kept until exit; every OpenVINO call here uses it.

    OpenVINO's CPU plugin, loaded once per ``Core``, points the calling thread's signal stack
    (``sigaltstack``) at a stack of its own and puts the previous one back when that ``Core``
    goes. Two ``Core`` objects released in the order they were made leave the thread on the
    first one's freed stack, and the next signal with a Python handler (Ctrl-C's SIGINT,
    SIGTERM, the SIGCHLD of torch's DataLoader) ends the process with SIGSEGV; one ``Core``
    for the process never puts a freed stack back."""
    with _CORE_LOCK:  # one, also when threads load backends at once
        if not _CORE:
            _CORE.append(import_openvino().Core())
        return _CORE[0]


def openvino_available() -> bool:
    try:
        import_openvino()
    except ExportError:
        return False
    return True


def cpu_model_and_flags() -> tuple[str, list[str]]:
    """The CPU's model name and the :data:`REPORTED_CPU_FLAGS` it has (``/proc/cpuinfo``;
    ``"unknown"`` and none where that file is missing)."""
    name, flags = "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name == "unknown":
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return name, [f for f in REPORTED_CPU_FLAGS if f in flags]


def cpu_features() -> dict[str, Any]:
    """The CPU a measurement ran on: model name, the :data:`REPORTED_CPU_FLAGS` it has
    (:func:`cpu_model_and_flags`) and OpenVINO's ``OPTIMIZATION_CAPABILITIES`` (e.g. FP32,
    INT8, BF16)."""
    name, flags = cpu_model_and_flags()
    try:
        caps = [str(c) for c in openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    except Exception:  # OpenVINO missing or without a CPU plugin
        caps = []
    return {"cpu": name, "flags": flags, "openvino_capabilities": caps}


def bf16_native(features: dict[str, Any] | None = None) -> bool:
    """Whether OpenVINO runs bf16 natively on this CPU (``BF16`` among its capabilities)."""
    return "BF16" in (features or cpu_features())["openvino_capabilities"]


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a :class:`torch.device` this machine has: a name torch does not know, CUDA
    without a GPU and a GPU index past the last are a :class:`ConfigError` naming what there
    is (before a model is moved anywhere)."""
    try:
        found = torch.device(device)
    except (RuntimeError, ValueError, TypeError) as e:
        raise ConfigError(
            f"device={device!r} is not a device torch knows (cpu, cuda, cuda:1, mps, ...): {e}"
        ) from None
    if found.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(
                f"device={device!r}, but this machine has no CUDA GPU that torch can use "
                "(torch.cuda.is_available() is False); use device=cpu"
            )
        if found.index is not None and found.index >= count:
            raise ConfigError(
                f"device={device!r}, but this machine has {count} CUDA GPU(s): "
                f"cuda:0 .. cuda:{count - 1}"
            )
    elif found.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device={device!r}, but MPS is not available here; use device=cpu")
    elif found.type not in ("cpu", "cuda", "mps"):  # meta holds no data; xla, ... not built in
        raise ConfigError(
            f"device={device!r}: models run on cpu, cuda (cuda:1, ...) or mps, got {found.type!r}"
        )
    return found


class TorchBackend:
    """A (fused) :class:`DecodedModel` on ``device``."""

    name = "torch"
    precision = "fp32"

    def __init__(self, model: DecodedModel, device: str | torch.device = "cpu") -> None:
        self.device = check_device(device)
        self.model = model.to(self.device).eval()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(images.to(self.device, non_blocking=True))


def bf16_refusal(features: dict[str, Any], precision: str = "bf16") -> str:
    """Why ``precision`` (bf16, int8_bf16) is refused on the CPU of ``features``
    (:func:`cpu_features`)."""
    return (
        f"precision {precision} needs a CPU with native bf16 arithmetic ({' or '.join(BF16_CPU_FLAGS)}); "
        f"this CPU ({features['cpu']}) has {', '.join(features['flags']) or 'none of ' + str(REPORTED_CPU_FLAGS)} "
        f"(OpenVINO capabilities: {', '.join(features['openvino_capabilities'])}); OpenVINO would "
        "run it in f32, so neither its speed nor its mAP would be bf16's: use precision fp32 or "
        "int8 here, or export bf16 on a CPU that has it"
    )


class _RuntimeSession:
    """A runtime's loaded model file: not picklable (onnxruntime sessions, OpenVINO compiled
    models and TorchScript modules each refused in their own words); the message says what to
    do instead."""

    name = ""
    path: Path

    def __reduce__(self) -> Any:
        raise TypeError(
            f"a Predictor on {self.name} cannot be pickled or copied to another process: build "
            f"it there (Predictor.from_artifact({str(self.path.parent)!r}) in each worker)"
        )


class OnnxBackend(_RuntimeSession):
    """``model.onnx`` through onnxruntime (CUDA provider first when available)."""

    name = "onnxruntime"

    def __init__(
        self, path: str | Path, providers: list[str] | None = None, threads: int | None = None
    ) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        available = ort.get_available_providers()
        wanted = providers or [
            p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available
        ]
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.precision = "fp32"
        try:
            self.session = ort.InferenceSession(str(path), options, providers=wanted)
        except Exception as e:  # onnxruntime raises its own exception types
            raise ExportError(f"onnxruntime cannot load {path}: {e}") from e
        self.input_name = self.session.get_inputs()[0].name
        self.device = torch.device("cpu")

    @classmethod
    def load(cls, path: str | Path, device: Any, precision: str, threads: int | None):
        import onnxruntime as ort

        if torch.device(device).type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise ConfigError(
                    f"device={device!r}: this onnxruntime has no CUDA provider "
                    f"({', '.join(ort.get_available_providers())}); install onnxruntime-gpu "
                    "or use device=cpu"
                )
            return cls(path, ["CUDAExecutionProvider", "CPUExecutionProvider"], threads=threads)
        return cls(path, ["CPUExecutionProvider"], threads=threads)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: x})[0])


class OpenVinoBackend(_RuntimeSession):
    """``model.onnx`` (fp32, bf16) or ``model_int8.xml`` (int8, int8_bf16) through OpenVINO on
    the CPU.

    ``precision`` sets OpenVINO's ``INFERENCE_PRECISION_HINT``: ``f32`` for fp32 and for the
    layers an INT8 IR keeps in float (int8), ``bf16`` for bf16 and for those layers in
    int8_bf16 (OpenVINO's own default on a bf16 CPU, so it is always set: fp32 stays fp32
    there). bf16 and int8_bf16 are refused on a CPU without native bf16 (:func:`bf16_native`):
    OpenVINO would run them in f32 and report nothing. Thread-safe: each
    calling thread gets its own infer request.
    """

    name = "openvino"

    def __init__(
        self, path: str | Path, precision: str = "fp32", threads: int | None = None
    ) -> None:
        self.path = Path(path)
        import_openvino()  # the install hint before anything else
        if precision not in OV_PRECISION:
            raise ExportError(f"precision must be one of {sorted(OV_PRECISION)}, got {precision!r}")
        if OV_PRECISION[precision] == "bf16":
            features = cpu_features()
            if not bf16_native(features):
                raise ExportError(bf16_refusal(features, precision))
        config: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": OV_PRECISION[precision],
            "PERFORMANCE_HINT": "LATENCY",
        }
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = openvino_core().compile_model(str(path), "CPU", config)
        except Exception as e:  # OpenVINO raises RuntimeError subclasses of its own
            raise ExportError(f"OpenVINO cannot load {path}: {e}") from e
        self.precision = precision
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")  # what OpenVINO runs
        self.executed = hint.get_type_name() if hasattr(hint, "get_type_name") else str(hint)
        self.device = torch.device("cpu")
        self._local = threading.local()

    available = staticmethod(openvino_available)

    @classmethod
    def load(cls, path: str | Path, device: Any, precision: str, threads: int | None):
        if torch.device(device).type != "cpu":
            raise ConfigError(
                f"backend {cls.name!r} runs on the CPU; device={device!r} is for a checkpoint=, "
                "darknet_weights=, backend=torchscript or backend=onnxruntime (with a CUDA "
                "provider)"
            )
        return cls(path, precision, threads)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        x = images.detach().to("cpu", torch.float32).contiguous().numpy()
        out = request.infer({0: x})[self.compiled.output(0)]
        return torch.from_numpy(out.copy())  # the request reuses its output buffer


class TorchScriptBackend(_RuntimeSession):
    """``model.torchscript`` (traced) on ``device``."""

    name = "torchscript"
    precision = "fp32"

    def __init__(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        self.path = Path(path)
        self.device = check_device(device)
        try:
            with warnings.catch_warnings():  # deprecated in favour of torch.export, still supported
                warnings.simplefilter("ignore", FutureWarning)
                self.model = torch.jit.load(str(path), map_location=self.device).eval()
        except Exception as e:
            raise ExportError(f"cannot load TorchScript {path}: {e}") from e

    @classmethod
    def load(cls, path: str | Path, device: Any, precision: str, threads: int | None):
        return cls(path, device)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(images.to(self.device))


def load_backend(
    path: str | Path,
    name: str,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    threads: int | None = None,
):
    """The backend ``name`` (a runtime of the formats table: ``onnxruntime`` (alias ``onnx``),
    ``openvino``, ``torchscript``, ...) over the file ``path``; ``precision`` one the table
    says that runtime runs, ``threads`` the runtime's intra-op pool (the module docstring)."""
    name = "onnxruntime" if name == "onnx" else name
    classes = {r: c for f in FORMATS.values() for r, c in f.backends.items()}
    if name not in classes:
        raise ExportError(f"unknown backend {name!r}; expected one of {backend_names()}")
    runs = [p for f in FORMATS.values() for p, rs in f.precisions.items() if name in rs]
    if precision not in runs:
        raise ExportError(
            f"backend {name!r} runs {', '.join(dict.fromkeys(runs))} only, got precision "
            f"{precision!r}"
        )
    check_device(device)
    return classes[name].load(path, device, precision, threads)
