"""``python evaluate.py``: COCO mAP of a project checkpoint or a darknet weights file.

Writes to ``paths.output_dir``: ``metrics.json`` (:data:`METRIC_KEYS` + ``per_class``),
``detections.json`` (COCO results, original category ids, ``COCO.loadRes``-ready) and
``pr_curve.png``; prints COCOeval's 12-line summary and a per-class table.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf

from yolov4.cli.common import build, model_config
from yolov4.darknet import load_darknet_weights
from yolov4.errors import ConfigError
from yolov4.evaluation import METRIC_KEYS
from yolov4.evaluation.plots import plot_pr_curves
from yolov4.export.checkpoint import load_checkpoint
from yolov4.training.callbacks import METRICS_FILE, write_json
from yolov4.training.module import YoloModule

__all__ = ["evaluate", "hydra_main", "DETECTIONS_FILE", "PR_CURVE_FILE"]

log = logging.getLogger(__name__)

DETECTIONS_FILE = "detections.json"
PR_CURVE_FILE = "pr_curve.png"


def per_class_table(per_class: dict[str, dict[str, float]]) -> str:
    width = max([len(n) for n in per_class] + [5])
    lines = [f"{'class':<{width}}  {'AP':>6}  {'AP50':>6}"]
    lines += [f"{n:<{width}}  {v['AP']:6.3f}  {v['AP50']:6.3f}" for n, v in per_class.items()]
    return "\n".join(lines)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    sources = [k for k in ("checkpoint", "darknet_weights") if cfg.get(k)]
    if len(sources) != 1:
        raise ConfigError(
            f"give exactly one of checkpoint=... or darknet_weights=..., got {sources or 'none'}"
        )
    data_overrides: dict[str, Any] = {"augment": None, "val_batch_size": cfg.batch_size}
    if cfg.checkpoint:
        ckpt = load_checkpoint(cfg.checkpoint)
        model_dict, state = ckpt.model.config.to_dict(), ckpt.model.state_dict()
        if ckpt.preprocess:  # evaluate exactly as the model was validated in training
            data_overrides.update(
                input_size=ckpt.preprocess["input_size"], resize_mode=ckpt.preprocess["mode"]
            )
    datamodule = build(cfg, "data", **data_overrides)
    datamodule.prepare_data()
    if cfg.darknet_weights:
        model_dict = model_config(cfg, datamodule.num_classes)
        data_overrides.update(resize_mode=cfg.darknet_resize_mode)
        datamodule = build(cfg, "data", **data_overrides)
    elif model_dict["num_classes"] != datamodule.num_classes:
        raise ConfigError(
            f"the checkpoint has num_classes={model_dict['num_classes']} but data has "
            f"{datamodule.num_classes} classes {datamodule.class_names}"
        )
    module = YoloModule(
        model=model_dict,
        class_names=datamodule.class_names,
        category_ids=datamodule.category_ids,
        preprocess=datamodule.preprocess_config.to_dict(),
        ema_decay=None,
        eval=OmegaConf.to_container(cfg.eval, resolve=True),
    )
    if cfg.darknet_weights:
        load_darknet_weights(module.model, cfg.darknet_weights)
    else:
        module.model.load_state_dict(state, strict=True)
    trainer: L.Trainer = build(cfg, "trainer")
    trainer.validate(module, datamodule=datamodule, verbose=False)
    metrics = {k: module.last_metrics[k] for k in (*METRIC_KEYS, "per_class", "num_images")}
    if trainer.is_global_zero:
        out = Path(cfg.paths.output_dir)
        write_json(out / METRICS_FILE, metrics)
        (out / DETECTIONS_FILE).write_text(json.dumps(module.last_results))
        if module.last_precision is not None:
            plot_pr_curves(module.last_precision, list(metrics["per_class"]), out / PR_CURVE_FILE)
        print(module.last_metrics["summary"])
        print(per_class_table(metrics["per_class"]))
        log.info("wrote %s, %s, %s in %s", METRICS_FILE, DETECTIONS_FILE, PR_CURVE_FILE, out)
    return metrics


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate")
def hydra_main(cfg: DictConfig) -> float:
    return float(evaluate(cfg)["mAP"])
