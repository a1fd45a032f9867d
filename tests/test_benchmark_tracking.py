"""benchmarks/tracking.py: which candidates a run takes and what it does to the saved results."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tracking(monkeypatch, tmp_path):
    """The script as a module, its results folder a temporary one, its video a stand-in (the
    runs below measure nothing: the candidates' runs are replaced)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    for mod in ("tracking", "common"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    import common
    import tracking

    monkeypatch.setattr(common, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(tracking, "matmul_gflops", lambda *a: 1.0)
    video = SimpleNamespace(truth=[None] * 3, image_size=(48, 64))
    monkeypatch.setattr(tracking, "make_tracking_video", lambda **kw: video)
    return tracking


def _run(tracking, monkeypatch, *argv: str) -> None:
    monkeypatch.setattr(sys, "argv", ["tracking.py", *argv])
    tracking.main()


def _saved(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "tracking.json").read_text())


def test_an_unknown_only_name_is_refused_with_the_names(tracking, monkeypatch, tmp_path, capsys):
    (tmp_path / "tracking.json").write_text('{"candidates": {"boxmot/ocsort": {"idf1": 0.9}}}')
    with pytest.raises(SystemExit) as e:
        _run(tracking, monkeypatch, "--only", "bytetrack")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "'bytetrack'" in err
    assert all(name in err for name in tracking.CANDIDATES)
    assert _saved(tmp_path) == {"candidates": {"boxmot/ocsort": {"idf1": 0.9}}}


def test_help_lists_the_candidate_names(tracking, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        _run(tracking, monkeypatch, "--help")
    out = " ".join(capsys.readouterr().out.split())
    assert all(name in out for name in tracking.CANDIDATES)


def test_an_only_run_keeps_the_other_saved_rows(tracking, monkeypatch, tmp_path):
    kept = {"idf1": 0.9, "version": "10.0"}
    old = {"candidates": {"boxmot/ocsort": kept, "trackers/sort": {"idf1": 0.1}}}
    (tmp_path / "tracking.json").write_text(json.dumps(old))
    ran = []
    monkeypatch.setattr(tracking, "_version", lambda lib: "1.0")
    monkeypatch.setattr(
        tracking, "run_candidate", lambda make, video, seeds: ran.append(make) or {"idf1": 0.5}
    )
    _run(tracking, monkeypatch, "--only", "trackers/sort")
    assert ran == [tracking.CANDIDATES["trackers/sort"]]
    rows = _saved(tmp_path)["candidates"]
    assert rows == {"boxmot/ocsort": kept, "trackers/sort": {"idf1": 0.5, "version": "1.0"}}


def test_nothing_is_saved_when_no_candidate_ran(tracking, monkeypatch, tmp_path):
    old = '{"candidates": {"boxmot/ocsort": {"idf1": 0.9}}}'
    (tmp_path / "tracking.json").write_text(old)
    monkeypatch.setattr(tracking, "_version", lambda lib: None)
    with pytest.raises(SystemExit, match="no candidate ran"):
        _run(tracking, monkeypatch)
    assert (tmp_path / "tracking.json").read_text() == old
