"""``python predict.py ... trainer=<default | gpu | ddp>``: image files through Lightning's
``Trainer.predict`` (:func:`yolov4.training.predict.predict_files`), sharded over DDP ranks,
GPUs and nodes; ``predictions.jsonl`` (the records of :mod:`yolov4.cli.predict`) and
``skipped.jsonl`` only."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from yolov4.cli.common import NO_ACCUMULATION, to_builtin
from yolov4.cli.predict_output import output_folder
from yolov4.cli.sources import model_source
from yolov4.core.images import MAX_PIXELS
from yolov4.core.postprocess import SWITCHES
from yolov4.errors import ConfigError
from yolov4.inference.sources import ImageFiles, open_sources, source_kind
from yolov4.inference.summary import Summary

__all__ = ["NOT_SHARDED", "sharded"]

log = logging.getLogger(__name__)

# options the sharded mode (trainer=) does not offer: it writes the records only
NOT_SHARDED = ("artifact", "darknet_weights", "track", "tracker", "tile", "save_txt", "save_crops")
TAKES = "trainer= (sharded predict over ranks) takes image files (a folder, glob or list)"
NOT_FILES = {"camera": "a camera", "image URL": "an image URL", "stream": "a stream"}


def _checked_classes(cfg: DictConfig) -> list[int] | None:
    """``classes=`` once the options the sharded mode does not offer are refused."""
    given = [k for k in NOT_SHARDED if cfg.get(k)] + [k for k in SWITCHES if cfg.get(k) is not None]
    if given:
        raise ConfigError(
            f"trainer= (sharded predict over ranks) takes checkpoint= and writes the records "
            f"only; {given[0]}={cfg.get(given[0])} is not available with it"
        )
    if model_source(cfg) != "checkpoint":
        raise ConfigError("trainer= (sharded predict over ranks) runs a checkpoint=...")
    classes = to_builtin(cfg.get("classes"))
    if classes is not None and not all(isinstance(c, int) for c in classes):
        raise ConfigError(
            f"trainer= (sharded predict) takes class ids in classes=, got {classes!r}"
        )
    return classes


def _image_sources(cfg: DictConfig) -> list[ImageFiles]:
    """``cfg.source``'s image files (closed: only their files are read); a camera, URL,
    stream or video is a :class:`ConfigError`."""
    given = to_builtin(cfg.source)
    for item in given if isinstance(given, list) else [given]:  # unopened: no device, no fetch
        kind = source_kind(item) if isinstance(item, str | int) else "path"
        if kind != "path":
            raise ConfigError(f"{TAKES}; source {item!r} is {NOT_FILES[kind]}")
    sources = open_sources(given)
    for s in sources:
        s.close()
    other = [s for s in sources if not isinstance(s, ImageFiles)]
    if other:
        raise ConfigError(f"{TAKES}; source {other[0].source!r} is a {type(other[0]).__name__}")
    return sources


def _trainer_kwargs(cfg: DictConfig, out: Path) -> dict[str, Any]:
    """The ``Trainer`` arguments of ``cfg.trainer`` (its ``_target_`` left out, no gradient
    accumulation), writing under ``out``."""
    node = OmegaConf.to_container(cfg.trainer, resolve=False)
    node.pop("_target_", None)
    node["default_root_dir"] = str(out)
    kwargs = {**OmegaConf.to_container(OmegaConf.create(node), resolve=True), **NO_ACCUMULATION}
    if not cfg.get("progress", True):
        kwargs["enable_progress_bar"] = False
    return kwargs


def _count(summary: Summary, records: Path, skipped: Path) -> None:
    """The images and detections of ``records`` and the files of ``skipped`` (jsonl) added to
    ``summary``."""
    with records.open(encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            summary.images += 1
            summary.detections.update(d["class_name"] for d in record["detections"])
    with skipped.open(encoding="utf-8") as f:
        for line in f:
            entry = json.loads(line)
            summary.skip(f"{entry['file']}: {entry['error']}")


def sharded(cfg: DictConfig) -> dict[str, Any]:
    """``trainer=``: the image files of ``cfg.source`` through ``predict_files`` (module
    docstring); returns the summary (rank 0 also writes ``summary.json``)."""
    classes = _checked_classes(cfg)
    sources = _image_sources(cfg)
    from lightning.pytorch.utilities import rank_zero_only

    from yolov4.training.predict import (
        SKIPPED,
        PredictInterrupted,
        postprocess_settings,
        predict_files,
    )

    out = output_folder(cfg)
    summary = Summary()
    summary.postprocess = {
        **postprocess_settings(cfg.get("conf"), cfg.get("iou"), cfg.get("max_det")).to_dict(),
        "classes": classes,
    }
    try:
        path = predict_files(
            cfg.checkpoint,
            [str(f) for s in sources for f in s.files],
            out,
            _trainer_kwargs(cfg, out),
            batch_size=int(cfg.batch),
            num_workers=int(cfg.workers),
            conf=cfg.get("conf"),
            iou=cfg.get("iou"),
            max_det=cfg.get("max_det"),
            classes=classes,
            sources=[s.source for s in sources for _ in s.files],
            max_pixels=cfg.get("max_pixels", MAX_PIXELS),
        )
    except PredictInterrupted as e:  # Ctrl-C: the records written so far, and the summary
        path, summary.interrupted = e.path, True
    if not path.is_file():  # interrupted on a rank other than 0: rank 0 merges and writes
        return summary.to_dict()
    _count(summary, path, out / SKIPPED)
    if rank_zero_only.rank == 0:
        (out / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
        print(summary.text())
        log.info("wrote %s", out)
    return summary.to_dict()
