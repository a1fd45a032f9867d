"""The bad-data report every loader writes to: the kinds of problem (:class:`Problem`, each with
what is done about it) and of note (:class:`Note`: read as meant, nothing repaired), and the
:class:`ProblemReport` that counts them per file.

In the default mode each problem is counted with its file name and the sample is repaired or
skipped; in ``strict`` mode the first one raises a :class:`~yolov4.errors.DatasetError` naming
the file. :data:`LOSSES` are the kinds that take an image or ground truth out of the split.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import torch

from yolov4.errors import DatasetError

__all__ = ["Problem", "Note", "ProblemReport", "LOSSES", "LOST_BOXES", "LOST_IMAGES"]

log = logging.getLogger(__name__)

# How many example file names a one-line summary lists per kind of problem.
SUMMARY_EXAMPLES = 5
# How many files of one kind a report that logs each problem as found (a training or
# evaluation run decoding images) names in the log; the rest are counted and summed up by
# :meth:`ProblemReport.log_counts` (a dataset of 10,000 CMYK images logs 5 lines, not 10,000).
LOGGED_PER_KIND = 5


def _share() -> str:
    """What a count of this process covers: the run, or under DDP (each process decodes the
    images its sampler deals it, and counts them in a dataset of its own) this process's share."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        world = torch.distributed.get_world_size()
        if world > 1:
            rank = torch.distributed.get_rank()
            return f"in this process's share of the run (rank {rank} of {world})"
    return "in this run"


class Problem:
    """Kinds of bad data, each with what is done about it outside strict mode."""

    MISSING_FILE = "missing image file (skipped)"
    REPEATED_LISTING = (
        "image listed again in a list file (a val/test split scores it once; a train split "
        "keeps each listing, one sample per epoch each)"
    )
    UNREADABLE = "unreadable image (skipped)"
    TRUNCATED = "truncated image (decoded what was there)"
    DAMAGED_JPEG = (
        "JPEG without its end marker, or with data libjpeg calls corrupt (decoded as libjpeg "
        "repairs it: look at it, and re-save or replace it)"
    )
    CONVERTED = (
        "not 8-bit RGB, grayscale, palette or RGB with alpha: CMYK, 16-bit, float or other "
        "pixels (converted to 8-bit RGB, which may change what the network sees: look at it)"
    )
    SIZE_MISMATCH = "image size differs from the annotation (resized to it)"
    STORED_FRAME = (
        "annotated size is the file's own, before its EXIF rotation (read without the rotation)"
    )
    BOX_CLIPPED = "box partly outside the image (clipped, for training and for COCOeval)"
    BOX_OUTSIDE = "box wholly outside the image (dropped)"
    BOX_EMPTY = "zero or negative size box (dropped)"
    BOX_TINY = "box under 1 pixel wide or high (dropped: no anchor or cell can learn it)"
    BOX_NAN = "NaN or infinite box coordinate (dropped)"
    UNKNOWN_CLASS = "unknown category id / class index (dropped)"
    BAD_LINE = (
        "label line that is neither 5 numbers `class cx cy w h` nor a polygon `class x1 y1 x2 y2 "
        "x3 y3 ...` (dropped)"
    )
    BAD_POSE_LINE = (
        "label line of a pose dataset (data yaml with kpt_shape [K, D]) that is not "
        "`class cx cy w h` and K*D keypoint numbers (dropped)"
    )
    NOT_NORMALIZED = (
        "label line with a coordinate above 2: YOLO txt boxes are fractions of the image size "
        "in [0, 1], not pixels (dropped)"
    )
    SHARED_LABEL_FILE = (
        "label file of two images with one name and different suffixes, e.g. a.jpg and a.png "
        "(its boxes read for each: rename one image if they differ)"
    )
    NOT_TEXT = "label file not readable as UTF-8 text (image skipped: its labels are unknown)"
    # Entries of a COCO json, named by file and entry (``annotations[3] (id 7)``).
    BAD_IMAGE = "image entry without an integer id or a file_name (skipped)"
    IMAGE_SIZE = "image entry without a positive numeric width/height (read from the file)"
    BAD_CATEGORY = "category without an integer id, or a repeated id (skipped)"
    CATEGORY_NAME = "category without a name (named category_<id>)"
    BAD_ANNOTATION = (
        "annotation without an integer image_id/category_id or a bbox of 4 numbers (skipped)"
    )
    BBOX_FROM_SEGMENTATION = (
        "annotation without a bbox but with a segmentation (bbox computed from the segmentation)"
    )
    ANNOTATION_ID = (
        "annotation without a usable id: none, not an integer, or below 1, which COCOeval reads "
        "as 'no box' (given a new one)"
    )
    BAD_FIELD = "annotation area/iscrowd not a number (set from the box / to 0)"
    DUPLICATE_IMAGE = "duplicate image id (first entry kept, later ones skipped)"
    DUPLICATE_ANNOTATION = (
        "duplicate annotation id (an exact repeat dropped, a different box kept under a new id)"
    )
    ORPHAN_ANNOTATION = "annotation of an image id that no image entry has (skipped)"
    DUPLICATE_BOX = (
        "box repeating an earlier box of its image: same class, same coordinates (dropped: a "
        "ground truth box listed twice is a miss for every detector)"
    )


