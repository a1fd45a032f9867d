"""Anchors at every training start: ``model.anchors=auto`` or ``fit`` fitted to the training
split, and a check of the anchors the run trains with against the training boxes (a warning with
the command to run when they fit poorly).

* ``auto`` (as ultralytics' AutoAnchor): the model's own anchors are kept when they fit the
  training boxes (not :attr:`~yolov4.anchors.AnchorQuality.poor`: few boxes under 0.25 IoU, a
  fair average, and most boxes best matched by an anchor some head uses); otherwise new ones are
  fitted and used when their average best IoU is higher than that of the anchors the heads use.
* ``fit``: new anchors are fitted and used whatever the model's own anchors score.

The fit is :func:`yolov4.anchors.fit_model_anchors` (darknet's ``calc_anchors`` k-means, best of
several starts) on the box sizes after the run's own resize (``data.preprocess``); the fitted
anchors and masks replace ``auto``/``fit`` in the model config, so checkpoints and artifacts store
them like any anchors. The same seed gives the same anchors (a resumed run refits the same ones).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from yolov4.anchors import (
    AnchorQuality,
    anchor_quality,
    box_sizes,
    fit_model_anchors,
    masked_anchors,
)
from yolov4.anchors.fit import POOR_AVG_IOU, POOR_IOU, POOR_SHARE, POOR_UNMASKED_SHARE
from yolov4.models import ModelConfig
from yolov4.training.noise import rank_zero_logger

__all__ = ["AUTO", "FIT", "anchors_at_start", "anchors_command", "run_overrides"]

log = rank_zero_logger(__name__)  # the same in every process: rank 0's

AUTO = "auto"  # model.anchors=auto: fit them to the training split when the model's fit poorly
FIT = "fit"  # model.anchors=fit: fit them to the training split at start-up in any case
# override prefixes that change what the anchors command fits (the data and the network)
COMMAND_KEYS = ("data", "model", "+data", "+model")
FIT_MODEL_KEYS = ("model.name", "model.cfg", "model.num_classes")  # what makes the network


def _group_choices() -> dict[str, Any]:
    """The running Hydra app's group choices (``data``: ``coco``, ...); none outside one."""
    from hydra.core.hydra_config import HydraConfig

    return dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}


