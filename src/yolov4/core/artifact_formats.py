"""The formats an export artifact may hold: one registry, :data:`FORMATS` (name ->
:class:`ArtifactFormat`), filled by the table in :mod:`yolov4.export.formats`, with the model
files' names and the precisions they run in. :mod:`yolov4.core.artifact` (the artifact's
contract, ``metadata.json`` and its validation) re-exports every name here; validation, backend
loading and the choice of a model file (:func:`model_file`) read the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from yolov4.errors import ExportError

__all__ = [
    "MODEL_ONNX",
    "MODEL_TORCHSCRIPT",
    "MODEL_NMS_ONNX",
    "MODEL_INT8_XML",
    "MODEL_INT8_BIN",
    "PRECISIONS",
    "AUTO_PRECISION",
    "FORMATS",
    "ArtifactFormat",
    "register_format",
    "backend_names",
    "precision_backends",
    "model_file",
    "artifact_precisions",
]

MODEL_ONNX = "model.onnx"
MODEL_TORCHSCRIPT = "model.torchscript"
MODEL_NMS_ONNX = "model_nms.onnx"
# reduced precision: INT8 is an OpenVINO IR (NNCF's post-training quantization of model.onnx);
# bf16 is model.onnx run by OpenVINO with its bf16 inference precision (no file of its own)
MODEL_INT8_XML = "model_int8.xml"
MODEL_INT8_BIN = "model_int8.bin"
# int8_bf16: the INT8 IR with its non-quantized operations in bf16 (CPUs with native bf16)
PRECISIONS = ("fp32", "bf16", "int8", "int8_bf16")
# default_precision "auto": the Predictor and the service choose per CPU
# (yolov4.inference.precision)
AUTO_PRECISION = "auto"


@dataclass(frozen=True)
class ArtifactFormat:
    """One export format: what it writes, how, what runs it, what it carries and its check.

    Attributes:
        name: the name ``formats=[...]`` takes.
        files: the paths it writes inside the artifact (``/``-separated, relative).
        model_file: the one of ``files`` a Predictor backend loads; None: not a Predictor model
            (a file for other runtimes, e.g. NMS in the graph).
        backends: runtime name -> backend class (a ``load(path, device, precision, threads)``
            classmethod; :mod:`yolov4.inference.backends`), in order of preference.
        precisions: precision -> the runtimes of ``backends`` that run ``model_file`` in it;
            the first format carrying a precision is its default file.
        write: ``write(job, folder)`` writes ``files`` into ``folder`` (export side).
        check: ``check(job, folder) -> {name: parity record}``; raises
            :class:`~yolov4.errors.ExportError` when a file disagrees with PyTorch.
        describe: ``describe(job) -> {metadata key: value}`` added to ``metadata.json``.
        refuse: ``refuse(job)`` raises :class:`~yolov4.errors.ExportError` naming why the job
            cannot be written in this format, before any format's file is written.
        unfused: the writer reads ``job.network``, the network unfused (its BN layers), which
            the export then keeps beside the fused model it checks against.
    """

    name: str
    files: tuple[str, ...]
    write: Callable[..., None]
    check: Callable[..., dict[str, Any]]
    model_file: str | None = None
    backends: Mapping[str, Any] = field(default_factory=dict)
    precisions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    describe: Callable[..., dict[str, Any]] | None = None
    refuse: Callable[..., None] | None = None
    unfused: bool = False


# name -> format, in the order exports write them and Predictors prefer them
FORMATS: dict[str, ArtifactFormat] = {}


def register_format(fmt: ArtifactFormat) -> ArtifactFormat:
    """Add ``fmt`` to :data:`FORMATS`; :class:`ExportError` when its name, a file or a runtime
    name is taken by another format with a different meaning."""
    if fmt.name in FORMATS:
        raise ExportError(f"export format {fmt.name!r} is already registered")
    for other in FORMATS.values():
        shared = set(fmt.files) & set(other.files)
        if shared:
            raise ExportError(
                f"format {fmt.name!r}: files {sorted(shared)} belong to {other.name!r}"
            )
        for runtime, cls in fmt.backends.items():
            if other.backends.get(runtime, cls) is not cls:
                raise ExportError(
                    f"format {fmt.name!r}: backend {runtime!r} is {other.name!r}'s, another class"
                )
    for precision, runtimes in fmt.precisions.items():
        if precision not in PRECISIONS or not set(runtimes) <= set(fmt.backends):
            raise ExportError(
                f"format {fmt.name!r}: precision {precision!r} must be one of {PRECISIONS} run by "
                f"its backends {list(fmt.backends)}, got {list(runtimes)}"
            )
    FORMATS[fmt.name] = fmt
    return fmt


def backend_names() -> tuple[str, ...]:
    """Every runtime a format of :data:`FORMATS` runs in, in table order."""
    return tuple(dict.fromkeys(r for f in FORMATS.values() for r in f.backends))


def precision_backends(precision: str) -> tuple[str, ...]:
    """The runtimes that run ``precision`` in some format of :data:`FORMATS`, table order."""
    return tuple(
        dict.fromkeys(r for f in FORMATS.values() for r in f.precisions.get(precision, ()))
    )


def model_file(meta: dict[str, Any], precision: str, backend: str) -> str:
    """The file of a (validated) artifact that ``backend`` runs at ``precision``: the
    precision's own file when ``backend`` runs it, else the model file of a format that runs
    ``backend`` at that precision (e.g. ``model.torchscript`` for fp32 in torchscript), which
    may be missing from the artifact (the caller names it)."""
    entry = artifact_precisions(meta)[precision]
    owner = next((f for f in FORMATS.values() if f.model_file == entry["file"]), None)
    if owner is None or backend in owner.precisions.get(precision, ()):
        return entry["file"]
    runs = [f.model_file for f in FORMATS.values() if backend in f.precisions.get(precision, ())]
    present = [f for f in runs if f in meta["files"]]
    # none present: the file it would run, which the caller reports missing
    return (present or runs or [entry["file"]])[0]


def artifact_precisions(meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{precision: {"file", "backends", ...}}`` of validated metadata. An artifact without
    ``precisions`` holds fp32 at most: the first fp32 model file of :data:`FORMATS` that its
    ``files`` list, run by the runtimes of the formats whose model files it lists; ``{}`` when
    it lists none (an artifact of no Predictor model, e.g. darknet files or an NMS graph)."""
    if "precisions" in meta:
        return meta["precisions"]
    held = [
        f for f in FORMATS.values() if f.precisions.get("fp32") and f.model_file in meta["files"]
    ]
    if not held:
        return {}
    backends = list(dict.fromkeys(r for f in held for r in f.precisions["fp32"]))
    return {"fp32": {"file": held[0].model_file, "backends": backends}}
