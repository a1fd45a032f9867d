"""Whether a state dict fits a network, every key: wrapper prefixes stripped
(:func:`clean_state_dict`), the strict check and load (:func:`check_state_dict`,
:func:`load_state_dict_checked`), non-finite weights (:func:`check_finite`), and the one mismatch
report, missing, unexpected and wrong-shape keys grouped by module (``layers.<i>``), that the
checkpoint loader and the pretrained transfer (:func:`yolov4.core.pretrained.transfer_state_dict`)
both raise."""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Mapping

import torch

from yolov4.errors import CheckpointError
from yolov4.models import YOLOv4, available_models, build_model

__all__ = [
    "SHOW",
    "SHOW_MODULES",
    "WRAPPER_PREFIXES",
    "check_finite",
    "check_state_dict",
    "clean_state_dict",
    "group_keys",
    "load_state_dict_checked",
    "mismatch_report",
    "nonfinite_tensors",
    "NonFiniteWeightsError",
]

SHOW = 5  # keys listed per kind of mismatch
SHOW_MODULES = 12  # modules (``layers.<i>``) listed per kind of mismatch
# Prefixes that wrappers put in front of the network's own keys: the LightningModule attribute,
# DDP, torch.compile, EMA copies (Lightning's and timm/ultralytics-style).
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "model.", "ema_model.", "ema.", "net.")


def group_keys(keys: list[str]) -> str:
    """``layers.159.conv.weight, ...`` -> ``layers.159 (2), layers.148 (5)`` then the first keys
    (the :data:`SHOW_MODULES` modules with most keys, and how many more)."""
    by_module = Counter(".".join(k.split(".")[:2]) for k in keys).most_common()
    groups = ", ".join(f"{m} ({n})" for m, n in by_module[:SHOW_MODULES])
    if len(by_module) > SHOW_MODULES:
        groups += f", ... {len(by_module) - SHOW_MODULES} more modules"
    shown = ", ".join(keys[:SHOW]) + (", ..." if len(keys) > SHOW else "")
    return f"{len(keys)} [{groups}]: {shown}"


def mismatch_report(
    own: Mapping[str, torch.Tensor],
    state_dict: Mapping[str, torch.Tensor],
    missing: list[str],
    unexpected: list[str],
    shapes: list[str],
) -> list[str]:
    """The lines of every state-dict mismatch report (the loader's and the pretrained
    transfer's): the ``missing``, ``unexpected`` and wrong-``shapes`` keys of ``state_dict``
    against the model's ``own``, grouped by module (:func:`group_keys`), the first
    :data:`SHOW` shape differences quoted."""
    lines = []
    if missing:
        lines.append(f"missing keys {group_keys(missing)}")
    if unexpected:
        lines.append(f"unexpected keys {group_keys(unexpected)}")
    if shapes:
        diffs = [
            f"{k} {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
            for k in shapes[:SHOW]
        ]
        lines.append(f"shape mismatches {len(shapes)}: " + "; ".join(diffs))
    return lines


def clean_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Strip wrapper prefixes (``module.``, ``_orig_mod.``, ``model.``, EMA) from every key, as
    long as all keys share them, and drop bookkeeping entries (non-tensors, and EMA counters
    such as ``n_averaged``: a network's own keys always name a submodule)."""
    sd = {k: v for k, v in state_dict.items() if isinstance(v, torch.Tensor)}
    sd = {k: v for k, v in sd.items() if "." in k.removeprefix("module.")}
    changed = True
    while changed and sd:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix) :]: v for k, v in sd.items()}
                changed = True
        # torch.compile nests _orig_mod. inside module paths too
        if any("._orig_mod." in k for k in sd):
            sd = {k.replace("._orig_mod.", "."): v for k, v in sd.items()}
            changed = True
    return sd


@functools.cache
def _zoo_keys(name: str) -> frozenset[str]:
    """state_dict keys of zoo network ``name`` (built once per process, on the meta device)."""
    with torch.device("meta"):
        return frozenset(build_model(name, num_classes=1).state_dict())


