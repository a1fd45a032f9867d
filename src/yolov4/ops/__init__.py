"""Pure tensor functions between the network and everything else: box math, box decoding, NMS."""

from yolov4.ops.boxes import (
    box_area,
    box_iou,
    complete_box_iou,
    complete_box_iou_loss,
    cxcywh_to_xyxy,
    distance_box_iou,
    generalized_box_iou,
    paired_box_iou,
    xyxy_to_cxcywh,
)
from yolov4.ops.decode import (  # decode: the old name of decode_predictions (warns)
    cell_grid,
    decode,
    decode_boxes,
    decode_head,
    decode_predictions,
    split_head,
)
from yolov4.ops.letterbox import (
    LetterboxParams,
    letterbox_params,
    map_boxes,
    unmap_boxes,
    unmap_detections,
)
from yolov4.ops.postprocess import diou_nms, nms, postprocess

__all__ = [
    "LetterboxParams",
    "letterbox_params",
    "map_boxes",
    "unmap_boxes",
    "unmap_detections",
    "box_area",
    "cell_grid",
    "decode",  # deprecated: decode_predictions
    "decode_boxes",
    "decode_head",
    "decode_predictions",
    "diou_nms",
    "split_head",
    "box_iou",
    "complete_box_iou",
    "complete_box_iou_loss",
    "cxcywh_to_xyxy",
    "distance_box_iou",
    "generalized_box_iou",
    "nms",
    "paired_box_iou",
    "postprocess",
    "xyxy_to_cxcywh",
]
