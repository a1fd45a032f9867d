"""The errors a training step stops on, each saying what to change: out of memory, and a loss
that is no longer finite.

:meth:`yolov4.training.module.YoloModule.training_step` raises them.
"""

from __future__ import annotations

import torch

from yolov4.errors import DivergedError
from yolov4.loss import LossOutput

__all__ = ["diverged_error", "out_of_memory_error"]


def out_of_memory_error(e: torch.OutOfMemoryError, images: torch.Tensor) -> torch.OutOfMemoryError:
    """``e`` restated for a batch ``images`` ``(B, 3, H, W)``: its batch size and input size, and
    the settings that lower the memory a step takes."""
    return torch.OutOfMemoryError(
        f"out of memory with batch size {images.shape[0]} at input {tuple(images.shape[-2:])}: "
        f"lower data.batch_size (with nominal_batch set, the accumulation follows; without it, "
        f"keep the images per step with trainer.accumulate_grad_batches), "
        f"use trainer.precision=16-mixed or bf16-mixed, or a smaller data.input_size. ({e})"
    )


def diverged_error(loss: LossOutput, step: int, last: str) -> DivergedError:
    """The error of a ``loss`` that is not finite at optimizer step ``step``: its parts, the
    settings that steady training, and the checkpoint to resume from (``last``, "" when none was
    written)."""
    return DivergedError(
        f"the loss became {loss.total.item()} at step {step} (box={loss.box.item():.4g} "
        f"obj={loss.obj.item():.4g} cls={loss.cls.item():.4g}); stopping instead of training on NaN. "
        f"Lower optim.lr, lengthen optim.burn_in, set trainer.gradient_clip_val, or use "
        f"trainer.precision=32; "
        + (
            f"resume from the last good checkpoint with ckpt_path={last}"
            if last
            else "no checkpoint was written before it: start the run again"
        )
    )
