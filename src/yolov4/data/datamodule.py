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
"""

from __future__ import annotations

import logging
import math
import os
import random
import signal
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import lightning as L
import numpy as np
import torch
from pycocotools.coco import COCO
from torch.utils.data import DataLoader, Sampler, get_worker_info

from yolov4.core.preprocess import PreprocessConfig
from yolov4.data.collate import SIZE_MULTIPLE, DetectionCollate, MultiScale
from yolov4.data.dataset import DetectionDataset
from yolov4.data.loader import EpochLoader
from yolov4.data.records import DetectionData, ProblemReport
from yolov4.data.synthetic import SyntheticSource
from yolov4.data.transforms import AugmentConfig
from yolov4.errors import ConfigError, DatasetError
from yolov4.models.stride import check_stride_multiple

log = logging.getLogger(__name__)

__all__ = [
    "check_trainable",
    "classes_without_boxes",
    "DataSource",
    "DetectionDataModule",
    "EpochShuffle",
    "SyntheticDataModule",
    "epoch_seed",
    "seed_worker",
]

SPLITS = ("train", "val", "test")
RANK_SEED_STRIDE = 1_000_003  # a prime: seeds of different ranks never collide for < 1e6 epochs
EPOCH_SEED_STRIDE = 1  # epoch e of rank r: seed + r * RANK_SEED_STRIDE + e
WORKER_SEED_OFFSET = 2**40  # worker seeds: a generator seeded apart from any epoch's shuffle


class DataSource(Protocol):
    """Anything that loads a split: :class:`~yolov4.data.coco.CocoSource`,
    :class:`~yolov4.data.yolo_txt.YoloSource`, :class:`~yolov4.data.synthetic.SyntheticSource`."""

    def load(self, report: ProblemReport) -> DetectionData: ...


def check_trainable(data: DetectionData, name: str = "train") -> None:
    """Refuse a training split without a single box (:class:`DatasetError` with what the loader
    searched: labels in a folder of another name, or all in pixel coordinates, end here), and
    warn about classes without a box in it (:func:`classes_without_boxes`)."""
    if data.num_boxes == 0:
        found = "".join(f"\n  {note}" for note in data.notes)
        raise DatasetError(
            f"data.{name} has {len(data.records)} images and no box: nothing to learn from. "
            f"Check the labels (yolov4-check-data shows what was read){found}"
        )
    warning = classes_without_boxes(data, name)
    if warning:
        log.warning("%s", warning)


def classes_without_boxes(data: DetectionData, name: str = "train") -> str | None:
    """The warning naming the classes of split ``name`` without a box; ``None`` when every
    class has one, or when the split has no box at all (:func:`check_trainable` refuses it)."""
    if data.num_boxes == 0:
        return None
    counts = np.bincount(
        np.concatenate([r.labels for r in data.records]), minlength=data.num_classes
    )
    empty = [
        f"{n!r} (category_id {c})"
        for n, c, k in zip(data.class_names, data.category_ids, counts, strict=True)
        if k == 0
    ]
    if not empty:
        return None
    return (
        f"data.{name}: {len(empty)} of {data.num_classes} classes have no box to learn from: "
        + ", ".join(empty)
    )


def _repeated_listings(name: str, data: DetectionData) -> DetectionData:
    """Split ``name`` with the images listed more than once (:attr:`DetectionData.repeats`)
    read once in a val or test split (repeats would weigh those images twice in the metrics),
    kept in a train split (oversampling may be meant); a note says which."""
    n = len(data.repeats)
    if not n:
        return data
    if name == "train":
        data.notes.append(
            f"{n} repeated listings of images kept: each listing is one more sample of its "
            "image per epoch (list each image once for a uniform draw)"
        )
        return data
    data = data.without_repeats()
    data.notes.append(f"{n} repeated listings of images left out: each image is scored once")
    return data


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: seed Python, NumPy and the dataset's augmentation from
    the worker's torch seed (distinct per worker, per epoch, and per rank through the
    DataLoader's rank-seeded generator; reproducible for a given seed). Ctrl-C is the main
    process's to handle (a training run finishes its step and saves): workers ignore SIGINT,
    and the main process shuts them down."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    info = get_worker_info()
    seed = info.seed % 2**32 if info is not None else worker_id
    random.seed(seed)
    np.random.seed(seed)
    if info is not None and hasattr(info.dataset, "reseed"):
        info.dataset.reseed(seed)


def _preprocess_config(
    preprocess: PreprocessConfig | Mapping[str, Any] | None,
    input_size: int | Sequence[int] | None,
    resize_mode: str | None,
    multiple: int = SIZE_MULTIPLE,
) -> PreprocessConfig:
    """``data.preprocess`` with the ``data.input_size`` / ``data.resize_mode`` shorthands
    applied; a shorthand that contradicts an explicit ``preprocess`` value is refused; sides
    must be multiples of ``multiple`` (the network's largest stride)."""
    if isinstance(preprocess, PreprocessConfig):
        config, given = preprocess, set(preprocess.to_dict())
    else:
        values = {} if preprocess is None else dict(preprocess)
        if "input_size" in values:
            values["input_size"] = _size(values["input_size"], "data.preprocess.input_size")
        config, given = PreprocessConfig.from_dict(values), set(values)
    shorthands = {"input_size": ("input_size", input_size), "mode": ("resize_mode", resize_mode)}
    for field, (key, value) in shorthands.items():
        if value is None:
            continue
        value = _size(value, f"data.{key}") if field == "input_size" else value
        if field in given and getattr(config, field) != value:
            show = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
            raise ConfigError(
                f"data.{key}={show(value)} contradicts data.preprocess.{field}="
                f"{show(getattr(config, field))}; set data.{key} (model.input_size follows it)"
            )
        config = PreprocessConfig(**{**config.to_dict(), field: value})
    check_stride_multiple(config.input_size, multiple, "data.input_size")
    return config


def _size(value: int | Sequence[int], key: str) -> tuple[int, ...]:
    size = (int(value), int(value)) if isinstance(value, int) else tuple(int(s) for s in value)
    if len(size) != 2 or min(size) <= 0:
        raise ConfigError(f"{key}: expected (H, W) positive integers, got {value}")
    return size


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch: a function of the run's seed and the epoch number alone."""
    return (seed + epoch * EPOCH_SEED_STRIDE) % 2**63


class EpochShuffle(Sampler[int]):
    """A shuffled order that depends on ``(seed, epoch)`` only, so a run resumed at epoch ``e``
    draws what an uninterrupted run draws there (``RandomSampler`` continues one generator
    through the epochs, which a resumed process restarts). The order is the same in every
    process of a DDP run: Lightning's ``DistributedSamplerWrapper`` deals each process its share
    of it, so the shares split the split (one image in one process); ``stream_seed`` (the
    process's own) seeds the workers and the augmentation. Lightning calls :meth:`set_epoch`
    at each epoch's start, before the train loader (an
    :class:`~yolov4.data.loader.EpochLoader`) makes the epoch's iterator at its first batch,
    also in the first epoch of a resumed fit; it also reseeds the DataLoader's ``generator``
    (the worker seeds of non-persistent workers) and, without workers, the dataset's
    augmentation.
    Persistent workers keep their first epoch's seeds, so they resume close, not bit-equal."""

    def __init__(
        self,
        dataset: DetectionDataset,
        seed: int,
        generator: torch.Generator,
        stream_seed: int | None = None,
    ) -> None:
        self.dataset, self.seed, self.generator = dataset, seed, generator
        self.stream_seed = seed if stream_seed is None else stream_seed
        self.reseed_dataset = False  # set by the DataModule when there are no workers
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        seed = epoch_seed(self.stream_seed, self.epoch)
        self.generator.manual_seed(seed + WORKER_SEED_OFFSET)  # a stream apart from the shuffle
        if self.reseed_dataset:
            self.dataset.reseed(seed % 2**32)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        yield from torch.randperm(len(self.dataset), generator=g).tolist()

    def __len__(self) -> int:
        return len(self.dataset)


SPLIT_USE = {
    "train": "training needs one",
    "val": "validation and evaluation need one",
    "test": "testing needs one",
}


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
    ) -> None:
        super().__init__()
        if (
            isinstance(size_multiple, bool)
            or not isinstance(size_multiple, int)
            or size_multiple < 1
        ):
            raise ConfigError(
                f"data.size_multiple: expected an integer >= 1, got {size_multiple!r}"
            )
        self.size_multiple = size_multiple
        self.preprocess_config = _preprocess_config(
            preprocess, input_size, resize_mode, size_multiple
        )
        if batch_size < 1:
            raise ConfigError(f"data.batch_size: expected >= 1, got {batch_size}")
        self.sources = {"train": train, "val": val, "test": test}
        if all(v is None for v in self.sources.values()):
            raise ConfigError("data: expected at least one of train, val, test; all are null")
        self.augment = augment
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        if cores and num_workers > cores:  # more only compete (torch warns once per loader)
            log.info(
                "data.num_workers=%d lowered to %d: the cores this process may use", num_workers,
                cores,
            )  # fmt: skip
            num_workers = cores
        self.num_workers = num_workers
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
            self._data[name] = _repeated_listings(name, self.sources[name].load(report))
            self.reports[name] = report
            report.log()
            for note in self._data[name].notes:
                log.warning("data.%s: %s", name, note)
            self._check_classes(name)
            self._check_shared_images(name)
        return self._data[name]

    def _check_shared_images(self, name: str) -> None:
        """A warning when split ``name`` holds images of another loaded split (a val folder
        inside the train folder): its mAP would score images the network trained on."""
        files = {os.path.abspath(r.file) for r in self._data[name].records}
        for other, od in self._data.items():
            if other == name:
                continue
            shared = sorted(files.intersection(os.path.abspath(r.file) for r in od.records))
            if shared:
                warning = (
                    f"data.{other} and data.{name} share {len(shared)} images (e.g. "
                    f"{shared[0]}): validation would score images the network trains on; give "
                    "the splits separate images"
                )
                self.warnings.setdefault(name, []).append(warning)
                log.warning("%s", warning)

    def _check_classes(self, name: str) -> None:
        data = self._data[name]
        if self.expected_num_classes is not None and data.num_classes != self.expected_num_classes:
            raise DatasetError(
                f"data.{name} has {data.num_classes} classes {data.class_names} but the model has "
                f"{self.expected_num_classes}; set model.num_classes={data.num_classes}"
            )
        for other, od in self._data.items():
            if od.class_names != data.class_names or od.category_ids != data.category_ids:
                raise DatasetError(
                    f"data.{name} classes {list(zip(data.category_ids, data.class_names, strict=True))} differ "
                    f"from data.{other} classes {list(zip(od.category_ids, od.class_names, strict=True))}"
                )

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
