"""The ``darknet`` export format: the network as darknet's ``model.cfg`` and ``model.weights``.

The two files (:func:`yolov4.core.darknet_pair.save_darknet_pair`, as a train run writes
``weights/best.cfg`` and ``best.weights``) hold the unfused network at the artifact's input
size, ``[net] letter_box`` from its resize mode, and the ``seen`` of the weights it came from
(``model.seen``: a darknet file's, or the images a checkpoint records it trained on, else 0):
darknet (``darknet detector test``), OpenCV's ``cv2.dnn.readNetFromDarknet`` and
``darknet_weights=`` here read them. They hold fp32 weights
for those runtimes, not a model a Predictor backend loads from the artifact. Their readers pad
a letterbox with darknet's 0.5 grey: a checkpoint letterboxed with another ``pad_value`` is
written with a warning (:func:`~yolov4.core.darknet_pair.pad_warning`, logged and in the
metadata's ``darknet`` entry), as a train run writes its own.

Before any file of the export is written (:func:`refuse`), the model must have a darknet
equivalent (:func:`yolov4.core.darknet_pair.darknet_cfg`) and OpenCV's importer must read its
cfg (it does not know some of darknet's layers, e.g. ``[local_avgpool]``). The check
(:func:`check`) reads the written files with that importer and compares its head maps, decoded
as the Predictor decodes, with PyTorch's predictions (:func:`yolov4.export.parity.parity`) of
the network at OpenCV's batch-norm epsilon (:data:`OPENCV_BN_EPS`, where darknet's is
:data:`~yolov4.models.layers.BN_EPS`): the files are what darknet reads, and a channel whose
running variance is near either epsilon (weight decay shrinks some) comes out of OpenCV other
than out of darknet.

``model.names`` beside the two files holds the class names, one a line (darknet's ``.names``), as
a train run writes ``best.names``; ``darknet_weights=`` here finds it beside the weights.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from yolov4.core.darknet_pair import (
    darknet_cfg,
    darknet_names,
    names_path,
    pad_warning,
    save_darknet_pair,
)
from yolov4.core.model import DecodedModel
from yolov4.darknet import read_darknet_cfg
from yolov4.errors import ExportError, YoloError
from yolov4.export.parity import float_inputs, parity
from yolov4.models import YOLOv4, fuse_model
from yolov4.ops.decode import decode_predictions

if TYPE_CHECKING:
    from yolov4.export.job import ExportJob

__all__ = [
    "CFG",
    "WEIGHTS",
    "NAMES",
    "FILES",
    "OPENCV_BN_EPS",
    "opencv_reference",
    "opencv_deviations",
    "pad_warning",
    "refuse",
    "write",
    "check",
    "describe",
]

log = logging.getLogger(__name__)

CFG = "model.cfg"
WEIGHTS = "model.weights"
NAMES = names_path(WEIGHTS).name  # model.names
FILES = (CFG, WEIGHTS, NAMES)
# the epsilon OpenCV's darknet importer normalises [convolutional] batch norm with (its
# darknet_io.cpp setBatchNorm; measured by tests/export/test_darknet_format.py); darknet's
# normalize_cpu and this project use BN_EPS = 1e-5
OPENCV_BN_EPS = 1e-6
# darknet settings OpenCV's importer runs otherwise (docs/guides/networks.md): (section, key,
# darknet's default; "stride" is the section's stride)
OPENCV_IGNORES = (
    ("convolutional", "dilation", "1"),
    ("convolutional", "stride_x", "stride"),
    ("convolutional", "stride_y", "stride"),
    ("upsample", "scale", "1"),
    ("shortcut", "weights_type", "none"),
    ("scale_channels", "scale_wh", "0"),
    ("reorg", "reverse", "0"),
)


def _opencv(cfg: bytes | Path, weights: Path | None = None) -> Any:
    """OpenCV's darknet importer on cfg text (the network with its weights unset) or on the
    written files; :class:`ExportError` with OpenCV's reason when it refuses."""
    import cv2

    try:
        if weights is None:
            return cv2.dnn.readNetFromDarknet(np.frombuffer(cfg, np.uint8))
        return cv2.dnn.readNetFromDarknet(str(cfg), str(weights))
    except cv2.error as e:
        reason = str(e).strip().split("error: ", 1)[-1]
        raise ExportError(
            f"formats=[darknet]: OpenCV's darknet importer does not read the network's cfg "
            f"({reason}); the export checks darknet files through it (the Python API's "
            "yolov4.darknet.write_darknet_cfg and save_darknet_weights write them unchecked)"
        ) from None


def refuse(job: ExportJob) -> None:
    """:class:`ExportError` naming why ``job``'s model cannot be written as darknet files that
    OpenCV's importer reads."""
    try:
        text = darknet_cfg(job.network, job.preprocess)
        darknet_names(job.network, job.class_names)
    except YoloError as e:
        raise ExportError(f"formats=[darknet]: {e}") from None
    _opencv(text.encode())


