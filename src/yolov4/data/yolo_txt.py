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
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from yolov4.core.files import files_under, listed_path, looked_for
from yolov4.data.data_yaml import (
    DARKNET_DATA_SUFFIX,
    ClassNames,
    check_kpt_shape,
    is_data_yaml,
    load_class_names,
    read_class_names,
    read_kpt_shape,
    yaml_split_paths,
)
from yolov4.data.image_io import IMAGE_SUFFIXES, image_size
from yolov4.data.records import (
    DetectionData,
    ImageRecord,
    Problem,
    ProblemReport,
    check_box,
    records_to_coco,
)
from yolov4.errors import DatasetError

__all__ = ["YoloSource", "load_yolo", "read_class_names", "read_kpt_shape"]

YOLO_COLUMNS = 5  # class cx cy w h
# A coordinate above this is not a fraction of the image (pixels): the line is refused as such
# rather than reported as a box outside the image. Fractions up to it are clipped as usual.
NORMALIZED_LIMIT = 2.0
# How many images without a label file the note names.
NOTE_EXAMPLES = 3
LABEL_SUFFIX = ".txt"


@dataclass
class YoloSource:
    """A YOLO txt split: ``images`` directory, ``labels`` directory (default: the sibling
    ``labels`` of ``images``, ultralytics' rule), class ``names`` and, for a pose dataset whose
    names are not a data yaml with ``kpt_shape``, its ``kpt_shape`` ``[K, D]``."""

    images: str
    names: str | list[str]
    labels: str | None = None
    include_negatives: bool = True
    kpt_shape: list[int] | None = None

    def load(self, report: ProblemReport) -> DetectionData:
        return load_yolo(
            self.images, self.names, self.labels, self.include_negatives, report, self.kpt_shape
        )


def _default_labels_dir(images: Path) -> Path:
    parts = list(images.parts)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts)
    return images.parent / "labels"


def _relative_box(
    values: list[float], kpt_shape: tuple[int, int] | None = None
) -> tuple[float, float, float, float] | None:
    """``x1, y1, x2, y2`` (fractions of the image) of a label line's numbers: ``class cx cy w h``
    or a polygon ``class x1 y1 x2 y2 x3 y3 ...`` (its bounding box), or with ``kpt_shape``
    ``(K, D)`` a pose line ``class cx cy w h`` and ``K * D`` keypoint numbers (ignored);
    ``None`` for anything else."""
    if kpt_shape is not None:
        if len(values) != YOLO_COLUMNS + kpt_shape[0] * kpt_shape[1]:
            return None
        values = values[:YOLO_COLUMNS]
    if len(values) == YOLO_COLUMNS:
        _, cx, cy, w, h = values
        return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    if len(values) > YOLO_COLUMNS and len(values) % 2 == 1:
        xs, ys = values[1::2], values[2::2]
        return min(xs), min(ys), max(xs), max(ys)
    return None


def _count_boxes(label_file: Path | None, kpt_shape: tuple[int, int] | None) -> int:
    """How many lines of ``label_file`` give a box (0 without a readable file): the boxes an
    unreadable image takes out of its split."""
    try:
        text = label_file.read_text(encoding="utf-8-sig") if label_file is not None else ""
    except (OSError, UnicodeDecodeError):
        return 0
    count = 0
    for line in text.splitlines():
        try:
            count += _relative_box([float(v) for v in line.split()], kpt_shape) is not None
        except ValueError:
            pass
    return count


def _short(line: str, limit: int = 80) -> str:
    text = line.strip()
    return repr(text if len(text) <= limit else text[:limit] + " ...")


