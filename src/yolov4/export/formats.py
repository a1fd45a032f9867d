"""The export formats, one table: each row declares its files, how they are written, the
backend classes that run them, the precisions they carry and their parity check.

=============  ==============================================  ===================  ==========
format         files                                           runs in (Predictor)  precisions
=============  ==============================================  ===================  ==========
``onnx``       ``model.onnx``                                  onnxruntime,         fp32 (+
                                                               openvino             bf16, int8)
``torchscript`` ``model.torchscript``                          torchscript          fp32
``onnx_nms``   ``model_nms.onnx`` (NMS in the graph)           -- (other runtimes)  fp32
``triton``     ``triton/yolov4/config.pbtxt``,                 -- (Triton server)   fp32
               ``triton/yolov4/1/model.onnx``,
               ``triton/yolov4/metadata.json``
``onnx_uint8`` ``model_uint8.onnx`` (uint8 NHWC in)            -- (other runtimes)  fp32
``darknet``    ``model.cfg``, ``model.weights``                -- (darknet/OpenCV)  fp32
=============  ==============================================  ===================  ==========

:func:`yolov4.export.artifact.export_artifact` writes and checks each requested row with the
row's ``write`` and ``check`` and adds its ``describe`` to ``metadata.json``; validation
(:mod:`yolov4.core.artifact`), :func:`yolov4.inference.backends.load_backend` and
``Predictor.from_artifact`` read the rows through :data:`yolov4.core.artifact.FORMATS`. A new
format is one more :func:`~yolov4.core.artifact.register_format` call (its writer, check and
backend class), here or in the code that adds it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from yolov4.core.artifact import (
    FORMATS,
    MODEL_NMS_ONNX,
    MODEL_ONNX,
    MODEL_TORCHSCRIPT,
    ArtifactFormat,
    register_format,
)
from yolov4.export import darknet_format, onnx_uint8, triton
from yolov4.export.job import ExportJob, check_nms_graph, export_onnx, nms_graph, write_nms_onnx
from yolov4.export.parity import float_inputs, parity
from yolov4.inference.backends import OnnxBackend, OpenVinoBackend, TorchScriptBackend, load_backend

__all__ = ["FORMATS", "predictor_parity"]


def predictor_parity(fmt: ArtifactFormat, job: ExportJob, folder: Path) -> dict[str, Any]:
    """The check of a Predictor model file: :func:`~yolov4.export.parity.parity` of its file in
    every runtime of the format that is installed, keyed ``file`` (first runtime) and
    ``file@runtime`` (the others)."""
    records = {}
    path = folder / str(fmt.model_file)
    runtimes = [r for r in fmt.precisions.get("fp32", ()) if _available(fmt.backends[r])]
    for i, runtime in enumerate(runtimes):
        backend = load_backend(path, runtime)
        key = fmt.model_file if i == 0 else f"{fmt.model_file}@{runtime}"
        records[key] = parity(str(fmt.model_file), backend, job.model, float_inputs(job.size))
    return records


def _available(backend_class: Any) -> bool:
    return bool(getattr(backend_class, "available", lambda: True)())


def _write_onnx(job: ExportJob, folder: Path) -> None:
    export_onnx(job.model, folder / MODEL_ONNX, job.example(), job.opset)


def _write_torchscript(job: ExportJob, folder: Path) -> None:
    """The traced model, its parameters saved not requiring grad: the loaded module's outputs
    are plain tensors (``.numpy()`` works without ``torch.no_grad``). The traced module shares
    the model's parameters, whose flags are restored afterwards."""
    params = list(job.model.parameters())
    flags = [p.requires_grad for p in params]
    try:
        job.model.requires_grad_(False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(job.model, job.example(), check_trace=False)
        traced.save(str(folder / MODEL_TORCHSCRIPT))
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def _opset(job: ExportJob) -> dict[str, Any]:
    return {"opset": job.opset}


register_format(
    ArtifactFormat(
        name="onnx",
        files=(MODEL_ONNX,),
        model_file=MODEL_ONNX,
        write=_write_onnx,
        check=lambda job, folder: predictor_parity(FORMATS["onnx"], job, folder),
        backends={"onnxruntime": OnnxBackend, "openvino": OpenVinoBackend},
        # bf16 and int8 are written by yolov4.export.quantize from model.onnx
        precisions={
            "fp32": ("onnxruntime", "openvino"),
            "bf16": ("openvino",),
            "int8": ("openvino",),
            "int8_bf16": ("openvino",),
        },
        describe=_opset,
    )
)
register_format(
    ArtifactFormat(
        name="torchscript",
        files=(MODEL_TORCHSCRIPT,),
        model_file=MODEL_TORCHSCRIPT,
        write=_write_torchscript,
        check=lambda job, folder: predictor_parity(FORMATS["torchscript"], job, folder),
        backends={"torchscript": TorchScriptBackend},
        precisions={"fp32": ("torchscript",)},
    )
)
register_format(
    ArtifactFormat(
        name="onnx_nms",
        files=(MODEL_NMS_ONNX,),
        write=lambda job, folder: write_nms_onnx(job, folder / MODEL_NMS_ONNX),
        check=lambda job, folder: check_nms_graph(job, folder, MODEL_NMS_ONNX),
        describe=lambda job: {"nms_graph": nms_graph(job, MODEL_NMS_ONNX), **_opset(job)},
    )
)
register_format(
    ArtifactFormat(
        name="triton",
        files=triton.FILES,
        write=lambda job, folder: triton.write(job, folder),
        check=triton.check,
        describe=lambda job: {"triton": triton.describe(job), **_opset(job)},
    )
)
register_format(
    ArtifactFormat(
        name="onnx_uint8",
        files=(onnx_uint8.FILE,),
        write=lambda job, folder: export_onnx(
            onnx_uint8.Uint8Model(job.model, job.preprocess),
            folder / onnx_uint8.FILE,
            onnx_uint8.example(job.size),
            job.opset,
        ),
        check=onnx_uint8.check,
        describe=lambda job: {"uint8_input": onnx_uint8.describe(job), **_opset(job)},
    )
)
register_format(
    ArtifactFormat(
        name="darknet",
        files=darknet_format.FILES,
        write=darknet_format.write,
        check=darknet_format.check,
        describe=darknet_format.describe,
        refuse=darknet_format.refuse,
        unfused=True,  # darknet's .weights hold the BN statistics
    )
)
