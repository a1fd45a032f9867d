"""Hyper-parameter search with Hydra's Optuna sweeper (``python train.py -m hparams_search=...``).

The sweeper asks Optuna for a trial, launches ``train.py`` with the trial's parameters as
overrides, and tells the study the value the job returns: :func:`objective` (the best per-epoch
value of ``objective``, ``val/mAP50`` by default). The study lives in the SQLite file the
``hparams_search`` configs name in the sweep directory, so the same command again continues it.

The sweeper hands the job no trial object. :class:`OptunaPruning` finds the job's trial in the
study itself: the RUNNING trial whose parameters are exactly the job's overrides (as the sweeper
wrote them, ``name=value``) and that no other job has claimed (system attribute
``yolov4:run_dir``). After each validation it reports the monitored value as the trial's
intermediate value at that epoch and asks its pruner; a pruned trial stops training there (user
attribute ``pruned_at_epoch``). The sweeper then records the trial as COMPLETE with the best value
it reached (the sweeper's ``tell`` accepts only the job's return value, so Optuna's PRUNED state
cannot be set from the job); the pruning itself, the epochs not trained, is real.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from hydra.experimental.callback import Callback as HydraCallback

from yolov4.errors import ConfigError
from yolov4.evaluation.result import METRIC_KEYS

__all__ = [
    "BestMetric",
    "OptunaPruning",
    "SweepDir",
    "find_trial",
    "check_monitor",
    "CLAIM_ATTR",
    "VAL_METRICS",
    "TRAIN_METRICS",
]

log = logging.getLogger(__name__)

CLAIM_ATTR = "yolov4:run_dir"


def _fitting(trainer: L.Trainer) -> bool:
    """A validation of the fit (not the sanity check, not ``train``'s final ``validate``)."""
    return trainer.state.fn == "fit" and not trainer.sanity_checking


VAL_METRICS = tuple(f"val/{k}" for k in METRIC_KEYS)  # what validation logs
TRAIN_METRICS = ("train/loss", "train/box", "train/obj", "train/cls")  # per training step


def check_monitor(value: Any, key: str, names: Sequence[str] = VAL_METRICS) -> str:
    """``value`` when it is one of ``names`` (the metrics validation logs) or a metric of
    another namespace (``stub/score``: a callback of the user's logs it), else a
    :class:`ConfigError` naming ``key`` and ``names`` (a misspelled objective scored every trial
    0, a misspelled checkpoint monitor failed after the first epoch)."""
    name = str(value)
    ours = name.split("/", 1)[0] in {n.split("/", 1)[0] for n in (*VAL_METRICS, *TRAIN_METRICS)}
    if "/" not in name or (ours and name not in names):
        raise ConfigError(
            f"{key}={value}: expected one of {list(names)} (or namespace/name of a metric a "
            "callback of yours logs)"
        )
    return name


class BestMetric(L.Callback):
    """The best (largest) value of ``monitor`` over the fit's validations (``None`` if none ran)."""

    def __init__(self, monitor: str = "val/mAP50") -> None:
        self.monitor = monitor
        self.value: float | None = None
        self.epoch: int | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if not _fitting(trainer) or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        if math.isfinite(value) and (self.value is None or value > self.value):
            self.value, self.epoch = value, trainer.current_epoch


def find_trial(study: Any, overrides: Sequence[str], run_dir: str) -> Any | None:
    """The RUNNING trial of ``study`` whose parameters are all among ``overrides`` (``name=value``
    as the sweeper writes them), claimed for ``run_dir``; the lowest-numbered unclaimed one when
    several match (identical parameters), ``None`` when none does."""
    import optuna

    given = set(overrides)
    for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if not frozen.params or any(f"{k}={v}" not in given for k, v in frozen.params.items()):
            continue
        claimed = frozen.system_attrs.get(CLAIM_ATTR)
        if claimed not in (None, run_dir):
            continue
        trial = optuna.trial.Trial(study, frozen._trial_id)
        study._storage.set_trial_system_attr(frozen._trial_id, CLAIM_ATTR, run_dir)
        return trial
    return None


class OptunaPruning(L.Callback):
    """Report ``monitor`` to the job's Optuna trial after every validation; stop the run when
    ``pruner`` prunes it.

    Args:
        storage: the study's storage URL (the sweeper's ``storage``).
        study_name: the sweeper's ``study_name``.
        overrides: the job's overrides (``${hydra:overrides.task}``), to find its trial.
        run_dir: the job's run directory (recorded on the trial it claims).
        monitor: the metric reported (``val/mAP50``); the study maximizes it.
        pruner: an ``optuna.pruners`` object (``MedianPruner`` when ``None``).
    """

    def __init__(
        self,
        storage: str | None,
        study_name: str | None,
        overrides: Sequence[str] = (),
        run_dir: str = "",
        monitor: str = "val/mAP50",
        pruner: Any = None,
    ) -> None:
        self.storage, self.study_name = storage, study_name
        self.overrides, self.run_dir = [str(o) for o in overrides], str(run_dir)
        self.monitor, self.pruner = monitor, pruner
        self.trial: Any = None
        self.pruned_at: int | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        if not trainer.is_global_zero or self.trial is not None:
            return
        if not self.storage or not self.study_name:
            log.warning("optuna pruning: no study storage/name (not a sweep): pruning is off")
            return
        import optuna

        pruner = self.pruner if self.pruner is not None else optuna.pruners.MedianPruner()
        try:
            study = optuna.load_study(
                study_name=self.study_name, storage=self.storage, pruner=pruner
            )
        except Exception as e:  # noqa: BLE001 - no study (a run without -m): train unpruned
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            log.warning(
                "optuna pruning: cannot open study %r in %s (%s): pruning is off for this run "
                "(a search runs with -m)",
                self.study_name,
                self.storage,
                reason,
            )
            return
        self.trial = find_trial(study, self.overrides, self.run_dir)
        if self.trial is None:
            log.warning(
                "optuna pruning: no running trial of study %r has the parameters %s: pruning "
                "is off for this run",
                self.study_name,
                self.overrides,
            )
        else:
            log.info("optuna trial %d of study %r", self.trial.number, self.study_name)

    def on_validation_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if not _fitting(trainer):
            return
        prune = False
        if trainer.is_global_zero and self.trial is not None:
            value = trainer.callback_metrics.get(self.monitor)
            if value is not None and math.isfinite(float(value)):
                epoch = trainer.current_epoch
                self.trial.report(float(value), step=epoch)
                prune = bool(self.trial.should_prune())
                if prune:
                    self.trial.set_user_attr("pruned_at_epoch", epoch)
                    self.pruned_at = epoch
                    log.warning(
                        "optuna trial %d pruned after epoch %d (%s %.4f)",
                        self.trial.number,
                        epoch + 1,  # 1-based, as the epoch's line; pruned_at_epoch: 0-based
                        self.monitor,
                        float(value),
                    )
        if trainer.world_size > 1:
            prune = trainer.strategy.broadcast(prune, src=0)
        if prune:
            trainer.should_stop = True


def objective(result: dict[str, Any], best: BestMetric) -> float:
    """The value a sweep optimizes: the best per-epoch ``best.monitor`` of the run, or the final
    evaluation's value of that metric (``val/mAP50`` -> ``mAP50``), whichever is larger; 0.0 when
    neither exists (no validation ran)."""
    key = best.monitor.split("/", 1)[-1]
    final = result.get(key)
    values = [v for v in (best.value, final) if isinstance(v, (int, float)) and math.isfinite(v)]
    return float(max(values)) if values else 0.0


class SweepDir(HydraCallback):
    """Hydra callback (``hydra.callbacks``): create the sweep directory when a multirun starts,
    before the sweeper opens its SQLite study there (the launcher makes it only later)."""

    def on_multirun_start(self, config: Any, **_: Any) -> None:
        Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
