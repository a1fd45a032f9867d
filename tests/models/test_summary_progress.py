"""``python -m yolov4.models``: every phase that can take seconds on the big networks (build,
forward + FLOP count, timing) says so on stderr as it starts, and each timed run as it ends;
stdout holds the summary alone."""

from __future__ import annotations

import re

from yolov4.models.__main__ import main


def test_phases_and_timed_runs_are_reported_on_stderr(capsys):
    main(["yolov4-tiny", "--size", "64", "--repeats", "2", "--num-classes", "2"])
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert err[:3] == [
        "building yolov4-tiny...",
        "forward pass and FLOP count at 64x64 (WxH)...",
        "timing the fused forward: 1 warm-up + 2 runs...",
    ]
    assert [re.sub(r"[\d.]+ ms", "T ms", line) for line in err[3:]] == [
        "  timed forward 1/2: T ms",
        "  timed forward 2/2: T ms",
    ]
    assert "building" not in captured.out and "fused forward" in captured.out


def test_no_timing_no_timing_progress(capsys):
    main(["yolov4-tiny", "--size", "64", "--repeats", "0"])
    assert "timing" not in capsys.readouterr().err
