"""Lightning's known noise, filtered from a run's output: the lines that say nothing about the run.

Each entry is one exact message start, matched only at INFO level or below (a logging filter) or
as that warning text and category (a warnings filter); warnings and errors of any other text
pass. What is filtered, per run (about 19 lines):

- ``Seed set to 0``; ``GPU available: False, used: False``; ``TPU available: False, using: 0 TPU
  cores``; ``💡 Tip: ... litlogger / litmodels``; ``Loading `train_dataloader` to estimate number
  of stepping batches.``; ``Using bfloat16 Automatic Mixed Precision (AMP)`` (``train.py``'s
  model line names the precision) (INFO lines of Lightning's rank-zero and seed loggers);
- torch's ``isinstance(treespec, LeafSpec) is deprecated`` FutureWarning, raised inside
  Lightning's own ``_pytree.py``;
- ``You passed Trainer(accelerator='cpu', precision='16-mixed') ...``: ``train.py`` logs what
  ran instead (:func:`precision_note`);
- on resume (``quiet_lightning(resuming=True)``): ``Checkpoint directory ... exists and is not
  empty`` (it is the run's own);
- on a resume mid-epoch from ``requeue.ckpt`` (:func:`quiet_mid_epoch_resume`): ``You're resuming
  from a checkpoint that ended before the epoch ended and your dataloader is not resumable``
  (the train loader skips the images the epoch trained on: :mod:`yolov4.training.epoch_skip`);
- the 13-line model summary table (``trainer.enable_model_summary: false`` in
  ``configs/trainer/default.yaml``; ``train.py`` logs one line);
- the lines every process of a multi-process run would repeat (the config's notes, the run's
  summary): the modules that log them log on rank 0 only (:func:`rank_zero_logger`).
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from typing import Any

from lightning.fabric.utilities.rank_zero import rank_zero_only
from lightning.fabric.utilities.warnings import PossibleUserWarning

__all__ = [
    "quiet_lightning",
    "quiet_mid_epoch_resume",
    "precision_note",
    "rank_zero_logger",
    "NOISE_LOGGERS",
    "NOISE_LINES",
]

# the loggers Lightning's rank_zero_info / seed_everything write to (fabric's or pytorch's
# rank-zero logger, whichever is imported last)
NOISE_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning.fabric.utilities.seed",
)
NOISE_LINES = (
    r"Seed set to \d+",
    r"GPU available: ",
    r"TPU available: ",
    r"HPU available: ",
    r"💡 Tip: ",
    r"Loading `train_dataloader` to estimate number of stepping batches",
    r"Using (?:16bit|bfloat16) Automatic Mixed Precision",
)
NOISE_WARNINGS = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
    (r"You passed `Trainer\(accelerator='cpu', precision='16-mixed'\)`", UserWarning),
)
# what a resume into its own run directory always meets
RESUME_WARNINGS = ((r"Checkpoint directory .* exists and is not empty", UserWarning),)
# what a resume mid-epoch meets, where the project's train loader skips the epoch's trained images
MID_EPOCH_WARNING = (
    r"You're resuming from a checkpoint that ended before the epoch ended and your dataloader "
    r"is not resumable",
    PossibleUserWarning,
)
# Trainer(precision=...) aliases, as Lightning names them
PRECISION_ALIASES = {"16": "16-mixed", "bf16": "bf16-mixed", "32": "32-true", "64": "64-true"}


class _DropLines(logging.Filter):
    pattern = re.compile("|".join(f"(?:{p})" for p in NOISE_LINES))

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or not self.pattern.match(record.getMessage())


def quiet_lightning(resuming: bool = False) -> None:
    """Install the filters (idempotent); ``resuming``: also those of a resumed run."""
    for name in NOISE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLines) for f in logger.filters):
            logger.addFilter(_DropLines())
    for message, category in (*NOISE_WARNINGS, *(RESUME_WARNINGS if resuming else ())):
        warnings.filterwarnings("ignore", message=message, category=category)


def quiet_mid_epoch_resume() -> None:
    """Filter Lightning's warning that a mid-epoch resume repeats the epoch's batches: the
    :class:`~yolov4.training.requeue.Requeue` callback's loader skips them."""
    message, category = MID_EPOCH_WARNING
    warnings.filterwarnings("ignore", message=message, category=category)


def precision_note(asked: object, ran: str, accelerator: str) -> str | None:
    """A warning when the trainer runs another precision than ``trainer.precision`` asked
    (Lightning turns ``16-mixed`` on a CPU into ``bf16-mixed``); ``None`` when the two agree."""
    wanted = PRECISION_ALIASES.get(str(asked), str(asked))
    if wanted == ran:
        return None
    return (
        f"trainer.precision={asked} runs as {ran} on {accelerator} (this device has no "
        f"{wanted} autocast); set trainer.precision={ran} to ask for it, or 32-true"
    )


class _RankZero(logging.LoggerAdapter):
    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if rank_zero_only.rank == 0 and os.environ.get("NODE_RANK", "0") == "0":
            super().log(level, msg, *args, **kwargs)


def rank_zero_logger(name: str) -> logging.LoggerAdapter:
    """The logger ``name``, logging in the job's rank-0 process only: Lightning's
    ``rank_zero_only.rank`` (from the launcher's ``RANK``, ``LOCAL_RANK`` or ``SLURM_PROCID``
    as a process starts, the strategy's global rank once the trainer is set up), on node 0
    (``NODE_RANK``). For the modules whose every line would be the same in each process of a
    multi-process run (the DDP processes Lightning starts run ``train.py`` again)."""
    return _RankZero(logging.getLogger(name), {})
