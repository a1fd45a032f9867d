"""Where ``python predict.py`` writes, decided before any source is read or model loaded.

``output=DIR`` is that folder. Without ``output=`` a run writes into its run directory,
``outputs/predict/<date>_<time>``, or ``<date>_<time>_2``, ``_3``, ... where that exists (runs
started in the same second): the folder is made as the run starts
(:class:`yolov4.cli.hydra_hooks.NewRunDir`), before Hydra writes the run's ``.hydra/`` config
and ``predict.log`` there, so each run's folder holds its own files only, as ultralytics numbers
``predict``, ``predict2``, .... A folder holding an earlier run's outputs (its ``summary.json``
or ``predictions.jsonl``: an ``output=`` or a ``hydra.run.dir=`` given again) is refused unless
``overwrite=true``, as ``export.py`` refuses a folder it would write into. An ``output=`` where
an annotated copy would replace one of the run's own input files is refused
(:func:`check_output`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from yolov4.cli.common import launched_rank
from yolov4.errors import ConfigError
from yolov4.inference.sources import ImageFiles, VideoFile, output_name
from yolov4.inference.writers import PREDICTIONS, SUMMARY, VIDEO_SUFFIX

__all__ = [
    "RUN_OUTPUTS",
    "earlier_run",
    "check_earlier_run",
    "output_folder",
    "input_files",
    "check_output",
]

log = logging.getLogger(__name__)

RUN_OUTPUTS = (SUMMARY, PREDICTIONS)  # the files that mark a folder as holding a run's outputs


def earlier_run(folder: Path) -> list[str]:
    """The names of :data:`RUN_OUTPUTS` that ``folder`` holds (empty: no earlier run there)."""
    return [name for name in RUN_OUTPUTS if (folder / name).is_file()]


def check_earlier_run(cfg: DictConfig) -> None:
    """A :class:`ConfigError` for an ``output=`` holding an earlier run's outputs without
    ``overwrite=true``, naming the folder, what it holds and the two ways out; it reads
    nothing but that folder, so it runs before the sources open and the model loads (the run
    directory is checked as :func:`output_folder` chooses it)."""
    overwrite = cfg.get("overwrite", False)
    if not isinstance(overwrite, bool):
        raise ConfigError(f"overwrite must be true or false, got {overwrite!r}")
    if cfg.get("output") and not launched_rank():  # rank 0 has checked it
        _refuse_earlier_run(Path(cfg.output), "output=", overwrite)


def _refuse_earlier_run(folder: Path, key: str, overwrite: bool) -> None:
    held = earlier_run(folder)
    named = f"{key}{folder}" if key == "output=" else f"the run directory {folder}"
    if held and not overwrite:
        raise ConfigError(
            f"{named} holds the outputs of an earlier run ({', '.join(held)}); give another "
            f"{key} (or leave {key} out: each run writes a folder of its own), or pass "
            "overwrite=true to write this run there (its predictions.jsonl and summary.json "
            "replace the earlier run's; the earlier run's other files stay unless this run "
            "writes files of the same names)"
        )
    if held:
        log.warning(
            "%s: overwrite=true: this run's predictions.jsonl and summary.json replace the "
            "earlier run's; its other files stay unless this run writes the same names",
            named,
        )


def output_folder(cfg: DictConfig) -> Path:
    """The folder the run writes into, set as ``cfg.output`` so that every later step uses it:
    ``output=`` (:func:`check_earlier_run` has checked it), else the run directory, refused
    as such an ``output=`` when it holds an earlier run (a ``hydra.run.dir=`` given again;
    without it each run makes a folder of its own). The ranks a launcher starts after rank 0
    get rank 0's run directory and leave the check to it."""
    if cfg.get("output"):
        return Path(cfg.output)
    out = Path(cfg.paths.output_dir)
    if not launched_rank():
        _refuse_earlier_run(out, "hydra.run.dir=", cfg.get("overwrite", False))
    cfg.output = str(out)
    return out


def input_files(sources: list[Any]) -> list[tuple[Path, str, bool]]:
    """``(file, output name, is a video)`` of each image file and video file among
    ``sources``: what the run will write, known before it starts (live sources are not files)."""
    found = []
    for s in sources:
        if isinstance(s, ImageFiles):
            found += [(f, output_name(f, s.root), False) for f in s.files]
        elif isinstance(s, VideoFile):
            found.append((s.path, s.name, True))
    return found


def check_output(out: Path, sources: list[Any], save: bool = True) -> None:
    """Refuse an ``output=`` that is a file, or where an annotated image or video (``save``)
    would be written over one of the run's own input files (a user's originals), before the
    model is loaded or anything is written."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output={out} is a file; expected a folder for the predictions")
    if not save:
        return
    inputs, targets = set(), {}
    for path, name, video in input_files(sources):
        inputs.add(path.resolve())
        target = (out / name).with_suffix(VIDEO_SUFFIX) if video else out / name
        targets[target.resolve()] = path
    clash = [(src, t) for t, src in targets.items() if t in inputs]
    if clash:
        src, target = clash[0]
        raise ConfigError(
            f"output={out} would overwrite {len(clash)} input file(s) with annotated copies, "
            f"e.g. {src} by {target}; write to another folder (without output=: "
            "outputs/predict/<date>_<time>) or pass save=false"
        )
