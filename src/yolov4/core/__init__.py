"""The contracts every outer layer shares, each owned once. Imports only ``ops``, ``models``,
``darknet``, ``errors`` and numpy / OpenCV / PIL / torch.

- :mod:`~yolov4.core.images`: image decoding (datasets, Predictor, service), with
  :mod:`~yolov4.core.jpeg` (JPEG structure and damage) and :mod:`~yolov4.core.pixels` (pixel
  layouts, EXIF orientations);
- :mod:`~yolov4.core.preprocess`: :class:`PreprocessConfig` + :func:`preprocess`;
- :mod:`~yolov4.core.postprocess`: :class:`PostprocessConfig` and its presets
  (:data:`DARKNET_VALID` for evaluation, :data:`SERVING`);
- :mod:`~yolov4.core.model`: network + decode (:class:`DecodedModel`);
- :mod:`~yolov4.core.checkpoint`: the weights file, validated on write and on read
  (:mod:`~yolov4.core.checkpoint_read`: safe reading of any checkpoint format;
  :mod:`~yolov4.core.files`: atomic writes);
- :mod:`~yolov4.core.pretrained`: starting weights from darknet files or project checkpoints;
- :mod:`~yolov4.core.darknet_pair`: a network written as darknet's ``.cfg`` and ``.weights``;
- :mod:`~yolov4.core.artifact`: the export artifact's file names and ``metadata.json``, with
  :mod:`~yolov4.core.artifact_formats` (the registry of formats and precisions).
"""

from yolov4.core.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from yolov4.core.images import (
    MAX_PIXELS,
    DecodedImage,
    ImageDecodeError,
    ImageTooLarge,
    TruncatedImage,
    decode,
    decode_image,
    decode_image_details,
    image_size,
)
from yolov4.core.model import DecodedModel
from yolov4.core.pixels import to_rgb8
from yolov4.core.postprocess import DARKNET_VALID, SERVING, PostprocessConfig
from yolov4.core.preprocess import PreprocessConfig, preprocess

__all__ = [
    "MAX_PIXELS",
    "Checkpoint",
    "DARKNET_VALID",
    "DecodedImage",
    "DecodedModel",
    "ImageDecodeError",
    "ImageTooLarge",
    "PostprocessConfig",
    "PreprocessConfig",
    "SERVING",
    "TruncatedImage",
    "decode",  # deprecated: decode_image_details
    "decode_image",
    "decode_image_details",
    "image_size",
    "load_checkpoint",
    "preprocess",
    "save_checkpoint",
    "to_rgb8",
]
