"""``python -m yolov4 <command> [key=value ...]``: the console commands in one entry point.

    python -m yolov4 train trainer.max_epochs=1        # = yolov4-train  = python train.py
    python -m yolov4 evaluate checkpoint=<run>/weights/best.pt
    python -m yolov4 export checkpoint=<run>/weights/best.pt
    python -m yolov4 predict ...                        # = yolov4-predict
    python -m yolov4 serve <run>/export                 # = yolov4-serve
    python -m yolov4 anchors data=... model=...         # = yolov4-anchors = python -m yolov4.anchors
    python -m yolov4 check-data data=yolo ...           # = yolov4-check-data

Each command is the same Hydra app as its console script (configs from the package, so it runs
from any directory); the arguments after the command are its overrides (``--help``,
``--cfg job`` and the rest of Hydra's flags included).
"""

from __future__ import annotations

import importlib
import sys

__all__ = ["COMMANDS", "main"]

# command -> (module, function): what pyproject's [project.scripts] run
COMMANDS = {
    "train": ("yolov4.cli.train", "hydra_main"),
    "evaluate": ("yolov4.cli.evaluate", "hydra_main"),
    "export": ("yolov4.cli.export", "hydra_main"),
    "predict": ("yolov4.cli.predict", "hydra_main"),
    "serve": ("yolov4.serve.__main__", "main"),
    "anchors": ("yolov4.cli.anchors", "hydra_main"),
    "check-data": ("yolov4.cli.check_data", "main"),
}
USAGE = f"usage: python -m yolov4 {{{','.join(COMMANDS)}}} [key=value ...]"


def main(argv: list[str] | None = None) -> None:
    """Run ``argv[0]``'s app with the rest of ``argv`` as its command line."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"{USAGE}\n\n{__doc__}")
        raise SystemExit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"{USAGE}\npython -m yolov4: error: unknown command {command!r}", file=sys.stderr)
        raise SystemExit(2)
    module, function = COMMANDS[command]
    app = getattr(importlib.import_module(module), function)
    sys.argv = [f"yolov4-{command}", *rest]  # what Hydra (and argparse) read
    raise SystemExit(app(rest) if function == "main" else app())


if __name__ == "__main__":
    main()
