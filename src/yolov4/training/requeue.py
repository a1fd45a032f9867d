"""Preemption, wall-time limits and Ctrl-C: on SIGUSR1 or SIGTERM save the training state and
requeue; on SIGINT (Ctrl-C) save it and stop, printing the command that resumes.

SLURM sends a signal some time before a job's limit (``--signal=USR1@120``; the ``slurm``
launcher preset asks for it) and SIGTERM when it preempts a job. :class:`Requeue` turns either
into: finish the current optimizer step, save the whole Lightning state to
``checkpoints/requeue.ckpt`` (every rank takes part, rank 0 writes), ask SLURM to requeue the job
(``scontrol requeue $SLURM_JOB_ID`` when the process runs under SLURM), and exit with
:class:`Requeued`. The requeued job is the same command in the same run directory: ``train``
finds ``requeue.ckpt`` (:func:`requeue_checkpoint`) and resumes from it through the safe resume
path (:mod:`yolov4.training.resume`: read with ``weights_only=True``, network and classes
checked).

Where the run stops (:mod:`yolov4.training.stop_points`): after the batch that ends an
optimizer step (a whole ``trainer.accumulate_grad_batches`` window), or, where a validation
within the epoch follows that step (``trainer.val_check_interval``), at that validation's end.
A signal in an epoch's last step or in its validation lets the epoch end as in any run (its
validation, its line in the log, ``last.ckpt`` and ``best.ckpt``) and stops the run there, in
the state ``last.ckpt`` holds. The stopped step's logged metrics reach the loggers first.

The checkpoint is taken mid-epoch, where Lightning restarts the epoch's DataLoader from its first
batch: ``requeue.ckpt`` records the images of its epoch already trained on, and the resumed train
loader leaves exactly those out, at any ``data.batch_size`` (:mod:`yolov4.training.epoch_skip`;
with the same batch size they are read and dropped, so the epoch's shuffle and augmentation
random streams advance as in an uninterrupted run: without persistent workers the resumed run is
bit-equal to an uninterrupted one). A fit that ends normally deletes ``requeue.ckpt``. A signal
in the run's final phase (evaluation, reports, export: :meth:`Requeue.final_phase`) stops it
with ``requeue.ckpt`` the fit's last checkpoint, which the requeued job resumes to train nothing
and write that phase again.

Ctrl-C (``SIGINT`` in ``signals``, as the default callbacks have it) takes the same path without
the requeue: the optimizer step (and the validation after it, if one is due) ends,
``requeue.ckpt`` is saved and the run stops with exit status 130 and the ``ckpt_path=`` that
resumes it; a second Ctrl-C stops at once as a ``KeyboardInterrupt`` (nothing saved since the
last checkpoint; ``train.py`` names it, exit 130), except while ``requeue.ckpt`` is being
written: that write completes, and the run stops with it.

Lightning's own SLURM auto-requeue (``SLURMEnvironment``) saves ``hpc_ckpt_N.ckpt`` from inside
the signal handler and reloads it with Lightning's loader; this callback replaces those handlers
while training runs, so there is one checkpoint and one resume path.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
from torch.utils.data import DataLoader

from yolov4.data.loader import EpochLoader
from yolov4.training.callbacks import last_checkpoint, link_file
from yolov4.training.epoch_skip import SkippingLoader, SkipPlan, plan_skip
from yolov4.training.noise import quiet_mid_epoch_resume
from yolov4.training.stop_points import epoch_samples, stops_after_batch, stops_after_validation

__all__ = ["Requeue", "Requeued", "requeue_checkpoint", "launcher_topology", "REQUEUE_FILE"]

log = logging.getLogger(__name__)

REQUEUE_FILE = "requeue.ckpt"
STATE_KEY = "yolov4_requeue"  # in requeue.ckpt: {"samples": images of its epoch trained on}


class Requeued(SystemExit):
    """The run stopped on a signal after saving ``requeue.ckpt`` (exit status 128 + signal)."""


def requeue_checkpoint(callbacks_cfg: Any) -> Path | None:
    """``<dirpath>/requeue.ckpt`` of the ``Requeue`` callback in a ``callbacks`` config when that
    file exists (a requeued or restarted job), else ``None``."""
    for node in (callbacks_cfg or {}).values():
        if node is not None and str(node.get("_target_", "")).endswith("requeue.Requeue"):
            path = Path(str(node["dirpath"])) / REQUEUE_FILE
            if path.is_file():
                return path
    return None


def launcher_topology() -> dict[str, int]:
    """``{"num_nodes", "devices"}`` of the job under Hydra's submitit launcher (its ``nodes`` and
    ``tasks_per_node``: one process per task), ``{}`` under any other launcher."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}
    launcher = HydraConfig.get().get("launcher") or {}
    if "submitit" not in str(launcher.get("_target_", "")):
        return {}
    return {"num_nodes": int(launcher.nodes), "devices": int(launcher.tasks_per_node)}


