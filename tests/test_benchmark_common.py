"""benchmarks/common.py: where ``--out`` writes, and the machine every figure is saved with."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from yolov4.inference.backends import REPORTED_CPU_FLAGS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def common(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import common

    return common


def parse(common, *argv: str) -> Path:
    parser = argparse.ArgumentParser()
    common.add_out_argument(parser, "--out", "forward")
    return parser.parse_args(list(argv)).out


def test_a_bare_name_goes_to_the_results_folder_and_a_path_where_it_says(common, tmp_path):
    assert parse(common) == ROOT / "benchmarks" / "results" / "forward.json"
    assert parse(common, "--out", "mine") == ROOT / "benchmarks" / "results" / "mine.json"
    assert parse(common, "--out", "run.json") == Path("run.json")
    deep = tmp_path / "a" / "b" / "figures"
    assert parse(common, "--out", str(deep)) == deep
    written = common.save(parse(common, "--out", str(tmp_path / "x" / "y.json")), {"v": 1.5})
    assert written == tmp_path / "x" / "y.json"
    assert json.loads(written.read_text()) == {"v": 1.5}


def test_an_empty_out_is_a_usage_error_naming_what_was_expected(common, capsys):
    with pytest.raises(SystemExit):
        parse(common, "--out", "")
    assert "expected a results name" in capsys.readouterr().err


def test_the_help_says_where_the_file_goes(common):
    parser = argparse.ArgumentParser()
    common.add_out_argument(parser, "--name", "train_step")
    text = " ".join(parser.format_help().split())
    assert "benchmarks/results/<name>.json" in text and "(default: train_step)" in text


def test_the_machine_has_its_cpu_flags_and_load(common):
    info = common.machine_info()
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next(
        (ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), []
    )
    assert info["cpu_flags"] == [f for f in REPORTED_CPU_FLAGS if f in flags]
    assert len(info["load_average_1_5_15"]) == 3
    assert info["cores"] >= 1 and info["cpu"]
