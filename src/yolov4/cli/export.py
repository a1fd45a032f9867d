"""``python export.py checkpoint=...``: the serving artifact of a checkpoint, or of darknet's
files (``darknet_weights=... model=<zoo name | darknet model.cfg=...> names=...``).

``precision=[fp32,int8]`` adds reduced-precision models (:mod:`yolov4.export.quantize`),
calibrated on ``data``'s train images (or ``calibration=<folder>``'s) and gated on its val
images. ``data`` defaults to the data the checkpoint records (a train.py run), else synthetic
(logged); with ``calibration=<folder>`` and no ``data`` (darknet weights and a folder of photos)
the gate is the agreement of each reduced precision's boxes with fp32's on the folder's images.
``conf=best_f1`` makes the best-F1 confidence of the run's ``pr_f1.json`` (written by train.py /
evaluate.py) the artifact's default serving ``conf``, recorded with where it came from, with a
warning when it is below :data:`BEST_F1_MIN_CONF` or its F1 below :data:`BEST_F1_MIN_F1`.
The other serving thresholds (:data:`THRESHOLD_KEYS`: ``iou=``, ``max_det=``, ``nms_kind=``,
``multi_label=``, ``agnostic_nms=``) go into the artifact as given, checked before anything loads.
"""

from __future__ import annotations

import json
import logging
import sys
from math import inf
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from yolov4.cli.common import (
    check_override_syntax,
    one_line_errors,
    to_builtin,
)
from yolov4.cli.data_config import build_data, check_data_file, data_argv, resolve_data
from yolov4.cli.sources import (
    check_no_network,
    image_folder,
    model_checkpoint,
    model_source,
    readable_images,
    source_file,
)
from yolov4.core.artifact import METADATA, artifact_precisions, model_file, read_metadata
from yolov4.core.postprocess import SERVING, SWITCHES
from yolov4.errors import ConfigError, DatasetError, ExportError, shown
from yolov4.evaluation import evaluate_predictor
from yolov4.evaluation.reports import PR_F1_FILE
from yolov4.export.artifact import (
    DEFAULT_OPSET,
    MAX_OPSET,
    check_export_request,
    export_artifact,
)
from yolov4.export.output import check_output
from yolov4.export.quantize import Agreement

__all__ = [
    "export",
    "hydra_main",
    "default_output",
    "best_f1_conf",
    "image_folder",
    "readable_images",
]

log = logging.getLogger(__name__)
EXPORT_DIR = "export"
BEST_F1 = "best_f1"  # conf=best_f1
# serving thresholds export.py takes besides conf (null: the serving preset's)
THRESHOLD_KEYS = ("iou", "max_det", "nms_kind", *SWITCHES)
# conf=best_f1 warns below these: a serving threshold that low, or an F1 that small, is
# rarely what a service should use (an undertrained run, or a curve of a few boxes)
BEST_F1_MIN_CONF = 0.05
BEST_F1_MIN_F1 = 0.1


def default_output(checkpoint: str | Path) -> Path:
    """``<run>/weights/best.pt`` -> ``<run>/export``; elsewhere ``export`` beside the file."""
    p = Path(checkpoint).resolve()
    return (
        p.parent.parent if p.parent.name in ("weights", "checkpoints") else p.parent
    ) / EXPORT_DIR


