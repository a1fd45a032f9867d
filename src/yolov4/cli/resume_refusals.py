"""What a ``train.py`` command in a run's folder refuses before Hydra writes anything there
(:mod:`yolov4.cli.resume` asks): a new run over a trained one (:func:`refuse_trained_run_dir`),
and a resume of a run that finished (:func:`refuse_finished`: its limit reached, or its early
stopping's decision)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yolov4.cli.common import launched_rank
from yolov4.cli.resume_checkpoint import early_stopped, trained_so_far
from yolov4.errors import ConfigError
from yolov4.evaluation import METRICS_FILE
from yolov4.training.requeue import REQUEUE_FILE

__all__ = ["refuse_finished", "refuse_trained_run_dir"]


def refuse_trained_run_dir(run: Path) -> None:
    """A new run (no ``ckpt_path=``) in ``hydra.run.dir=<run>`` where a run has trained would
    replace its weights, checkpoints, export and saved config: :class:`ConfigError` naming the
    resume command, before Hydra writes anything. A requeued job (``checkpoints/requeue.ckpt``,
    which it resumes by itself) and the processes a launcher starts after rank 0 pass."""
    if launched_rank() or (run / "checkpoints" / REQUEUE_FILE).is_file():
        return
    found = [
        p for p in (run / "weights" / "last.pt", run / "checkpoints" / "last.ckpt") if p.is_file()
    ]
    last = run / "checkpoints" / "last.ckpt"
    if found and not last.is_file():  # stopped before its first checkpoint: nothing to resume
        raise ConfigError(
            f"hydra.run.dir={run} holds the weights of a run stopped before its first "
            f"checkpoint ({', '.join(str(p) for p in found)}; no {last} to resume): give "
            f"another hydra.run.dir (module.pretrained={found[0]} starts from those weights), "
            "or remove that folder to train there again"
        )
    if found:
        more = (
            "add trainer.max_epochs=... to train longer"
            if (run / METRICS_FILE).is_file()
            else f"it stopped before its end, no {METRICS_FILE}: the resume finishes it"
        )
        raise ConfigError(
            f"hydra.run.dir={run} holds a trained run ({', '.join(str(p) for p in found)}): a new "
            f"run there would replace its weights, checkpoints and config. Resume it with "
            f"python train.py ckpt_path={last} ({more}), or give another hydra.run.dir"
        )


def _config_key(callbacks: dict[str, Any] | None, name: str) -> str | None:
    """``callbacks.<key>`` of the entry whose ``_target_`` is the class ``name``, if any."""
    for key, node in (callbacks or {}).items():
        if isinstance(node, dict) and str(node.get("_target_", "")).split(".")[-1] == name:
            return f"callbacks.{key}"
    return None


def refuse_finished(
    run: Path, ckpt: str, trainer: dict[str, Any], callbacks: dict[str, Any] | None = None
) -> list[str]:
    """A :class:`ConfigError` when ``ckpt`` has already trained the resumed config's
    ``trainer.max_epochs`` (or ``max_steps``), or an early-stopping callback stopped it, and
    the run finished (its ``metrics.json``, written last): Lightning would train nothing (or,
    the callback's state restored, one more epoch before it stops again) and the run's files
    would be evaluated and exported again under a rewritten config; the message says how to
    train longer (``callbacks``: the resumed config's, naming the callback's key). A run
    stopped after its last epoch, or after its early stopping's decision (no ``metrics.json``),
    passes: its resume trains nothing and writes the final evaluation, reports and export
    (:class:`~yolov4.training.early_stop.EarlyStoppingResume`), said in the note returned
    for the log. Checked before Hydra writes anything."""
    done = trained_so_far(ckpt)
    if done is None:
        return []
    epochs, steps = done
    max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps")
    if isinstance(max_steps, int) and max_steps > 0 and steps >= max_steps:
        reached = f"trainer.max_steps={max_steps} (it has trained {steps} steps)"
        more = f"trainer.max_steps={steps + max(1, steps // 2)}"
    elif isinstance(max_epochs, int) and max_epochs >= 0 and epochs >= max_epochs:
        reached = f"trainer.max_epochs={max_epochs} (it has trained {epochs} epochs)"
        more = f"trainer.max_epochs={epochs + max(1, epochs // 2)}"
    else:
        _refuse_early_stopped(run, ckpt, callbacks)
        return []
    if not (run / METRICS_FILE).is_file():
        return [
            f"resume of {run}: {ckpt} has reached {reached}, and the run stopped before its "
            f"end (no {METRICS_FILE}): nothing trains; the final evaluation, reports and "
            "export are written"
        ]
    raise ConfigError(
        f"resume of {run}: {ckpt} has already reached {reached}: nothing would train. To train "
        f"longer, resume with a larger limit, e.g. {more}; the finished run's weights are in "
        f"{run / 'weights'} and nothing in the run was changed"
    )


def _refuse_early_stopped(run: Path, ckpt: str, callbacks: dict[str, Any] | None) -> None:
    """:func:`refuse_finished` for a finished run an early-stopping callback stopped, resumed
    with that callback in ``callbacks`` (without it, the resume trains on; with it, a run that
    stopped before its end is finished by the resume, nothing trained)."""
    stopped = early_stopped(ckpt)
    if stopped is None or not (run / METRICS_FILE).is_file():
        return
    name, epoch, reason = stopped
    key = _config_key(callbacks, name)
    if key is None:
        return
    raise ConfigError(
        f"resume of {run}: {name} stopped the run at epoch {epoch + 1}"  # 1-based, as train.log
        + (f" ({reason})" if reason else "")
        + f" and it finished ({METRICS_FILE}): resumed, its state restored, it would stop the "
        f"run again after one more epoch and rewrite the run's files. To train on, resume "
        f"without it (~{key}); the finished run's weights are in {run / 'weights'} and "
        "nothing in the run was changed"
    )
