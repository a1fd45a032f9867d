"""The contracts every outer layer shares, each owned once (imports only ``ops``, ``models``,
``errors``, numpy, OpenCV, PIL and torch).

Today: image decoding (:mod:`yolov4.core.images`), used by the datasets, the Predictor and the
service alike.
"""

from yolov4.core.images import (
    MAX_PIXELS,
    DecodedImage,
    ImageDecodeError,
    ImageTooLarge,
    TruncatedImage,
    decode,
    decode_image,
    image_size,
    to_rgb8,
)

__all__ = [
    "MAX_PIXELS",
    "DecodedImage",
    "ImageDecodeError",
    "ImageTooLarge",
    "TruncatedImage",
    "decode",
    "decode_image",
    "image_size",
    "to_rgb8",
]
