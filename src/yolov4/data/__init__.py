"""Data: COCO / YOLO txt / synthetic sources, augmentation, the LightningDataModule."""

from yolov4.data.coco import CocoSource, load_coco
from yolov4.data.collate import Batch, DetectionCollate
from yolov4.data.datamodule import DetectionDataModule, SyntheticDataModule
from yolov4.data.dataset import DetectionDataset
from yolov4.data.problems import ProblemReport
from yolov4.data.records import DetectionData, ImageRecord, records_to_coco
from yolov4.data.synthetic import SyntheticSource
from yolov4.data.transforms import AugmentConfig
from yolov4.data.yolo_txt import YoloSource, load_yolo

__all__ = [
    "AugmentConfig",
    "Batch",
    "CocoSource",
    "DetectionCollate",
    "DetectionData",
    "DetectionDataModule",
    "DetectionDataset",
    "ImageRecord",
    "ProblemReport",
    "SyntheticDataModule",
    "SyntheticSource",
    "YoloSource",
    "load_coco",
    "load_yolo",
    "records_to_coco",
]
