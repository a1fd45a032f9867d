"""What ``yolov4-check-data`` prints (:mod:`yolov4.cli.check_data`: composes the data config,
builds the DataModule): loads every split, decodes every image (``--no-decode`` to skip) and
prints per split: image count, negatives, boxes per class,
the box size histogram (COCO's small < 32², medium < 96², large), and every problem found with
its file and entry: malformed entries, duplicate image and annotation ids, annotations of
unlisted images (what is kept is the loaders' rule: :mod:`yolov4.data.coco`), bad label lines,
undecodable images, and what ``train.py`` warns about at start-up (splits sharing images,
classes without a box in the train split); then a verdict (:class:`DataCheck`): the data can be
used as it is (repairs and notes only), loses images or ground truth (:data:`LOSSES`, images
that do not decode), or cannot be used (a train split without a box).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from yolov4.data.datamodule import SPLITS, DetectionDataModule
from yolov4.data.dataset import DetectionDataset
from yolov4.data.problems import LOSSES, LOST_IMAGES, Problem, ProblemReport
from yolov4.data.records import COCO_MEDIUM_AREA, COCO_SMALL_AREA, DetectionData
from yolov4.data.splits import classes_without_boxes

__all__ = ["split_statistics", "check_datamodule", "DataCheck"]

CHECK = "check-data"  # how the verdict line starts


@dataclass
class DataCheck:
    """What :func:`check_datamodule` found: the report ``text``; ``losses``: per split, what
    was left out (``3 label lines or boxes lost``); ``unusable``: why a split cannot be
    used; ``repairs``, ``notes``: how many of the other problems and notes."""

    text: str
    losses: dict[str, list[str]] = field(default_factory=dict)
    unusable: list[str] = field(default_factory=list)
    repairs: int = 0
    notes: int = 0

    @property
    def exit_code(self) -> int:
        """0: usable as it is; 1: a split is unusable, or images or ground truth are lost."""
        return 1 if self.unusable or self.losses else 0

    def verdict(self) -> str:
        """One line: what the data is, and the exit status it gives."""
        lost = "; ".join(f"{name}: {', '.join(items)}" for name, items in self.losses.items())
        if self.unusable:
            also = f"; and lost: {lost}" if lost else ""
            return f"{CHECK}: FAILED (exit 1): {'; '.join(self.unusable)}{also}"
        if self.losses:
            return (
                f"{CHECK}: images or ground truth lost (exit 1): {lost}. Fix the files above, or "
                "accept the loss: training and mAP go on without them"
            )
        if self.repairs or self.notes:
            return (
                f"{CHECK}: nothing lost (exit 0): {self.repairs} repaired problem(s) and "
                f"{self.notes} note(s) above"
            )
        return f"{CHECK}: no problems found (exit 0)"


def split_statistics(
    data: DetectionData, unreadable: Sequence[int] = (), split: str = "train"
) -> str:
    """Counts per class and the COCO size histogram of one split (boxes in original pixels),
    what the loader left out (``data.notes``, after ``data.info``), and the images of ``unreadable`` (record
    indices that did not decode: skipped in training, left out of evaluation); ``split`` names
    what a split without boxes means (``train``: no run starts; ``val``: no mAP)."""
    labels = (
        np.concatenate([r.labels for r in data.records]) if data.records else np.zeros(0, np.int64)
    )
    boxes = np.concatenate([r.boxes for r in data.records]).reshape(-1, 4)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    negatives = sum(len(r.labels) == 0 for r in data.records)
    lines = [f"  images: {len(data.records)} ({negatives} without boxes), boxes: {len(labels)}"]
    counts = np.bincount(labels, minlength=data.num_classes)
    for i, (cid, name) in enumerate(zip(data.category_ids, data.class_names, strict=True)):
        lines.append(f"    {i:3d} {name:<24s} (category_id {cid:>4}): {counts[i]:7d}")
    small = int((area < COCO_SMALL_AREA).sum())
    medium = int(((area >= COCO_SMALL_AREA) & (area < COCO_MEDIUM_AREA)).sum())
    lines.append(f"  box sizes: small {small}, medium {medium}, large {len(area) - small - medium}")
    if unreadable:
        lost = sum(len(data.records[i].labels) for i in unreadable)
        lines.append(
            f"  of these, {counted(len(unreadable), 'image')} ({counted(lost, 'box', 'boxes')}) "
            f"{'does' if len(unreadable) == 1 else 'do'} not decode: skipped in training, left "
            "out of evaluation"
        )
    lines.extend(f"  note: {note}" for note in [*data.info, *data.notes])
    if not len(labels) and split == "train":
        lines.append("  no box in this split: training on it stops at start-up")
    elif not len(labels):
        lines.append(
            "  no box in this split: COCO mAP is undefined on it (validation logs 0 and "
            "best.pt is not chosen by it)"
        )
    return "\n".join(lines)


def check_datamodule(
    dm: DetectionDataModule, decode: bool = True, examples: int | None = None
) -> DataCheck:
    """Load (and decode) every split of ``dm``: the report text and what it comes to."""
    out, result = [], DataCheck("")
    for name in SPLITS:
        data = dm.split(name)
        if data is None:
            continue
        report: ProblemReport = dm.reports[name]
        unreadable = []
        if decode:
            dataset = DetectionDataset(
                data, dm.preprocess_config, None, dm.strict, name=f"data.{name}"
            )
            dataset.report.log_each = False
            unreadable = [i for i in range(len(dataset)) if dataset.load(i) is None]
            report.merge(dataset.report)
        stats = split_statistics(data, unreadable, name)
        warnings = list(dm.warnings.get(name, []))
        if name == "train":  # what train.py warns about at start-up
            warnings.append(classes_without_boxes(data, name))
        stats += "".join(f"\n  warning: {w}" for w in warnings if w)
        summary = report.summary(examples)
        if name == "train" and not data.num_boxes:  # train.py refuses it at start-up
            reason = "holds no box: train.py stops on it at start-up"
            result.unusable.append(f"data.{name} {reason}")
            summary = summary.replace(f"data.{name}: no problems found", f"data.{name} {reason}")
        lost = _losses(report, data, unreadable)
        if lost:
            result.losses[f"data.{name}"] = lost
        result.repairs += sum(len(v) for k, v in report.problems.items() if k not in LOSSES)
        result.notes += sum(len(v) for v in report.notes.values())
        out += [f"[{name}]", stats, summary]
    result.text = "\n".join(out)
    return result


def _losses(report: ProblemReport, data: DetectionData, unreadable: Sequence[int]) -> list[str]:
    """What ``report`` and the images of ``unreadable`` (record indices) left out of a split:
    ``3 label lines or boxes lost``, ``2 images left out`` (an image that does not decode
    counted once, whatever its report says: a JPEG cut in its headers is "truncated"), and with
    them the repeated boxes dropped, which lose no ground truth (``2 repeated boxes dropped``)."""
    losses = report.losses()
    files = {
        item.split(": ")[0]
        for kind, items in losses.items()
        if kind in LOST_IMAGES
        for item in items
    }
    files |= {data.records[i].file for i in unreadable}
    boxes = sum(len(items) for kind, items in losses.items() if kind not in LOST_IMAGES)
    lost = [f"{counted(boxes, 'label line or box', 'label lines or boxes')} lost"] if boxes else []
    lost += [f"{counted(len(files), 'image')} left out"] if files else []
    repeats = len(report.problems.get(Problem.DUPLICATE_BOX, []))
    if lost and repeats:
        lost.append(f"{counted(repeats, 'repeated box', 'repeated boxes')} dropped (no ground "
                    "truth lost)")  # fmt: skip
    return lost


def counted(n: int, one: str, many: str | None = None) -> str:
    """``1 image``, ``2 images``: ``n`` and the noun that agrees with it (``many``: the plural
    when it is not ``one`` + ``s``)."""
    return f"{n} {one if n == 1 else many or one + 's'}"
