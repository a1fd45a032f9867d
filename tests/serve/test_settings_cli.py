"""``yolov4-serve``'s options are generated from ServeSettings: every field that declares an
option is a flag (or the positional ARTIFACT_DIR) with the field's type, default and help, and
the parsed command line is that dataclass."""

from __future__ import annotations

import dataclasses

import pytest

from yolov4.serve.__main__ import parse_args
from yolov4.serve.settings import ServeSettings, _options


def test_no_flags_give_the_dataclass_defaults():
    assert parse_args(["some/dir"]) == ServeSettings(artifact_dir="some/dir")


def test_every_option_sets_its_field_with_the_field_type(capsys):
    argv, expected = ["art"], {"artifact_dir": "art"}
    for f, kind, opt in _options():
        if opt["positional"]:
            continue
        flag = "--" + f.name.removesuffix("_s").replace("_", "-")
        if opt["choices"]:
            value = next(c for c in opt["choices"] if c != f.default)
        elif kind is str:
            value = "0.0.0.0"
        else:  # int / float: a value other than the default, inside the bounds
            value = kind((f.default or 1) * 2 + 1)
        argv += [flag, str(value)]
        expected[f.name] = value
    settings = parse_args(argv)
    for name, value in expected.items():
        got = getattr(settings, name)
        assert got == value and type(got) is type(value), (name, got, value)
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    text = capsys.readouterr().out
    for f, _, opt in _options():  # each field's help is the option's, and the default shown
        words = opt["help"].split()[:3]
        assert " ".join(words) in " ".join(text.split()), f.name
    assert "(default: 64)" in text and "(default: None)" not in text


def test_fields_without_an_option_are_python_only():
    options = {f.name for f, _, _ in _options()}
    python_only = {f.name for f in dataclasses.fields(ServeSettings)} - options
    assert python_only == {"max_det", "retry_after_s", "jpeg_quality"}
    with pytest.raises(SystemExit):
        parse_args(["d", "--max-det", "5"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--read-timeout", "0"], "--read-timeout must be > 0, got 0.0"),
        (["--graceful-timeout", "-1"], "--graceful-timeout must be > 0, got -1.0"),
        (["--runtime-threads", "0"], "--runtime-threads must be >= 1, got 0"),
        (["--port", "x"], "argument --port: invalid int value: 'x'"),
        (["--port", "99999"], "--port must be <= 65535, got 99999"),
        (["--port", "-1"], "--port must be >= 1, got -1"),
        (["--backend", "tensorrt"], "argument --backend: invalid choice: 'tensorrt'"),
    ],
)
def test_a_bad_value_is_a_usage_error_naming_the_flag(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        parse_args(["d", *argv])
    assert e.value.code == 2 and message in capsys.readouterr().err
