"""The LightningDataModule: sources → datasets → DataLoaders of :class:`~yolov4.data.collate.Batch`.

Hydra builds it from ``configs/data/*.yaml`` (``_target_`` = :class:`DetectionDataModule` or
:class:`SyntheticDataModule`, the sources nested with their own ``_target_``) with
``augment=`` from ``configs/augment/*.yaml``. What training and evaluation read from it:

    class_names, num_classes      from the datasets (train and val must agree)
    category_ids                  category_ids[class_index] = the original id results must carry
    val_coco                      pycocotools COCO ground truth of the val split (in memory)
    preprocess_config             THE preprocessing settings (``data.preprocess``, with the
                                  ``data.input_size``/``data.resize_mode`` shorthands applied;
                                  store .to_dict() in checkpoints)

These load the annotations on first access, so a model can be sized before ``Trainer.fit``.
The training order and the workers' seeds are :mod:`yolov4.data.sampling`'s; the checks of a
loaded split, :mod:`yolov4.data.splits`'; the constructor's ``preprocess``,
:mod:`yolov4.data.datamodule_args`'.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import lightning as L
import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import DataLoader

from yolov4.core.preprocess import PreprocessConfig
from yolov4.data.collate import SIZE_MULTIPLE, DetectionCollate, MultiScale
from yolov4.data.datamodule_args import preprocess_config
from yolov4.data.dataset import DetectionDataset
from yolov4.data.loader import EpochLoader
from yolov4.data.problems import ProblemReport
from yolov4.data.records import DetectionData
from yolov4.data.sampling import RANK_SEED_STRIDE, EpochShuffle, seed_worker
from yolov4.data.splits import check_classes, check_trainable, repeated_listings, shared_images
from yolov4.data.synthetic import SyntheticSource
from yolov4.data.transforms import AugmentConfig
from yolov4.errors import ConfigError, DatasetError, shown

log = logging.getLogger(__name__)

__all__ = ["DataSource", "DetectionDataModule", "SyntheticDataModule"]

SPLITS = ("train", "val", "test")


class DataSource(Protocol):
    """Anything that loads a split: :class:`~yolov4.data.coco.CocoSource`,
    :class:`~yolov4.data.yolo_txt.YoloSource`, :class:`~yolov4.data.synthetic.SyntheticSource`."""

    def load(self, report: ProblemReport) -> DetectionData: ...


SPLIT_USE = {
    "train": "training needs one",
    "val": "validation and evaluation need one",
    "test": "testing needs one",
}


def _check_whole(key: str, value: Any, minimum: int) -> None:
    """``data.<key>``: an integer >= ``minimum``, else a :class:`ConfigError` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"data.{key}: expected an integer >= {minimum}, got {shown(value)}")


