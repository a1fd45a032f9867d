"""``python evaluate.py``: COCO mAP of a project checkpoint, a darknet weights file or an export
artifact (through the Predictor, exactly as the service would answer, on the val images as
validation reads them).

Writes the reports of :func:`yolov4.evaluation.reports.write_reports` to ``paths.output_dir``
(``metrics.json``, ``detections.json``, ``pr_curve.png`` and the analysis at ``analysis.*``,
:class:`~yolov4.evaluation.AnalysisConfig`); prints COCOeval's 12-line summary and a
per-class table.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import hydra
import lightning as L
from omegaconf import DictConfig, OmegaConf, open_dict

from yolov4.cli.common import (
    NO_ACCUMULATION,
    build,
    build_partial,
    check_override_syntax,
    model_config,
    model_network,
    one_line_errors,
    rank_log_argv,
    to_builtin,
    warn_without_ground_truth,
)
from yolov4.cli.data_config import build_data, check_data_file, data_argv, resolve_data
from yolov4.cli.sources import check_no_network, check_runtime_keys
from yolov4.core.artifact import read_metadata
from yolov4.core.checkpoint import load_checkpoint
from yolov4.darknet import darknet_file_classes
from yolov4.errors import ConfigError, DatasetError
from yolov4.evaluation import AnalysisConfig, EvaluationResult, evaluate_predictor
from yolov4.evaluation.coco import DEFAULT_COCO_BACKEND
from yolov4.evaluation.reports import write_reports
from yolov4.evaluation.worst import val_image_files
from yolov4.inference import Predictor
from yolov4.inference.darknet import darknet_preprocess
from yolov4.inference.darknet import darknet_resize_mode as resize_mode_of
from yolov4.models import ModelConfig
from yolov4.training.anchors import run_overrides
from yolov4.training.module import YoloModule
from yolov4.training.noise import quiet_lightning, rank_zero_logger
from yolov4.training.precision import ran_precision_note, resolve_precision

__all__ = ["evaluate", "hydra_main", "darknet_resize_mode"]

log = rank_zero_logger(__name__)  # the same in every process: rank 0's
MAX_NAMES_SHOWN = 10  # differing class names listed by the warning
MAX_FILES_SHOWN = 3  # skipped images named by the error of a run that scored none


def _check_classes(what: str, names: list[str], datamodule: Any) -> list[int]:
    """The model's classes against the val split's: another count is a :class:`ConfigError`;
    the same names in another order are scored by name (a dataset re-exported with other
    category ids), logged; other names in the same count are scored index for index with a
    warning naming them. Returns the category id each model class index is scored as."""
    if len(names) != datamodule.num_classes:
        raise ConfigError(
            f"the {what} has num_classes={len(names)} but data has "
            f"{datamodule.num_classes} classes {datamodule.class_names}"
        )
    unnamed = names == [str(i) for i in range(len(names))]  # saved without names: no claim
    theirs = list(datamodule.class_names)
    if names != theirs and sorted(names) == sorted(theirs) and len(set(names)) == len(names):
        log.info(
            "the %s's classes are the data's in another order: scored by name (%s)",
            what,
            "; ".join(f"{i}: {n!r} is data's {theirs.index(n)}" for i, n in enumerate(names)),
        )
        return [datamodule.category_ids[theirs.index(n)] for n in names]
    differ = (
        []
        if unnamed
        else [
            f"{i}: {ours!r} vs {theirs!r}"
            for i, (ours, theirs) in enumerate(zip(names, datamodule.class_names, strict=True))
            if ours != theirs
        ]
    )
    if differ:
        log.warning(
            "the %s's class names differ from the data's (scored index for index; is it the "
            "right dataset?): %s",
            what,
            "; ".join(differ[:MAX_NAMES_SHOWN]) + (" ..." if len(differ) > MAX_NAMES_SHOWN else ""),
        )
    return list(datamodule.category_ids)


def _warn_preprocess_not_used(cfg: DictConfig, preprocess: Any, source: str) -> None:
    """A warning when the command's ``data.input_size`` / ``data.resize_mode`` ask for other
    preprocessing than the checkpoint's or artifact's (``preprocess``), which is what it is
    scored with (as it trained and as it exports); a data group's own default
    (``data=yolo``'s 416) is not the user's ask."""
    given = {o.lstrip("+").split("=", 1)[0] for o in run_overrides()}
    stored = {"input_size": list(preprocess.input_size), "resize_mode": preprocess.mode}
    asked = {k: to_builtin(cfg.data.get(k)) for k in stored if f"data.{k}" in given}
    if isinstance(asked.get("input_size"), int):
        asked["input_size"] = [asked["input_size"]] * 2
    differ = [f"data.{k}={v}" for k, v in asked.items() if v not in (None, stored[k])]
    if differ:
        log.warning(
            "%s: not used; %s is scored with its own preprocessing (input %s, %s), the one "
            "its run trained and exported with (export.py input_size=... makes an artifact of "
            "another size, which evaluate.py artifact=... scores)",
            ", ".join(differ),
            source,
            "x".join(map(str, stored["input_size"])),
            stored["resize_mode"],
        )


def _evaluate_artifact(
    cfg: DictConfig, eval_cfg: dict[str, Any]
) -> tuple[EvaluationResult, Any, dict[str, str]]:
    """Through the Predictor, on the val images as validation reads them (each in its ground
    truth's frame and size, :func:`~yolov4.evaluation.evaluate_predictor`): what the service
    would answer for those pixels. Returns the result, the (prepared) DataModule of the val
    split, whose ground truth and images the reports read, and what was scored (``{"file",
    "backend", "precision"}``)."""
    predictor = Predictor.from_artifact(
        cfg.artifact, backend=cfg.backend, precision=cfg.get("precision")
    )
    weights = {
        "file": str(Path(cfg.artifact) / str(predictor.model_file)),
        "backend": predictor.backend.name,
        "precision": predictor.precision,
    }
    log.info("evaluating %(file)s in %(backend)s, %(precision)s", weights)
    pre = predictor.preprocess_config  # the artifact's own, which the Predictor applies
    _warn_preprocess_not_used(cfg, pre, cfg.artifact)
    datamodule = build_data(
        cfg, augment=None, preprocess=pre.to_dict(), input_size=list(pre.input_size),
        resize_mode=pre.mode,
    )  # fmt: skip
    datamodule.prepare_data()
    category_ids = _check_classes("artifact", list(predictor.class_names), datamodule)
    warn_without_ground_truth(datamodule)
    records = datamodule.split("val").records
    coco_backend = cfg.module.get("coco_backend", DEFAULT_COCO_BACKEND)
    result = evaluate_predictor(
        predictor, datamodule, records, cfg.batch_size, eval_cfg, coco_backend, category_ids
    )
    return result, datamodule, weights


def _report(
    out: Path, result: EvaluationResult, datamodule: Any, settings: AnalysisConfig, weights: Any
) -> None:
    """The reports of ``result`` on the val split of ``datamodule``, its images for the gallery
    read as validation reads them."""
    files = val_image_files(datamodule)
    write_reports(out, result, datamodule.val_coco, settings, files, weights, datamodule.val_image)


def _check_scored(result: EvaluationResult, datamodule: Any, out: Path) -> None:
    """A :class:`DatasetError` when no val image was scored: each one was skipped (it did not
    decode), so that the exit status says so; the reports are written before it."""
    files = val_image_files(datamodule)
    if result.num_images or not files:
        return
    n, shown = len(files), list(files.values())[:MAX_FILES_SHOWN]
    raise DatasetError(
        f"no val image could be scored: {'the 1 image' if n == 1 else f'all {n} images'} of "
        f"data.val were skipped ({', '.join(shown)}{' ...' if n > len(shown) else ''}); the "
        f"warnings above (and the run's log in {out}) say why for each, as does "
        f"yolov4-check-data with the same data; the empty evaluation's reports are in {out}"
    )


def _val_only(cfg: DictConfig) -> None:
    """Evaluation reads only the val split: drop ``data.train`` so that its mandatory keys
    (``data.train.annotations=???``) need no value on the command line."""
    if cfg.data.get("train", None) is not None:
        with open_dict(cfg):
            cfg.data.train = None


def darknet_resize_mode(cfg: DictConfig) -> str:
    """How ``darknet_weights=`` images are resized: ``cfg.darknet_resize_mode``, or when null as
    darknet trained the network (its cfg's ``[net] letter_box=1``: letterbox, else stretch)."""
    if cfg.darknet_resize_mode:
        return str(cfg.darknet_resize_mode)
    return resize_mode_of(model_network(cfg))


def _darknet_preprocess(cfg: DictConfig) -> dict[str, Any]:
    """The data overrides that feed ``darknet_weights=`` as darknet does (``detector map``): the
    cfg's ``[net]`` size unless the command gives ``data.input_size``, its resize mode
    (:func:`darknet_resize_mode`) and darknet's letterbox border; logged."""
    network = model_network(cfg)
    given = {o.lstrip("+").split("=", 1)[0] for o in run_overrides()}
    size = to_builtin(cfg.data.get("input_size")) if "data.input_size" in given else None
    if isinstance(size, int):
        size = [size, size]
    preprocess = darknet_preprocess(network, size, darknet_resize_mode(cfg))
    log.info(
        "darknet_weights: input %s (%s), %s",
        "x".join(map(str, preprocess["input_size"])),
        "data.input_size" if size else f"the cfg's [net] height and width of {network.name}",
        preprocess["mode"],
    )
    return {
        "preprocess": preprocess,
        "input_size": preprocess["input_size"],
        "resize_mode": preprocess["mode"],
        "size_multiple": network.max_stride,
    }


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """COCO evaluation of ``checkpoint=``, ``darknet_weights=`` or ``artifact=``; returns the
    ``metrics.json`` payload. Builds the network and the validation only: no loss, no EMA, no
    optimizer."""
    quiet_lightning()
    check_no_network(cfg)  # one source; model= with darknet_weights= only
    check_runtime_keys(cfg)
    if cfg.module.get("pretrained"):
        raise ConfigError(
            f"module.pretrained={cfg.module.pretrained}: evaluate takes its weights from "
            f"checkpoint=..., darknet_weights=... or artifact=..."
        )
    batch = cfg.get("batch_size")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, got {batch!r}")
    out = Path(cfg.paths.output_dir)
    settings = AnalysisConfig.from_config(cfg.get("analysis"))  # fails now, not after the work
    check_data_file(cfg)
    ckpt = load_checkpoint(cfg.checkpoint) if cfg.checkpoint else None
    source = cfg.checkpoint or cfg.darknet_weights or cfg.artifact
    recorded = ckpt.data if ckpt is not None else None
    if cfg.artifact:  # the run's data config, recorded at export
        recorded = (read_metadata(cfg.artifact).get("source") or {}).get("data")
    resolve_data(cfg, recorded, str(source))
    _val_only(cfg)
    if cfg.artifact:
        result, datamodule, weights = _evaluate_artifact(
            cfg, OmegaConf.to_container(cfg.module.val_postprocess, resolve=True)
        )
        _report(out, result, datamodule, settings, weights)
        datamodule.teardown("validate")  # no Trainer: the counts of what decoding found
        _check_scored(result, datamodule, out)
        return {**result.to_dict(), "weights": weights}
    data_overrides: dict[str, Any] = {"augment": None, "val_batch_size": cfg.batch_size}
    if ckpt is not None:
        model_dict, state = ckpt.model.config.to_dict(), ckpt.model.state_dict()
        data_overrides["size_multiple"] = ckpt.model.config.max_stride
        if ckpt.preprocess_stored:  # evaluate exactly as the model was validated in training
            _warn_preprocess_not_used(cfg, ckpt.preprocess, cfg.checkpoint)
            data_overrides.update(
                preprocess=ckpt.preprocess_dict(),  # all of it: pad value, colour order, scale
                input_size=list(ckpt.preprocess.input_size),
                resize_mode=ckpt.preprocess.mode,
            )
    else:  # darknet weights: fed as darknet feeds them (the cfg's size, letter_box, border)
        data_overrides.update(_darknet_preprocess(cfg))
    datamodule = build_data(cfg, **data_overrides)
    datamodule.prepare_data()
    if cfg.darknet_weights:
        model_dict = model_config(cfg, datamodule.num_classes)
        # a file of other classes would load all but its heads (fine-tuning): not evaluable
        network = ModelConfig.from_dict(model_dict)
        found = darknet_file_classes(network, cfg.darknet_weights)
        if found not in (None, network.num_classes):
            raise ConfigError(
                f"darknet_weights={cfg.darknet_weights} holds {network.name} weights for "
                f"{found} classes but data has {datamodule.num_classes} classes "
                f"{datamodule.class_names}; evaluate it on a dataset of its {found} classes"
            )
    category_ids, class_names = list(datamodule.category_ids), list(datamodule.class_names)
    if ckpt is not None:
        category_ids = _check_classes("checkpoint", list(ckpt.class_names), datamodule)
        if category_ids != list(datamodule.category_ids):  # the same names, another order
            class_names = list(ckpt.class_names)
    warn_without_ground_truth(datamodule)  # darknet weights, checkpoints
    module: YoloModule = build_partial(
        cfg,
        "module",
        model=model_dict,
        class_names=class_names,
        category_ids=category_ids,
        preprocess=datamodule.preprocess_config.to_dict(),
        ema_decay=None,  # the weights as they are (a .ckpt's EMA was taken by load_checkpoint)
        pretrained=cfg.darknet_weights or None,  # darknet: every layer of the file, checked
        pretrained_backbone_only=False,
    )
    if cfg.checkpoint:
        module.model.load_state_dict(state, strict=True)
    precision = resolve_precision(cfg.trainer.get("precision"), cfg.trainer.get("accelerator"))
    trainer: L.Trainer = build(cfg, "trainer", precision=precision, **NO_ACCUMULATION)
    weights = {  # the precision Lightning runs (16-mixed becomes bf16-mixed on a CPU)
        "file": str(cfg.checkpoint or cfg.darknet_weights),
        "backend": "pytorch",
        "precision": str(trainer.precision),
    }
    note = ran_precision_note(
        cfg.trainer.get("precision"), weights["precision"], type(trainer.accelerator).__name__
    )
    if note and str(cfg.trainer.get("precision")) != "auto":
        log.warning(note)
    log.info("evaluating %(file)s in %(backend)s, precision %(precision)s", weights)
    trainer.validate(module, datamodule=datamodule, verbose=False)
    result = module.evaluation
    if trainer.is_global_zero:
        _report(out, result, datamodule, settings, weights)
    _check_scored(result, datamodule, out)
    return {**result.to_dict(), "weights": weights}


def hydra_main() -> None:
    """``python evaluate.py ...``: Hydra's app on :func:`~yolov4.cli.data_config.data_argv`'s
    arguments (``data.<key>=`` over the recorded data; a DDP process's log file named by
    :func:`~yolov4.cli.common.rank_log_argv`)."""
    check_override_syntax(sys.argv, "evaluate")
    sys.argv = data_argv(rank_log_argv(sys.argv, "evaluate"))
    _app()


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate")
@one_line_errors
def _app(cfg: DictConfig) -> float:
    return float(evaluate(cfg)["mAP"])


if __name__ == "__main__":
    hydra_main()
