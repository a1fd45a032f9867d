"""The :class:`~yolov4.training.module.YoloModule`'s constructor arguments, checked where they
enter (a :class:`~yolov4.errors.ConfigError` naming the key, what was found and what is
expected), and the hyper-parameters they become: builtins only, recorded in every checkpoint."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from yolov4.core.postprocess import DARKNET_VALID
from yolov4.errors import ConfigError
from yolov4.evaluation.coco import check_coco_backend
from yolov4.loss import BOX_GRADIENTS
from yolov4.models import ModelConfig
from yolov4.training.class_balance import check_class_balance
from yolov4.training.optim import OptimConfig

__all__ = ["optim_config", "module_hparams"]


def _class_names(class_names: list[str] | None, num_classes: int) -> list[str]:
    """The class names (default ``"0"``, ``"1"``, ...); one per class or :class:`ConfigError`."""
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ConfigError(
            f"{len(names)} class names for model.num_classes={num_classes}; expected "
            f"one name per class"
        )
    return names


def _model_dict(model: Any) -> dict[str, Any]:
    """``model=`` as ``ModelConfig.from_dict`` takes it: a mapping, a :class:`ModelConfig` or a
    zoo name (its 80 classes; a mapping sets ``num_classes``)."""
    if isinstance(model, ModelConfig):
        return model.to_dict()
    if isinstance(model, str):
        return {"name": model}
    if not isinstance(model, Mapping):
        raise ConfigError(
            f"model must be a model config (a mapping such as {{'name': 'yolov4-tiny', "
            f"'num_classes': 4}}, a ModelConfig or a zoo name), got {type(model).__name__}"
        )
    return dict(model)


def optim_config(optim: Mapping[str, Any] | None) -> OptimConfig:
    """``optim=`` as an :class:`OptimConfig`; unknown keys a :class:`ConfigError` naming them."""
    known = {f.name for f in dataclasses.fields(OptimConfig)}
    unknown = sorted(set(optim or {}) - known)
    if unknown:
        raise ConfigError(f"unknown optim keys {unknown}; expected some of {sorted(known)}")
    return OptimConfig(**dict(optim or {}))


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _check_ema_window(start: Any, apply_before_end: Any) -> None:
    """``module.ema_start`` a fraction in [0, 1), ``module.ema_apply_before_end`` steps >= 1."""
    if not _number(start) or not 0 <= start < 1:
        raise ConfigError(
            f"module.ema_start must be a fraction of the run's steps in [0, 1) (darknet: 0.5), "
            f"got {start!r}"
        )
    if apply_before_end is not None and (
        not isinstance(apply_before_end, int) or isinstance(apply_before_end, bool)
        or apply_before_end < 1
    ):  # fmt: skip
        raise ConfigError(
            f"module.ema_apply_before_end must be a number of optimizer steps >= 1 (darknet: "
            f"1000) or null, got {apply_before_end!r}"
        )


def _check_fractions(ema_decay: Any, ema_tau: Any, label_smoothing: Any) -> None:
    """The EMA's decay in (0, 1) (``None`` or 0: off) and ramp > 0, the smoothing in [0, 1]:
    an EMA of decay 1.5 diverges, and it is what validation scores and ``weights/`` hold."""
    if ema_decay is not None and ema_decay != 0:
        if not _number(ema_decay) or not 0 < ema_decay < 1:
            raise ConfigError(
                f"module.ema_decay must be a number in (0, 1) (null or 0: no EMA), "
                f"got {ema_decay!r}"
            )
        if ema_tau is not None and (not _number(ema_tau) or not ema_tau > 0):
            raise ConfigError(
                f"module.ema_tau must be a number > 0 (null: a constant decay), got {ema_tau!r}"
            )
    if not _number(label_smoothing) or not 0 <= label_smoothing <= 1:
        raise ConfigError(
            f"module.label_smoothing must be a number in [0, 1], got {label_smoothing!r}"
        )


def _category_ids(category_ids: list[int] | None, num_classes: int) -> list[int]:
    """The original category id per class (default the class index); one per class."""
    if category_ids is None:
        return list(range(num_classes))
    if len(category_ids) != num_classes:
        raise ConfigError(
            f"{len(category_ids)} category_ids for model.num_classes={num_classes}; "
            "expected one per class"
        )
    return list(category_ids)


def module_hparams(
    *, model: Any, optim: OptimConfig | Mapping[str, Any] | None, **args: Any
) -> tuple[ModelConfig, OptimConfig, dict[str, Any]]:
    """The network's config, the optimiser settings and the hyper-parameters of a
    :class:`~yolov4.training.module.YoloModule` built with ``model``, ``optim`` and the rest of
    its keyword arguments ``args`` (each of them, by its name), every one checked."""
    config = ModelConfig.from_dict(_model_dict(model))
    optim_cfg = optim if isinstance(optim, OptimConfig) else optim_config(optim)
    names = _class_names(args["class_names"], config.num_classes)
    _check_fractions(args["ema_decay"], args["ema_tau"], args["label_smoothing"])
    _check_ema_window(args["ema_start"], args["ema_apply_before_end"])
    category_ids = _category_ids(args["category_ids"], config.num_classes)
    data = args["data"]
    hparams = {
        "model": config.to_dict(),
        "optim": dict(vars(optim_cfg)),
        "class_names": names,
        "category_ids": category_ids,
        "preprocess": dict(args["preprocess"] or {}),
        "data": dict(data) if data is not None else None,
        **{k: args[k] for k in ("ema_decay", "ema_tau", "ema_start", "ema_apply_before_end")},
        "label_smoothing": args["label_smoothing"],
        "box_gradient": args["box_gradient"],
        "class_balance": check_class_balance(args["class_balance"]),
        "val_postprocess": DARKNET_VALID.update(args["val_postprocess"]).to_dict(),
        **{k: args[k] for k in ("pretrained", "pretrained_backbone_only", "pretrained_strict")},
        "compile_model": args["compile_model"],
        "coco_backend": check_coco_backend(args["coco_backend"]),
    }
    if args["box_gradient"] not in BOX_GRADIENTS:
        raise ConfigError(
            f"module.box_gradient must be one of {list(BOX_GRADIENTS)}, "
            f"got {args['box_gradient']!r}"
        )
    return config, optim_cfg, hparams
