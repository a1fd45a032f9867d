"""Experiment trackers (``logger=mlflow``, ``logger=wandb``, or several: ``logger=[tensorboard,mlflow]``).

Lightning sends every logger the same metrics (``train/*``, ``val/*``, ``lr-*``), and
:func:`log_reports` the final evaluation (``metrics.json``) as ``final/<name>``. On top of
that, :func:`log_config` records the run's composed config (flattened as parameters, and whole
as ``config.yaml``), and :func:`log_reports` the run directory's reports once the final
evaluation has written them (``metrics.json``, ``confusion_matrix``, ``pr_f1``,
``darknet_map``, ``errors``, ``worst_images``: their ``.json`` and ``.png``) as artifacts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["mlflow_logger", "csv_logger", "log_config", "log_reports", "REPORTS", "flatten"]

log = logging.getLogger(__name__)

REPORTS = (
    "metrics.json",
    "confusion_matrix.json",
    "confusion_matrix.png",
    "pr_f1.json",
    "pr_f1.png",
    "darknet_map.json",
    "errors.json",
    "errors.png",
    "worst_images.json",
    "worst_images.png",
)


def mlflow_logger(tracking_uri: str | None = None, **kwargs: Any) -> Any:
    """Lightning's ``MLFlowLogger``; a local file store (``file:...``) is allowed explicitly
    (MLflow 3 refuses one unless ``MLFLOW_ALLOW_FILE_STORE=true``: its database store needs
    SQLAlchemy 2, which the Optuna 2 sweeper's storage cannot use)."""
    import os

    from lightning.pytorch.loggers import MLFlowLogger

    if tracking_uri is None or tracking_uri.startswith("file:") or "://" not in tracking_uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MLFlowLogger(tracking_uri=tracking_uri, **kwargs)


def csv_logger(**kwargs: Any) -> Any:
    """Lightning's ``CSVLogger`` (same arguments) whose ``metrics.csv`` survives a resume.

    Lightning's writer deletes an existing ``metrics.csv`` when it starts, so a resumed run's
    file held only the steps since the resume. This one keeps the file: at its first write it
    drops the rows after the first step it writes (what the stopped run logged past its
    checkpoint, trained again now) and appends, the header being the union of both."""
    import csv

    from lightning.pytorch.loggers import CSVLogger
    from lightning.pytorch.loggers.csv_logs import ExperimentWriter

    class KeptWriter(ExperimentWriter):
        def _check_log_dir_exists(self) -> None:
            self._earlier = self._fs.isfile(self.metrics_file_path)

        def save(self) -> None:
            if getattr(self, "_earlier", False) and self.metrics:
                self._earlier = False
                first = min(m["step"] for m in self.metrics)
                with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                    reader = csv.DictReader(f)
                    keys = list(reader.fieldnames or [])
                    rows = [r for r in reader if _step(r) <= first]
                self.metrics_keys = sorted(set(keys))
                with self._fs.open(self.metrics_file_path, "w", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=self.metrics_keys)
                    writer.writeheader()
                    writer.writerows(rows)
            super().save()

    class KeptCSVLogger(CSVLogger):
        @property
        def experiment(self) -> Any:
            if self._experiment is None:
                self._fs.makedirs(self.root_dir, exist_ok=True)
                self._experiment = KeptWriter(log_dir=self.log_dir)
            return self._experiment

    return KeptCSVLogger(**kwargs)


def _step(row: Mapping[str, str]) -> float:
    try:
        return float(row.get("step") or 0)
    except ValueError:
        return 0.0


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a.b.c": value}`` of a nested config (lists kept as values)."""
    if isinstance(node, Mapping) and node:
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def _kind(logger: Any) -> str | None:
    name = type(logger).__name__
    return {"MLFlowLogger": "mlflow", "WandbLogger": "wandb"}.get(name)


def log_config(loggers: Sequence[Any], config: Mapping[str, Any]) -> None:
    """The composed config (a resolved plain dict) on every MLflow / W&B logger."""
    import yaml

    for logger in loggers:
        kind = _kind(logger)
        if kind == "mlflow":
            logger.log_hyperparams({k: str(v) for k, v in flatten(config).items()})
            logger.experiment.log_text(logger.run_id, yaml.safe_dump(dict(config)), "config.yaml")
        elif kind == "wandb":
            _wandb_run(logger).config.update(dict(config), allow_val_change=True)


def _wandb_run(logger: Any) -> Any:
    """The W&B run of ``logger``, started here; W&B's refusal to start one (no API key, no
    network) a :class:`ConfigError` saying how to log without it."""
    import wandb

    try:
        return logger.experiment
    except (wandb.errors.UsageError, wandb.errors.CommError) as e:
        from yolov4.errors import ConfigError

        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"logger=wandb: W&B cannot start a run ({reason}); log in (wandb login, or "
            "WANDB_API_KEY), or write the run to files with logger.wandb.offline=true "
            "(wandb sync uploads it later)"
        ) from None


def _numbers(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {
        f"final/{k}": float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def log_reports(
    loggers: Sequence[Any], run_dir: Path, metrics: Mapping[str, Any], step: int = 0
) -> None:
    """``metrics`` (the final evaluation) as ``final/*`` on every logger, at optimizer step
    ``step`` (the run's last), apart from the ``val/*`` curves of the fit's epochs; on MLflow /
    W&B loggers also the reports of ``run_dir`` as artifacts, and the W&B run is finished (its
    summary written)."""
    files = [run_dir / name for name in REPORTS if (run_dir / name).is_file()]
    final = _numbers(metrics)
    for logger in loggers:
        kind = _kind(logger)
        if kind is None:  # TensorBoard, CSV, ...: written out now, the fit's loggers are done
            logger.log_metrics(final, step=step)
            logger.finalize("success")
        elif kind == "mlflow":
            client, run_id = logger.experiment, logger.run_id
            for name, value in final.items():
                client.log_metric(run_id, name, value)
            for path in files:
                client.log_artifact(run_id, str(path), artifact_path="reports")
            log.info("mlflow run %s: %d reports logged", run_id, len(files))
        elif kind == "wandb":
            run = logger.experiment
            run.summary.update(final)
            for path in files:
                run.save(str(path), base_path=str(run_dir), policy="now")
            log.info("wandb run %s: %d reports saved", run.id, len(files))
            run.finish()