def _read_labels(
    label_file: Path,
    hw: tuple[int, int],
    classes: ClassNames,
    report: ProblemReport,
    kpt_shape: tuple[int, int] | None = None,
) -> tuple[list[np.ndarray], list[int]] | None:
    """Boxes (``xyxy`` pixels) and class indices (of ``classes``) of one label file
    (``kpt_shape``: pose lines, :func:`_relative_box`); bad lines are reported and dropped, a
    class index outside ``classes`` with the indices they allow. ``None`` (reported) when the file
    is not UTF-8 text: its image is skipped, since training on it as a negative would teach that
    its objects are background."""
    height, width = hw
    boxes, labels = [], []
    first_line: dict[tuple[int, ...], int] = {}  # (class, box) -> the line that gave it
    try:
        text = label_file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        report.add(
            Problem.NOT_TEXT,
            label_file,
            f"undecodable byte {e.object[e.start]:#04x} at offset {e.start}",
        )
        return None
    except OSError as e:
        report.add(Problem.NOT_TEXT, label_file, f"cannot be read: {e}")
        return None
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        try:
            values = [float(v) for v in fields]
        except ValueError:
            values = []
        relative = _relative_box(values, kpt_shape)
        if relative is None and kpt_shape is not None and values:
            k, d = kpt_shape
            found = f"{len(values)} numbers, expected 5 + {k}*{d} = {YOLO_COLUMNS + k * d}"
            report.add(Problem.BAD_POSE_LINE, label_file, f"line {n}: {found}: {_short(line)}")
            continue
        if relative is None:
            report.add(Problem.BAD_LINE, label_file, f"line {n}: {_short(line)}")
            continue
        cls = values[0]
        if not cls.is_integer() or not 0 <= cls < len(classes.names):
            expected = _expected_classes(classes)
            report.add(
                Problem.UNKNOWN_CLASS, label_file, f"line {n}: class {fields[0]}, {expected}"
            )
            continue
        finite = all(map(math.isfinite, values[1:]))  # NaN and inf: check_box names them
        if finite and max(values[1:]) > NORMALIZED_LIMIT:
            report.add(Problem.NOT_NORMALIZED, label_file, f"line {n}: {_short(line)}")
            continue
        x1, y1, x2, y2 = relative
        box = [x1 * width, y1 * height, x2 * width, y2 * height]
        box = check_box(box, width, height, report, str(label_file), f"line {n}")
        if box is None:
            continue
        key = (int(cls), *box.tolist())
        if key in first_line:
            report.add(
                Problem.DUPLICATE_BOX, label_file, f"line {n}: repeats line {first_line[key]}"
            )
            continue
        first_line[key] = n
        boxes.append(box)
        labels.append(int(cls))
    return boxes, labels


def _expected_classes(classes: ClassNames) -> str:
    """``expected 0..1: 2 names in data.yaml``: the class indices a label line may give."""
    n = len(classes.names)
    indices = "0" if n == 1 else f"0..{n - 1}"
    return f"expected {indices}: {n} name{'s' if n != 1 else ''} in {classes.source}"


