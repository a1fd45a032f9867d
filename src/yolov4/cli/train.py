"""``python train.py``: compose the config, fit, validate, write the run directory.

Run directory (``paths.output_dir``): ``checkpoints/last.ckpt, best.ckpt`` (exact resume; one
hard-linked file while they hold the same state), ``weights/best.pt, last.pt`` (strict weights,
likewise), ``export/`` (serving artifact of ``weights/best.pt``, ``export.weights``),
``weights/best.cfg, best.weights`` (the same network as darknet files, ``darknet_files``),
``metrics.json`` (the final COCO metrics of those exported weights, and which file and epoch
they are: ``"weights"``), ``confusion_matrix.json/.png``, ``pr_f1.json/.png``,
``darknet_map.json``, ``errors.json/.png`` and ``worst_images.json/.png`` (the same detections,
``analysis.*``), ``tensorboard/``.

Resume (``ckpt_path=``): see :mod:`yolov4.cli.resume` (the run's config, the overrides given
of the command, refused changes) and :mod:`yolov4.training.resume` (the checkpoint's checks).
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from inspect import signature
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.trainer.states import TrainerStatus
from omegaconf import DictConfig, OmegaConf

from yolov4.cli import resume as resume_cli
from yolov4.cli.common import (
    INTERRUPTED_EXIT,
    build,
    build_all,
    build_partial,
    holding_folder,
    model_config,
    model_network,
    model_stride,
    one_line_errors,
    to_builtin,
    warn_without_ground_truth,
)
from yolov4.cli.data_config import build_data, recorded_data
from yolov4.cli.export import EXPORT_DIR
from yolov4.cli.train_checks import check_limits, log_short_runs
from yolov4.core.checkpoint import load_checkpoint
from yolov4.core.files import write_json
from yolov4.evaluation import METRICS_FILE, AnalysisConfig, EvaluationResult
from yolov4.evaluation.reports import write_analysis
from yolov4.evaluation.worst import val_image_files
from yolov4.export.artifact import export_artifact
from yolov4.models.region import check_trainable
from yolov4.training.anchors import anchors_at_start, run_overrides
from yolov4.training.callbacks import (
    BEST_WEIGHTS,
    LAST_WEIGHTS,
    AtomicCheckpointIO,
    WeightsCallback,
    last_checkpoint,
)
from yolov4.training.cfg_settings import log_cfg_classes, log_cfg_settings
from yolov4.training.darknet_files import (
    DARKNET_FILES_AUTO,
    darknet_files_wanted,
    write_darknet_files,
)
from yolov4.training.early_stop import EarlyStoppingResume, log_early_stop
from yolov4.training.epoch_log import progress_bars
from yolov4.training.module import YoloModule
from yolov4.training.noise import quiet_lightning, rank_zero_logger
from yolov4.training.nominal_batch import set_accumulation
from yolov4.training.precision import (
    AUTO,
    check_accelerator,
    ran_precision_note,
    resolve_precision,
)
from yolov4.training.requeue import (
    Requeue,
    Requeued,
    launcher_topology,
    requeue_checkpoint,
)
from yolov4.training.resume import (
    check_resume_fits,
    check_saved_cfg_file,
    read_resume_checkpoint,
)
from yolov4.training.sweep import (
    BestMetric,
    check_monitor,
    objective,
)
from yolov4.training.tracking import log_config, log_reports

__all__ = ["train", "run_objective", "hydra_main"]

log = rank_zero_logger(__name__)  # the same in every process: rank 0's


def _stopped_by_ctrl_c(e: BaseException, trainer: L.Trainer) -> bool:
    """Whether ``e`` ended the fit on a Ctrl-C that saved nothing: Lightning's exit after a
    ``KeyboardInterrupt``, or an error raised while one was handled (torch's checkpoint writer
    turns one that lands inside a write into a ``RuntimeError``; the file is not replaced)."""
    if trainer.state.status != TrainerStatus.INTERRUPTED:
        return False
    cause: BaseException | None = e
    while cause is not None:
        if isinstance(cause, Requeued):  # saved: requeue.ckpt
            return False
        if isinstance(cause, (SystemExit, KeyboardInterrupt)):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


def _fit(trainer: L.Trainer, module: Any, datamodule: Any, ckpt_path: Any, safe: dict) -> None:
    """``trainer.fit``; Ctrl-C where the run cannot stop after a step (its sanity check, a
    second Ctrl-C) exits 130 naming the checkpoint to resume from, not Lightning's bare 1."""
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, **safe)
    except BaseException as e:
        if not _stopped_by_ctrl_c(e, trainer):
            raise
        last = last_checkpoint(trainer)
        log.warning(
            "stopped (Ctrl-C) at step %d without saving: %s",
            trainer.global_step,
            f"python train.py ckpt_path={last} resumes from the last checkpoint"
            if last
            else "no checkpoint was written yet",
        )
        raise SystemExit(INTERRUPTED_EXIT) from None


