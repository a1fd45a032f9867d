"""The ``triton`` export format: a Triton Inference Server model repository.

``triton/`` in the artifact is the repository (``tritonserver --model-repository
<artifact>/triton``) holding one model, :data:`MODEL_NAME`::

    triton/yolov4/config.pbtxt     backend onnxruntime, dynamic batching, the tensors below
    triton/yolov4/1/model.onnx     the network + decode + NMS (model_nms.onnx's graph)
    triton/yolov4/metadata.json    what a client needs around it: preprocessing, class names,
                                   the output layout and the thresholds baked into the graph

The ``input``/``output`` entries of ``config.pbtxt`` are read from the ONNX graph (names,
element types, dims past the batch dimension): ``images`` FP32 ``[3, H, W]`` in,
``detections`` FP32 ``[max_det, 6]`` and ``num_detections`` INT64 (one per image: dims ``[1]``
reshaped to ``[]``) out, so clients get final boxes in input pixels. The export's check runs the
graph in onnxruntime against PyTorch (:func:`yolov4.export.job.check_nms_graph`) and, where
``tritonclient`` is installed, parses ``config.pbtxt`` with Triton's own schema and compares it
with the graph.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yolov4.errors import ExportError
from yolov4.export.job import check_nms_graph, nms_graph, write_nms_onnx

if TYPE_CHECKING:
    from yolov4.export.job import ExportJob

__all__ = [
    "MODEL_NAME",
    "REPOSITORY",
    "FILES",
    "MAX_BATCH_SIZE",
    "graph_tensors",
    "config_text",
    "write",
    "check",
    "describe",
]

REPOSITORY = "triton"
MODEL_NAME = "yolov4"
CONFIG = f"{REPOSITORY}/{MODEL_NAME}/config.pbtxt"
MODEL = f"{REPOSITORY}/{MODEL_NAME}/1/model.onnx"
CLIENT_METADATA = f"{REPOSITORY}/{MODEL_NAME}/metadata.json"
FILES = (CONFIG, MODEL, CLIENT_METADATA)
MAX_BATCH_SIZE = 32  # the largest batch Triton's dynamic batcher forms
# onnx.TensorProto element types -> Triton's DataType names
TRITON_TYPES = {
    1: "TYPE_FP32",
    2: "TYPE_UINT8",
    3: "TYPE_INT8",
    6: "TYPE_INT32",
    7: "TYPE_INT64",
    9: "TYPE_BOOL",
    10: "TYPE_FP16",
    11: "TYPE_FP64",
}


def graph_tensors(path: Path) -> dict[str, list[dict[str, Any]]]:
    """``{"input": [...], "output": [...]}`` of an ONNX file: each ``{name, data_type, dims}``
    with Triton's type name and the dims past the (dynamic) batch dimension."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    out: dict[str, list[dict[str, Any]]] = {}
    for kind, values in (("input", graph.input), ("output", graph.output)):
        out[kind] = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") else d.dim_param for d in t.shape.dim]
            if (
                not dims
                or isinstance(dims[0], int)
                or not all(isinstance(d, int) for d in dims[1:])
            ):
                raise ExportError(
                    f"{path.name}: tensor {v.name!r} has dims {dims}; Triton's dynamic batching "
                    "needs a dynamic first (batch) dimension and fixed others"
                )
            if t.elem_type not in TRITON_TYPES:
                raise ExportError(
                    f"{path.name}: tensor {v.name!r} has ONNX element type {t.elem_type}, "
                    f"expected one of {sorted(TRITON_TYPES)}"
                )
            out[kind].append(
                {"name": v.name, "data_type": TRITON_TYPES[t.elem_type], "dims": dims[1:]}
            )
    return out