def best_f1_conf(path: str | Path) -> tuple[float, dict[str, Any]]:
    """The best-F1 confidence over all classes of a ``pr_f1.json`` -> ``(conf, conf_source)``
    (``{"file", "f1", "precision", "recall", "iou"}``); :class:`ConfigError` naming what is
    missing."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"conf={BEST_F1}: no {path} (train.py and evaluate.py write {PR_F1_FILE}.json; "
            "pass pr_f1=<path>)"
        )
    try:
        data = json.loads(path.read_text())
        best = data["best_f1"]["all"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(
            f"conf={BEST_F1}: {path} has no best_f1.all (expected evaluate.py's "
            f"{PR_F1_FILE}.json): {e!r}"
        ) from None
    conf = best.get("conf") if isinstance(best, dict) else None
    if not isinstance(conf, int | float) or not 0 <= conf <= 1:
        raise ConfigError(
            f"conf={BEST_F1}: {path}: best_f1.all.conf is {conf!r}, expected a number in [0, 1] "
            "(no detections in that evaluation?)"
        )
    source = {"file": str(path.resolve()), "key": "best_f1.all.conf", "conf": float(conf)}
    source.update({k: best[k] for k in ("f1", "precision", "recall") if k in best})
    if "iou" in data:
        source["iou"] = data["iou"]
    f1 = best.get("f1")
    low = [f"conf {conf:g} is below {BEST_F1_MIN_CONF}"] if conf < BEST_F1_MIN_CONF else []
    if isinstance(f1, int | float) and f1 < BEST_F1_MIN_F1:
        low.append(f"its F1 {f1:g} is below {BEST_F1_MIN_F1}")
    if low:
        source["warning"] = (
            f"conf={BEST_F1} {conf:g} (F1 {f1}): {' and '.join(low)}; the run may be too short "
            "to serve at this threshold (conf=<number> sets one)"
        )
        log.warning("%s: %s", path, source["warning"])
    return float(conf), source


def _conf(cfg: DictConfig) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(thresholds, conf_source)`` for ``cfg.conf``."""
    if cfg.conf is None:
        return None, None
    if cfg.conf == BEST_F1:
        path = cfg.pr_f1 or default_output(source_file(cfg)).parent / f"{PR_F1_FILE}.json"
        conf, source = best_f1_conf(path)
        return {"conf": conf}, source
    number = isinstance(cfg.conf, int | float) and not isinstance(cfg.conf, bool)
    if number and 0 <= cfg.conf <= 1:
        return {"conf": float(cfg.conf)}, {"set": "export.py conf=", "conf": float(cfg.conf)}
    raise ConfigError(
        f"conf must be null, a number in [0, 1] or {BEST_F1!r}, got {shown(cfg.conf)}"
    )


def _thresholds(cfg: DictConfig) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """``(thresholds, conf_source)``: ``cfg.conf`` (:func:`_conf`) and :data:`THRESHOLD_KEYS`,
    checked as the artifact's postprocess settings (:class:`ConfigError` naming the key)."""
    thresholds, conf_source = _conf(cfg)
    given = {k: to_builtin(cfg.get(k)) for k in THRESHOLD_KEYS if cfg.get(k) is not None}
    if not given:
        return thresholds, conf_source
    thresholds = {**(thresholds or {}), **given}
    try:
        SERVING.update(thresholds)
    except ConfigError as e:
        raise ConfigError(f"export.py {e}") from None
    return thresholds, conf_source


def _dataset(cfg: DictConfig, class_names: list[str]) -> tuple[list[Any], Any]:
    """``(calibration image files, evaluate)`` from ``cfg.data``: the first
    ``calibration_images`` of its train split and an evaluation on the first ``val_images`` of
    its val split."""
    datamodule = build_data(cfg, augment=None)
    datamodule.prepare_data()
    if list(datamodule.class_names) != list(class_names):
        raise ConfigError(
            f"data: classes {list(datamodule.class_names)} are not the checkpoint's "
            f"{list(class_names)}; calibrate and gate on the checkpoint's own dataset (data=...)"
        )
    train = datamodule.split("train").records[: int(cfg.calibration_images)]
    val = datamodule.split("val").records
    if cfg.val_images:
        val = val[: int(cfg.val_images)]
    if not val:
        raise ConfigError("data: the val split is empty; the mAP gate needs val images")
    subset = f"{type(datamodule).__name__} val split, first {len(val)} images"

    def evaluate(predictor: Any) -> dict[str, Any]:
        result = evaluate_predictor(predictor, datamodule, val, int(cfg.batch_size), {})
        if not result.num_images:  # every one skipped: an mAP of no image gates nothing
            raise DatasetError(
                f"data: none of the {len(val)} val images of the mAP gate could be scored (each "
                "was skipped: the warnings above say why, as does yolov4-check-data with the same "
                "data); the gate needs val images that decode"
            )
        return {**result.metrics, "images": result.num_images, "subset": subset}

    return [r.file for r in train], evaluate


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_options(cfg: DictConfig) -> None:
    """The numeric options, before anything is loaded: :class:`ConfigError` naming the key,
    what was expected and what was found."""

    def bad(key: str, expected: str) -> ConfigError:
        return ConfigError(f"{key}: expected {expected}, found {cfg.get(key)!r}")

    for key in ("calibration_images", "batch_size"):
        if not (_integer(cfg.get(key)) and cfg.get(key) >= 1):
            raise bad(key, "an integer >= 1")
    val = cfg.get("val_images")
    if val is not None and not (_integer(val) and val >= 1):
        raise bad("val_images", "null (the whole val split) or an integer >= 1")
    if not (_integer(cfg.get("opset")) and DEFAULT_OPSET <= cfg.opset <= MAX_OPSET):
        raise bad("opset", f"an integer in [{DEFAULT_OPSET}, {MAX_OPSET}]")
    gate = cfg.get("map50_gate")
    if not (isinstance(gate, int | float) and not isinstance(gate, bool) and 0 <= gate < inf):
        raise bad("map50_gate", "a number of mAP50 points >= 0")
    size = cfg.get("input_size")
    size = OmegaConf.to_container(size) if isinstance(size, ListConfig) else size
    if size is not None and not (
        isinstance(size, list) and len(size) == 2 and all(_integer(s) and s >= 1 for s in size)
    ):
        raise ConfigError(
            "input_size: expected null or [H, W], two positive integers (multiples of the "
            f"model's largest stride), found {size!r}"
        )
    if not isinstance(cfg.get("overwrite", False), bool):
        raise bad("overwrite", "true or false")


