"""benchmarks/predict_sources.py: the predict command run more than once, and a failed run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# predict.py's contract as far as the benchmark reads it: it refuses an output folder holding an
# earlier run's summary.json, and writes predictions.jsonl and summary.json there
STUB = """import json, sys
from pathlib import Path
args = dict(a.split("=", 1) for a in sys.argv[1:])
out = Path(args["output"])
if (out / "summary.json").exists():
    sys.exit(f"{out} holds an earlier run's outputs")
out.mkdir(parents=True)
(out / "predictions.jsonl").write_text('{"detections": [1, 2]}\\n' * 3)
(out / "summary.json").write_text(json.dumps({"per_second": 7.0}))
"""


@pytest.fixture
def predict_sources(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    for mod in ("predict_sources", "common", "predict"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    import predict_sources

    return predict_sources


def test_the_command_runs_again_in_the_same_folder(predict_sources, monkeypatch, tmp_path):
    (tmp_path / "checkout").mkdir()
    (tmp_path / "checkout" / "predict.py").write_text(STUB)
    monkeypatch.setattr(predict_sources, "ROOT", tmp_path / "checkout")
    out = tmp_path / "out"
    out.mkdir()
    args = (tmp_path / "v.mp4", tmp_path / "one.mp4", tmp_path / "m.pt", 4, out)
    first, second = predict_sources.predict_command(*args), predict_sources.predict_command(*args)
    assert first["available"] and second["available"], second.get("reason")
    assert second["summary_fps"] == 7.0 and second["records"] == 3


def test_a_failed_command_in_the_rounds_is_reported(predict_sources):
    models = iter([10.0, 20.0, 30.0])
    runs = iter([
        {"available": True, "summary_fps": 9.0, "steady_fps": 8.0, "boxes_per_frame": 2.0},
        {"available": False, "reason": "predict.py failed: no such checkpoint"},
    ])  # fmt: skip
    row = predict_sources.interleaved(lambda: next(models), lambda: next(runs), rounds=3)
    assert not row["available"]
    assert row["reason"] == "predict.py failed: no such checkpoint"
    assert row["model_only_fps"] == [10.0, 20.0]
    assert row["ratios"] == [pytest.approx(9.0 / 15.0, abs=1e-3)]
    assert row["median_ratio"] == row["ratios"][0]


def test_rounds_with_no_command_run_have_no_ratio(predict_sources):
    failed = {"available": False, "reason": "predict.py not in this checkout"}
    row = predict_sources.interleaved(lambda: 10.0, lambda: failed, rounds=2)
    assert row["median_ratio"] is None and row["reason"] == failed["reason"]
