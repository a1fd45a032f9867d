"""Public helpers leave their inputs and the process's global state as they found them."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from yolov4.models.layers import Mish


def test_mish_inference_path_leaves_its_input_unchanged():
    x = torch.linspace(-20, 100, 1001)
    before = x.clone()
    with torch.no_grad():  # the fast, non-autograd path
        y = Mish()(x)
    assert torch.equal(x, before)
    torch.testing.assert_close(y, F.mish(before), rtol=1e-5, atol=1e-6)
    assert torch.isfinite(y).all()


def test_pr_curve_plot_does_not_switch_the_matplotlib_backend(tmp_path):
    import matplotlib

    from yolov4.evaluation.plots import plot_pr_curves, pr_curve_figure

    before = matplotlib.get_backend()
    matplotlib.rcParams["backend"] = "svg"  # a user's choice the plot must not undo
    try:
        precision = np.random.default_rng(0).random((10, 101, 2, 4, 3))
        path = plot_pr_curves(precision, ["a", "b"], tmp_path / "pr.png")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert pr_curve_figure(precision, ["a", "b"]).axes
        assert matplotlib.get_backend() == "svg"
    finally:
        matplotlib.rcParams["backend"] = before