def _same_file(a: Path, b: Path) -> bool:
    """``a`` and ``b`` are one file (a path, or a hard link: a requeue.ckpt made in the final
    phase is ``last.ckpt``)."""
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    except OSError:
        return False


def train(cfg: DictConfig, extra_callbacks: list[L.Callback] | None = None) -> dict[str, Any]:
    """Fit and validate; returns the final metrics (also written to ``metrics.json``).
    ``extra_callbacks`` are added to those of ``cfg.callbacks`` (programmatic use). The run's
    folder (``paths.output_dir``, Hydra's timestamped one when ``hydra.run.dir`` is not given)
    is held while it runs: a resume of it meanwhile (``ckpt_path=``) is refused as in use."""
    with holding_folder(cfg.paths.output_dir, "the run's folder "):
        return _train(cfg, extra_callbacks)


def _checkpoint_to_resume(cfg: DictConfig) -> Any:
    """``ckpt_path``, or the run's ``requeue.ckpt`` (saved when its job was stopped mid-epoch)
    when none is given; a warning when both are there and differ (the steps since
    ``ckpt_path`` are trained again). ``None``: the run starts anew."""
    requeued = requeue_checkpoint(cfg.get("callbacks"))
    ckpt = cfg.ckpt_path if cfg.ckpt_path is not None else requeued
    if requeued is not None and not _same_file(Path(str(ckpt)), requeued):
        log.warning(
            "%s, saved when the run was stopped mid-epoch, is not the checkpoint resumed "
            "(ckpt_path=%s): the steps since that checkpoint are trained again; "
            "ckpt_path=%s resumes where the run stopped",
            requeued, ckpt, requeued,
        )  # fmt: skip
    return ckpt


def _train(cfg: DictConfig, extra_callbacks: list[L.Callback] | None) -> dict[str, Any]:
    ckpt = _checkpoint_to_resume(cfg)
    quiet_lightning(resuming=ckpt is not None)
    for line in resume_cli.RESUME_LOG:
        log.info("%s", line)
    check_limits(cfg)
    check_accelerator(cfg.trainer)
    precision = resolve_precision(cfg.trainer.get("precision"), cfg.trainer.get("accelerator"))
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    analysis = AnalysisConfig.from_config(cfg.get("analysis"))  # reports at the end: fail now
    darknet_files = darknet_files_wanted(
        cfg.get("darknet_files", DARKNET_FILES_AUTO), cfg.model.get("cfg")
    )
    # resume: a local Lightning checkpoint, read without running pickled code, before any work
    if ckpt is not None and cfg.ckpt_path is None:
        log.info("resume of the requeued run from %s", ckpt)
    resume = read_resume_checkpoint(ckpt) if ckpt is not None else None
    if resume is not None:
        check_saved_cfg_file(cfg.model.get("cfg"), resume[1])
    check_trainable(model_network(cfg))  # [region], [Gaussian_yolo] networks: inference only
    augment = build(cfg, "augment")
    # input sides, multi-scale ones included, are multiples of the network's largest stride
    datamodule = build_data(
        cfg, writes_weights=True, augment=augment, size_multiple=model_stride(cfg)
    )
    datamodule.prepare_data()
    warn_without_ground_truth(datamodule, training=True)
    # model.anchors=auto|fit resolved on data.train; the anchors checked against its boxes
    model, _ = anchors_at_start(
        model_config(cfg, datamodule.num_classes), datamodule, run_overrides(), cfg.seed
    )
    module: YoloModule = build_partial(
        cfg,
        "module",
        model=model,
        optim=build(cfg, "optim"),
        class_names=datamodule.class_names,
        category_ids=datamodule.category_ids,
        preprocess=datamodule.preprocess_config.to_dict(),
        data=recorded_data(cfg.data),  # recorded in every checkpoint: what evaluate.py scores
    )
    ckpt_path = None
    if resume is not None:
        check_resume_fits(*resume, module.model, datamodule.class_names)
        ckpt_path, resume = str(resume[0]), None  # drop the tensors: Lightning reads the file
    network, value_of = model_network(cfg), lambda key: to_builtin(OmegaConf.select(cfg, key))
    log_cfg_classes(network, module.model.num_classes, value_of)
    log_cfg_settings(network, value_of)
    trainer = build_trainer(cfg, precision, extra_callbacks)
    log_short_runs(cfg, datamodule, trainer)
    log_what_runs(cfg, trainer, module, datamodule)
    if trainer.is_global_zero:
        log_config(trainer.loggers, to_builtin(cfg))
    # weights_only=True explicitly (Lightning >= 2.6): torch lets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD
    # override only an unset weights_only; older Lightning rely on the check above
    safe = {"weights_only": True} if "weights_only" in signature(trainer.fit).parameters else {}
    _fit(trainer, module, datamodule, ckpt_path, safe)
    log_early_stop(trainer)
    # a requeue signal from here on: requeue.ckpt is the fit's last checkpoint (nothing to train)
    requeue = next((c for c in trainer.callbacks if isinstance(c, Requeue)), None)
    with requeue.final_phase(trainer) if requeue is not None else nullcontext():
        result, weights = final_evaluation(cfg, trainer, module, datamodule)
        metrics = {**result.to_dict(), "weights": weights}
        if trainer.is_global_zero:
            write_outputs(cfg, trainer, datamodule, analysis, result, metrics, darknet_files)
    return metrics


