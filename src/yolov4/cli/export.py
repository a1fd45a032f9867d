"""``python export.py checkpoint=...``: the serving artifact of a checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from yolov4.core.artifact import read_metadata
from yolov4.export.artifact import export_artifact

__all__ = ["export", "hydra_main", "default_output"]

log = logging.getLogger(__name__)
EXPORT_DIR = "export"


def default_output(checkpoint: str | Path) -> Path:
    """``<run>/weights/best.pt`` -> ``<run>/export``; elsewhere ``export`` beside the file."""
    p = Path(checkpoint).resolve()
    return (
        p.parent.parent if p.parent.name in ("weights", "checkpoints") else p.parent
    ) / EXPORT_DIR


def export(cfg: DictConfig) -> Path:
    out = Path(cfg.output) if cfg.output else default_output(cfg.checkpoint)
    formats = OmegaConf.to_container(cfg.formats, resolve=True)
    size = OmegaConf.to_container(cfg.input_size, resolve=True) if cfg.input_size else None
    path = export_artifact(cfg.checkpoint, out, formats=formats, opset=cfg.opset, input_size=size)
    meta = read_metadata(path)
    for name, p in meta["parity"].items():
        log.info(
            "%s: worst difference vs PyTorch %.3g (%.3g relative)",
            name,
            p["max_abs_diff"],
            p["max_rel_diff"],
        )
    print(
        f"exported {meta['model']['name']} {cfg.checkpoint} -> {path} "
        f"({', '.join(meta['files'])}), input {meta['input_size']}"
    )
    return path


@hydra.main(version_base="1.3", config_path="../configs", config_name="export")
def hydra_main(cfg: DictConfig) -> None:
    export(cfg)
