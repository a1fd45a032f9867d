"""The torch Dataset over a loaded split: decode (with repair) → augment or preprocess.

Training samples (``augment`` given) are resized at most once, at decode, and go through the
fused geometry (:class:`yolov4.data.mosaic.TrainGeometry`; three mosaic donors drawn uniformly
from the whole split with darknet's crop, ``augment.jitter``, as darknet draws them, else from
the images this worker decoded last) and the photometric albumentations pipeline
(:func:`~yolov4.data.transforms.build_photometric_transform`; one colour draw per mosaic piece
with darknet's crop). They leave as uint8: the training
device scales them (:mod:`yolov4.data.collate`). Evaluation samples go through THE preprocessing
function (:func:`yolov4.core.preprocess.preprocess`), also as uint8. Unreadable images are
reported once (with the file name) and replaced by another random image in training (never
drawn again: a run stops only when no image of the split is readable), by a blank stand-in in
evaluation (``decoded`` False) that validation does not score: the image and its ground truth
are left out of COCOeval, whose mAP is over the images that decode (``check-data`` counts
them); strict mode raises instead.
"""

from __future__ import annotations

import random
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from yolov4.core.preprocess import PreprocessConfig, image_to_tensor, preprocess
from yolov4.data.collate import Sample
from yolov4.data.image_io import read_image
from yolov4.data.mosaic import MOSAIC_DONORS, Placed
from yolov4.data.problems import KINDS, Problem, ProblemReport
from yolov4.data.records import DetectionData
from yolov4.data.transforms import (
    AugmentConfig,
    build_geometry,
    build_photometric_transform,
    check_extra_output,
)
from yolov4.errors import DatasetError
from yolov4.ops.letterbox import letterbox_params, map_boxes

__all__ = ["DetectionDataset"]

# Random draws for a replacement of an unreadable image before choosing among the readable ones.
REJECTION_DRAWS = 32
# What the run has learnt of each image, bits of one int8 per image in shared memory
# (DetectionDataset._state): decoded once (its reports made, its JPEG damage looked for),
# annotated in the frame the file stores (read without its EXIF rotation), unreadable.
DECODED, STORED_FRAME, UNREADABLE = 1, 2, 4
# Without darknet's crop, mosaic donors come from the images this worker decoded last
# (ultralytics' mosaic buffer): one decode per sample instead of four. Stored resized for
# training: 64 images of 608x810 are ~95 MB per worker.
DONOR_BUFFER = 64
Loaded = tuple[
    np.ndarray, np.ndarray, np.ndarray
]  # image (H,W,3) uint8 RGB, boxes (N,4), labels (N,)