def build_trainer(
    cfg: DictConfig, precision: Any, extra_callbacks: list[L.Callback] | None = None
) -> L.Trainer:
    """``cfg.trainer`` with the loggers and callbacks of ``cfg`` (and ``extra_callbacks``), the
    progress bar of :func:`~yolov4.training.epoch_log.progress_bars`, the resolved
    ``precision``, atomic checkpoint writes and the submitit launcher's topology; its
    ``accumulate_grad_batches`` set for the run's ``nominal_batch`` once its world size is known
    (:func:`~yolov4.training.nominal_batch.set_accumulation`)."""
    loggers = build_all(cfg, "logger")
    callbacks = [*build_all(cfg, "callbacks"), *(extra_callbacks or []), EarlyStoppingResume()]
    if not loggers:  # logger=none: nothing to monitor the lr into (Lightning would refuse)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    # the epoch named as the log's epoch lines name it (Epoch 3/8, also under max_steps)
    callbacks += progress_bars(callbacks, cfg.trainer.get("enable_progress_bar") is not False)
    # under the submitit launcher a job's processes are its tasks: trainer.num_nodes/devices
    topology = launcher_topology()
    if topology:
        log.info("submitit launcher: %s", topology)
    trainer = build(
        cfg,
        "trainer",
        callbacks=callbacks,
        logger=loggers or False,
        precision=precision,
        plugins=[AtomicCheckpointIO()],  # checkpoints renamed into place beside themselves
        accumulate_grad_batches=1,  # set below: it depends on trainer.world_size
        **topology,
    )
    set_accumulation(cfg, trainer)
    return trainer


def write_outputs(
    cfg: DictConfig,
    trainer: L.Trainer,
    datamodule: Any,
    analysis: AnalysisConfig,
    result: EvaluationResult,
    metrics: dict[str, Any],
    darknet_files: bool = False,
) -> None:
    """Rank 0's end of the run: the analysis files, the export artifact of
    ``metrics["weights"]`` (with ``cfg.export``), its darknet ``.cfg`` and ``.weights`` beside
    it (``darknet_files``; a warning instead when they cannot be written), then
    ``metrics.json`` (a run without it did not finish), the final evaluation in the log and
    loggers."""
    out = Path(cfg.paths.output_dir)
    weights = metrics["weights"]
    # the analysis files of the final validation (every rank's detections, deduplicated)
    files = val_image_files(datamodule)
    write_analysis(out, datamodule.val_coco, result, analysis, files, datamodule.val_image)
    if cfg.get("export"):
        export_artifact(out / weights["file"], out / EXPORT_DIR, formats=list(cfg.export.formats))
    if darknet_files:  # darknet's seen: the images the weights file records trained on
        write_darknet_files(out / weights["file"])
    # last: a run with metrics.json has finished; one without it (stopped after its last
    # epoch) is finished by its resume (yolov4.cli.resume_refusals.refuse_finished)
    write_json(out / METRICS_FILE, metrics)
    log.info(
        "final evaluation of %s (epoch %s, step %s, %s weights), what %s holds:\n%s",
        weights["file"],
        weights["epoch"] + 1,  # 1-based, as the epoch's line (metrics.json keeps Lightning's)
        weights["step"],
        "EMA" if weights["ema"] else "trained",
        f"{EXPORT_DIR}/" if cfg.get("export") else "the file",
        result.summary,
    )
    log_reports(trainer.loggers, out, metrics, step=trainer.global_step)
    log.info("run directory: %s", out)