# The kinds of problem that take an image (LOST_IMAGES) or ground truth (LOST_BOXES) out of
# the split (``check-data`` exits 1 on them); the others are repaired, or drop an exact repeat.
LOST_IMAGES = frozenset(
    {
        Problem.MISSING_FILE,
        Problem.UNREADABLE,
        Problem.NOT_TEXT,
        Problem.BAD_IMAGE,
        Problem.DUPLICATE_IMAGE,
    }
)
LOST_BOXES = frozenset(
    {
        Problem.BOX_OUTSIDE,
        Problem.BOX_EMPTY,
        Problem.BOX_TINY,
        Problem.BOX_NAN,
        Problem.UNKNOWN_CLASS,
        Problem.BAD_LINE,
        Problem.BAD_POSE_LINE,
        Problem.NOT_NORMALIZED,
        Problem.BAD_ANNOTATION,
        Problem.ORPHAN_ANNOTATION,
    }
)
LOSSES = LOST_IMAGES | LOST_BOXES


class Note:
    """What the loaders read as it is meant to be read, counted apart from the problems:
    nothing is repaired or lost (a count line in the summary)."""

    GRAYSCALE = "grayscale image (read as three equal channels, as darknet and ultralytics read it)"
    PALETTE = (
        "palette image (read as the RGB colours of its palette, as darknet and ultralytics read it)"
    )
    ALPHA = (
        "image with an alpha channel (alpha dropped: transparent pixels read as the colour they "
        "hold, as darknet and ultralytics read them)"
    )


# Every kind of problem, in one order: the index of a kind's count in ``logged``.
KINDS = tuple(v for k, v in vars(Problem).items() if k.isupper())


