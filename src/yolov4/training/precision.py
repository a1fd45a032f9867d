"""``trainer.precision=auto``: the training precision that runs fastest on this machine.

* CPU with native bf16 arithmetic (``amx_bf16`` or ``avx512_bf16`` in ``/proc/cpuinfo``, and
  oneDNN's bf16 kernels usable by torch): ``bf16-mixed``. A training step of yolov4-tiny@256
  batch 16 runs about 2.3x faster than in fp32 on an AMX Xeon (``benchmarks/train_step.py``).
* Any other CPU: ``32-true`` (bf16 is emulated there, slower than fp32).
* CUDA: ``bf16-mixed`` on GPUs with bf16 (Ampere and later), else ``16-mixed`` (with Lightning's
  gradient scaler), as ``trainer=gpu`` runs.

Any other value of ``trainer.precision`` is Lightning's, passed through unchanged; a bf16 one
on a CPU without native bf16 is warned about, and ``16-mixed``, which Lightning runs as
``bf16-mixed`` on a CPU, in one line that says both (:func:`ran_precision_note`). The loss is
computed in float32 whatever the precision (:class:`yolov4.training.module.YoloModule` runs it
outside autocast on float32 maps). :envvar:`YOLOV4_CPU_BF16` (``0`` or ``1``) overrides what the
CPU reports, e.g. to see the fp32 choice on a bf16 CPU.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from yolov4.errors import ConfigError
from yolov4.inference.backends import BF16_CPU_FLAGS, cpu_features
from yolov4.training.noise import precision_note, rank_zero_logger

__all__ = [
    "AUTO",
    "CPU_BF16_ENV",
    "check_accelerator",
    "cpu_bf16",
    "ran_precision_note",
    "resolve_precision",
]

log = rank_zero_logger(__name__)  # the same in every process: rank 0's
AUTO = "auto"
# Lightning's float64 precisions: refused (the batches, the loss and the targets are float32)
DOUBLE = ("64", "64-true", "double")
# the values that run bf16 on a CPU (Lightning turns 16-mixed into bf16-mixed there)
CPU_BF16_VALUES = ("bf16", "bf16-mixed", "16", "16-mixed")
FP16_VALUES = ("16", "16-mixed")  # bf16 on a CPU: ran_precision_note says so, and the emulation
EMULATED = "it is emulated there, slower than 32-true, which trainer.precision=auto chooses"
# Lightning's half-precision weights: refused (float32 batches meet half weights)
HALF_TRUE = ("16-true", "bf16-true")
CPU_BF16_ENV = "YOLOV4_CPU_BF16"  # "1": treat the CPU as bf16-native, "0": as without bf16


def cpu_bf16() -> tuple[bool, str]:
    """Whether this CPU trains in bf16 natively, and why (the flags that decided it)."""
    forced = os.environ.get(CPU_BF16_ENV)
    if forced is not None:
        if forced not in ("0", "1"):
            raise ConfigError(f"{CPU_BF16_ENV} must be 0 or 1, got {forced!r}")
        return forced == "1", f"{CPU_BF16_ENV}={forced}"
    features = cpu_features()
    native = [f for f in BF16_CPU_FLAGS if f in features["flags"]]
    onednn = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    flags = ", ".join(features["flags"]) or "none of the reported flags"
    reason = (
        f"CPU {features['cpu']} has {flags}; torch capability "
        f"{torch.backends.cpu.get_cpu_capability()}, oneDNN bf16 {'yes' if onednn else 'no'}"
    )
    return bool(native) and onednn, reason


def _uses_cuda(accelerator: Any) -> bool:
    name = str(accelerator).lower()
    if name in ("gpu", "cuda"):
        return True
    return name == AUTO and torch.cuda.is_available()


def check_accelerator(trainer: Any) -> None:
    """``trainer`` (the ``trainer`` config node) against this machine, in place: a GPU asked for
    where none is visible is a :class:`ConfigError` saying how to train on the CPU; on the CPU
    ``sync_batchnorm`` is turned off, logged (torch's SyncBatchNorm runs on CUDA only; CPU
    processes normalise their own batches, as without it)."""
    accelerator = str(trainer.get("accelerator", AUTO)).lower()
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} (trainer=gpu, trainer=ddp or an experiment= "
            "recipe) but this machine has no CUDA GPU: add trainer=default to train on the CPU, "
            "or trainer.accelerator=cpu"
        )
    if trainer.get("sync_batchnorm") and not _uses_cuda(accelerator):
        log.info(
            "trainer.sync_batchnorm=true is not applied on the CPU (SyncBatchNorm runs on CUDA "
            "only): each process normalises over its own batch"
        )
        trainer.sync_batchnorm = False


def resolve_precision(asked: Any, accelerator: Any = "cpu") -> Any:
    """``trainer.precision`` as Lightning takes it: ``auto`` resolved for ``accelerator``
    (``trainer.accelerator``; ``auto`` is CUDA when a GPU is visible, else the CPU) and logged
    with what decided it; any other value returned unchanged."""
    if str(asked) in DOUBLE:
        raise ConfigError(
            f"trainer.precision={asked}: the batches and the loss are float32, so a float64 "
            f"network cannot train here; use {AUTO}, 32-true, bf16-mixed or 16-mixed"
        )
    if str(asked) in HALF_TRUE:
        raise ConfigError(
            f"trainer.precision={asked} casts the network's weights to half precision, and "
            f"the batches are float32; use {asked.replace('-true', '-mixed')} (autocast, the "
            f"weights stay float32), {AUTO} or 32-true"
        )
    if str(asked) != AUTO:
        cpu_bf16_asked = str(asked) in CPU_BF16_VALUES and str(asked) not in FP16_VALUES
        if cpu_bf16_asked and not _uses_cuda(accelerator):
            native, why = cpu_bf16()
            if not native:
                log.warning(
                    "trainer.precision=%s runs bf16 on a CPU without native bf16 (%s): %s",
                    asked, why, EMULATED,
                )  # fmt: skip
        return asked
    if _uses_cuda(accelerator):
        bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        chosen = "bf16-mixed" if bf16 else "16-mixed"
        why = f"CUDA {'with' if bf16 else 'without'} bf16"
    else:
        native, why = cpu_bf16()
        chosen = "bf16-mixed" if native else "32-true"
        why = f"{why}: {'native' if native else 'no native'} bf16 ({' or '.join(BF16_CPU_FLAGS)})"
    log.info("trainer.precision=auto -> %s (%s)", chosen, why)
    return chosen


def ran_precision_note(asked: Any, ran: str, accelerator: str) -> str | None:
    """The warning when the trainer runs another precision than ``trainer.precision`` asked
    (:func:`~yolov4.training.noise.precision_note`; ``accelerator``: the trainer's accelerator
    class name), saying also that bf16 is emulated where it ran on a CPU without native bf16
    (``16-mixed`` there); ``None`` when the two agree."""
    note = precision_note(asked, ran, accelerator)
    if note is None or not ran.startswith("bf16") or "CPU" not in accelerator:
        return note
    native, why = cpu_bf16()
    return note if native else f"{note}; this CPU has no native bf16 ({why}): {EMULATED}"