def write(job: ExportJob, folder: Path) -> None:
    warning = pad_warning(job.preprocess)
    if warning:
        log.warning("formats=[darknet]: %s", warning)
    save_darknet_pair(
        job.network, job.preprocess, folder / CFG, folder / WEIGHTS, class_names=job.class_names
    )


def opencv_reference(network: YOLOv4) -> DecodedModel:
    """``network`` as OpenCV's importer runs its darknet files: a fused, decoded fp32 copy whose
    batch norms use :data:`OPENCV_BN_EPS` (``network`` is left as it is)."""
    ref = copy.deepcopy(network).cpu().float()
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = OPENCV_BN_EPS
    return DecodedModel(fuse_model(ref, inplace=True)).eval()


def _differs(value: str, default: str) -> bool:
    try:
        return float(value) != float(default)
    except ValueError:
        return value.strip().lower() != default


def opencv_deviations(text: str) -> list[str]:
    """The settings of cfg ``text`` that OpenCV's importer runs otherwise than darknet
    (:data:`OPENCV_IGNORES`, and a ``[shortcut]`` of several ``from`` layers, of which OpenCV
    reads the first), each as ``layer i [section] key=value`` (darknet's layer index)."""
    found = []
    for i, (kind, options) in enumerate(read_darknet_cfg(text)[1:]):
        for section, key, default in OPENCV_IGNORES:
            default = options.get("stride", "1") if default == "stride" else default
            if kind == section and key in options and _differs(options[key], default):
                found.append(f"layer {i} [{kind}] {key}={options[key]}")
        if kind == "shortcut" and "," in options.get("from", ""):
            found.append(f"layer {i} [shortcut] from={options['from']}")
    return found


def _disagreement(error: ExportError, cfg: Path) -> ExportError:
    """``error`` of the check with its likely cause: settings OpenCV runs otherwise than
    darknet when the network has some, else files that do not hold the network."""
    found = opencv_deviations(cfg.read_text())
    if found:
        why = (
            f"the network has settings OpenCV's darknet importer runs otherwise than darknet "
            f"({', '.join(found)}: docs/guides/networks.md), so the files cannot be checked "
            "through it"
        )
    else:
        why = (
            "OpenCV's darknet importer runs every setting of this network as darknet does "
            f"(compared at its batch-norm epsilon {OPENCV_BN_EPS:g}): the written {CFG} or "
            f"{WEIGHTS} does not hold the checkpoint's network"
        )
    return ExportError(f"{error}; {why}")


def check(job: ExportJob, folder: Path) -> dict[str, Any]:
    """``{model.weights: parity record}``: the files in OpenCV's importer, its maps of the
    convolutions in front of the ``[yolo]`` layers decoded, against PyTorch's predictions of
    the unfused network at OpenCV's batch-norm epsilon (:func:`opencv_reference`)."""
    import cv2

    net = _opencv(folder / CFG, folder / WEIGHTS)
    heads = [f"conv_{i}" for i in job.network.head_layers]  # OpenCV's name of darknet layer i
    m = opencv_reference(job.network)

    def run(images: torch.Tensor) -> torch.Tensor:
        net.setInput(images.numpy())
        maps = [torch.from_numpy(np.ascontiguousarray(a)) for a in net.forward(heads)]
        return decode_predictions(
            maps, m.anchors, m.strides, m.scale_x_y, m.new_coords, m.softmax, m.gaussian
        )

    try:
        record = parity(WEIGHTS, run, m, float_inputs(job.size))
    except ExportError as e:
        raise _disagreement(e, folder / CFG) from None
    return {
        WEIGHTS: {
            **record,
            "runtime": f"OpenCV {cv2.__version__} readNetFromDarknet",
            "reference": f"PyTorch at OpenCV's batch-norm epsilon {OPENCV_BN_EPS:g}",
        }
    }


def describe(job: ExportJob) -> dict[str, Any]:
    """The artifact metadata's ``darknet`` entry (with :func:`pad_warning`'s note when the
    checkpoint's letterbox border is not darknet's)."""
    warning = pad_warning(job.preprocess)
    return {
        "darknet": {
            "cfg": CFG,
            "weights": WEIGHTS,
            "names": NAMES,
            "input_size": job.size,
            "letter_box": job.preprocess.mode == "letterbox",
            "seen": int(getattr(job.network, "seen", 0)),
            "input": "RGB scaled by 1/255, as darknet and OpenCV's importer (blobFromImage "
            "with scalefactor 1/255, swapRB for OpenCV's BGR images) feed it",
            **({"pad_warning": warning} if warning else {}),
        }
    }