def run_overrides() -> list[str]:
    """The command line's overrides of the running Hydra app (none outside one)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def anchors_command(
    overrides: Sequence[str],
    groups: Mapping[str, Any] | None = None,
    input_size: Sequence[int] | None = None,
) -> str:
    """``python -m yolov4.anchors`` fitting what the run trains on: its ``data`` and ``model``
    group choices (``groups``: Hydra's runtime choices; an ``experiment=`` picks them too), its
    ``data.*`` overrides and the ``model.*`` keys that make the network (``name``, ``cfg``,
    ``num_classes``; the loss's keys are not the anchors command's), the run's ``input_size``
    (a sweep's own); each argument quoted for the shell where it needs it."""
    choices = [f"{g}={groups[g]}" for g in ("data", "model") if groups and groups.get(g)]
    given = {c.split("=", 1)[0] for c in choices}
    keep = [*choices]
    for o in overrides:
        key = o.lstrip("+").split("=", 1)[0]
        if key in given or key in ("data.input_size", "model.anchors", "model.masks"):
            continue
        if key in ("data", "model") or key.startswith("data.") or key in FIT_MODEL_KEYS:
            keep.append(o)
    if input_size is not None:
        keep.append(f"data.input_size=[{','.join(str(int(s)) for s in input_size)}]")
    return " ".join(["python -m yolov4.anchors", *(shlex.quote(o) for o in keep)])


def anchors_at_start(
    model: dict[str, Any], datamodule: Any, overrides: Sequence[str] = (), seed: int = 0
) -> tuple[dict[str, Any], AnchorQuality | None]:
    """The model config dict to train with (``anchors: auto`` or ``fit`` resolved against
    ``datamodule``'s training split, see the module docstring) and the fit of its anchors to the
    training boxes (logged; a warning when poor). ``None`` when the run has no training boxes."""
    train = datamodule.split("train")
    pre = datamodule.preprocess_config
    wh = box_sizes(train.records if train is not None else [], pre.input_size, pre.mode)
    model, quality = dict(model), None
    if model.get("anchors") in (AUTO, FIT):
        model, quality = _resolve_fit(model, wh, pre, seed)
    if len(wh) == 0:
        return model, None
    if quality is None:  # the anchors the model config names
        config = ModelConfig.from_dict(model)
        quality = anchor_quality(wh, config.anchors, config.masks)
    if quality.poor:
        log.warning(
            "the anchors fit the training boxes poorly: %s (poor: over %.0f %% under %s, avg "
            "IoU under %.0f %%, or over %.0f %% best matched by an anchor in no head's mask); fit "
            "them with `%s` or train with model.anchors=auto",
            quality.line(),
            100 * POOR_SHARE,
            POOR_IOU,
            POOR_AVG_IOU,
            100 * POOR_UNMASKED_SHARE,
            anchors_command(overrides, _group_choices(), pre.input_size),
        )
    else:
        log.info("anchors against the %d training boxes: %s", len(wh), quality.line())
    return model, quality


def _own_anchors_kept(current: AnchorQuality, boxes: int, anchors: int, size: str) -> bool:
    """Whether ``anchors=auto`` keeps the model's own anchors before any fit (logged, with
    why): they fit the ``boxes`` well (``current``), or there are fewer boxes than anchors."""
    if not current.poor:
        log.info(
            "model.anchors=auto: the model's own anchors kept (%s against the %s; "
            "model.anchors=fit fits new ones in any case)",
            current.line(),
            size,
        )
        return True
    if boxes < anchors:  # too few to fit: keep, say why
        log.warning(
            "model.anchors=auto: the model's own anchors kept (%s against the %s: fewer boxes "
            "than its %d anchors, nothing to fit them to)",
            current.line(),
            size,
            anchors,
        )
        return True
    return False


def _resolve_fit(
    model: dict[str, Any], wh: Any, pre: Any, seed: int
) -> tuple[dict[str, Any], AnchorQuality]:
    """``model`` with ``anchors: auto|fit`` replaced: fitted anchors and masks, or (``auto``,
    when the network's own anchors fit ``wh`` or the fit is no better) the network's own with
    the masks given; and the quality of what it returns. Without boxes the fit raises
    :class:`~yolov4.errors.DatasetError` naming the split."""
    asked = model["anchors"]
    network = ModelConfig.from_dict(
        {k: v for k, v in model.items() if k not in ("anchors", "masks")}
    )
    kept = {**model, "anchors": None}  # null: the cfg's own anchors
    size = f"{len(wh)} boxes of data.train at {'x'.join(map(str, pre.input_size))} ({pre.mode})"
    base, current = network, None
    if asked == AUTO and len(wh):
        base = ModelConfig.from_dict(kept)  # the masks given, if any, with the cfg's anchors
        current = anchor_quality(wh, base.anchors, base.masks)
        if _own_anchors_kept(current, len(wh), len(base.anchors), size):
            return kept, current
    report = fit_model_anchors(
        wh, network, seed=seed, input_size=pre.input_size, resize_mode=pre.mode
    )
    # the model's own figure over the anchors its heads use: a box whose best anchor is in no
    # mask gets no signal, so that anchor's IoU serves nobody
    served = anchor_quality(wh, masked_anchors(base.anchors, base.masks)).avg_iou
    if asked == AUTO and report.fitted.avg_iou <= served:
        log.info(
            "model.anchors=auto: the model's own anchors kept (%s against the %s; fitted ones "
            "no better: %s)",
            current.line(),
            size,
            report.fitted.line(),
        )
        return kept, current
    log.info(
        "model.anchors=%s: %d anchors fitted to %s%s: avg IoU %.2f %% (the model's own: %.2f %%, "
        "%.2f %% over the anchors its heads use); anchors %s, masks %s",
        asked,
        len(report.anchors),
        size,
        " (the model's own fit poorly)" if asked == AUTO else "",
        report.fitted.avg_iou,
        report.current.avg_iou,
        served,
        report.anchors,
        report.masks,
    )
    return {**model, "anchors": report.anchors, "masks": report.masks}, report.fitted
