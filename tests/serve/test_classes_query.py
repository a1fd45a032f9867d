"""``?classes=``: the service, the Predictor and predict.py agree that an empty class filter,
which would keep no class, is an error, and that leaving the filter out keeps every class."""

from __future__ import annotations

import pytest

from yolov4.serve.inputs import ApiError, parse_classes

NAMES = ["circle", "square", "cross"]


@pytest.mark.parametrize("raw", ["", " ", ",", "0,,2"])
def test_an_empty_filter_or_entry_is_a_422(raw):
    with pytest.raises(ApiError) as e:
        parse_classes(raw, NAMES)
    assert e.value.status == 422 and e.value.code == "invalid_parameter"
    assert f"classes={raw!r}" in e.value.message and "empty" in e.value.message


def test_no_filter_keeps_every_class_and_a_filter_gives_ids():
    assert parse_classes(None, NAMES) is None
    assert parse_classes("2, circle", NAMES) == [2, 0]