def load_yolo(
    images: str | Path,
    names: str | Sequence[str],
    labels: str | Path | None = None,
    include_negatives: bool = True,
    report: ProblemReport | None = None,
    kpt_shape: Sequence[int] | None = None,
) -> DetectionData:
    """Load a YOLO txt split; image ids are 1.. in sorted file order. ``kpt_shape`` ``[K, D]``
    reads a pose dataset's lines (the data yaml's ``kpt_shape`` when ``None``).

    Raises:
        DatasetError: missing image directory or names, or no usable image.
    """
    report = report if report is not None else ProblemReport(name=str(images))
    image_dir = Path(images)
    listing_file = _check_images(image_dir, names)
    label_dir = Path(labels) if labels is not None else _default_labels_dir(image_dir)
    loaded_names = load_class_names(names)
    class_names = loaded_names.names
    given = kpt_shape is not None
    kpt_shape = check_kpt_shape(kpt_shape, "kpt_shape:") if given else read_kpt_shape(names)
    if listing_file:
        listed = files = _list_file(image_dir, report)
    else:
        listed = _listing(image_dir)
        files = sorted(p for p in listed if p.suffix.lower() in IMAGE_SUFFIXES)
    if listing_file:
        label_root = Path(labels) if labels is not None else None
        candidates = partial(_listed_label_files, label_dir=label_root)
    else:
        candidates = partial(
            _label_files, image_dir=image_dir, label_dir=label_dir, beside=labels is None
        )
    records, unlabelled, unreadable, lost, repeats = _read_records(
        files, candidates, loaded_names, report, kpt_shape, include_negatives
    )
    if listing_file:
        where = "the labels folder beside each image's images folder, or beside the image"
        notes = [
            f"{len(unlabelled)} of {len(files)} listed images have no label file in {where} "
            f"({_examples(unlabelled, image_dir.parent)}): read as images without objects"
        ] if unlabelled else []  # fmt: skip
    else:
        notes = _notes(listed, files, unlabelled, image_dir, label_dir, labels is None)
    if unreadable:
        root = image_dir.parent if listing_file else image_dir
        notes.append(
            f"{len(unreadable)} unreadable image{'s' if len(unreadable) != 1 else ''} "
            f"({_examples(unreadable, root)}) left out "
            f"with the {lost} boxes of their label files (a YOLO box is a fraction of its "
            "image's size, which an unreadable file does not give): training and mAP are over "
            "the other images"
        )
    if isinstance(names, str | os.PathLike) and Path(names).suffix.lower() == DARKNET_DATA_SUFFIX:
        notes.append(f"class names: {len(class_names)} from {loaded_names.source}")
    if kpt_shape is not None:
        notes.append(
            f"{'kpt_shape=' if given else f'{names} has kpt_shape '}{list(kpt_shape)}: a pose "
            "dataset; each label line's box is "
            f"its first 5 numbers (class cx cy w h), its {kpt_shape[0]} keypoints are ignored"
        )
    if not records:
        raise DatasetError(
            f"no usable image in {image_dir} (found {len(files)} files with suffixes "
            f"{IMAGE_SUFFIXES})\n{report.summary()}" + "".join(f"\n{n}" for n in notes)
        )
    category_ids = list(range(len(class_names)))
    coco = records_to_coco(records, class_names, category_ids)
    return DetectionData(records, class_names, category_ids, coco, notes, repeats)


