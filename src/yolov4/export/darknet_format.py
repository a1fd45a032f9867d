"""The ``darknet`` export format: the network as darknet's ``model.cfg`` and ``model.weights``.

The two files (:func:`yolov4.core.darknet_pair.save_darknet_pair`, as a train run writes
``weights/best.cfg`` and ``best.weights``) hold the unfused network at the artifact's input
size, ``[net] letter_box`` from its resize mode, and the ``seen`` of the weights it came from
(0 for a project checkpoint): darknet (``darknet detector test``), OpenCV's
``cv2.dnn.readNetFromDarknet`` and ``darknet_weights=`` here read them. They hold fp32 weights
for those runtimes, not a model a Predictor backend loads from the artifact.

Before any file of the export is written (:func:`refuse`), the model must have a darknet
equivalent (:func:`yolov4.core.darknet_pair.darknet_cfg`) and OpenCV's importer must read its
cfg (it does not know some of darknet's layers, e.g. ``[local_avgpool]``). The check
(:func:`check`) reads the written files with that importer and compares its head maps, decoded
as the Predictor decodes, with PyTorch's predictions (:func:`yolov4.export.parity.parity`).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from yolov4.core.darknet_pair import darknet_cfg, save_darknet_pair
from yolov4.errors import ExportError, YoloError
from yolov4.export.parity import float_inputs, parity
from yolov4.ops.decode import decode_predictions

if TYPE_CHECKING:
    from yolov4.export.job import ExportJob

__all__ = ["CFG", "WEIGHTS", "FILES", "refuse", "write", "check", "describe"]

CFG = "model.cfg"
WEIGHTS = "model.weights"
FILES = (CFG, WEIGHTS)
# where OpenCV's outputs may differ from darknet's: keys its importer ignores
OPENCV_LIMITS = (
    "the files were read by OpenCV's darknet importer, which ignores some darknet keys "
    "(dilation, stride_x/stride_y, [upsample] scale: docs/guides/networks.md)"
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
    except YoloError as e:
        raise ExportError(f"formats=[darknet]: {e}") from None
    _opencv(text.encode())


def write(job: ExportJob, folder: Path) -> None:
    save_darknet_pair(job.network, job.preprocess, folder / CFG, folder / WEIGHTS)


def check(job: ExportJob, folder: Path) -> dict[str, Any]:
    """``{model.weights: parity record}``: the files in OpenCV's importer, its maps of the
    convolutions in front of the ``[yolo]`` layers decoded, against PyTorch's predictions."""
    import cv2

    net = _opencv(folder / CFG, folder / WEIGHTS)
    heads = [f"conv_{i}" for i in job.network.head_layers]  # OpenCV's name of darknet layer i
    m = job.model

    def run(images: torch.Tensor) -> torch.Tensor:
        net.setInput(images.numpy())
        maps = [torch.from_numpy(np.ascontiguousarray(a)) for a in net.forward(heads)]
        return decode_predictions(maps, m.anchors, m.strides, m.scale_x_y, m.new_coords)

    try:
        record = parity(WEIGHTS, run, m, float_inputs(job.size))
    except ExportError as e:
        raise ExportError(f"{e}; {OPENCV_LIMITS}") from None
    return {WEIGHTS: {**record, "runtime": f"OpenCV {cv2.__version__} readNetFromDarknet"}}


def describe(job: ExportJob) -> dict[str, Any]:
    """The artifact metadata's ``darknet`` entry."""
    return {
        "darknet": {
            "cfg": CFG,
            "weights": WEIGHTS,
            "input_size": job.size,
            "letter_box": job.preprocess.mode == "letterbox",
            "seen": int(getattr(job.network, "seen", 0)),
            "input": "RGB scaled by 1/255, as darknet and OpenCV's importer (blobFromImage "
            "with scalefactor 1/255, swapRB for OpenCV's BGR images) feed it",
        }
    }
