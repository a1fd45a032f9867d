"""``trainer.precision=auto``: bf16-mixed on a CPU with native bf16, 32-true elsewhere (both
branches through YOLOV4_CPU_BF16), CUDA's choice, explicit values untouched, and the loss in
float32 under bf16 autocast."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from yolov4.errors import ConfigError
from yolov4.training import precision as P
from yolov4.training.precision import CPU_BF16_ENV, cpu_bf16, resolve_precision


def cpuinfo_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def test_auto_follows_this_cpu(monkeypatch, caplog):
    """Read independently from /proc/cpuinfo: amx_bf16 or avx512_bf16 -> bf16-mixed."""
    monkeypatch.delenv(CPU_BF16_ENV, raising=False)
    native = bool({"amx_bf16", "avx512_bf16"} & cpuinfo_flags())
    native = native and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    with caplog.at_level(logging.INFO, logger="yolov4.training.precision"):
        chosen = resolve_precision("auto", "cpu")
    assert chosen == ("bf16-mixed" if native else "32-true")
    [line] = [r.getMessage() for r in caplog.records]
    assert line.startswith(f"trainer.precision=auto -> {chosen} (CPU ")
    # the flags that decided it are named: those the CPU has, then the ones auto looks for
    has = line.partition(" has ")[2].partition(";")[0]
    for flag in ("amx_bf16", "avx512_bf16"):
        assert (flag in has) == (flag in cpuinfo_flags())
    assert ("no native bf16" in line) != native


@pytest.mark.parametrize(("forced", "expected"), [("1", "bf16-mixed"), ("0", "32-true")])
def test_auto_both_cpu_branches(monkeypatch, caplog, forced, expected):
    monkeypatch.setenv(CPU_BF16_ENV, forced)
    with caplog.at_level(logging.INFO, logger="yolov4.training.precision"):
        assert resolve_precision("auto", "cpu") == expected
    assert f"{CPU_BF16_ENV}={forced}" in caplog.text
    assert cpu_bf16()[0] == (forced == "1")


def test_bad_override_is_refused(monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "yes")
    with pytest.raises(ConfigError, match=r"YOLOV4_CPU_BF16 must be 0 or 1, got 'yes'"):
        resolve_precision("auto", "cpu")


@pytest.mark.parametrize("asked", ["32-true", "16-mixed", "bf16-mixed", 32])
def test_explicit_values_pass_through(monkeypatch, asked):
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    assert resolve_precision(asked, "cpu") == asked
    assert resolve_precision(asked, "gpu") == asked


@pytest.mark.parametrize("asked", ["bf16-mixed", "16-mixed", "32-true"])
@pytest.mark.parametrize("native", ["0", "1"])
def test_explicit_bf16_on_a_cpu_without_it_is_warned(monkeypatch, caplog, asked, native):
    """Lightning runs it (emulated bf16, slower than fp32): the warning says so; on CUDA or a
    bf16 CPU, and for 32-true, nothing is said."""
    monkeypatch.setenv(CPU_BF16_ENV, native)
    monkeypatch.setattr(P.torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.INFO, logger="yolov4.training.precision"):
        assert resolve_precision(asked, "cpu") == asked
        assert resolve_precision(asked, "gpu") == asked
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    if native == "0" and asked == "bf16-mixed":  # 16-mixed: ran_precision_note says it
        assert warned == [
            f"trainer.precision={asked} runs bf16 on a CPU without native bf16 "
            f"({CPU_BF16_ENV}=0): it is emulated there, slower than 32-true, which "
            "trainer.precision=auto chooses"
        ]
    else:
        assert warned == []


@pytest.mark.parametrize("asked", ["64-true", "64", 64, "double"])
def test_float64_is_refused_naming_what_trains(asked):
    with pytest.raises(ConfigError, match=r"float64 network cannot train here; use auto, 32-true"):
        resolve_precision(asked, "cpu")


@pytest.mark.parametrize(("bf16", "expected"), [(True, "bf16-mixed"), (False, "16-mixed")])
@pytest.mark.parametrize("accelerator", ["gpu", "cuda", "auto"])
def test_auto_on_cuda(monkeypatch, bf16, expected, accelerator):
    monkeypatch.setattr(P.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(P.torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    assert resolve_precision("auto", accelerator) == expected


def test_auto_accelerator_without_gpu_is_the_cpu(monkeypatch):
    monkeypatch.setattr(P.torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    assert resolve_precision("auto", "auto") == "32-true"


def test_loss_is_float32_under_bf16_autocast(monkeypatch):
    """YoloModule.training_step under CPU bf16 autocast (what bf16-mixed runs): the forward
    makes bf16 maps, the loss runs with autocast off and returns float32 values equal to the
    loss of the same maps cast to float32 outside autocast."""
    from yolov4 import build_model
    from yolov4.training.module import YoloModule

    torch.manual_seed(0)
    module = YoloModule(model=build_model("yolov4-tiny", num_classes=3).config.to_dict())
    loss_type = type(module.loss_fn)
    real = loss_type.forward
    seen = {}

    def spy(self, maps, targets):
        seen["autocast"] = torch.is_autocast_enabled("cpu")
        seen["maps"] = [m.detach() for m in maps]
        return real(self, maps, targets)

    monkeypatch.setattr(loss_type, "forward", spy)
    batch = {
        "images": torch.rand(2, 3, 64, 64),
        "targets": torch.tensor([[0, 1, 5.0, 5.0, 30.0, 40.0], [1, 2, 10.0, 2.0, 60.0, 50.0]]),
    }
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = module.training_step(batch, 0)
    assert seen["autocast"] is False
    assert all(m.dtype == torch.bfloat16 for m in seen["maps"])
    assert loss.dtype == torch.float32
    reference = real(module.loss_fn, [m.float() for m in seen["maps"]], batch["targets"])
    torch.testing.assert_close(loss.detach(), reference.total)


@pytest.mark.parametrize("native", ["0", "1"])
def test_fp16_run_as_bf16_on_a_cpu_is_one_line_saying_both(monkeypatch, caplog, native):
    """trainer.precision=16-mixed on a CPU without native bf16 gave two warnings for one fact
    (bf16 emulated, then 16-mixed run as bf16-mixed); one line says both, and on a bf16 CPU
    only that it runs as bf16-mixed."""
    monkeypatch.setenv(CPU_BF16_ENV, native)
    with caplog.at_level(logging.INFO, logger="yolov4.training.precision"):
        assert resolve_precision("16-mixed", "cpu") == "16-mixed"
    assert [r for r in caplog.records if r.levelno == logging.WARNING] == []
    note = P.ran_precision_note("16-mixed", "bf16-mixed", "CPUAccelerator")
    assert note.startswith("trainer.precision=16-mixed runs as bf16-mixed on CPUAccelerator")
    emulated = f"; this CPU has no native bf16 ({CPU_BF16_ENV}=0): it is emulated there"
    assert (emulated in note) == (native == "0")
    assert P.ran_precision_note("16-mixed", "16-mixed", "CUDAAccelerator") is None
    assert P.ran_precision_note("bf16-mixed", "bf16-mixed", "CPUAccelerator") is None