def _gate(cfg: DictConfig, ckpt: Any) -> tuple[list[Any], Any]:
    """``(calibration images, evaluate)`` for the reduced precisions: ``calibration=<folder>``
    without ``data``: the folder's readable images and their :class:`Agreement` gate; else
    ``data``'s (the checkpoint's recorded data when null) and its labelled mAP gate, calibrated
    on the folder's readable images when given."""
    n = int(cfg.calibration_images)
    if cfg.calibration and cfg.get("data") is None:
        wanted = max(n, int(cfg.val_images)) if cfg.val_images else None
        folder = readable_images(cfg.calibration, wanted)
        gate_images = folder[: int(cfg.val_images)] if cfg.val_images else folder
        subset = f"{cfg.calibration}: {len(gate_images)} unlabelled images"
        log.info("gate: agreement with fp32 on %s (no data= given)", subset)
        agreement = Agreement(gate_images, float(cfg.agreement_gate), subset, int(cfg.batch_size))
        return folder[:n], agreement
    folder = readable_images(cfg.calibration, n) if cfg.calibration else None
    resolve_data(cfg, getattr(ckpt, "data", None), str(source_file(cfg)))
    calibration, evaluate = _dataset(cfg, list(ckpt.class_names))
    return (calibration if folder is None else folder), evaluate


def _summary(meta: dict[str, Any]) -> list[str]:
    """One line per model file: the precision it holds and the backends that run it."""
    runs: dict[str, list[str]] = {}
    for precision, entry in artifact_precisions(meta).items():
        for backend in entry.get("backends", []):
            file = model_file(meta, precision, backend)
            runs.setdefault(file, []).append(f"{precision} in {backend}")
    if "nms_graph" in meta:
        runs.setdefault(meta["nms_graph"]["file"], []).append("fp32 (NMS in the graph)")
    if "uint8_input" in meta:
        runs.setdefault(meta["uint8_input"]["file"], []).append(
            "fp32 taking uint8 NHWC RGB letterboxed images (scaling in the graph)"
        )
    if "darknet" in meta:
        d = meta["darknet"]
        runs.setdefault(f"{d['cfg']} + {d['weights']}", []).append(
            f"fp32 darknet files (darknet, OpenCV's readNetFromDarknet), "
            f"letter_box={int(d['letter_box'])}"
        )
    if "triton" in meta:
        triton = meta["triton"]
        runs.setdefault(f"{triton['repository']}/", []).append(
            f"Triton model repository, model {triton['model']!r} (NMS in the graph)"
        )
    return [f"  {file}: {', '.join(how)}" for file, how in runs.items()]


def _names(cfg: DictConfig, key: str) -> list[str]:
    """``formats=`` / ``precision=`` as a list: ``[onnx,int8]``, or one name alone (``onnx``)."""
    value = to_builtin(cfg.get(key))
    return [value] if isinstance(value, str) else list(value or [])


