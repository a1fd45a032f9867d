"""COCO evaluation of a checkpoint or darknet weights: ``python evaluate.py checkpoint=...``.

See ``configs/evaluate.yaml``; the work is in :mod:`yolov4.cli.evaluate`.
"""

from yolov4.cli.evaluate import hydra_main

if __name__ == "__main__":
    hydra_main()
