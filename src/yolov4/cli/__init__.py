"""Entry points: the work behind train.py, evaluate.py and export.py."""
