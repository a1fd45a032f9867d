"""Run a model on images, folders, videos, cameras and streams: ``python predict.py source=...``.

See ``configs/predict.yaml``; the work is in :mod:`yolov4.cli.predict`.
"""

from yolov4.cli.predict import hydra_main

if __name__ == "__main__":
    hydra_main()
