"""metadata.json's ``preprocess_rules``: a consumer evaluating their formulas gets the geometry
:func:`~yolov4.ops.letterbox.letterbox_params` and :func:`~yolov4.ops.letterbox.unmap_boxes`
compute, on the extreme sizes where a formula without the clamps gives a zero-sized content."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from yolov4.export.artifact import PREPROCESS_RULES
from yolov4.ops.letterbox import letterbox_params, unmap_boxes

ASSIGNMENT = re.compile(r"(\w+) = ([^;:]+)")
# (H0, W0) originals: lines one pixel wide, a single pixel, halves that round to even
# (832 x 5 at 416: 2.5 -> 2), sides just above and below the input's
ORIGINALS = [(1, 2000), (2000, 1), (1, 1), (2, 5000), (3, 2000), (5, 832), (832, 5), (417, 415)]
INPUTS = [(416, 416), (320, 640), (32, 32)]


def formulas(rule: str) -> list[tuple[str, str]]:
    """The ``name = expression`` parts of a rule's text, in order."""
    parts = [ASSIGNMENT.fullmatch(p.strip()) for p in rule.split(";")]
    return [(m[1], m[2]) for m in parts if m]


def evaluate(rule: str, **names: float) -> dict[str, float]:
    """Each formula of ``rule`` evaluated in order with ``names`` (Python's min, max, round)."""
    scope = {"min": min, "max": max, "round": round, **names}
    for name, expression in formulas(rule):
        scope[name] = eval(expression, {"__builtins__": {}}, scope)  # noqa: S307 - our own text
    return scope


@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
def test_the_resize_rule_gives_letterbox_params_geometry(mode):
    assert {n for n, _ in formulas(PREPROCESS_RULES[mode])} >= {"w", "h", "pad_x", "pad_y"}
    for h0, w0 in ORIGINALS:
        for h_net, w_net in INPUTS:
            rule = evaluate(PREPROCESS_RULES[mode], H=h_net, W=w_net, H0=h0, W0=w0)
            params = letterbox_params((h0, w0), (h_net, w_net), mode)
            code = (round(params.scale_x * w0), round(params.scale_y * h0))
            assert (rule["w"], rule["h"]) == code, (mode, h0, w0, h_net, w_net)
            assert 1 <= rule["w"] <= w_net and 1 <= rule["h"] <= h_net
            assert (rule["pad_x"], rule["pad_y"]) == (params.pad_x, params.pad_y)


@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
def test_the_boxes_back_rule_is_unmap_boxes(mode):
    rng = np.random.default_rng(0)
    assert [n for n, _ in formulas(PREPROCESS_RULES["boxes back"])] == ["x0", "y0"]
    for h0, w0 in ORIGINALS:
        h_net, w_net = INPUTS[1]
        params = letterbox_params((h0, w0), (h_net, w_net), mode)
        boxes = np.sort(rng.uniform(-20, 660, (16, 4)), axis=1)[:, [0, 2, 1, 3]]  # x1 y1 x2 y2
        code = unmap_boxes(boxes, params, (h0, w0))
        geometry = evaluate(PREPROCESS_RULES[mode], H=h_net, W=w_net, H0=h0, W0=w0)
        for box, expected in zip(boxes, code):
            ends = [
                evaluate(PREPROCESS_RULES["boxes back"], **geometry, x=box[i], y=box[i + 1])
                for i in (0, 2)
            ]
            got = [ends[0]["x0"], ends[0]["y0"], ends[1]["x0"], ends[1]["y0"]]
            assert all(
                math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9) for a, b in zip(got, expected)
            )
