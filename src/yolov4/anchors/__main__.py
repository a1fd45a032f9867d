"""``python -m yolov4.anchors [data=...] [model=...] [num_anchors=] [input_size=] [restarts=]``:
see :mod:`yolov4.cli.anchors`."""

from yolov4.cli.anchors import hydra_main

if __name__ == "__main__":
    hydra_main()
