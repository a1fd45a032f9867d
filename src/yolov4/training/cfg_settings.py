"""What a user's darknet cfg says about training that a run takes from its own config instead.

A darknet cfg carries darknet's training loop in ``[net]`` (learning rate, warm-up, batch,
augmentation, input size, letterbox) and ``[yolo]`` (``jitter``, ``random``). The network is built
from the cfg; the training here is set by the run's config groups (``optim``, ``data``,
``augment``, ``module``), and the zoo's ``experiment=`` recipes are those groups set to a shipped
cfg's values. For a user's own cfg (``model=darknet model.cfg=...``) :func:`log_cfg_settings`
says which of its values the run does not take, beside the run's own, so that a recipe copied
from darknet is not dropped silently.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from yolov4.models import ModelConfig
from yolov4.models.cfg import parse_cfg
from yolov4.models.cfg_keys import LAYER_KEYS, NET_TRAINING_KEYS, TRAINING_KEYS

__all__ = ["NET_SETTINGS", "cfg_settings_not_used", "log_cfg_classes", "log_cfg_settings"]

log = logging.getLogger(__name__)

# [net] key -> the run's config key that sets the same thing (configs/experiment/*.yaml)
NET_SETTINGS = {
    "learning_rate": "optim.lr",
    "burn_in": "optim.burn_in",
    "momentum": "optim.momentum",
    "decay": "optim.weight_decay",
    "policy": "optim.schedule",
    "steps": "optim.steps",
    "scales": "optim.scales",
    "max_batches": "trainer.max_steps",
    "batch": "nominal_batch",
    "mosaic": "augment.mosaic",
    "hue": "augment.hue",
    "saturation": "augment.saturation",
    "exposure": "augment.exposure",
    "flip": "augment.flip",
    "ema_alpha": "module.ema_decay",
    "subdivisions": "trainer.accumulate_grad_batches",
}
YOLO_SETTINGS = {
    "jitter": "augment.jitter",
    "resize": "augment.resize",
    "random": "augment.multi_scale",
}
# the run's note on a cfg training key without a config key here (angle, blur, mixup, cutmix, ...)
NOT_TAKEN = "no equivalent here"


def cfg_settings_not_used(
    config: ModelConfig, value_of: Callable[[str], Any]
) -> tuple[list[str], list[str]]:
    """For a user's cfg (``config.cfg`` text; ``[], []`` for a zoo network): the cfg's training
    settings, each as ``"key=value (key.here=value)"`` with ``value_of(key.here)``, the run's
    value, or ``"key=value (no equivalent here)"`` for every other darknet training key it sets
    (``[net]`` ``angle``, ``blur``, ``mixup``, ...; ``[yolo]`` ``max``); and the input differences that change what the network sees (``[net]`` size and
    ``letter_box`` against ``data.input_size`` / ``data.resize_mode``)."""
    if config.cfg is None:
        return [], []
    sections = parse_cfg(config.cfg, config.name)
    net, yolos = sections[0].options, [s for s in sections if s.kind == "yolo"]
    settings = [
        f"{key}={net[key]} ({here}={value_of(here)})"
        for key, here in NET_SETTINGS.items()
        if key in net
    ]
    settings += [
        f"{key}={value} ({NOT_TAKEN})"
        for key, value in net.items()
        if key in NET_TRAINING_KEYS and key not in NET_SETTINGS
    ]
    for key in sorted(TRAINING_KEYS & LAYER_KEYS["yolo"]):
        found = next((y.options[key] for y in yolos if key in y.options), None)
        if found is not None:
            here = YOLO_SETTINGS.get(key)
            run = f"{here}={value_of(here)}" if here else NOT_TAKEN
            settings.append(f"[yolo] {key}={found} ({run})")
    inputs = []
    size = [config.input_size[0], config.input_size[1]]
    run_size = _pair(value_of("data.input_size"))
    if run_size is not None and run_size != size:
        inputs.append(
            f"height={size[0]} width={size[1]} (data.input_size={run_size}; "
            f"data.input_size=[{size[0]},{size[1]}] trains at the cfg's size)"
        )
    mode = value_of("data.resize_mode")
    want = "letterbox" if config.letter_box else "stretch"
    if mode in ("letterbox", "stretch") and mode != want:
        inputs.append(
            f"letter_box={int(config.letter_box)} (data.resize_mode={mode}; the cfg's darknet "
            f"training resized by {want})"
        )
    return settings, inputs


def _pair(value: Any) -> list[int] | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return [value, value]
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
        return [int(v) for v in value]
    return None


def log_cfg_settings(config: ModelConfig, value_of: Callable[[str], Any]) -> None:
    """Log :func:`cfg_settings_not_used`: the training settings at INFO, an input that differs
    from the cfg's as a WARNING (a network trained at another size or resize mode than its cfg
    says runs differently in darknet)."""
    settings, inputs = cfg_settings_not_used(config, value_of)
    if settings:
        log.info(
            "%s's darknet training settings are not read (the run's config sets training; "
            "configs/experiment/ shows them mapped for the zoo's cfgs): %s",
            config.name,
            ", ".join(settings),
        )
    if inputs:
        log.warning(
            "%s's [net] %s: the run trains otherwise; its checkpoints and exports record the "
            "run's preprocessing, which predict.py and export.py follow",
            config.name,
            "; ".join(inputs),
        )


def log_cfg_classes(config: ModelConfig, num_classes: int, value_of: Callable[[str], Any]) -> None:
    """One line when the cfg's ``[yolo] classes`` (``config``: the network at its cfg's own
    classes) differ from ``num_classes``, the dataset's count the run trains (the heads' filters
    follow it): a WARNING for a user's cfg, whose count darknet would train; INFO for a zoo
    network (COCO's 80 classes)."""
    if config.num_classes == num_classes:
        return
    cfg = value_of("model.cfg") or f"{config.name}.cfg"
    data = _class_source(value_of)
    filters = sorted({len(m) * (num_classes + 5) for m in config.masks})
    log.log(
        logging.WARNING if config.cfg is not None else logging.INFO,
        "%s has [yolo] classes=%d, the dataset %d classes (%s): the run trains the dataset's %d "
        "(the convolutions before the [yolo] layers get filters=%s)%s",
        cfg,
        config.num_classes,
        num_classes,
        data,
        num_classes,
        "/".join(map(str, filters)),
        f"; set classes={num_classes} in its [yolo] layers to match"
        if config.cfg is not None
        else "",
    )


def _class_source(value_of: Callable[[str], Any]) -> str:
    """The option the dataset's classes come from, as the command gave it: ``data.file=...``
    when that dataset file filled ``data.train.names`` (with the file's path:
    :func:`yolov4.data.dataset_file.fill_splits`), else ``data.train.names`` or
    ``data.train.annotations``."""
    file = value_of("data.file")
    for key in ("data.train.names", "data.train.annotations"):
        value = value_of(key)
        if value and key == "data.train.names" and file is not None and str(value) == str(file):
            return f"data.file={file}"
        if value:
            return f"{key}={value}"
    return "data.train"
