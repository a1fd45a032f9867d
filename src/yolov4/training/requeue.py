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

The checkpoint is taken mid-epoch, where Lightning restarts the epoch's DataLoader from its first
batch. The callback makes the train loader skip the batches the saved state has already trained
on (they are loaded and dropped, so the epoch's shuffle and augmentation random streams advance
exactly as in an uninterrupted run): without persistent workers the resumed run is bit-equal to
an uninterrupted one. A fit that ends normally deletes ``requeue.ckpt``. A signal in the run's
final phase (evaluation, reports, export: :meth:`Requeue.final_phase`) stops it with
``requeue.ckpt`` the fit's last checkpoint, which the requeued job resumes to train nothing and
write that phase again.

Ctrl-C (``SIGINT`` in ``signals``, as the default callbacks have it) takes the same path without
the requeue: the step (or the fit's validation) ends, ``requeue.ckpt`` is saved and the run stops
with exit status 130 and the ``ckpt_path=`` that resumes it; a second Ctrl-C stops at once as a
``KeyboardInterrupt`` (nothing saved since the last checkpoint; ``train.py`` names it, exit 130).
A signal during the fit's validation stops the run at the validation's end.

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
from torch.utils.data import DataLoader

from yolov4.training.callbacks import last_checkpoint, link_file

__all__ = ["Requeue", "Requeued", "requeue_checkpoint", "launcher_topology", "REQUEUE_FILE"]

log = logging.getLogger(__name__)

REQUEUE_FILE = "requeue.ckpt"
STATE_KEY = "yolov4_requeue"  # in requeue.ckpt: batches of its epoch already trained on


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


class _SkippingLoader(DataLoader):
    """A DataLoader whose next iterator first drops ``_requeue_skip`` batches (set on resume)."""

    def __iter__(self):  # type: ignore[override]
        it = super().__iter__()
        skip = getattr(type(self), "_owner", None)
        n = skip.take_skip() if skip is not None else 0
        return _Skip(it, n) if n else it


class _Skip:
    """An iterator that drops its first ``n`` items lazily (at the first ``next``)."""

    def __init__(self, it: Any, n: int) -> None:
        self.it, self.n = it, n

    def __iter__(self) -> _Skip:
        return self

    def __next__(self) -> Any:
        while self.n:
            self.n -= 1
            next(self.it)
        return next(self.it)

    def __len__(self) -> int:
        return len(self.it)


class Requeue(L.Callback):
    """Save ``<dirpath>/requeue.ckpt`` and requeue on ``signals`` (names, e.g. ``SIGUSR1``).

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
        self._validating = False  # in the fit's validation (a signal stops at its end)
        self._previous: dict[int, Any] = {}
        self._skip = 0
        # one subclass per callback: Lightning re-creates a loader from its class (DDP samplers)
        self._loader_cls = type("RequeueLoader", (_SkippingLoader,), {"_owner": self})

    # --- resume: the batches of the interrupted epoch already trained on ---
    def take_skip(self) -> int:
        n, self._skip = self._skip, 0
        return n

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: Any, checkpoint: dict) -> None:
        if self.received is not None:  # requeue.ckpt: how far into its epoch it is
            done = int(trainer.fit_loop.epoch_loop.batch_progress.current.processed)
            if done >= trainer.num_training_batches:  # its last batch: Lightning resumes at the
                done = 0  # next epoch, whose batches are all to train
            checkpoint[STATE_KEY] = {"batches": done}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: Any, checkpoint: dict) -> None:
        self._skip = int(checkpoint.get(STATE_KEY, {}).get("batches", 0))
        if self._skip:
            log.info("resuming mid-epoch: skipping the %d batches already trained on", self._skip)

    def setup(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        dm = trainer.datamodule
        if stage != "fit" or dm is None or getattr(dm, "_requeue_wrapped", False):
            return
        make = dm.train_dataloader
        cls = self._loader_cls

        def train_dataloader() -> Any:
            loader = make()
            if type(loader) is DataLoader:
                loader.__class__ = cls
            return loader

        dm.train_dataloader = train_dataloader
        dm._requeue_wrapped = True

    # --- the signals ---
    def _handler(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT:
            if self.received == signal.SIGINT:  # the second Ctrl-C: stop now
                self._restore()
                raise KeyboardInterrupt
            # no logging in a signal handler (its lock may be held where the signal came)
            where = b"this validation" if self._validating else b"this training step"
            os.write(
                sys.stderr.fileno(),
                b"\nCtrl-C: stopping after " + where + b" and saving the state to resume "
                b"from (Ctrl-C again: stop now, unsaved)\n",
            )
        self.received = self.received or signum

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self.received = None
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
        """A signal during the fit's validation stops the run at its end (the state then is
        what ``last.ckpt`` holds: no further training step)."""
        validating, self._validating = self._validating, False
        if validating and trainer.training is False and trainer.state.fn == "fit":
            self._stop_if_signalled(trainer)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        self._stop_if_signalled(trainer)

    def _stop_if_signalled(self, trainer: L.Trainer) -> None:
        """At a step's (or the fit's validation's) end: when a signal came (on any rank), save
        ``requeue.ckpt``, requeue unless it was Ctrl-C, and stop with :class:`Requeued`."""
        received = self.received is not None
        if trainer.world_size > 1:
            received = trainer.strategy.reduce_boolean_decision(received, all=False)
        if not received:
            return
        self.received = self.received or signal.SIGUSR1  # a rank that did not get it itself
        path = self.dirpath / REQUEUE_FILE
        # weights_only=False: the whole state (and no "weights_only was not set" log line)
        trainer.save_checkpoint(path, weights_only=False)
        signum = self.received
        name = signal.Signals(signum).name
        if signum == signal.SIGINT:
            log.warning(
                "stopped (Ctrl-C) at step %d: saved %s; python train.py ckpt_path=%s resumes the "
                "run where it stopped", trainer.global_step, path, path,
            )  # fmt: skip
        else:
            log.warning(
                "%s at step %d: saved %s; the same command in the same run directory resumes "
                "from it (or ckpt_path=%s)", name, trainer.global_step, path, path,
            )  # fmt: skip
        self._requeue_job(trainer, signum)
        self._restore()
        raise Requeued(128 + int(signum))

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
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        if self.received is not None:  # it came in the fit's last validation: stop here
            self._stop_final_phase(trainer, self.received, None)
        for s in self.signals:
            self._previous[s] = signal.signal(s, partial(self._stop_final_phase, trainer))
        try:
            yield
        finally:
            self._restore()

    def _stop_final_phase(self, trainer: L.Trainer, signum: int, frame: Any) -> None:
        self._restore()
        name = signal.Signals(signum).name
        last = Path(last_checkpoint(trainer) or self.dirpath / "last.ckpt")
        if not last.is_file():
            log.warning(
                "%s in the run's final evaluation and export: stopped; there is no %s to finish "
                "the run from (python evaluate.py and export.py score and export its weights)",
                name, last,
            )  # fmt: skip
            raise Requeued(128 + int(signum))
        if trainer.is_global_zero:
            path = self.dirpath / REQUEUE_FILE
            link_file(last, path)
            log.warning(
                "%s in the run's final evaluation and export (training had ended): %s is %s; "
                "the same command in the same run directory, or python train.py ckpt_path=%s, "
                "writes the final evaluation, reports and export (nothing trains)",
                name, path, last.name, path,
            )  # fmt: skip
        self._requeue_job(trainer, signum)
        raise Requeued(128 + int(signum))

    def on_fit_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        self._restore()
        if trainer.is_global_zero:
            (self.dirpath / REQUEUE_FILE).unlink(missing_ok=True)

    def teardown(self, trainer: L.Trainer, pl_module: Any, stage: str) -> None:
        self._restore()