class ProblemReport:
    """Counts problems per kind with their file names; raises at once in ``strict`` mode.
    :meth:`note` counts what is no problem (a :class:`Note`) apart.

    With ``log_each`` each problem is logged as a warning as it is found, the first
    :data:`LOGGED_PER_KIND` of each kind by file and then one line saying the rest are counted
    (:meth:`log_counts` sums them up). ``logged`` holds how many of each kind (by :data:`KINDS`
    index) were found: a tensor in shared memory counts over every DataLoader worker, whose
    reports are copies; ``None`` counts in this report only."""

    def __init__(
        self,
        strict: bool = False,
        name: str = "dataset",
        log_each: bool = False,
        logged: Any = None,
    ) -> None:
        self.strict = strict
        self.name = name
        self.log_each = log_each  # log each problem as found (data loading inside workers)
        self.logged = [0] * len(KINDS) if logged is None else logged
        self._summed = [0] * len(KINDS)  # the counts log_counts logged last
        self.problems: dict[str, list[str]] = defaultdict(list)
        self.notes: dict[str, list[str]] = defaultdict(list)
        self._seen: set[tuple[str, str]] = set()

    def add(self, kind: str, file: Any, detail: str = "") -> None:
        """Record one problem ``kind`` (a :class:`Problem` value) found in ``file``."""
        where = f"{file}: {detail}" if detail else str(file)
        if self.strict:
            raise DatasetError(f"{self.name}: {kind.split(' (')[0]} in {where} (strict mode)")
        if (kind, where) in self._seen:  # once per file, however many epochs
            return
        self._seen.add((kind, where))
        self.problems[kind].append(where)
        if self.log_each:
            self._log_one(kind, where)

    def _log_one(self, kind: str, where: str) -> None:
        """Log problem ``kind`` in ``where`` while fewer than :data:`LOGGED_PER_KIND` of its
        kind were found, and say once that the rest are counted."""
        i = KINDS.index(kind)
        found = int(self.logged[i]) + 1
        self.logged[i] = found
        if found <= LOGGED_PER_KIND:
            log.warning("%s: %s: %s", self.name, kind, where)
        if found == LOGGED_PER_KIND + 1:
            log.warning(
                "%s: more than %d files with %s: the rest are counted, not named (the count is "
                "logged when the split is done with; yolov4-check-data names every file)",
                self.name, LOGGED_PER_KIND, kind.split(" (")[0],
            )  # fmt: skip

    def log_counts(self) -> None:
        """Log how many problems of each kind :meth:`add` found in this run, for the kinds
        found more often than it names files (:data:`LOGGED_PER_KIND`) and grown since its
        last call (one line per kind after fit and again after a later validation that found
        more); under DDP each process logs the count of its own share (:func:`_share`)."""
        for i, kind in enumerate(KINDS):
            count = int(self.logged[i])
            if count > LOGGED_PER_KIND and count != self._summed[i]:
                self._summed[i] = count
                log.warning("%s: %d files in all with %s %s", self.name, count, kind, _share())

    def note(self, kind: str, file: Any, detail: str = "") -> None:
        """Count one file of ``kind`` (a :class:`Note` value): not a problem, never raises."""
        where = f"{file}: {detail}" if detail else str(file)
        if (kind, where) not in self._seen:
            self._seen.add((kind, where))
            self.notes[kind].append(where)

    def __len__(self) -> int:
        return sum(len(v) for v in self.problems.values())

    def losses(self) -> dict[str, list[str]]:
        """The problems of a kind in :data:`LOSSES` (an image or ground truth left out)."""
        return {k: v for k, v in self.problems.items() if k in LOSSES and v}

    def merge(self, other: ProblemReport) -> None:
        for mine, theirs in ((self.problems, other.problems), (self.notes, other.notes)):
            for kind, items in theirs.items():
                for item in items:
                    if (kind, item) not in self._seen:
                        self._seen.add((kind, item))
                        mine[kind].append(item)

    def summary(self, examples: int | None = SUMMARY_EXAMPLES) -> str:
        """Multi-line text: one line per kind with its count, then the files (``examples``
        of them, all when ``None``); a count line per kind of note after them."""
        lines = [f"{self.name}: {len(self)} problem(s)" if self.problems else
                 f"{self.name}: no problems found"]  # fmt: skip
        for kind, items in self.problems.items():
            lines.append(f"  {len(items):6d} x {kind}")
            shown = items if examples is None else items[:examples]
            lines.extend(f"           {item}" for item in shown)
            if len(shown) < len(items):
                lines.append(f"           ... and {len(items) - len(shown)} more")
        for kind, items in self.notes.items():
            lines.append(f"  note: {len(items)} x {kind}, e.g. {items[0]}")
        return "\n".join(lines)

    def log(self) -> None:
        """Log the summary once as a warning (nothing when there is no problem)."""
        if self.problems:
            log.warning("%s", self.summary())
