"""Optimiser groups, darknet's lr policy, EMA."""

from __future__ import annotations

import pytest
import torch

from yolov4 import ConfigError, build_model
from yolov4.training.ema import ModelEMA
from yolov4.training.optim import OptimConfig, build_optimizer, lr_factor, param_groups


def test_decay_only_on_conv_weights():
    model = build_model("yolov4-tiny", num_classes=2)
    groups = {g["name"]: g for g in param_groups(model, 5e-4)}
    assert groups["weights"]["weight_decay"] == 5e-4
    assert groups["bn"]["weight_decay"] == groups["bias"]["weight_decay"] == 0.0
    assert all(p.dim() == 4 for p in groups["weights"]["params"])
    assert all(p.dim() == 1 for p in groups["bn"]["params"] + groups["bias"]["params"])
    n = sum(len(g["params"]) for g in groups.values())
    assert n == len(list(model.parameters()))


def test_darknet_burn_in_and_steps():
    cfg = OptimConfig(burn_in=1000, burn_in_power=4, steps=[0.8, 0.9], scales=[0.1, 0.1])
    total = 10_000
    assert lr_factor(0, total, cfg) == pytest.approx((1 / 1000) ** 4)
    assert lr_factor(499, total, cfg) == pytest.approx(0.5**4)
    assert lr_factor(1000, total, cfg) == 1.0
    # darknet's update number n (its batch_num, from 1) is step n - 1: steps=8000 scales
    # update 8000 on, the 0-based step 7999 (the burn-in above counts the same way)
    assert lr_factor(7998, total, cfg) == 1.0
    assert lr_factor(7999, total, cfg) == pytest.approx(0.1)
    assert lr_factor(8999, total, cfg) == pytest.approx(0.01)
    odd = OptimConfig(burn_in=0, steps=[0.7992007992], scales=[0.1])  # 400000 of 500500
    assert lr_factor(399_998, 500_500, odd) == 1.0
    assert lr_factor(399_999, 500_500, odd) == pytest.approx(0.1)


def test_cosine_ends_at_final_ratio():
    cfg = OptimConfig(schedule="cosine", burn_in=10, final_lr_ratio=0.05)
    assert lr_factor(10, 110, cfg) == pytest.approx(1.0)
    assert lr_factor(60, 110, cfg) == pytest.approx(0.525)
    assert lr_factor(110, 110, cfg) == pytest.approx(0.05)


def test_optimizers_and_bad_values():
    model = build_model("yolov4-tiny", num_classes=2)
    sgd = build_optimizer(model, OptimConfig())
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["momentum"] == 0.949
    assert isinstance(build_optimizer(model, OptimConfig(optimizer="adamw")), torch.optim.AdamW)
    with pytest.raises(ConfigError, match="optim.schedule"):
        OptimConfig(schedule="linear")
    with pytest.raises(ConfigError, match="optim.steps"):
        OptimConfig(steps=[0.8], scales=[0.1, 0.1])
    # torch's own refusals came at fit start, after the data set-up, in a 45-line traceback
    with pytest.raises(ConfigError, match=r"optim.momentum must be in \[0, 1\) .* got 1.5"):
        OptimConfig(optimizer="adamw", momentum=1.5)
    with pytest.raises(ConfigError, match=r"optim.nesterov=true needs optim.momentum > 0"):
        OptimConfig(momentum=0, nesterov=True)
    with pytest.raises(ConfigError, match=r"optim.weight_decay must be >= 0"):
        OptimConfig(weight_decay=-1e-4)


def test_ema_ramps_and_follows():
    torch.manual_seed(0)
    model = build_model("yolov4-tiny", num_classes=2)
    ema = ModelEMA(model, decay=0.99, tau=10)
    assert ema.current_decay() == 0.0
    w0 = model.head_convs()[0].conv.weight.detach().clone()
    with torch.no_grad():
        model.head_convs()[0].conv.weight.add_(1.0)
    ema.update(model)  # first decay is 0.99 * (1 - e^-0.1) ~ 0.094: mostly the new weights
    d = 0.99 * (1 - torch.exp(torch.tensor(-0.1))).item()
    torch.testing.assert_close(ema.module.head_convs()[0].conv.weight, w0 * d + (w0 + 1) * (1 - d))
    for _ in range(200):
        ema.update(model)
    assert ema.current_decay() == pytest.approx(0.99, abs=1e-6)
    torch.testing.assert_close(ema.module.head_convs()[0].conv.weight, w0 + 1, atol=1e-4, rtol=0)
    assert not any(p.requires_grad for p in ema.module.parameters())
    assert list(ema.module.state_dict()) == list(model.state_dict())


def darknet_ema(deltas: list[float], w: float, alpha: float, max_batches: int):
    """darknet's ``ema_alpha`` (network.c, after each update) on one weight that each update
    moves by ``deltas[k]``: the weight and the average (``None`` until initialised) per step."""
    ema, weights, averages = None, [], []
    for k, delta in enumerate(deltas, start=1):
        w += delta
        if k >= max_batches // 2:
            if ema is None:
                ema = w
            if k == max_batches - 1000:
                w = ema
            elif k < max_batches - 1000:
                ema = alpha * ema + (1 - alpha) * w
        weights.append(w)
        averages.append(ema)
    return weights, averages


def test_ema_window_follows_darknets_ema_alpha():
    """Constant decay after step max_batches / 2 (the weights up to there), copied into the
    model at max_batches - 1000, the model training on from the copy: against a transcription of
    darknet's loop, on a one-weight model whose updates are known increments."""
    max_batches, alpha, steps = 2040, 0.9, 1060
    deltas = [0.01 * ((k * 7) % 11 - 5) + 0.002 for k in range(steps)]
    ref_weights, ref_averages = darknet_ema(deltas, 1.0, alpha, max_batches)
    model = torch.nn.Linear(1, 1, bias=False).double()
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema = ModelEMA(
        model, decay=alpha, tau=None, start=max_batches // 2, apply_at=max_batches - 1000
    )
    weights, averages = [], []
    for delta in deltas:
        with torch.no_grad():
            model.weight.add_(delta)  # the optimizer's update
        ema.update(model)
        weights.append(model.weight.item())
        averages.append(ema.module.weight.item())
    assert weights == pytest.approx(ref_weights, abs=1e-9)
    start, apply_at = max_batches // 2, max_batches - 1000
    # before darknet initialises its average, ours is the weights; from there on the same
    assert averages[: start - 1] == pytest.approx(weights[: start - 1], abs=1e-12)
    assert averages[start - 1 : apply_at - 1] == pytest.approx(
        ref_averages[start - 1 : apply_at - 1], abs=1e-9
    )
    assert weights[apply_at - 1] == pytest.approx(averages[apply_at - 2], abs=1e-12)  # the copy
    assert weights[apply_at - 1] != pytest.approx(weights[apply_at - 2] + deltas[apply_at - 1])
    # after the copy the average follows the weights (darknet's final weights are the model's)
    assert averages[apply_at:] == pytest.approx(weights[apply_at:], abs=1e-12)
