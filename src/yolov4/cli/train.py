"""``python train.py``: compose the config, fit, validate, write the run directory.

Run directory (``paths.output_dir``): ``checkpoints/last.ckpt, best.ckpt`` (exact resume),
``weights/best.pt, last.pt`` (strict weights), ``metrics.json`` (final COCO metrics of the
weights in ``weights/last.pt``), ``confusion_matrix.json/.png``, ``pr_f1.json/.png``,
``darknet_map.json``, ``errors.json/.png`` and ``worst_images.json/.png`` (the same detections,
``analysis.*``), ``export/`` (serving artifact of ``weights/best.pt``), ``tensorboard/``.
"""

from __future__ import annotations

import logging
from inspect import signature
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig

from yolov4.cli.common import build, build_all, build_partial, model_config, model_stride
from yolov4.cli.evaluate import check_analysis, write_analysis
from yolov4.cli.export import EXPORT_DIR
from yolov4.evaluation.worst import val_image_files
from yolov4.export.artifact import export_artifact
from yolov4.training.callbacks import BEST_WEIGHTS, LAST_WEIGHTS, METRICS_FILE, write_json
from yolov4.training.module import YoloModule
from yolov4.training.resume import check_resume_fits, read_resume_checkpoint

__all__ = ["train", "hydra_main"]

log = logging.getLogger(__name__)


def train(cfg: DictConfig, extra_callbacks: list[L.Callback] | None = None) -> dict[str, Any]:
    """Fit and validate; returns the final metrics (also written to ``metrics.json``).
    ``extra_callbacks`` are added to those of ``cfg.callbacks`` (programmatic use)."""
    L.seed_everything(cfg.seed, workers=True)
    check_analysis(cfg.get("analysis"))  # the reports written at the end: fail now, not then
    # resume: a local Lightning checkpoint, read without running pickled code, before any work
    resume = read_resume_checkpoint(cfg.ckpt_path) if cfg.ckpt_path is not None else None
    augment = build(cfg, "augment")
    # input sides, multi-scale ones included, are multiples of the network's largest stride
    datamodule = build(cfg, "data", augment=augment, size_multiple=model_stride(cfg))
    datamodule.prepare_data()
    module: YoloModule = build_partial(
        cfg,
        "module",
        model=model_config(cfg, datamodule.num_classes),
        optim=build(cfg, "optim"),
        class_names=datamodule.class_names,
        category_ids=datamodule.category_ids,
        preprocess=datamodule.preprocess_config.to_dict(),
    )
    ckpt_path = None
    if resume is not None:
        check_resume_fits(*resume, module.model)
        ckpt_path, resume = str(resume[0]), None  # drop the tensors: Lightning reads the file
    loggers = build_all(cfg, "logger")
    callbacks = [*build_all(cfg, "callbacks"), *(extra_callbacks or [])]
    if not loggers:  # logger=none: nothing to monitor the lr into (Lightning would refuse)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: L.Trainer = build(cfg, "trainer", callbacks=callbacks, logger=loggers or False)
    # weights_only=True explicitly (Lightning >= 2.6): torch lets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD
    # override only an unset weights_only; older Lightning rely on the check above
    safe = {"weights_only": True} if "weights_only" in signature(trainer.fit).parameters else {}
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, **safe)
    if module.evaluation is None or trainer.current_epoch % max(
        trainer.check_val_every_n_epoch or 1, 1
    ):
        trainer.validate(module, datamodule=datamodule, verbose=False)
    result = module.evaluation
    metrics = result.to_dict()
    if trainer.is_global_zero:
        out = Path(cfg.paths.output_dir)
        write_json(out / METRICS_FILE, metrics)
        # the analysis files of the final validation (every rank's detections, deduplicated)
        write_analysis(
            out, datamodule.val_coco, result, cfg.get("analysis"), val_image_files(datamodule)
        )
        if cfg.get("export"):
            weights = out / (BEST_WEIGHTS if cfg.export.weights == "best" else LAST_WEIGHTS)
            formats = list(cfg.export.formats)
            export_artifact(
                weights if weights.is_file() else out / LAST_WEIGHTS,
                out / EXPORT_DIR,
                formats=formats,
            )
        log.info(
            "final validation (EMA weights: %s):\n%s",
            module.ema is not None,
            result.summary,
        )
        log.info("run directory: %s", out)
    return metrics


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def hydra_main(cfg: DictConfig) -> float:
    return float(train(cfg)["mAP"] or 0.0)


if __name__ == "__main__":
    hydra_main()