def _likely_cause(model: YOLOv4, sd: Mapping[str, torch.Tensor], shapes: list[str]) -> str:
    own = model.state_dict()
    head_prefixes = tuple(f"layers.{i}." for i in model.head_layers)
    heads = [k for k in shapes if k.startswith(head_prefixes)]
    if heads and len(heads) == len(shapes):
        k = next(k for k in heads if k.endswith("weight"))
        channels = sd[k].shape[0]
        per_anchor, rest = divmod(channels, model.config.num_anchors)
        other = (
            f"num_classes={per_anchor - 5}"
            if rest == 0 and per_anchor > 5
            else f"{channels} head channels"
        )
        return f"likely cause: the weights were trained with {other}, the model has num_classes={model.num_classes}"
    fits = [n for n in available_models() if n != model.config.name and set(sd) == _zoo_keys(n)]
    if fits:  # every zoo network these keys are (no two in the zoo share them today)
        return (
            f"likely cause: the weights are for {' or '.join(fits)}, "
            f"the model is {model.config.name}"
        )
    missing, unexpected = set(own) - set(sd), set(sd) - set(own)
    if (
        missing
        and all(".bn." in k for k in missing)
        and all(k.endswith(".conv.bias") for k in unexpected)
    ):
        return (
            "likely cause: the weights are of a fused network (fuse_model folds each batch norm "
            "into its conv): save and load the network before fuse_model"
        )
    if set(sd) != set(own):
        return "likely cause: a different model name or a file from another project"
    return "likely cause: a different model configuration"


def check_state_dict(model: YOLOv4, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Raise :class:`CheckpointError` unless ``state_dict`` (prefixes already stripped) has
    exactly ``model``'s keys and shapes: missing, unexpected and wrong-shape keys grouped by
    module (first few of each, with counts) and the likely cause."""
    own = model.state_dict()
    sd = state_dict
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shapes = [k for k in sd if k in own and sd[k].shape != own[k].shape]
    if not (missing or unexpected or shapes):
        return
    headline = f"weights do not fit {model.config.name} with {model.num_classes} classes"
    lines = mismatch_report(own, sd, missing, unexpected, shapes)
    raise CheckpointError("\n  ".join([headline, *lines, _likely_cause(model, sd, shapes)]))


def nonfinite_tensors(state_dict: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """``{key: number of NaN or inf values}`` of the floating-point tensors that hold any."""
    counts = {}
    for k, t in state_dict.items():
        # a NaN or inf makes the sum NaN or inf: one reduction clears a finite tensor (a sum
        # that overflows with finite values only is counted below and gives 0)
        if t.is_floating_point() and not torch.isfinite(t.sum()):
            counts[k] = t.numel() - int(torch.isfinite(t).sum())
    return {k: n for k, n in counts.items() if n}


class NonFiniteWeightsError(CheckpointError):
    """Weights holding NaN or inf; ``tensors``: ``{key: count of such values}``."""

    def __init__(self, message: str, tensors: dict[str, int]) -> None:
        super().__init__(message)
        self.tensors = tensors


def check_finite(state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise :class:`NonFiniteWeightsError` (a :class:`CheckpointError`) naming the
    floating-point tensors of ``state_dict`` that hold a NaN or inf (a corrupt file or a
    diverged run: such weights predict nothing)."""
    bad = nonfinite_tensors(state_dict)
    if bad:
        first = ", ".join(
            f"{k} ({n:,} of {state_dict[k].numel():,})" for k, n in list(bad.items())[:SHOW]
        )
        raise NonFiniteWeightsError(
            f"{source}: {len(bad)} tensor(s) hold non-finite values (NaN or inf): {first}"
            + (", ..." if len(bad) > SHOW else "")
            + "; the file is corrupt or its training diverged",
            bad,
        )


def load_state_dict_checked(model: YOLOv4, state_dict: Mapping[str, torch.Tensor]) -> None:
    """Load ``state_dict`` (wrapper prefixes stripped) into ``model``, every key: any mismatch
    raises :class:`CheckpointError` (see :func:`check_state_dict`). Loading what fits of other
    weights (transfer learning) is :func:`yolov4.core.pretrained.load_pretrained`'s."""
    sd = clean_state_dict(state_dict)
    check_state_dict(model, sd)
    model.load_state_dict(sd, strict=True)