def _worker_count(num_workers: int) -> int:
    """``data.num_workers``, at most the cores this process may use (more only compete; torch
    warns once per loader)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if cores and num_workers > cores:
        log.info(
            "data.num_workers=%d lowered to %d: the cores this process may use", num_workers,
            cores,
        )  # fmt: skip
        return cores
    return num_workers


def _no_split(name: str, need: str) -> ConfigError:
    """The split ``name`` is not configured: where it comes from, for either DataModule."""
    synthetic = f", or data.num_{name}=0 with data=synthetic" if name in ("train", "val") else ""
    return ConfigError(f"no {name} split (data.{name} is null{synthetic}); {need}")


class DetectionDataModule(L.LightningDataModule):
    """Train/val(/test) detection data.

    Args:
        train, val, test: data sources; any may be ``None`` (evaluation needs only ``val``:
            ``data.train=null``), at least one must be given.
        preprocess: THE preprocessing, a :class:`~yolov4.core.preprocess.PreprocessConfig` or
            its dict (``data.preprocess``: ``input_size``, ``mode``, ``pad_value``,
            ``channel_order``, ``scale``); used for validation and, before augmentation, for
            training; stored in checkpoints as ``preprocess_config.to_dict()``.
        input_size: shorthand for ``preprocess.input_size``: ``(H, W)`` multiples of
            ``size_multiple`` (or one int for square); must agree with ``preprocess`` when both
            are given.
        size_multiple: the network's largest stride (``model.config.max_stride``: 32, 64 for
            yolov4-p6; train.py and evaluate.py pass the model's): input sides and the
            multi-scale training sizes are multiples of it.
        resize_mode: shorthand for ``preprocess.mode``: ``letterbox`` or ``stretch``
            (darknet's weights); must agree with ``preprocess`` when both are given.
        augment: training augmentation; ``None`` trains on preprocessed images only. Its
            ``multi_scale`` becomes :attr:`multi_scale`, the :class:`~yolov4.data.collate.MultiScale`
            sizes ``YoloModule`` gives training batches (``None``: off).
        batch_size: training batch size; ``val_batch_size`` defaults to it.
        num_workers, persistent_workers, pin_memory: DataLoader settings.
        seed: seeds worker RNGs (with the rank) and the augmentation.
        strict: raise :class:`DatasetError` at the first bad file instead of repairing/skipping.
        num_classes: the model's class count; a dataset with another count fails at setup.
        file: the dataset file (``data.file``: darknet's ``.data`` or an ultralytics data yaml)
            the YOLO txt splits' ``images`` and ``names`` come from; the commands fill the
            splits' config from it before the module is built
            (:func:`yolov4.data.dataset_file.fill_splits`), so that a checkpoint records the
            paths read. Kept as :attr:`file`.
    """

    def __init__(
        self,
        *,
        train: DataSource | None = None,
        val: DataSource | None = None,
        test: DataSource | None = None,
        preprocess: PreprocessConfig | Mapping[str, Any] | None = None,
        input_size: int | Sequence[int] | None = None,
        resize_mode: str | None = None,
        augment: AugmentConfig | None = None,
        batch_size: int = 16,
        val_batch_size: int | None = None,
        num_workers: int = 2,
        persistent_workers: bool = True,
        pin_memory: bool = False,
        seed: int = 0,
        strict: bool = False,
        num_classes: int | None = None,
        size_multiple: int = SIZE_MULTIPLE,
        file: str | None = None,
    ) -> None:
        super().__init__()
        _check_whole("size_multiple", size_multiple, 1)
        _check_whole("batch_size", batch_size, 1)
        _check_whole("num_workers", num_workers, 0)
        if val_batch_size is not None:
            _check_whole("val_batch_size", val_batch_size, 1)
        self.size_multiple = size_multiple
        self.file = file
        self.preprocess_config = preprocess_config(
            preprocess, input_size, resize_mode, size_multiple
        )
        self.sources = {"train": train, "val": val, "test": test}
        if all(v is None for v in self.sources.values()):
            raise ConfigError("data: expected at least one of train, val, test; all are null")
        self.augment = augment
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers = _worker_count(num_workers)
        self.persistent_workers = persistent_workers and num_workers > 0
        self.pin_memory = pin_memory
        self.seed = seed
        coefficient = augment.multi_scale if augment is not None else None
        # the training sizes (one per 10 optimizer steps, all ranks alike: the run's seed);
        # YoloModule applies them to training batches on the device
        self.multi_scale = (
            MultiScale(coefficient, size_multiple, seed)
            if coefficient is not None and coefficient > 1.0
            else None
        )
        self.strict = strict
        self.expected_num_classes = num_classes
        self._data: dict[str, DetectionData] = {}
        self.reports: dict[str, ProblemReport] = {}
        # what loading a split warned about beyond its report and notes (splits sharing images)
        self.warnings: dict[str, list[str]] = {}
        self.datasets: dict[str, DetectionDataset] = {}
        self._val_index: dict[int, int] | None = None  # image_id -> index, for val_image

    # ---------------------------------------------------------------- loading
    def split(self, name: str) -> DetectionData | None:
        """The loaded split ``name`` (annotations read once; problems logged once)."""
        if self.sources[name] is None:
            return None
        if name not in self._data:
            report = ProblemReport(strict=self.strict, name=f"data.{name}")
            self._data[name] = repeated_listings(name, self.sources[name].load(report))
            self.reports[name] = report
            report.log()
            for note in self._data[name].info:
                log.info("data.%s: %s", name, note)
            for note in self._data[name].notes:
                log.warning("data.%s: %s", name, note)
            check_classes(name, self._data, self.expected_num_classes)
            for warning in shared_images(name, self._data):
                self.warnings.setdefault(name, []).append(warning)
                log.warning("%s", warning)
        return self._data[name]

    def _first_split(self) -> DetectionData:
        name = next(n for n in SPLITS if self.sources[n] is not None)
        return self.split(name)  # type: ignore[return-value]

    @property
    def class_names(self) -> list[str]:
        return self._first_split().class_names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def category_ids(self) -> list[int]:
        """``category_ids[class_index]``: the original category id to write in results."""
        return self._first_split().category_ids

    @property
    def val_coco(self) -> COCO:
        """pycocotools ground truth of the val split (built in memory for YOLO txt)."""
        data = self.split("val")
        if data is None:
            raise _no_split("val", SPLIT_USE["val"])
        return data.coco

    def val_image(self, image_id: int) -> np.ndarray | None:
        """``(H, W, 3)`` uint8 RGB of the val split's image ``image_id`` as validation reads it
        (:meth:`DetectionDataset.image`: in the frame and at the size of its ground truth, its
        problems in the val dataset's report); ``None`` when it does not decode. Evaluation
        of a Predictor and the worst-images gallery read images through it."""
        if "val" not in self.datasets:
            self.setup("validate")
        if "val" not in self.datasets:
            raise _no_split("val", SPLIT_USE["val"])
        dataset = self.datasets["val"]
        if self._val_index is None:
            self._val_index = {r.image_id: i for i, r in enumerate(dataset.records)}
        index = self._val_index.get(image_id)
        if index is None:
            raise DatasetError(
                f"data.val has no image with image_id {image_id!r} (it has "
                f"{len(self._val_index)} images)"
            )
        return dataset.image(index)

    # ---------------------------------------------------------------- Lightning hooks
    def prepare_data(self) -> None:
        """Generate the synthetic dataset once (called on one process per node)."""
        for source in self.sources.values():
            if hasattr(source, "prepare"):
                source.prepare()

    def _rank(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.global_rank) if trainer is not None else 0

    def setup(self, stage: str | None = None) -> None:
        rank = self._rank()
        for name in SPLITS:
            data = self.split(name)
            if data is None or name in self.datasets:
                continue
            if name == "train" and stage in ("fit", None):
                check_trainable(data, name)
            train = name == "train"
            augment = (self.augment or AugmentConfig.none()) if train else None
            self.datasets[name] = DetectionDataset(
                data,
                self.preprocess_config,
                augment,
                self.strict,
                self.seed + rank * RANK_SEED_STRIDE,
                f"data.{name}",
            )

    def teardown(self, stage: str | None = None) -> None:
        """Log how many problems of each kind decoding found, where more were found than the
        log names one by one (:meth:`ProblemReport.log_counts`)."""
        for dataset in self.datasets.values():
            dataset.report.log_counts()

    def _loader(self, name: str, train: bool) -> DataLoader:
        if name not in self.datasets:
            self.setup()
        if name not in self.datasets:
            raise _no_split(name, SPLIT_USE[name])
        dataset = self.datasets[name]
        seed = self.seed + self._rank() * RANK_SEED_STRIDE
        generator = torch.Generator().manual_seed(seed)
        sampler = None
        if train:
            sampler = EpochShuffle(dataset, self.seed, generator, stream_seed=seed)
            sampler.reseed_dataset = self.num_workers == 0
            sampler.set_epoch(0)
        # the train iterator is made at its first batch: after Lightning's set_epoch
        return (EpochLoader if train else DataLoader)(
            dataset,
            batch_size=self.batch_size if train else self.val_batch_size,
            sampler=sampler,
            drop_last=train and self._drops_last(math.ceil(len(dataset) / self._world_size())),
            num_workers=self.num_workers,
            persistent_workers=self.persistent_workers,
            # pinned memory serves copies to a GPU; without one torch warns on every run
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            collate_fn=DetectionCollate(),
            worker_init_fn=seed_worker,
            generator=generator,
        )

    def _drops_last(self, n: int) -> bool:
        """The train loader drops a last partial batch when a process's ``n`` images (its
        share of the split) hold more than one batch."""
        return n > self.batch_size

    def _world_size(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(getattr(trainer, "world_size", 1) or 1) if trainer is not None else 1

    def train_batches(self, world_size: int = 1) -> int | None:
        """Batches of one training epoch in one of ``world_size`` processes (DDP's sampler
        gives each ``ceil(n / world_size)`` images); ``None`` without a training split;
        readable before set-up."""
        train = self.split("train")
        if train is None:
            return None
        per_process = math.ceil(len(train.records) / max(1, world_size))
        return per_process // self.batch_size if self._drops_last(per_process) else 1

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)


class SyntheticDataModule(DetectionDataModule):
    """:class:`DetectionDataModule` over the built-in synthetic shapes (``data=synthetic``).

    Args:
        num_train, num_val: images per split.
        image_size: longest side of the generated images (sides vary in [0.75, 1] of it).
        data_seed: generator seed (a different seed is a different dataset).
        cache_dir: where splits are generated once (default ``~/.cache/yolov4/synthetic``).
        **kwargs: :class:`DetectionDataModule` arguments (input_size, batch_size, ...).
    """

    def __init__(
        self,
        *,
        num_train: int = 500,
        num_val: int = 100,
        image_size: int = 256,
        data_seed: int = 0,
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        given = sorted(set(kwargs) & set(SPLITS))
        if given:  # evaluate.py checkpoint=<a synthetic run> data.val.images=...
            raise ConfigError(
                f"data.{given[0]}: the synthetic dataset generates its own splits; to use your "
                f"files give their format too, data=coco or data=yolo with data.{given[0]}.*"
            )
        for key, value in (("num_train", num_train), ("num_val", num_val),
                           ("image_size", image_size), ("data_seed", data_seed)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"data.{key}: expected an integer >= 0, got {value!r}")
        common = {"image_size": image_size, "seed": data_seed, "cache_dir": cache_dir}
        super().__init__(
            train=SyntheticSource(split="train", num_images=num_train, **common),
            val=SyntheticSource(split="val", num_images=num_val, **common) if num_val > 0 else None,
            **kwargs,
        )