class Requeue(Checkpoint):
    """Save ``<dirpath>/requeue.ckpt`` and requeue on ``signals`` (names, e.g. ``SIGUSR1``).

    A Lightning :class:`~lightning.pytorch.callbacks.Checkpoint`: at an epoch's end Lightning
    runs its hook after the LightningModule's, as for ``ModelCheckpoint``; placed last of the
    callbacks at set-up, it stops the run after every other callback's hooks (the epoch's
    checkpoints written).

    Args:
        dirpath: where ``requeue.ckpt`` goes (the run's ``checkpoints/``).
        signals: the signals that stop the run this way.
        requeue: run ``scontrol requeue`` when ``SLURM_JOB_ID`` is set (false: save and exit).
    """

    def __init__(
        self,
        dirpath: str,
        signals: tuple[str, ...] | list[str] = ("SIGUSR1", "SIGTERM"),
        requeue: bool = True,
    ) -> None:
        self.dirpath = Path(dirpath)
        try:
            self.signals = [signal.Signals[s] for s in signals]
        except KeyError as e:
            from yolov4.errors import ConfigError

            raise ConfigError(
                f"callbacks.requeue.signals: unknown signal {e.args[0]!r} (expected names such "
                f"as SIGUSR1, SIGUSR2, SIGTERM)"
            ) from None
        self.requeue = requeue
        self.received: int | None = None
        self._validating = False  # in the fit's validation
        self._saving = False  # writing requeue.ckpt: a second Ctrl-C waits for it
        self._prints = True  # the Ctrl-C lines go to stderr (rank 0's: every rank gets Ctrl-C)
        self._previous: dict[int, Any] = {}
        self._resumed: dict[str, Any] = {}  # the loaded requeue.ckpt's STATE_KEY, until read
        self._world_size = 1
        self._plan: SkipPlan | None = None  # how the resumed epoch's loader skips
        # one subclass per callback: Lightning re-creates a loader from its class (DDP samplers)
        self._loader_cls = type("RequeueLoader", (SkippingLoader,), {"_owner": self})

    # --- resume: the images of the interrupted epoch already trained on ---
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: Any, checkpoint: dict) -> None:
        if self.received is not None:  # requeue.ckpt: how far into its epoch it is
            checkpoint[STATE_KEY] = {"samples": epoch_samples(trainer)}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: Any, checkpoint: dict) -> None:
        self._resumed = dict(checkpoint.get(STATE_KEY) or {})
        self._world_size = max(int(trainer.world_size or 1), 1)
        if int(self._resumed.get("samples", 0)) or int(self._resumed.get("batches", 0)):
            quiet_mid_epoch_resume()  # the loader skips what the epoch trained: it resumes

    def take_skip(self, loader: Any) -> SkipPlan | None:
        """The :class:`SkipPlan` of the resumed epoch for ``loader`` (its first iterator after
        the restore; ``None`` afterwards and at an epoch's start)."""
        state, self._resumed = self._resumed, {}
        batch_size = int(loader.batch_size)
        if "samples" in state:  # all processes' images: each skips its share
            samples = int(state["samples"]) // self._world_size
        else:  # a count of batches: of the resumed loader's batch size
            samples = int(state.get("batches", 0)) * batch_size
        if samples <= 0:
            return None
        self._plan = plan_skip(samples, batch_size, len(loader))
        return self._plan

    def _resume_mid_epoch(self, trainer: L.Trainer) -> None:
        """Lightning's count of the resumed epoch's batches made the plan's (the loader batches
        the skipped images cover: another ``data.batch_size`` covers them in another number of
        batches), and the skip said in the log."""
        plan, self._plan = self._plan, None
        if plan is None:
            return
        progress = trainer.fit_loop.epoch_loop.batch_progress
        shift = plan.batches - int(progress.current.processed)
        for tracker in (progress.current, progress.total):
            for name in ("ready", "started", "processed", "completed"):
                setattr(tracker, name, getattr(tracker, name) + shift)
        if trainer.is_global_zero:
            log.info(
                "resuming mid-epoch: skipping the %d images of epoch %d already trained on%s (%s)",
                plan.samples, trainer.current_epoch + 1,  # 1-based, as the epoch's line
                " by each process" if trainer.world_size > 1 else "", plan.describe(),
            )  # fmt: skip

    def setup(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        # last of the callbacks, whatever their order: a stop after every other's hooks
        trainer.callbacks = [c for c in trainer.callbacks if c is not self] + [self]
        dm = trainer.datamodule
        if stage != "fit" or dm is None or getattr(dm, "_requeue_wrapped", False):
            return
        make = dm.train_dataloader
        cls = self._loader_cls

        def train_dataloader() -> Any:
            loader = make()
            if type(loader) in (DataLoader, EpochLoader):
                loader.__class__ = cls
            return loader

        dm.train_dataloader = train_dataloader
        dm._requeue_wrapped = True

    # --- the signals ---
    def _handler(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            if self._saving:  # a KeyboardInterrupt now would leave no requeue.ckpt at all
                self._say(b"\nCtrl-C: requeue.ckpt is being written; the run stops once it is\n")
                return
            self._restore()  # the second Ctrl-C: stop now
            raise KeyboardInterrupt
        if signum == signal.SIGINT:
            where = (
                b"this validation (within an accumulation window: after the window's step)"
                if self._validating
                else b"this optimizer step (and the validation after it, if one is due; an "
                b"epoch's last: after the epoch's validation and checkpoints)"
            )
            self._say(
                b"\nCtrl-C: stopping after " + where + b" and saving the state to resume from "
                b"(Ctrl-C again: stop now, unsaved)\n"
            )
        self.received = self.received or signum

    def _say(self, line: bytes) -> None:
        """``line`` on stderr, from rank 0 (a handler cannot log: its lock may be held)."""
        if self._prints:
            os.write(sys.stderr.fileno(), line)

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self.received = None
        self._prints = bool(getattr(trainer, "is_global_zero", True))
        self._resume_mid_epoch(trainer)
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set in the main thread
        for s in self.signals:
            self._previous[s] = signal.signal(s, self._handler)

    def _restore(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()

    def on_validation_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self._validating = not trainer.sanity_checking

    def on_validation_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        """A signal during a validation within the epoch (``trainer.val_check_interval``), or
        in the step before it, stops the run at its end (after the checkpoints' hooks: they
        run first), where :func:`~yolov4.training.stop_points.stops_after_validation` says."""
        validating, self._validating = self._validating, False
        if validating and trainer.training is False and trainer.state.fn == "fit":
            if stops_after_validation(trainer):
                self._stop_if_signalled(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        """After a batch that ends an optimizer step, within the epoch, no validation due
        after it: the stop (:func:`~yolov4.training.stop_points.stops_after_batch`)."""
        if stops_after_batch(trainer):
            self._stop_if_signalled(trainer, log_step=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        """A signal that came in the epoch's last step, its validation or its end: the stop,
        after the module's epoch line and the checkpoint callbacks (Lightning calls checkpoint
        callbacks' ``on_train_epoch_end`` last: this one after ``last.ckpt`` and
        ``best.ckpt``), in the state ``last.ckpt`` holds."""
        self._stop_if_signalled(trainer)

    def _agreed_signal(self, trainer: L.Trainer) -> int | None:
        """The signal that stops the run, the same on every rank (the one any rank received;
        under DDP a collective call); ``None`` when none came."""
        signum = int(self.received or 0)
        if trainer.world_size > 1:
            device = trainer.strategy.root_device
            signum = int(
                trainer.strategy.reduce(torch.tensor(signum, device=device), reduce_op="max")
            )
        if signum:
            self.received = self.received or signum
        return signum or None

    def _stop_if_signalled(self, trainer: L.Trainer, log_step: bool = False) -> None:
        """When a signal came (on any rank): save ``requeue.ckpt``, requeue unless it was
        Ctrl-C, and stop with :class:`Requeued`. ``log_step``: at a batch's end, where the
        step's logged metrics are written to the loggers first (Lightning writes them after
        this hook)."""
        signum = self._agreed_signal(trainer)
        if signum is None:
            return
        if log_step:
            trainer._logger_connector.on_batch_end()
            trainer._logger_connector.update_train_step_metrics()
        path = self.dirpath / REQUEUE_FILE
        self._saving = True
        try:  # weights_only=False: the whole state (and no "weights_only was not set" log line)
            trainer.save_checkpoint(path, weights_only=False)
        finally:
            self._saving = False
        if trainer.is_global_zero and signum == signal.SIGINT:
            log.warning(
                "stopped (Ctrl-C) at step %d: saved %s; python train.py ckpt_path=%s resumes the "
                "run where it stopped", trainer.global_step, path, path,
            )  # fmt: skip
        elif trainer.is_global_zero:
            log.warning(
                "%s at step %d: saved %s; the same command in the same run directory resumes "
                "from it (or ckpt_path=%s)", signal.Signals(signum).name, trainer.global_step,
                path, path,
            )  # fmt: skip
        self._requeue_job(trainer, signum)
        self._restore()
        raise Requeued(128 + signum)

    def _requeue_job(self, trainer: L.Trainer, signum: int) -> None:
        """``scontrol requeue`` of this SLURM job (array task) from rank 0, when asked to (never
        for Ctrl-C: the user stopped it)."""
        if signum == signal.SIGINT:
            return
        job = os.environ.get("SLURM_ARRAY_JOB_ID")
        job = (
            f"{job}_{os.environ['SLURM_ARRAY_TASK_ID']}" if job else os.environ.get("SLURM_JOB_ID")
        )
        if self.requeue and job and trainer.is_global_zero:
            done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
            if done.returncode == 0:
                log.warning("requeued SLURM job %s", job)
            else:
                log.error("scontrol requeue %s failed: %s", job, done.stderr.strip())

    # --- after the fit: the run's final evaluation, reports and export ---
    @contextmanager
    def final_phase(self, trainer: L.Trainer) -> Iterator[None]:
        """Around the run's final phase (after ``trainer.fit``): one of ``signals`` there stops
        the run as during training, with ``requeue.ckpt`` the fit's last checkpoint (a hard
        link of ``last.ckpt``; nothing is left to train), so the requeued job, or the same
        command, trains nothing and writes the final phase again (``metrics.json`` is written
        last: :mod:`yolov4.cli.resume`). Without a ``last.ckpt`` the run stops saying so."""
        signum = self._agreed_signal(trainer)  # every rank: the fit ended on all
        if signum is not None:  # it came after the last epoch's end (the fit's last hooks)
            self._stop_final_phase(trainer, signum, None)
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        for s in self.signals:
            self._previous[s] = signal.signal(s, partial(self._stop_final_phase, trainer))
        try:
            yield
        finally:
            self._restore()

    def _stop_final_phase(self, trainer: L.Trainer, signum: int, frame: Any) -> None:
        """``frame``: the signal's (``None``: it came as the fit ended)."""
        self._restore()
        name = signal.Signals(signum).name
        where = "as the fit ended" if frame is None else "in the run's final phase"
        last = Path(last_checkpoint(trainer) or self.dirpath / "last.ckpt")
        if not last.is_file():
            log.warning(
                "%s %s: stopped; there is no %s to finish the run from (python evaluate.py and "
                "export.py score and export its weights)", name, where, last,
            )  # fmt: skip
            raise Requeued(128 + int(signum))
        if trainer.is_global_zero:
            path = self.dirpath / REQUEUE_FILE
            link_file(last, path)
            log.warning(
                "%s %s (training had ended): %s is %s; the same command in the same run "
                "directory, or python train.py ckpt_path=%s, writes the final evaluation, "
                "reports and export (nothing trains)", name, where, path, last.name, path,
            )  # fmt: skip
        self._requeue_job(trainer, signum)
        raise Requeued(128 + int(signum))

    def on_fit_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        self._restore()
        if trainer.is_global_zero:
            (self.dirpath / REQUEUE_FILE).unlink(missing_ok=True)

    def teardown(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        self._restore()