class DetectionDataset(Dataset):
    """Samples of one split.

    Args:
        data: the loaded split.
        preprocess_config: input size, resize mode, pad value, colour order, scale.
        augment: training augmentation; ``None`` for evaluation (preprocess only).
        strict: raise :class:`DatasetError` on the first bad image instead of repairing.
        seed: seeds the augmentation and donor choice (reseeded per worker by
            :func:`yolov4.data.sampling.seed_worker`).
        name: used in problem reports.
    """

    def __init__(
        self,
        data: DetectionData,
        preprocess_config: PreprocessConfig,
        augment: AugmentConfig | None = None,
        strict: bool = False,
        seed: int = 0,
        name: str = "dataset",
    ) -> None:
        self.data = data
        self.records = data.records
        self.preprocess_config = preprocess_config
        self.augment = augment
        # the first few of each kind logged by file, counted over every worker (shared memory)
        counts = torch.zeros(len(KINDS), dtype=torch.int32).share_memory_()
        self.report = ProblemReport(strict=strict, name=name, log_each=True, logged=counts)
        self._transforms = {}
        # An image's reports (truncated, converted, size mismatch, stored frame, unreadable)
        # are made and its JPEG damage looked for (one more decode) on its first decode in the
        # run, in whichever process decodes it; its frame and whether it decodes are learnt
        # then too (an unreadable image is not decoded again, nor drawn in training; a stored
        # frame is read as such at once). The state bits of each image live in shared memory,
        # which every DataLoader worker sees (forked or spawned, kept or started anew each
        # epoch with persistent_workers=false), as the main process does without workers. Two
        # workers decoding one image at the same moment (a mosaic donor) may both report it,
        # or one may lose a bit the other sets (one more decode). DDP ranks hold a dataset
        # each: once per rank.
        self._state = torch.zeros(len(self.records), dtype=torch.int8).share_memory_()
        if augment is not None:
            size, mode, pad = (
                preprocess_config.input_size,
                preprocess_config.mode,
                preprocess_config.pad_value,
            )
            self.geometry = build_geometry(augment, size, mode, pad)
            self._transforms = {"photometric": build_photometric_transform(augment)}
            if augment.extra:  # a first look (seeded again below): a wrong output stops here
                blank = np.full((*size, 3), pad, np.uint8)
                self._photometric(blank, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
        self.reseed(seed)

    def __len__(self) -> int:
        return len(self.records)

    def reseed(self, seed: int) -> None:
        """Seed donor choice and every albumentations transform (albumentations 2.0 does not
        reseed per DataLoader worker by itself)."""
        self.rng = np.random.default_rng(seed)
        self.geometry_rng = random.Random(seed)
        self._buffer: dict[int, Placed] = {}
        for i, t in enumerate(self._transforms.values()):
            t.set_random_seed(seed + i)

    def image(self, index: int) -> np.ndarray | None:
        """``(H, W, 3)`` uint8 RGB of image ``index`` as validation reads it, in the frame and
        at the size its boxes refer to; ``None`` (reported) when unreadable. An image whose EXIF
        rotation swaps the annotated width and height was annotated as the file stores it: it
        is read without the rotation. Any other image whose decoded size differs from the
        annotated one (a resaved file) is resized to the annotated size, so image, boxes,
        ground truth and the original size in the batch meta stay in one frame. Both are
        reported, and so is a JPEG without its end marker or with data libjpeg calls corrupt:
        on the first decode of each image in the run, by any worker (see ``_state``). Training,
        validation, the Predictor path of evaluation and the worst-images gallery all read
        images through it."""
        rec = self.records[index]
        state = int(self._state[index])
        if state & UNREADABLE:
            return None
        first = not state & DECODED
        self._set(index, DECODED)
        report = self.report if first else None  # reports and damage checks: once an image
        stored = bool(state & STORED_FRAME)
        image = read_image(rec.file, report, as_stored=stored, check=first)
        if image is None:
            self._set(index, UNREADABLE)
            return None
        h, w = image.shape[:2]
        if not stored and h != w and (w, h) == (rec.height, rec.width):
            # annotated in the frame the file stores, before its EXIF rotation (tools that
            # ignore the tag): its boxes are in that frame too
            unrotated = read_image(rec.file, None, as_stored=True)
            if unrotated is not None and unrotated.shape[:2] == (rec.height, rec.width):
                self._set(index, STORED_FRAME)
                detail = f"annotated {rec.width}x{rec.height} (WxH), displayed {w}x{h}"
                self._report(report, Problem.STORED_FRAME, rec.file, detail)
                image, (h, w) = unrotated, unrotated.shape[:2]
        if (h, w) != (rec.height, rec.width):
            detail = f"annotated {rec.width}x{rec.height} (WxH), decoded {w}x{h}"
            self._report(report, Problem.SIZE_MISMATCH, rec.file, detail)
            image = cv2.resize(image, (rec.width, rec.height), interpolation=cv2.INTER_LINEAR)
        return image

    def load(self, index: int) -> Loaded | None:
        """Image ``index`` as :meth:`image` reads it, with its boxes and labels; ``None``
        (reported) when unreadable."""
        image = self.image(index)
        if image is None:
            return None
        rec = self.records[index]
        return image, rec.boxes, rec.labels

    def _set(self, index: int, bit: int) -> None:
        """Set ``bit`` of image ``index``'s shared state."""
        self._state[index] = int(self._state[index]) | bit

    @staticmethod
    def _report(report: ProblemReport | None, kind: str, file: str, detail: str) -> None:
        if report is not None:
            report.add(kind, file, detail)

    def load_train(self, index: int) -> Placed | None:
        """Decode image ``index`` resized for training (:meth:`TrainGeometry.resize`); ``None``
        when unreadable."""
        loaded = self.load(index)
        if loaded is None:
            return None
        return self.geometry.resize(*loaded, rng=self.geometry_rng)

    def _load_train(self, index: int) -> tuple[int, Placed]:
        """Image ``index`` decoded for training, or when it is unreadable a random readable one
        (``(index used, image)``). Unreadable images are remembered (by every worker) and never
        drawn again; only a split with no readable image left raises."""
        while True:
            loaded = self.load_train(index)
            if loaded is not None:
                if self.augment.jitter is not None:  # darknet's donors: from the whole split
                    return index, loaded
                self._buffer[index] = loaded
                if len(self._buffer) > DONOR_BUFFER:
                    del self._buffer[next(iter(self._buffer))]  # oldest first (dicts keep order)
                return index, loaded
            index = self._readable_index()

    def _readable_index(self) -> int:
        """A random index not known to be unreadable; :class:`DatasetError` when none is left."""
        n = len(self)
        for _ in range(REJECTION_DRAWS):
            index = int(self.rng.integers(n))
            if not int(self._state[index]) & UNREADABLE:
                return index
        readable = torch.nonzero((self._state & UNREADABLE) == 0).flatten().numpy()
        if not len(readable):
            raise DatasetError(
                f"{self.report.name}: none of the {n} images could be decoded; see the report above"
            )
        return int(self.rng.choice(readable))

    def _donors(self, index: int) -> list[Placed]:
        """Three mosaic partners: with darknet's crop, images drawn uniformly from the whole
        split (with replacement, as darknet's random paths) and decoded; else from the buffer of
        recently decoded images once it holds enough, freshly decoded random images before."""
        keys = [k for k in self._buffer if k != index]
        if len(keys) >= MOSAIC_DONORS and self.augment.jitter is None:
            picks = self.rng.choice(len(keys), size=MOSAIC_DONORS, replace=False)
            return [self._buffer[keys[int(j)]] for j in picks]
        picks = [self._readable_index() for _ in range(MOSAIC_DONORS)]
        loaded = [self.load_train(j) for j in picks]
        return [d for d in loaded if d is not None]

    def _photometric(
        self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, pieces: Any = None
    ) -> dict[str, Any]:
        """The albumentations half (HSV, ``augment.extra``) of a geometric sample: ``image``,
        ``bboxes``, ``labels``; ``pieces``: the windows that take their own HSV draw (a darknet
        mosaic's). An extra that changed the image's size or dtype stops here."""
        photometric = self._transforms["photometric"]
        if "bboxes" in photometric.processors:  # an extra geometric transform
            out = photometric(image=image, bboxes=boxes, labels=labels, pieces=pieces)
        else:
            out = {**photometric(image=image, pieces=pieces), "bboxes": boxes, "labels": labels}
        check_extra_output(image, out["image"])
        return out

    def __getitem__(self, index: int) -> Sample:
        rec = self.records[index]
        config = self.preprocess_config
        decoded = True
        if self.augment is None:
            loaded = self.load(index)
            if loaded is None:  # a blank stand-in (batches keep their shape), not scored
                blank = np.full((rec.height, rec.width, 3), config.pad_value, np.uint8)
                loaded, decoded = (blank, rec.boxes, rec.labels), False
            # THE preprocessing, as uint8: the device scales (to_float), 4x fewer bytes here
            image, params = preprocess(loaded[0], config, scale=False)
            boxes, labels = map_boxes(loaded[1], params), loaded[2]
        else:
            index, placed = self._load_train(index)
            rec = self.records[index]
            with_mosaic = bool(self.rng.uniform() < self.augment.mosaic)
            donors = self._donors(index) if with_mosaic else None
            sample = self.geometry(self.geometry_rng, placed, donors)
            out = self._photometric(sample.image, sample.boxes, sample.labels, sample.pieces)
            image = image_to_tensor(out["image"], config, scale=False)  # the device scales it
            boxes = np.asarray(out["bboxes"], np.float32).reshape(-1, 4)
            labels = np.asarray(out["labels"], np.int64).reshape(-1)
            params = letterbox_params((rec.height, rec.width), config.input_size, config.mode)
        return Sample(
            image=image,
            boxes=torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            labels=torch.as_tensor(labels, dtype=torch.int64).reshape(-1),
            image_id=rec.image_id,
            original_size=(rec.height, rec.width),
            letterbox=tuple(params),
            decoded=decoded,
        )
