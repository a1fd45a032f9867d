"""Train a YOLOv4-family detector: ``python train.py [group=option ...] [key=value ...]``.

See ``configs/train.yaml`` for what is composed; the work is in :mod:`yolov4.cli.train`.
"""

from yolov4.cli.train import hydra_main

if __name__ == "__main__":
    hydra_main()