def log_what_runs(cfg: DictConfig, trainer: L.Trainer, module: YoloModule, datamodule: Any) -> None:
    """One line for the network, classes, input, parameters and precision (in place of
    Lightning's model table); a warning when the trainer runs another precision than asked."""
    asked = cfg.trainer.get("precision")  # auto: resolved and logged by resolve_precision
    note = ran_precision_note(asked, str(trainer.precision), type(trainer.accelerator).__name__)
    if note and str(asked) != AUTO:
        log.warning(note)
    log.info(
        "%s, %d classes, input %s: %.1f M parameters%s; %s",
        module.model.config.name,
        module.model.num_classes,
        "x".join(map(str, datamodule.preprocess_config.input_size)),
        sum(p.numel() for p in module.model.parameters()) / 1e6,
        " (+ their EMA)" if module.ema is not None else "",
        trainer.precision,
    )


def final_evaluation(
    cfg: DictConfig, trainer: L.Trainer, module: YoloModule, datamodule: Any
) -> tuple[EvaluationResult, dict[str, Any]]:
    """The evaluation of the weights the run exports: ``weights/best.pt`` (``export.weights``;
    ``last.pt`` when no validation ran during the fit), re-validated with the file's weights
    unless the latest validation scored exactly them (the same step). Returns the result and
    ``{"file", "epoch", "step", "ema"}`` of the file (epoch 0-based, as Lightning counts)."""
    out = Path(cfg.paths.output_dir)
    last = cfg.get("export") and cfg.export.get("weights") == "last"
    name = LAST_WEIGHTS if last else BEST_WEIGHTS
    if not any(isinstance(c, WeightsCallback) for c in trainer.callbacks):
        # callbacks=none, callbacks.weights=null: the weights as the fit ends
        if trainer.is_global_zero:
            log.info(
                "no weights callback in callbacks: writing %s of the final model", LAST_WEIGHTS
            )
            WeightsCallback(out).save(trainer, module, LAST_WEIGHTS)
    trainer.strategy.barrier("final evaluation")  # rank 0 wrote the file
    if not (out / name).is_file():
        name = LAST_WEIGHTS
    ckpt = load_checkpoint(out / name)
    step = ckpt.trained.get("step")
    if module.evaluation is None or module.evaluated_step != step:
        module.eval_model.load_state_dict(ckpt.model.state_dict(), strict=True)
        # without the loggers: their val/* curves are the fit's epochs (write_outputs logs
        # this evaluation as final/*)
        loggers, trainer.loggers = trainer.loggers, []
        try:
            trainer.validate(module, datamodule=datamodule, verbose=False)
        finally:
            trainer.loggers = loggers
    weights = {
        "file": name,
        "epoch": ckpt.trained.get("epoch"),
        "step": step,
        "ema": bool(ckpt.trained.get("ema")),
    }
    return module.evaluation, weights


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
@one_line_errors
def _app(cfg: DictConfig) -> float:
    return run_objective(cfg)


def run_objective(cfg: DictConfig) -> float:
    """:func:`train`, returning the value a sweep optimizes (Hydra hands it to the sweeper): the
    best per-epoch value of ``cfg.objective`` (``val/mAP50``), see
    :func:`yolov4.training.sweep.objective`."""
    best = BestMetric(check_monitor(cfg.get("objective") or "val/mAP50", "objective"))
    value = objective(train(cfg, extra_callbacks=[best]), best)
    log.info("objective %s: %.6g", best.monitor, value)
    return value


def hydra_main() -> Any:
    """``python train.py ...``: Hydra's app, a resume (``ckpt_path=``) composed from the run's
    own config first (:func:`yolov4.cli.resume.resume_argv`)."""
    return resume_cli.main(_app)


if __name__ == "__main__":
    hydra_main()