def export(cfg: DictConfig) -> Path:
    check_options(cfg)
    model_source(cfg, ("checkpoint", "darknet_weights"))
    check_no_network(cfg)
    formats, precisions = _names(cfg, "formats"), _names(cfg, "precision")
    try:  # before loading: a command-line value out of range is the user's config
        check_export_request(formats, cfg.opset, precisions, cfg.default_precision)
    except ExportError as e:
        raise ConfigError(f"export.py {e}") from None
    out = check_output(
        cfg.output if cfg.output else default_output(source_file(cfg)), cfg.get("overwrite", False)
    )
    if (out / METADATA).is_file():  # replaced whole at the end: say so now
        earlier = sorted(read_metadata(out).get("files", {}))
        log.warning(
            "%s holds an artifact (%s): this export replaces it (output=<folder> keeps both)",
            out,
            ", ".join(earlier) or "no files listed",
        )
    size = OmegaConf.to_container(cfg.input_size, resolve=True) if cfg.input_size else None
    thresholds, conf_source = _thresholds(cfg)
    check_data_file(cfg)
    ckpt = model_checkpoint(cfg)  # a project checkpoint or darknet's cfg + weights
    calibration, evaluate = None, None
    if set(precisions) - {"fp32"}:
        calibration, evaluate = _gate(cfg, ckpt)
    elif cfg.calibration:  # fp32 only: the NMS graphs' check runs on the folder's images
        calibration = readable_images(cfg.calibration, int(cfg.calibration_images))
    path = export_artifact(
        ckpt,
        out,
        formats=formats,
        opset=cfg.opset,
        input_size=size,
        thresholds=thresholds,
        precisions=precisions,
        default_precision=cfg.default_precision,
        calibration=calibration,
        evaluate=evaluate,
        map50_gate=float(cfg.map50_gate),
        conf_source=conf_source,
        overwrite=bool(cfg.get("overwrite", False)),
    )
    meta = read_metadata(path)
    _log_parity(meta["parity"])
    for line in _accuracy_lines(meta):
        print(line)
    print(
        f"exported {meta['model']['name']} {source_file(cfg)} -> {path} "
        f"({', '.join(meta['files'])}), input {meta['input_size']}, "
        f"default precision {meta.get('default_precision', 'fp32')}, "
        f"conf {meta['thresholds']['conf']}"
    )
    print("\n".join(_summary(meta)))
    return path


def _log_parity(parity: dict[str, Any]) -> None:
    """One log line per checked file: its worst difference vs PyTorch, or that no box was
    compared; an NMS graph's line names its inputs and boxes, and a check that compared no box
    at the graph's threshold is a warning."""
    for name, p in parity.items():
        if "warning" in p:  # an NMS graph that compared no box at its own threshold
            worst = f"worst difference vs PyTorch {p['max_abs_diff']:.3g}"
            log.warning("%s: %s (%s)", name, p["warning"], worst)
            continue
        if "boxes" in p:  # nothing scored over the threshold: no box difference was measured
            probs = p.get("mean_prob_diff")
            how = "" if probs is None else f" (mean probability difference {probs:.3g})"
            log.info("%s: %s%s", name, p["boxes"], how)
            continue
        compared = ""
        if "inputs" in p:  # an NMS graph: detections compared on its inputs
            lowered = p.get("lowered_conf")
            more = f", {lowered['boxes_compared']} at conf {lowered['conf']:.3g}" if lowered else ""
            compared = f" on {p['boxes_compared']} boxes{more} ({p['inputs']})"
        if "runtime" in p:  # a file read by another project's runtime (darknet's: OpenCV)
            against = f", against {p['reference']}" if "reference" in p else ""
            compared = f" in {p['runtime']}{against}"
        log.info(
            "%s: worst difference vs PyTorch %.3g (%.3g relative)%s",
            name,
            p["max_abs_diff"],
            p["max_rel_diff"],
            compared,
        )


def _accuracy_lines(meta: dict[str, Any]) -> list[str]:
    """One line per reduced precision of the artifact's ``meta``: its gate's numbers (mAP50 and
    mAP against fp32's, or its agreement with fp32's boxes)."""
    lines = []
    for name, entry in meta.get("precisions", {}).items():
        acc = entry.get("accuracy")
        if acc and acc.get("gate") == "agreement":
            found = acc["agreement"]
            f1 = found.get("note") if found["f1"] is None else f"F1 {found['f1']:.3f}"
            lines.append(
                f"{name}: agreement with fp32 {f1} ({found['boxes']} vs {found['fp32_boxes']} "
                f"boxes, gate F1 >= {acc['minimum_f1']}) on {acc['subset']}"
            )
        elif acc:
            drop = round(acc["mAP50_drop_points"], 3)  # as metadata.json records it
            lines.append(
                f"{name}: mAP50 {100 * acc[name]['mAP50']:.2f} (fp32 "
                f"{100 * acc['fp32']['mAP50']:.2f}, drop {drop} points, "
                f"gate {acc['gate_points']}), mAP {100 * acc[name]['mAP']:.2f} (fp32 "
                f"{100 * acc['fp32']['mAP']:.2f}) on {acc['subset']}"
                + (" (the gate measured nothing: fp32's mAP50 is 0)" if "warning" in acc else "")
            )
    return lines


def hydra_main() -> None:
    """``python export.py ...``: Hydra's app on :func:`~yolov4.cli.data_config.data_argv`'s
    arguments (``data.<key>=`` over the recorded data)."""
    check_override_syntax(sys.argv, "export")
    sys.argv = data_argv(sys.argv)
    _app()


@hydra.main(version_base="1.3", config_path="../configs", config_name="export")
@one_line_errors
def _app(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    hydra_main()