def _check_images(image_dir: Path, names: str | Sequence[str]) -> bool:
    """Whether ``image_dir`` is darknet's list file (``train.txt``: one image path a line)
    rather than a folder; a missing path, a data yaml or a ``.data`` file is a DatasetError
    saying what to give instead."""
    listing_file = image_dir.is_file()
    if not image_dir.is_dir() and not listing_file:
        raise DatasetError(
            f"image directory not found: {image_dir}{_where_looked(image_dir, names)}; expected "
            "a folder of the YOLO layout images/ + labels/, or darknet's list file of image "
            "paths (train.txt)"
        )
    if listing_file and is_data_yaml(image_dir):  # ultralytics' data.yaml
        raise DatasetError(
            f"{image_dir} is a data yaml, not a list of images: give the split's images folder "
            f"(or list file) as images, and the yaml as names (data.<split>.names={image_dir})"
        )
    if listing_file and image_dir.suffix.lower() == DARKNET_DATA_SUFFIX:
        raise DatasetError(
            f"{image_dir} is darknet's .data file, not a list of images: give its `train =` / "
            "`valid =` list files as images (data.train.images=..., data.val.images=...), and "
            f"the .data file as names (data.<split>.names={image_dir})"
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
    records, unlabelled, label_files = [], [], _LabelFiles()
    image_of: dict[Path, Path] = {}  # label file -> the first image read with it
    repeats, read = [], set()  # records listing an image again; the images read
    unreadable, lost = [], 0  # images without a readable header; the boxes of their labels
    for image_id, path in enumerate(files, 1):
        label_file = label_files.find(label_candidates(path))
        hw = image_size(path)
        if hw is None:
            report.add(Problem.UNREADABLE, path, "no readable image header")
            unreadable.append(path)
            lost += _count_boxes(label_file, kpt_shape)
            continue
        boxes, cls = [], []
        if label_file is None:
            unlabelled.append(path)
        else:
            first = image_of.setdefault(label_file, path)
            if first != path:
                report.add(Problem.SHARED_LABEL_FILE, label_file, f"read for {first} and {path}")
            labels_read = _read_labels(label_file, hw, loaded_names, report, kpt_shape)
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


def _where_looked(images: Path, names: str | Sequence[str]) -> str:
    """Where a missing ``images`` was looked for: its absolute path, the working directory a
    relative one is read from, and with a data yaml as ``names`` the folders the yaml's
    ``path:`` / ``train:`` / ``val:`` name, which are not read."""
    text = looked_for(images)
    if isinstance(names, str | os.PathLike) and is_data_yaml(names):
        splits = yaml_split_paths(names)
        found = [f"{k}: {os.path.abspath(p)}" for k, p in splits.items() if p.exists()]
        text += (
            f"; {names}'s path:/train:/val: keys are not where relative paths come from (they "
            "are not read: give each split's folder or list as data.<split>.images=)"
        )
        if found:
            text += f"; from the yaml's folder they name {', '.join(found)}"
    return text


def _list_file(path: Path, report: ProblemReport) -> list[Path]:
    """The image paths of darknet's list file (``train.txt``: one a line; relative ones from the
    list's folder, else from the working directory, where darknet reads them:
    :func:`~yolov4.core.files.listed_path`); a missing one is
    reported and left out, one listed again reported and kept (what a split does with it:
    :attr:`DetectionData.repeats`)."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read the list of image paths: {e}") from None
    files, first_line = [], {}  # absolute path -> the line that listed it first
    for n, line in enumerate(lines, 1):
        entry = Path(line.strip())
        if not line.strip() or line.strip().startswith("#"):
            continue
        found = listed_path(entry, path)
        if found.is_file():
            earlier = first_line.setdefault(os.path.abspath(found), n)
            if earlier != n:
                report.add(
                    Problem.REPEATED_LISTING, str(path), f"line {n}: {entry} repeats line {earlier}"
                )
            files.append(found)
        else:
            report.add(Problem.MISSING_FILE, str(entry), f"listed in {path}")
    return files


def _listed_label_files(path: Path, label_dir: Path | None) -> list[Path]:
    """Where the label file of a listed image may be: in ``label_dir`` by name when given, else
    where darknet and ultralytics look (the path's last ``images`` folder as ``labels``, then
    beside the image)."""
    name = path.with_suffix(LABEL_SUFFIX).name
    if label_dir is not None:
        return [label_dir / name]
    return [_default_labels_dir(path.parent) / name, path.with_suffix(LABEL_SUFFIX)]


class _LabelFiles:
    """Finds the first of an image's candidate label files, its suffix in any case (``a.TXT``
    for ``a.txt``: written where file names ignore case); each folder is listed once."""

    def __init__(self) -> None:
        self._folders: dict[Path, dict[str, Path]] = {}

    def find(self, candidates: list[Path]) -> Path | None:
        for candidate in candidates:
            if candidate.is_file():
                return candidate
            found = self._other_case(candidate.parent).get(candidate.name)
            if found is not None:
                return found
        return None

    def _other_case(self, folder: Path) -> dict[str, Path]:
        """``a.txt`` -> ``folder/a.TXT`` for the label files of ``folder`` whose suffix is
        ``.txt`` in another case."""
        if folder not in self._folders:
            try:
                names = os.listdir(folder)
            except OSError:
                names = []
            self._folders[folder] = {
                Path(n).stem + LABEL_SUFFIX: folder / n
                for n in names
                if Path(n).suffix.lower() == LABEL_SUFFIX
                and Path(n).suffix != LABEL_SUFFIX
                and (folder / n).is_file()
            }
        return self._folders[folder]


def _listing(image_dir: Path) -> list[Path]:
    """Every file under ``image_dir``, hidden files and folders left out."""
    return [
        p
        for p in files_under(image_dir)
        if not any(part.startswith(".") for part in p.relative_to(image_dir).parts)
    ]


def _label_files(path: Path, image_dir: Path, label_dir: Path, beside: bool) -> list[Path]:
    """Where the label file of image ``path`` may be: in ``label_dir``, else (``beside``) next
    to the image."""
    candidates = [(label_dir / path.relative_to(image_dir)).with_suffix(LABEL_SUFFIX)]
    if beside:
        candidates.append(path.with_suffix(LABEL_SUFFIX))
    return candidates


def _examples(paths: list[Path], root: Path) -> str:
    """``e.g. a.jpg, b.jpg, c.jpg`` (paths under ``root`` named from it), ``NOTE_EXAMPLES`` of
    them."""
    shown = [str(p.relative_to(root)) if p.is_relative_to(root) else str(p) for p in paths]
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
