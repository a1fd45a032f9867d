"""WriteBehind: predict.py's writer thread (drawing, encoding and records behind the model)."""

from __future__ import annotations

import threading
import time

import pytest

from yolov4.inference.writers import WriteBehind


def test_items_are_written_in_order_on_another_thread():
    written, threads = [], set()

    def write(i, text):
        threads.add(threading.current_thread().name)
        written.append((i, text))

    behind = WriteBehind(write, depth=2)
    for i in range(50):
        behind.put(i, str(i))
    behind.close()
    assert written == [(i, str(i)) for i in range(50)]
    assert threads == {"predict-writer"}


def test_the_producer_waits_when_writing_is_slower():
    """At most ``depth`` items wait: a slow writer holds the model back (memory stays flat)."""
    release = threading.Event()
    behind = WriteBehind(lambda i: release.wait(5), depth=2)
    done = []

    def produce():
        for i in range(6):
            behind.put(i)
            done.append(i)

    producer = threading.Thread(target=produce)
    producer.start()
    time.sleep(0.3)
    # one item in the writer, two queued, the fourth put blocked
    assert len(done) == 3
    release.set()
    producer.join(5)
    behind.close()
    assert done == list(range(6))


def test_a_write_error_reaches_the_caller_and_later_items_are_not_written():
    written = []

    def write(i):
        if i == 3:
            raise OSError("No space left on device")
        written.append(i)

    behind = WriteBehind(write, depth=1)
    with pytest.raises(OSError, match="No space left"):
        for i in range(100):
            behind.put(i)
        behind.close()
    behind.close(finish=False)
    assert written == [0, 1, 2]


def test_close_without_finishing_stops_after_the_item_being_written():
    started, release, written = threading.Event(), threading.Event(), []

    def write(i):
        started.set()
        release.wait(5)
        written.append(i)

    behind = WriteBehind(write, depth=4)
    for i in range(4):
        behind.put(i)
    started.wait(5)
    closer = threading.Thread(target=behind.close, kwargs={"finish": False})
    closer.start()
    time.sleep(0.2)
    release.set()
    closer.join(5)
    assert not closer.is_alive() and written == [0]
