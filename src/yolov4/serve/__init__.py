"""The HTTP inference service over an export artifact (FastAPI + uvicorn, the ``serve`` extra).

    yolov4-serve run/export --host 127.0.0.1 --port 8000      # or: python -m yolov4.serve ...
    curl -F file=@photo.jpg 'http://127.0.0.1:8000/v1/detect?conf=0.3'

Built on :class:`yolov4.inference.Predictor` only, so preprocessing, NMS and the mapping back to
the uploaded image's pixels are the same code validation and ``evaluate.py`` use.
"""

from yolov4.serve.app import app_from_env, create_app
from yolov4.serve.settings import ServeSettings

__all__ = ["ServeSettings", "app_from_env", "create_app"]
