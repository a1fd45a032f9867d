"""Export a checkpoint for serving: ``python export.py checkpoint=<run>/weights/best.pt``.

See ``configs/export.yaml``; the work is in :mod:`yolov4.cli.export`.
"""

from yolov4.cli.export import hydra_main

if __name__ == "__main__":
    hydra_main()
