"""Callbacks of a training run: strict weights files (best/last), Lightning checkpoints that
share one file when they hold the same state, and metrics.json."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from yolov4.core.checkpoint import SEEN, save_checkpoint
from yolov4.core.files import atomic_write, write_json
from yolov4.core.mismatch import NonFiniteWeightsError
from yolov4.training.darknet_files import images_trained

__all__ = [
    "AtomicCheckpointIO",
    "at_least_as_good",
    "WeightsCallback",
    "SharedCheckpoint",
    "StepLearningRateMonitor",
    "link_file",
    "last_checkpoint",
    "moved_state",
    "ValidationImages",
    "write_json",
    "trained_epoch",
    "BEST_WEIGHTS",
    "LAST_WEIGHTS",
    "MONITOR",
]

log = logging.getLogger(__name__)

# names of the run directory, defined once
BEST_WEIGHTS = "weights/best.pt"
LAST_WEIGHTS = "weights/last.pt"
MONITOR = "mAP"  # best by COCO mAP@[.5:.95]


def last_checkpoint(trainer: Any) -> str:
    """The path of the fit's ``last.ckpt`` written so far ("" when none): the checkpoint callback
    that saves it (``trainer.checkpoint_callback`` is the first one, the best's)."""
    callbacks = getattr(trainer, "checkpoint_callbacks", None) or []
    for c in callbacks:
        if getattr(c, "last_model_path", ""):  # save_last=True
            return str(c.last_model_path)
    for c in callbacks:  # train.py's: a checkpoint named "last" (configs/callbacks)
        path = Path(str(getattr(c, "dirpath", "") or "")) / "last.ckpt"
        if getattr(c, "dirpath", None) and path.is_file():
            return str(path)
    return ""


def link_file(source: str | Path, target: str | Path) -> Path:
    """``target`` becomes a second name of ``source``'s file (a hard link, put in place by an
    atomic rename, so a reader sees the old file or the new one): one copy on disk for two
    identical files. Where the filesystem has no hard links, a copy. Every writer of these files
    replaces them by renaming a new file into place, which leaves the other name's content
    intact."""
    source, target = Path(source), Path(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        try:
            os.link(source, tmp)
        except OSError:  # no hard links here (another filesystem, FAT, some network mounts)
            shutil.copy2(source, tmp)
        os.replace(tmp, target)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    return target


def trained_epoch(trainer: L.Trainer) -> int:
    """The 0-based epoch the current weights come from, as Lightning's ``.ckpt`` records it
    (``current_epoch`` during the epoch). After ``fit`` Lightning's ``current_epoch`` has moved on
    to the next epoch, which never ran; the epochs begun (``ready``) do not move on."""
    loop = getattr(trainer, "fit_loop", None)
    if loop is None:
        return trainer.current_epoch
    return max(loop.epoch_progress.current.ready - 1, 0)


def at_least_as_good(score: Any, best: Any, mode: str) -> bool:
    """Whether ``score`` equals or beats ``best`` (``mode`` ``max`` or ``min``): the rule by which
    ``best.pt`` and ``best.ckpt`` are replaced. A tie goes to the later validation, the more
    trained weights, as darknet replaces its ``_best.weights`` (``detector train -map``) and
    ultralytics its ``best.pt``. NaN ranks below every score, as Lightning's
    :class:`ModelCheckpoint` ranks it: a NaN ``score`` never replaces, a NaN ``best`` always
    gives way. ``score`` and ``best`` are numbers or one-element tensors."""
    score, best = float(score), float(best)
    if math.isnan(score):
        return False
    if math.isnan(best):
        return True
    return score >= best if mode == "max" else score <= best


class WeightsCallback(L.Callback):
    """After each validation write ``weights/last.pt`` and, when the monitored metric equals or
    beats the best so far (:func:`at_least_as_good`), ``weights/best.pt`` (strict-loadable
    :mod:`yolov4.core.checkpoint` files, EMA weights when EMA is on); at the end of training
    ``last.pt`` once more. Rank 0 only. The metric is the first monitored checkpoint callback's
    (``callbacks.best_checkpoint.monitor``, its ``mode``), so ``best.pt`` and ``best.ckpt`` are
    chosen alike; ``mAP`` without one."""

    def __init__(self, dirpath: str | Path) -> None:
        self.dirpath = Path(dirpath)
        self.best: float | None = None
        self.last_step: int | None = None  # global step of the weights in last.pt

    @staticmethod
    def monitor(trainer: L.Trainer) -> tuple[str, str]:
        """``(metric, mode)``: the first checkpoint callback's with a monitor, else mAP."""
        for callback in getattr(trainer, "checkpoint_callbacks", []):
            if getattr(callback, "monitor", None):
                return str(callback.monitor), str(callback.mode)
        return f"val/{MONITOR}", "max"

    def save(self, trainer: L.Trainer, module: Any, name: str) -> Path | None:
        """Write ``name``; weights holding NaN or inf (a diverged run) are not written: the
        files keep the last finite weights, and training stops with the reason logged."""
        metrics = module.evaluation.scalars if module.evaluation is not None else {}
        # darknet's seen, for the .weights export writes
        seen = images_trained(trainer, getattr(module, "seen_from", None))
        try:
            return save_checkpoint(
                self.dirpath / name,
                module.eval_model,
                module.hparams["class_names"],
                preprocess=module.hparams["preprocess"],
                metrics=metrics,
                data=module.hparams.get("data"),
                trained={
                    "epoch": trained_epoch(trainer),
                    "step": trainer.global_step,
                    "ema": module.ema is not None,
                    "category_ids": module.hparams["category_ids"],
                    **({SEEN: seen} if seen is not None else {}),
                },
            )
        except NonFiniteWeightsError as e:  # checked before anything is written
            log.error(
                "the weights hold NaN or inf at epoch %d, step %d (%d tensors, e.g. %s): training "
                "diverged (a lower optim.lr or a longer warm-up helps); %s keeps the last finite "
                "weights; stopping",
                trained_epoch(trainer) + 1,  # 1-based, as the epoch's line
                trainer.global_step, len(e.tensors), next(iter(e.tensors)),
                self.dirpath / name,
            )  # fmt: skip
            trainer.should_stop = True
            return None

    def on_validation_end(self, trainer: L.Trainer, module: Any) -> None:
        fitting = trainer.state.fn == "fit"  # not trainer.validate after the fit
        if (
            not fitting
            or trainer.sanity_checking
            or not trainer.is_global_zero
            or module.evaluation is None
        ):
            return
        last = self.save(trainer, module, LAST_WEIGHTS)
        if last is None:
            return
        self.last_step = trainer.global_step
        name, mode = self.monitor(trainer)
        value = trainer.callback_metrics.get(name)
        if value is None:  # not logged this epoch: the weights' own mAP
            name, mode, value = f"val/{MONITOR}", "max", module.evaluation[MONITOR]
        score = float(value)
        if self.best is None or at_least_as_good(score, self.best, mode):
            self.best = score
            path = link_file(last, self.dirpath / BEST_WEIGHTS)  # the same weights: one file
            log.info("new best %s %.4f -> %s", name.removeprefix("val/"), score, path)

    def on_train_end(self, trainer: L.Trainer, module: Any) -> None:
        written = self.last_step == trainer.global_step and (self.dirpath / LAST_WEIGHTS).is_file()
        if trainer.is_global_zero and not written:  # weights trained since the last validation
            self.save(trainer, module, LAST_WEIGHTS)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """The best score of the run resumed, kept while its ``best.pt`` is in this run's folder
        (the run resumed in place, or its folder moved as a whole); a checkpoint resumed into a
        folder without it starts the best anew, as :class:`SharedCheckpoint` does."""
        here = (self.dirpath / BEST_WEIGHTS).is_file()
        self.best = state_dict.get("best") if here else None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, writing local files with :func:`~yolov4.core.files.
    atomic_write` (a temporary file beside the checkpoint, renamed over it). Lightning's own
    writes a temporary file in ``$TMPDIR`` and moves it: across filesystems (node-local /tmp,
    runs on shared storage) the move copies INTO the existing file, which rewrote the
    ``best.ckpt`` hard-linked to ``last.ckpt`` (:class:`SharedCheckpoint`) and, when killed
    mid-copy, left both empty; a killed write also left its temporary in ``$TMPDIR``. Remote
    paths (``s3://``) are Lightning's."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_write(path, lambda f: torch.save(checkpoint, f))


class SharedCheckpoint(ModelCheckpoint):
    """Lightning's :class:`ModelCheckpoint`, except that a checkpoint another
    ``SharedCheckpoint`` of the run has just written with the same training state (same step,
    same loop progress: e.g. ``best.ckpt`` and ``last.ckpt`` after a validation that improved
    the best) becomes a hard link to that file (:func:`link_file`) instead of a second copy.
    Checkpoints are written to a temporary file renamed into place (:class:`AtomicCheckpointIO`,
    which ``train.py`` installs), so the next save of either name leaves the other intact. Rank
    0 writes the link; every rank waits for it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.saved: tuple[str, str] | None = None  # (training state, file) of the latest save
        self.resumed: str | None = None  # the checkpoint file a fit resumes (on_load_checkpoint)

    def on_load_checkpoint(self, trainer: L.Trainer, module: Any, checkpoint: Any) -> None:
        self.resumed = str(trainer.ckpt_path) if trainer.ckpt_path else None

    def check_monitor_top_k(self, trainer: L.Trainer, current: torch.Tensor | None = None) -> bool:
        """Lightning's, except that a score equal to the k-th best also replaces it
        (:func:`at_least_as_good`: a tie goes to the later validation, as for ``best.pt``)."""
        if current is None or self.save_top_k == -1 or len(self.best_k_models) < self.save_top_k:
            return super().check_monitor_top_k(trainer, current)
        kth = self.best_k_models[self.kth_best_model_path]
        decision = at_least_as_good(current, kth, self.mode)
        return trainer.strategy.reduce_boolean_decision(decision)  # one decision on all ranks

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Lightning's, for a run folder moved or copied as a whole too: when the checkpoint
        resumed lies in this callback's ``dirpath`` and so does the file its state names best
        (same name), the paths under the saved ``dirpath`` are read as the same names here and
        the best score is kept (Lightning's own drops it when the ``dirpath`` changes, and the
        next validation replaced ``best.ckpt`` with a worse epoch). A checkpoint resumed into
        a folder without its best file starts the best anew, as Lightning does."""
        saved = state_dict.get("dirpath")
        if saved and self.dirpath and saved != self.dirpath and self._resumed_here():
            moved = moved_state(state_dict, str(saved), str(self.dirpath))
            best = moved.get("best_model_path")
            if not best or os.path.isfile(best):
                state_dict = moved
        super().load_state_dict(state_dict)

    def _resumed_here(self) -> bool:
        if not self.resumed or "://" in self.resumed or "://" in str(self.dirpath):
            return False
        return Path(self.resumed).resolve().parent == Path(str(self.dirpath)).resolve()

    @staticmethod
    def _state(trainer: L.Trainer) -> str:
        loops = trainer.fit_loop.state_dict() if getattr(trainer, "fit_loop", None) else {}
        return f"{trainer.global_step} {json.dumps(loops, sort_keys=True, default=str)}"

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        state = self._state(trainer)
        twin = next(
            (
                cb.saved[1]
                for cb in trainer.checkpoint_callbacks
                if isinstance(cb, SharedCheckpoint)
                and cb is not self
                and cb.saved is not None
                and cb.saved[0] == state
                and cb.saved[1] != filepath
            ),
            None,
        )
        # the same choice on every rank (the saves are collective): rank 0's file decides
        found = twin is not None and trainer.is_global_zero and os.path.isfile(twin)
        if not trainer.strategy.broadcast(found, src=0):
            super()._save_checkpoint(trainer, filepath)
        else:
            if trainer.is_global_zero:
                link_file(str(twin), filepath)
            trainer.strategy.barrier("SharedCheckpoint")
            self._last_global_step_saved = trainer.global_step
            self._last_checkpoint_saved = filepath
        self.saved = (state, filepath)


def moved_state(state: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """A :class:`ModelCheckpoint` state saved with ``dirpath=old`` as it reads in ``new``: each
    file path under ``old`` the same name under ``new`` (others as they are)."""

    def move(path: Any) -> Any:
        if not isinstance(path, str) or not path:
            return path
        try:
            return str(Path(new) / Path(path).relative_to(old))
        except ValueError:  # not under the saved dirpath
            return path

    out = dict(state, dirpath=new)
    for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
        if key in out:
            out[key] = move(out[key])
    if isinstance(out.get("best_k_models"), dict):
        out["best_k_models"] = {move(k): v for k, v in out["best_k_models"].items()}
    return out


class StepLearningRateMonitor(LearningRateMonitor):
    """Lightning's :class:`LearningRateMonitor`, logging once per optimizer step: with
    ``trainer.accumulate_grad_batches`` > 1 at the step's last batch (the rate that step uses),
    not at each of its batches under the same step number."""

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.fit_loop._should_accumulate():  # not the step's last batch
            return
        super().on_train_batch_start(trainer, *args, **kwargs)


class ValidationImages(L.Callback):
    """After each validation, log to TensorBoard a grid of the first validation images with
    true (green) and predicted (red) boxes, the precision-recall curves (IoU 0.5), and the
    ``worst_images`` images with most FP + FN at ``score_thresh`` (IoU 0.5) read as
    validation reads them (the DataModule's ``val_image``), as ``worst_images.png`` draws them
    (``val/worst_images``; 0: none). Rank 0 only, on the gathered, deduplicated detections of
    :attr:`YoloModule.evaluation`."""

    def __init__(
        self, max_images: int = 8, score_thresh: float = 0.25, worst_images: int = 8
    ) -> None:
        self.max_images, self.score_thresh = max_images, score_thresh
        self.worst_images = worst_images

    def on_validation_end(self, trainer: L.Trainer, module: Any) -> None:
        from lightning.pytorch.loggers import TensorBoardLogger

        from yolov4.evaluation.plots import draw_detections, pr_curve_figure

        tb = next((lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if (
            tb is None
            or trainer.sanity_checking
            or not trainer.is_global_zero
            or module.validation_sample is None
        ):
            return
        images, targets, dets = module.validation_sample
        n = min(self.max_images, images.shape[0])
        grid = draw_detections(
            images[:n],
            targets[targets[:, 0] < n],
            dets[:n],
            module.hparams["class_names"],
            self.score_thresh,
        )
        tb.experiment.add_image("val/predictions", grid, trainer.global_step)
        precision = module.evaluation.precision if module.evaluation is not None else None
        if precision is not None:
            fig = pr_curve_figure(precision, module.hparams["class_names"])
            tb.experiment.add_figure("val/pr_curve", fig, trainer.global_step)
        datamodule = getattr(trainer, "datamodule", None)
        if self.worst_images > 0 and module.evaluation is not None and datamodule is not None:
            grid = self._worst(module.evaluation, datamodule)
            if grid is not None:
                tb.experiment.add_image("val/worst_images", grid, trainer.global_step)

    def _worst(self, result: Any, datamodule: Any) -> Any:
        from yolov4.evaluation.analysis import analyze_detections
        from yolov4.evaluation.worst import val_image_files, worst_gallery, worst_images

        coco = datamodule.val_coco
        files = val_image_files(datamodule)
        analysis = analyze_detections(
            coco, result.results, image_ids=result.image_ids or None, conf=self.score_thresh
        )
        entries = worst_images(analysis, coco, files, self.worst_images)
        return worst_gallery(
            entries, coco, result.results, analysis.names, self.score_thresh,
            read_image=datamodule.val_image,
        )  # fmt: skip