def _tensor(spec: dict[str, Any]) -> str:
    dims = spec["dims"] or [1]  # a scalar per image: Triton wants [1], reshaped to []
    reshape = "" if spec["dims"] else " reshape { shape: [ ] }"
    return (
        f'  {{ name: "{spec["name"]}" data_type: {spec["data_type"]} '
        f"dims: [ {', '.join(str(d) for d in dims)} ]{reshape} }}"
    )


def config_text(tensors: dict[str, list[dict[str, Any]]], max_batch: int = MAX_BATCH_SIZE) -> str:
    """``config.pbtxt`` (protobuf text of Triton's ``ModelConfig``) for ``tensors``."""
    lines = [
        f'name: "{MODEL_NAME}"',
        'backend: "onnxruntime"',
        f"max_batch_size: {max_batch}",
        "dynamic_batching { }",
    ]
    for kind in ("input", "output"):
        lines += [f"{kind} [", ",\n".join(_tensor(s) for s in tensors[kind]), "]"]
    return "\n".join(lines) + "\n"


def write(job: ExportJob, folder: Path) -> None:
    """The repository's three files (the module docstring) into ``folder``."""
    write_nms_onnx(job, folder / MODEL)
    (folder / CONFIG).write_text(config_text(graph_tensors(folder / MODEL)))
    client = {
        "model": MODEL_NAME,
        "class_names": list(job.class_names),
        "preprocess": job.preprocess.to_dict(),
        "input": {
            "name": "images",
            "shape": ["batch", 3, *job.size],
            "dtype": "float32",
            "layout": "NCHW, the letterboxed image in preprocess.channel_order times "
            "preprocess.scale",
        },
        "output": nms_graph(job, "1/model.onnx"),
    }
    (folder / CLIENT_METADATA).write_text(json.dumps(client, indent=2) + "\n")


def _config_errors(config: Any, tensors: dict[str, list[dict[str, Any]]]) -> list[str]:
    """What in a parsed ``ModelConfig`` disagrees with the graph's ``tensors``."""
    from tritonclient.grpc import model_config_pb2 as pb

    errors = []
    for kind, declared in (("input", config.input), ("output", config.output)):
        graph = {s["name"]: s for s in tensors[kind]}
        if sorted(t.name for t in declared) != sorted(graph):
            errors.append(f"{kind} names {[t.name for t in declared]}, graph has {list(graph)}")
            continue
        for t in declared:
            want = graph[t.name]
            dims = list(t.reshape.shape) if t.HasField("reshape") else list(t.dims)
            if pb.DataType.Name(t.data_type) != want["data_type"] or dims != want["dims"]:
                errors.append(
                    f"{kind} {t.name!r}: {pb.DataType.Name(t.data_type)} {dims}, graph has "
                    f"{want['data_type']} {want['dims']}"
                )
    return errors


def check(job: ExportJob, folder: Path) -> dict[str, Any]:
    """The graph vs PyTorch; ``config.pbtxt`` vs the graph, parsed with Triton's schema when
    ``tritonclient`` is installed."""
    record = check_nms_graph(job, folder, MODEL)[MODEL]
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        return {MODEL: record}
    try:
        config = text_format.Parse((folder / CONFIG).read_text(), model_config_pb2.ModelConfig())
    except text_format.ParseError as e:
        raise ExportError(f"{CONFIG} does not parse as Triton's ModelConfig: {e}") from None
    errors = _config_errors(config, graph_tensors(folder / MODEL))
    if errors:
        raise ExportError(f"{CONFIG} disagrees with {MODEL}: {'; '.join(errors)}")
    return {MODEL: record}


def describe(job: ExportJob) -> dict[str, Any]:
    """The artifact metadata's ``triton`` entry."""
    return {
        "repository": REPOSITORY,
        "model": MODEL_NAME,
        "config": CONFIG,
        "model_file": MODEL,
        "client_metadata": CLIENT_METADATA,
        "max_batch_size": MAX_BATCH_SIZE,
        "nms_graph": nms_graph(job, MODEL),
    }
