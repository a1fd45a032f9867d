"""YOLO txt datasets (darknet / ultralytics layout) converted to the internal form.

    images/<name>.jpg   labels/<name>.txt   one line per box: ``class cx cy w h``, normalised
                                            to [0, 1]; a missing label file means no object

The label file of ``images/a/b.jpg`` is ``labels/a/b.txt`` (ultralytics' rule: the last
``images`` folder of the path becomes ``labels``, or a sibling ``labels`` folder), else
``images/a/b.txt`` beside the image (darknet's layout); ``labels=`` names the folder and turns
the second look off. ``images`` may be darknet's list file instead of a folder (``train.txt``,
one image path a line), each image's labels looked for the same way; an image listed again is
reported, and its records listed in :attr:`DetectionData.repeats` (the DataModule drops them
from a val or test split, where they would skew the metrics, and keeps them in a train split,
where oversampling may be meant). A line of more than 5 numbers is an ultralytics segmentation polygon
``class x1 y1 x2 y2 x3 y3 ...`` and trains as its bounding box, unless the names come from a
data yaml with ``kpt_shape: [K, D]`` (an ultralytics pose dataset; or ``kpt_shape=`` given with
other names): then every line is
``class cx cy w h`` and ``K * D`` keypoint numbers, which are ignored (a note says so), and a
line of another length is reported and dropped. A line giving the same class
and box as an earlier line of its file is reported and dropped. Hidden files and folders
(``.ipynb_checkpoints``, macOS ``._`` files) are not read. What the loader left out is counted in
the split's ``notes``: images without a label file, files with a suffix it does not read, label
files without an image. A label file's suffix may be in any case (``a.TXT``). Images of one
name with different suffixes (``a.jpg``, ``a.png``) share the label file ``a.txt``, as in
ultralytics: each is read with its boxes, and the sharing reported.

Class names come from a darknet ``.names`` file (one per line), darknet's ``.data`` file (its
``names =`` file), an ultralytics data yaml (``names:`` list or ``{index: name}`` dict) or a
list (:mod:`yolov4.data.data_yaml`). The class index is kept as the category
id. The ground truth for evaluation is built in memory (:func:`records_to_coco`) so a YOLO val
set is scored by pycocotools like COCO.

Where the files are is :mod:`yolov4.data.yolo_layout`'s; one label file's lines,
:mod:`yolov4.data.yolo_labels`'.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from yolov4.core.files import files_under, looked_for
from yolov4.core.images import image_files
from yolov4.data.data_yaml import (
    DARKNET_DATA_SUFFIX,
    ClassNames,
    check_kpt_shape,
    is_data_yaml,
    load_class_names,
    read_class_names,
    read_kpt_shape,
)
from yolov4.data.dataset_file import dataset_file_of
from yolov4.data.image_io import IMAGE_SUFFIXES, image_size
from yolov4.data.problems import Problem, ProblemReport
from yolov4.data.records import DetectionData, ImageRecord, records_to_coco
from yolov4.data.yolo_labels import count_boxes, read_labels
from yolov4.data.yolo_layout import (
    LABEL_SUFFIX,
    LabelFiles,
    default_labels_dir,
    label_files,
    list_file,
    listed_label_files,
    listing,
    missing_note,
)
from yolov4.errors import DatasetError

__all__ = ["YoloSource", "load_yolo", "read_class_names", "read_kpt_shape"]

# How many images without a label file the note names.
NOTE_EXAMPLES = 3


@dataclass
class YoloSource:
    """A YOLO txt split: ``images`` directory, ``labels`` directory (default: the sibling
    ``labels`` of ``images``, ultralytics' rule), class ``names`` and, for a pose dataset whose
    names are not a data yaml with ``kpt_shape``, its ``kpt_shape`` ``[K, D]``; ``list_root``:
    where a list file's relative paths are read from when neither the list's folder nor the
    working directory has them (the working directory a run read them from: a checkpoint
    records it, :func:`~yolov4.cli.data_config.recorded_data`); ``file_split``: the split of
    the dataset file ``names`` that gave ``images`` (``data.file=`` sets it:
    :func:`~yolov4.data.dataset_file.fill_splits`), named in notes and messages."""

    images: str
    names: str | list[str]
    labels: str | None = None
    include_negatives: bool = True
    kpt_shape: list[int] | None = None
    list_root: str | None = None
    file_split: str | None = None

    def load(self, report: ProblemReport) -> DetectionData:
        return load_yolo(
            self.images,
            self.names,
            self.labels,
            self.include_negatives,
            report,
            self.kpt_shape,
            self.list_root,
            self.file_split,
        )


def load_yolo(
    images: str | Path,
    names: str | Sequence[str],
    labels: str | Path | None = None,
    include_negatives: bool = True,
    report: ProblemReport | None = None,
    kpt_shape: Sequence[int] | None = None,
    list_root: str | Path | None = None,
    file_split: str | None = None,
) -> DetectionData:
    """Load a YOLO txt split; image ids are 1.. in sorted file order. ``kpt_shape`` ``[K, D]``
    reads a pose dataset's lines (the data yaml's ``kpt_shape`` when ``None``); ``list_root``:
    the folder a list file's relative paths are read from when neither the list's folder nor
    the working directory has them; ``file_split``: the split of the dataset file ``names``
    that gave ``images``, named in notes and messages.

    Raises:
        DatasetError: missing image directory or names, or no usable image.
    """
    report = report if report is not None else ProblemReport(name=str(images))
    image_dir = Path(images)
    listing_file = _check_images(image_dir, names, file_split)
    label_dir = Path(labels) if labels is not None else default_labels_dir(image_dir)
    loaded_names = load_class_names(names)
    class_names = loaded_names.names
    given = kpt_shape is not None
    kpt_shape = check_kpt_shape(kpt_shape, "kpt_shape:") if given else read_kpt_shape(names)
    missing: list[str] = []
    windows: list[str] = []  # the note on listed paths written on Windows
    if listing_file:
        listed, missing, windows = list_file(image_dir, report, list_root)
        files = listed
    else:
        listed = listing(image_dir)
        files = image_files(listed)
    if listing_file:
        label_root = Path(labels) if labels is not None else None
        candidates = partial(listed_label_files, label_dir=label_root)
    else:
        candidates = partial(
            label_files, image_dir=image_dir, label_dir=label_dir, beside=labels is None
        )
    records, unlabelled, unreadable, lost, repeats = _read_records(
        files, candidates, loaded_names, report, kpt_shape, include_negatives
    )
    if listing_file:
        notes = _listed_notes(files, unlabelled, image_dir)
        if missing:
            notes.insert(0, missing_note(image_dir, missing, len(files) + len(missing), list_root))
    else:
        notes = _notes(listed, files, unlabelled, image_dir, label_dir, labels is None)
    if unreadable:
        notes.append(_unreadable_note(unreadable, lost, report.name))
    notes += _kpt_notes(names, kpt_shape, given)
    info = _names_info(names, loaded_names, file_split) + windows
    if not records:
        if listing_file:
            found = f"{len(files) + len(missing)} paths listed, {len(missing)} of them not found"
        else:
            found = f"found {len(files)} files with suffixes {IMAGE_SUFFIXES}"
        raise DatasetError(
            f"no usable image in {image_dir} ({found})\n{report.summary()}"
            + "".join(f"\n{n}" for n in [*info, *notes])
        )
    category_ids = list(range(len(class_names)))
    coco = records_to_coco(records, class_names, category_ids)
    return DetectionData(records, class_names, category_ids, coco, notes, repeats, info)


def _check_images(
    image_dir: Path, names: str | Sequence[str], file_split: str | None = None
) -> bool:
    """Whether ``image_dir`` is darknet's list file (``train.txt``: one image path a line)
    rather than a folder; a missing path, a data yaml or a ``.data`` file is a DatasetError
    saying what to give instead."""
    listing_file = image_dir.is_file()
    if not image_dir.is_dir() and not listing_file:
        raise DatasetError(
            f"image directory not found: {image_dir}{_where_looked(image_dir, names, file_split)}; expected "
            "a folder of the YOLO layout images/ + labels/, or darknet's list file of image "
            "paths (train.txt)"
        )
    if listing_file and is_data_yaml(image_dir):  # ultralytics' data.yaml
        raise DatasetError(
            f"{image_dir} is a data yaml, not a list of images: give the split's images folder "
            f"(or list file) as images, and the yaml as names (data.<split>.names={image_dir}), "
            f"or the yaml alone as data.file={image_dir} (its train:/val: are the splits)"
        )
    if listing_file and image_dir.suffix.lower() == DARKNET_DATA_SUFFIX:
        raise DatasetError(
            f"{image_dir} is darknet's .data file, not a list of images: give it alone as "
            f"data.file={image_dir} (its `train =` / `valid =` lists are the splits), or its "
            "list files as images (data.train.images=..., data.val.images=...) and the .data "
            f"file as names (data.<split>.names={image_dir})"
        )
    return listing_file


def _read_records(
    files: list[Path],
    label_candidates: Callable[[Path], list[Path]],
    loaded_names: ClassNames,
    report: ProblemReport,
    kpt_shape: tuple[int, int] | None,
    include_negatives: bool,
) -> tuple[list[ImageRecord], list[Path], list[Path], int, list[int]]:
    """The records of ``files`` (image ids 1.. in their order; ``label_candidates``: the label
    files an image may have, the first found read) with the images that have no label file, the unreadable images, the boxes lost with them, and the indices of records
    that list an image again."""
    records, unlabelled, finder = [], [], LabelFiles()
    image_of: dict[Path, Path] = {}  # label file -> the first image read with it
    repeats, read = [], set()  # records listing an image again; the images read
    unreadable, lost = [], 0  # images without a readable header; the boxes of their labels
    for image_id, path in enumerate(files, 1):
        label_file = finder.find(label_candidates(path))
        hw = image_size(path)
        if hw is None:
            report.add(Problem.UNREADABLE, path, "no readable image header")
            unreadable.append(path)
            lost += count_boxes(label_file, kpt_shape)
            continue
        boxes, cls = [], []
        if label_file is None:
            unlabelled.append(path)
        else:
            first = image_of.setdefault(label_file, path)
            if first != path:
                report.add(Problem.SHARED_LABEL_FILE, label_file, f"read for {first} and {path}")
            labels_read = read_labels(label_file, hw, loaded_names, report, kpt_shape)
            if labels_read is None:
                continue
            boxes, cls = labels_read
        if not boxes and not include_negatives:
            continue
        if os.path.abspath(path) in read:
            repeats.append(len(records))
        read.add(os.path.abspath(path))
        records.append(
            ImageRecord(
                image_id=image_id,
                file=str(path),
                height=hw[0],
                width=hw[1],
                boxes=np.array(boxes, np.float32).reshape(-1, 4),
                labels=np.array(cls, np.int64),
            )
        )
    return records, unlabelled, unreadable, lost, repeats


def _where_looked(images: Path, names: str | Sequence[str], file_split: str | None) -> str:
    """Where a missing ``images`` was looked for: its absolute path, the working directory a
    relative one is read from, and with a dataset file as ``names`` (darknet's ``.data``, a data
    yaml) the key of its split ``file_split`` that gave ``images`` (``data.file=``), else the
    splits it gives."""
    text = looked_for(images)
    dataset = dataset_file_of(names)
    if dataset is None:
        return text
    origin = dataset.splits.get(file_split) if file_split is not None else None
    if origin is not None:
        return f"{text}; it is {origin.source}"
    found = [f"{dataset.keys[k]} {s.path.absolute()}" for k, s in dataset.splits.items()
             if s.path.exists()]  # fmt: skip
    if found:
        text += f"; {names} gives {', '.join(found)} (data.file={names} reads its splits)"
    return text


def _examples(paths: list[Path], root: Path | None = None) -> str:
    """``e.g. a.jpg, b.jpg, c.jpg`` (paths under ``root`` named from it; all as given without
    ``root``), ``NOTE_EXAMPLES`` of them."""
    shown = [str(p.relative_to(root)) if root and p.is_relative_to(root) else str(p) for p in paths]
    more = f", ... ({len(paths) - NOTE_EXAMPLES} more)" if len(paths) > NOTE_EXAMPLES else ""
    return "e.g. " + ", ".join(shown[:NOTE_EXAMPLES]) + more


def _notes(
    listed: list[Path],
    images: list[Path],
    unlabelled: list[Path],
    image_dir: Path,
    label_dir: Path,
    beside: bool,
) -> list[str]:
    """What :func:`load_yolo` left out, one line each (see the module docstring)."""
    notes = []
    where = f"{label_dir}" + (" or beside the image" if beside else "")
    if unlabelled:
        notes.append(
            f"{len(unlabelled)} of {len(images)} images have no label file in {where} "
            f"({_examples(unlabelled, image_dir)}): read as images without objects"
        )
    unread = Counter(
        p.suffix.lower() or "(no suffix)"
        for p in listed
        if p.suffix.lower() not in (*IMAGE_SUFFIXES, LABEL_SUFFIX)
    )
    if unread:
        kinds = ", ".join(f"{k} ({n})" for k, n in sorted(unread.items()))
        notes.append(
            f"{sum(unread.values())} files in {image_dir} with a suffix that is not an image "
            f"({kinds}) not read; images are {', '.join(IMAGE_SUFFIXES)}"
        )
    if label_dir.is_dir():
        stems = {(label_dir / p.relative_to(image_dir)).with_suffix("") for p in images}
        orphans = [
            p for p in files_under(label_dir)
            if p.suffix.lower() == LABEL_SUFFIX and p.with_suffix("") not in stems and not p.name.startswith(".")
        ]  # fmt: skip
        if orphans:
            notes.append(
                f"{len(orphans)} label files in {label_dir} have no image in {image_dir}, e.g. "
                f"{orphans[0]}"
            )
    return notes


def _listed_notes(files: list[Path], unlabelled: list[Path], image_dir: Path) -> list[str]:
    """The note on the images of a list file without a label file (none when all have one)."""
    if not unlabelled:
        return []
    where = "the labels folder beside each image's images folder, or beside the image"
    return [
        f"{len(unlabelled)} of {len(files)} listed images have no label file in {where} "
        f"({_examples(unlabelled, image_dir.parent)}): read as images without objects"
    ]


# What a split goes on with when images are left out, by the report's split name (``data.val``).
OVER_THE_OTHERS = {
    "train": "training is over the other images",
    "val": "mAP is over the other images",
    "test": "testing is over the other images",
}


def _unreadable_note(unreadable: list[Path], lost: int, report_name: str) -> str:
    """The note on the images left out unreadable, with the ``lost`` boxes of their labels,
    named as the report's problem lines name them; what goes on without them follows from the
    split of ``report_name`` (``data.val``: mAP)."""
    one = len(unreadable) == 1
    split = report_name.removeprefix("data.")
    goes_on = OVER_THE_OTHERS.get(split, "training and mAP are over the other images")
    whose = "its label file" if one else "their label files"
    return (
        f"{len(unreadable)} unreadable image{'' if one else 's'} ({_examples(unreadable)}) left "
        f"out with the {lost} box{'' if lost == 1 else 'es'} of {whose} (a YOLO box is a "
        f"fraction of its image's size, which an unreadable file does not give): {goes_on}"
    )


def _names_info(
    names: str | Sequence[str], loaded_names: ClassNames, file_split: str | None
) -> list[str]:
    """Where the images came from when ``names`` is the dataset file whose split ``file_split``
    gave them (``data.file=``), and where the class names came from when ``names`` is a darknet
    ``.data`` file."""
    info = []
    dataset = dataset_file_of(names) if file_split is not None else None
    origin = dataset.splits.get(file_split) if dataset is not None else None
    if origin is not None:
        info.append(f"images from {origin.source}")
    if isinstance(names, str | os.PathLike) and Path(names).suffix.lower() == DARKNET_DATA_SUFFIX:
        info.append(f"class names: {len(loaded_names.names)} from {loaded_names.source}")
    return info


def _kpt_notes(
    names: str | Sequence[str], kpt_shape: tuple[int, int] | None, given: bool
) -> list[str]:
    """The note on a pose dataset's keypoints (``given``: ``kpt_shape=`` rather than the data
    yaml's)."""
    notes = []
    if kpt_shape is not None:
        notes.append(
            f"{'kpt_shape=' if given else f'{names} has kpt_shape '}{list(kpt_shape)}: a pose "
            "dataset; each label line's box is "
            f"its first 5 numbers (class cx cy w h), its {kpt_shape[0]} keypoints are ignored"
        )
    return notes
