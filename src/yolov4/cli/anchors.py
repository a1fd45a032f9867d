"""``python -m yolov4.anchors`` (``yolov4-anchors``): anchors and masks fitted to the training
split of any ``data=`` option for any ``model=`` (``configs/anchors.yaml``).

Writes into the run directory (``paths.output_dir``): ``anchors.json`` (anchors, masks, darknet's
average-IoU figure and histogram of best IoUs for them and for the model's own anchors),
``anchors.txt`` (the override line), ``model.yaml`` (a ``configs/model`` file) and
``<model name>.cfg`` (the darknet cfg with the ``[yolo]`` anchors/mask/num and the head filters).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, open_dict

from yolov4.anchors import (
    AnchorReport,
    box_sizes,
    fit_model_anchors,
    fitted_config,
    model_yaml,
    override_line,
)
from yolov4.cli.common import (
    check_override_syntax,
    model_config,
    model_stride,
    one_line_errors,
    to_builtin,
)
from yolov4.cli.data_config import build_data
from yolov4.core.files import atomic_write
from yolov4.darknet import write_darknet_cfg
from yolov4.errors import ConfigError
from yolov4.models import ModelConfig, build_model
from yolov4.training.callbacks import write_json

__all__ = ["fit", "hydra_main", "input_size_of"]

log = logging.getLogger(__name__)

REPORT_FILE = "anchors.json"
OVERRIDE_FILE = "anchors.txt"
MODEL_YAML = "model.yaml"


def input_size_of(value: Any, multiple: int, key: str = "input_size") -> list[int]:
    """``[H, W]`` from an int or a pair, positive multiples of ``multiple``; fails naming ``key``."""
    value = to_builtin(value)
    pair = [value, value] if isinstance(value, int) else value
    ok = isinstance(pair, (list, tuple)) and len(pair) == 2
    ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair)
    if not ok or any(v % multiple for v in pair):
        raise ConfigError(
            f"{key}: expected [H, W] (or one int), multiples of {multiple} (the network's "
            f"largest stride), got {value!r}"
        )
    return [int(v) for v in pair]


def fit(cfg: DictConfig) -> tuple[AnchorReport, ModelConfig]:
    """The fit ``cfg`` describes (``configs/anchors.yaml``): the report and the model config
    with the fitted anchors, masks and input size."""
    stride = model_stride(cfg)
    size = input_size_of(cfg.input_size, stride)
    with open_dict(cfg):
        cfg.data.input_size = size  # input_size= given: the data's own default is not checked
        if "val" in cfg.data:  # the training split's boxes are fitted: no val split needed
            cfg.data.val = None
    datamodule = build_data(cfg, size_multiple=stride)
    datamodule.prepare_data()
    if datamodule.sources["train"] is None:
        raise ConfigError("data.train is null: anchors are fitted to the training split")
    train = datamodule.split("train")
    model = model_config(cfg, datamodule.num_classes)
    if model.get("anchors") in ("auto", "fit"):
        model["anchors"] = model["masks"] = None  # the network's own anchors are compared
    model["input_size"] = size
    config = ModelConfig.from_dict(model)
    mode = datamodule.preprocess_config.mode
    wh = box_sizes(train.records, size, mode)
    report = fit_model_anchors(
        wh,
        config,
        num_anchors=cfg.get("num_anchors"),
        restarts=cfg.get("restarts", 10),
        seed=cfg.get("seed", 0),
        input_size=size,
        resize_mode=mode,
    )
    return report, fitted_config(config, report)


def write_outputs(
    out: Path, report: AnchorReport, config: ModelConfig, model: Mapping[str, Any]
) -> dict[str, Path]:
    """The run directory's files (see the module docstring); returns them by role."""
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "report": out / REPORT_FILE,
        "override": out / OVERRIDE_FILE,
        "model_yaml": out / MODEL_YAML,
        "cfg": out / f"{config.name}.cfg",
    }
    write_json(files["report"], {**report.to_dict(), "override": override_line(report)})
    texts = {
        "override": override_line(report) + "\n",
        "model_yaml": model_yaml(dict(model), report),
        "cfg": write_darknet_cfg(build_model(**config.to_dict())),
    }
    for role, text in texts.items():
        data = text.encode()
        atomic_write(files[role], lambda f, data=data: f.write(data))
    return files


@hydra.main(version_base="1.3", config_path="../configs", config_name="anchors")
@one_line_errors
def _app(cfg: DictConfig) -> float:
    report, config = fit(cfg)
    model = to_builtin(cfg.model)
    files = write_outputs(Path(cfg.paths.output_dir), report, config, model)
    print(report.text())
    print(f"train.py overrides: {override_line(report)}")
    for role, path in files.items():
        print(f"{role}: {path}")
    return report.fitted.avg_iou


def hydra_main() -> Any:
    """``python -m yolov4.anchors ...`` / ``yolov4-anchors ...``."""
    check_override_syntax(sys.argv, "anchors")
    return _app()


if __name__ == "__main__":
    hydra_main()
