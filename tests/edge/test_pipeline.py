"""Decode ahead (edge.pipeline): worker threads decode while the consumer runs the model,
results in input order, errors handed over per item, at most `depth` items ahead."""

import random
import threading
import time

import pytest
from PIL import Image

from edge.pipeline import decode_ahead


class Stub:
    """A decoder that records how many decodes run at once and how far ahead of the consumer
    the pipeline got."""

    def __init__(self, fail=(), delay=0.0):
        self.lock = threading.Lock()
        self.running = self.max_running = 0
        self.started = 0
        self.consumed = 0
        self.max_ahead = 0
        self.fail = set(fail)
        self.delay = delay
        self.rng = random.Random(0)

    def __call__(self, item):
        with self.lock:
            self.started += 1
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.max_ahead = max(self.max_ahead, self.started - self.consumed)
            delay = self.delay * self.rng.random()
        try:
            time.sleep(delay)
            if item in self.fail:
                raise ValueError(f"damaged {item}")
            return item * 10
        finally:
            with self.lock:
                self.running -= 1

    def consume(self):
        with self.lock:
            self.consumed += 1


@pytest.mark.parametrize("workers,depth", [(0, None), (1, 1), (2, 2), (2, 5), (4, 3)])
def test_order_preserved_and_errors_per_item(workers, depth):
    stub = Stub(fail={3, 17}, delay=0.004)
    items = list(range(40))
    got = []
    for item, value, error in decode_ahead(items, stub, workers=workers, depth=depth):
        stub.consume()
        got.append((item, value, type(error).__name__ if error else None))
    assert [g[0] for g in got] == items
    for item, value, error in got:
        if item in (3, 17):
            assert value is None and error == "ValueError"
        else:
            assert value == item * 10 and error is None


@pytest.mark.parametrize("workers,depth", [(1, 1), (2, 2), (2, 4), (3, 6)])
def test_bounded_queue(workers, depth):
    """However slow the consumer, at most `depth` items are decoded or waiting (memory bound),
    and at most `workers` decode at once."""
    stub = Stub(delay=0.002)
    for _ in decode_ahead(list(range(30)), stub, workers=workers, depth=depth):
        time.sleep(0.003)  # the interpreter's turn
        stub.consume()
    assert stub.started == 30
    assert stub.max_ahead <= depth
    assert stub.max_running <= workers


def test_decodes_in_parallel_with_each_other():
    """Two workers really decode two photos at the same time (a barrier only two concurrent
    decodes can pass; a serial pipeline would break it by timeout)."""
    barrier = threading.Barrier(2, timeout=30)

    def decode(i):
        if i < 2:
            barrier.wait()
        return i

    assert [v for _, v, e in decode_ahead([0, 1, 2], decode, workers=2, depth=2)] == [0, 1, 2]


def test_consumer_stopping_early_stops_decoding():
    stub = Stub(delay=0.001)
    for item, _, _ in decode_ahead(list(range(100)), stub, workers=2, depth=3):
        stub.consume()
        if item == 4:
            break
    time.sleep(0.05)
    assert stub.started <= 5 + 3


COLORS = [((230, 20, 20), 0), ((20, 230, 20), 1), ((20, 20, 230), 2), ((128, 128, 128), 3)]


def test_classify_folder_in_order_with_a_damaged_photo(tmp_path, monkeypatch, capsys, tiny):
    """classify over a folder: results in file order (each photo's own class), the damaged
    photo skipped with a warning, decoding on worker threads."""
    import json

    from edge import pipeline
    from tests.conftest import run_cli

    want = {}
    for i in range(13):
        rgb, cls = COLORS[i % 4]
        name = f"p{i:02d}.png"
        Image.new("RGB", (40, 30), rgb).save(tmp_path / name)
        want[name] = cls
    (tmp_path / "p05.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    del want["p05.png"]
    threads = set()
    real = pipeline.decode_ahead

    def spy(items, decode, **kw):
        def wrapped(item):
            threads.add(threading.current_thread().name)
            time.sleep(0.01 * random.random())  # finish out of order
            return decode(item)
        return real(items, wrapped, workers=3, depth=4)

    monkeypatch.setattr(pipeline, "decode_ahead", spy)
    rc, out, err = run_cli(capsys, "classify", "-m", tiny["uint8"], "-i", tmp_path, "-k", "1", "-c", "1", "--json")
    assert rc == 0, err
    results = json.loads(out)["results"]
    assert [r["image"].rsplit("/", 1)[-1] for r in results] == sorted(want)
    assert [r["classes"][0]["id"] for r in results] == [want[n] for n in sorted(want)]
    assert "p05.png" in err and "skipped" in err
    assert any(t.startswith("edgeport-decode") for t in threads)
