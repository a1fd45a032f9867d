"""Small generated datasets shared by the data tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from yolov4.data.synthetic import generate_split

SYNTH_SIZE = 96  # px: small images keep the tests fast
SYNTH_IMAGES = 12


@pytest.fixture(scope="session")
def synth_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("synthetic")


@pytest.fixture(scope="session")
def synth_split(synth_cache: Path) -> Path:
    """A generated synthetic val split: ``images/`` + ``annotations.json``."""
    return generate_split(synth_cache, "val", SYNTH_IMAGES, SYNTH_SIZE, seed=3)
