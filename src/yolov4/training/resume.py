"""Resume (``ckpt_path=``): local files only, read without running pickled code, checked first.

Lightning's own resume loads ``http(s)://`` paths with ``weights_only=False`` and local ones with
torch's default, which ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` turns off: either way a hostile
``.ckpt`` runs its code. Here the path must be a local file, it is read with
:func:`yolov4.core.checkpoint.read_checkpoint` (``weights_only=True`` passed explicitly, which
that variable cannot override), and it must be a Lightning checkpoint of this project whose
network fits the run's model. ``train`` then hands Lightning the checked absolute path with
``weights_only=True`` as well.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from yolov4.core.checkpoint import check_state_dict, read_checkpoint
from yolov4.errors import CheckpointError
from yolov4.models import YOLOv4

__all__ = ["read_resume_checkpoint", "check_resume_fits"]

URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://")
LIGHTNING_KEYS = ("pytorch-lightning_version", "state_dict", "hyper_parameters")
# the LightningModule attribute that holds the network (YoloModule.model)
NETWORK_PREFIX = "model."


def read_resume_checkpoint(ckpt_path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """The absolute local path of ``ckpt_path`` and its contents, read with
    ``weights_only=True``. :class:`CheckpointError` for a URL (any ``scheme://``), a missing,
    truncated or foreign file, a file holding pickled objects, or a file that is not a Lightning
    checkpoint of a yolov4 run."""
    text = str(ckpt_path)
    url = URL.match(text)
    if url:
        raise CheckpointError(
            f"ckpt_path={text}: resume reads local files only, not {url['scheme']}:// (a "
            f"downloaded checkpoint would be unpickled, which can run code); download it, make "
            f"sure where it comes from, and pass its local path"
        )
    path = Path(text).expanduser().resolve()
    try:
        data = read_checkpoint(path)
    except CheckpointError as e:
        raise CheckpointError(f"ckpt_path: {e}") from e
    missing = [k for k in LIGHTNING_KEYS if k not in data]
    if missing:
        raise CheckpointError(
            f"ckpt_path={path} is not a Lightning checkpoint of a yolov4 run: it has no "
            f"{missing} (found keys {sorted(data)[:8]}); resume takes <run>/checkpoints/last.ckpt, "
            f"and module.pretrained=... starts a new run from a weights file"
        )
    return path, data


def check_resume_fits(path: Path, data: Mapping[str, Any], model: YOLOv4) -> None:
    """The network in a resume checkpoint against the run's ``model`` (keys and shapes), so that
    a run with other overrides fails here naming the difference, not inside Lightning."""
    sd = {
        k[len(NETWORK_PREFIX) :]: v
        for k, v in data["state_dict"].items()
        if k.startswith(NETWORK_PREFIX)
    }
    try:
        check_state_dict(model, sd)
    except CheckpointError as e:
        raise CheckpointError(
            f"ckpt_path={path} does not fit this run's model; resume with the model and data "
            f"overrides of the run that wrote it. {e}"
        ) from e
