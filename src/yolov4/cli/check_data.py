"""``yolov4-check-data`` (= ``python -m yolov4 check-data``): check a dataset config without
training, e.g. ``yolov4-check-data data=coco data.train.annotations=... data.train.images=...``
or ``yolov4-check-data data=yolo data.file=data/obj.data``.

Composes ``configs/data/<name>.yaml`` with Hydra overrides, builds the DataModule as
``train.py`` does (:func:`yolov4.cli.data_config.build_data`: a key the data config does not
take is a :class:`~yolov4.errors.ConfigError` naming it) and prints the report of
:func:`yolov4.data.check.check_datamodule`, and a last line saying what it comes to. Exit
status: 0 when the data is used as it is, repaired or with notes only; 1 when images or ground
truth are lost (label lines and boxes dropped, images missing or that do not decode), when a
split cannot be used (a train split without a box), when ``data.file``'s dataset file is
missing or not read, and with ``--strict`` at the first problem; 2 for a mistake in the command
line or config.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from yolov4.cli.data_config import build_data, fill_data_file
from yolov4.data.check import check_datamodule
from yolov4.errors import ConfigError, YoloError

__all__ = ["main"]

USAGE_EXIT = 2  # argparse's status for a mistake in the command line


def _compose(overrides: Sequence[str]) -> Any:
    """The config of ``overrides`` (``data=<option>`` selects the data config group; the
    synthetic data when none is given)."""
    from hydra import compose, initialize_config_dir

    fixed = [("+" + o if o.startswith("data=") else o) for o in overrides]
    if not any(o.startswith("+data=") for o in fixed):
        fixed.insert(0, "+data=synthetic")
    config_dir = str(Path(__file__).resolve().parent.parent / "configs")
    with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
        return compose(overrides=fixed)


def _summary(doc: str) -> str:
    """The ``--help`` description: the docstring's first paragraph after its title (``name
    (= ...):``), on one line, without reST's literal quotes."""
    first = doc.split("\n\n")[0].partition("): ")[2]
    return " ".join(first.replace("``", "").split())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="yolov4-check-data", description=_summary(__doc__))
    parser.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. data=coco data.train.images=..."
    )
    parser.add_argument(
        "--strict", action="store_true", help="stop at the first problem (DatasetError)"
    )
    parser.add_argument(
        "--no-decode", action="store_true", help="check annotations only, do not decode images"
    )
    parser.add_argument(
        "--examples", type=int, default=None, help="files listed per problem kind (default all)"
    )
    args = parser.parse_args(argv)
    # the report below prints every problem and note; the loaders' log would say it twice
    data_log = logging.getLogger("yolov4.data")
    level = data_log.level
    data_log.setLevel(logging.ERROR)
    try:
        return _check(args)
    finally:
        data_log.setLevel(level)


def _check(args: argparse.Namespace) -> int:
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = list(args.overrides) + (["data.strict=true"] if args.strict else [])
    try:
        cfg = _compose(overrides)
        for note in fill_data_file(cfg.data):  # what data.file's file gives that is not read
            print(f"note: data.file: {note}")
        dm = build_data(cfg)
    except (HydraException, OmegaConfBaseException, ConfigError) as e:  # a typo'd key
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return USAGE_EXIT
    except YoloError as e:  # data.file's dataset file missing or not read
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    try:
        result = check_datamodule(dm, decode=not args.no_decode, examples=args.examples)
    except YoloError as e:
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print(result.text)
    print(result.verdict())
    for reason in result.unusable:
        print(f"DatasetError: {reason}", file=sys.stderr)
    return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
