"""The one state-dict mismatch report: missing, unexpected and wrong-shape keys grouped by module
(``layers.<i>``), what the checkpoint loader (:func:`yolov4.core.checkpoint.check_state_dict`)
and the pretrained transfer (:func:`yolov4.core.pretrained.transfer_state_dict`) both raise."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import torch

__all__ = ["SHOW", "SHOW_MODULES", "group_keys", "mismatch_report"]

SHOW = 5  # keys listed per kind of mismatch
SHOW_MODULES = 12  # modules (``layers.<i>``) listed per kind of mismatch


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
