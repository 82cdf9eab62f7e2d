import threading
import tracemalloc

import numpy as np
import pytest

from spsr_cli.engine.options import InferenceOptions
from spsr_cli.engine.pipeline import Prefetcher, WriteBehind, upscale_image, write_bytes_estimate
from spsr_cli.engine.tiling import MemoryBudgetError, Upscaler
from spsr_cli.io.images import Image


def make_image(height=20, width=24, *, bit_depth=8, alpha=False, seed=0):
    rng = np.random.default_rng(seed)
    rgb = rng.random((height, width, 3), dtype=np.float32)
    return Image(rgb=rgb, alpha=rng.random((height, width), dtype=np.float32) if alpha else None, bit_depth=bit_depth)


@pytest.fixture
def upscaler(tiny_model):
    return Upscaler(tiny_model, InferenceOptions(device="cpu", precision="fp32", tile=16, tile_overlap=4))


def test_output_is_quantised_in_the_sources_depth(upscaler):
    out8 = upscale_image(make_image(alpha=True), upscaler)
    assert out8.rgb.dtype == np.uint8 and out8.rgb.shape == (80, 96, 3)
    assert out8.alpha.dtype == np.uint8 and out8.alpha.shape == (80, 96)
    out16 = upscale_image(make_image(bit_depth=16), upscaler)
    assert out16.rgb.dtype == np.uint16 and out16.bit_depth == 16
    assert np.abs(out16.rgb / 65535.0 - out8.rgb / 255.0).max() <= 0.5 / 255 + 0.5 / 65535  # one image, finer steps
    half = upscale_image(make_image(), upscaler, outscale=2)
    assert half.rgb.shape == (40, 48, 3) and half.rgb.dtype == np.uint8


def test_no_full_resolution_float_copy_is_made(upscaler):
    image = make_image(60, 64)
    upscale_image(image, upscaler)  # warm-up
    tracemalloc.start()
    try:
        out = upscale_image(image, upscaler)
        _, peak = tracemalloc.get_traced_memory()  # NumPy arrays are traced (torch tensors are not)
    finally:
        tracemalloc.stop()
    assert out.rgb.nbytes == 240 * 256 * 3
    # the uint8 output plus tile-sized pieces; a float32 copy of the output alone would be 4x the output
    assert peak < 1.5 * out.rgb.nbytes


def test_an_image_too_large_fails_before_anything_is_allocated(tiny_model):
    up = Upscaler(tiny_model, InferenceOptions(device="cpu", precision="fp32", memory_limit=64 << 20))
    big = Image(rgb=np.zeros((1500, 1500, 3), np.float32))
    tracemalloc.start()
    try:
        with pytest.raises(
            MemoryBudgetError, match=r"1500 x 1500 image \(output 6000 x 6000\).*--max-memory allows 64 MiB"
        ):
            upscale_image(big, up)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_write_estimate_counts_alpha_and_depth():
    size = (100, 100)
    assert write_bytes_estimate(make_image(), size) == 6 * 10_000
    assert write_bytes_estimate(make_image(alpha=True), size) > write_bytes_estimate(make_image(), size)
    assert write_bytes_estimate(make_image(bit_depth=16), size) == 30 * 10_000


def test_prefetcher_keeps_order_hands_over_errors_and_stays_bounded():
    loaded = []
    threads = set()

    def load(item):
        threads.add(threading.current_thread().name)
        loaded.append(item)
        if item == 3:
            raise ValueError("bad item 3")
        return item * 10

    seen = []
    with Prefetcher(range(6), load, depth=1) as items:
        for taken, (item, result, error) in enumerate(items, start=1):
            assert len(loaded) <= taken + 1  # never more than one item decoded ahead
            seen.append((item, result, str(error) if error else None))
    assert seen == [(0, 0, None), (1, 10, None), (2, 20, None), (3, None, "bad item 3"), (4, 40, None), (5, 50, None)]
    assert threads == {"spsr-decode"}


def test_prefetcher_stops_when_the_caller_stops():
    loaded = []
    with Prefetcher(range(100), lambda i: loaded.append(i) or i, depth=2) as items:
        for item, _, _ in items:
            if item == 1:
                break
    assert len(loaded) <= 5


def test_write_behind_reports_in_order_and_bounds_pending_work():
    gate = threading.Event()
    ran = []

    def task(name, fail=False):
        def run():
            if name == "a":
                gate.wait(5)
            ran.append((name, threading.current_thread().name.startswith("spsr-encode")))
            if fail:
                raise OSError(f"disk full writing {name}")

        return run

    with WriteBehind(depth=1) as writer:
        writer.submit("a", task("a"))
        assert writer.pending() == 1 and writer.finished() == []  # "a" waits on the gate
        writer.settle("b", ("failed", "unreadable"))
        assert writer.finished() == []  # "b" is reported after "a", never before
        gate.set()
        writer.submit("c", task("c", fail=True))  # waits for "a": one result pending at most
        assert writer.pending() <= 1
        outcomes = writer.drain()
    assert [key for key, _ in outcomes] == ["a", "b", "c"]
    assert outcomes[0][1] is None and outcomes[1][1] == ("failed", "unreadable")
    assert isinstance(outcomes[2][1], OSError) and "disk full" in str(outcomes[2][1])
    assert ran == [("a", True), ("c", True)]


def test_make_room_waits_only_when_something_is_pending():
    with WriteBehind() as writer:
        assert writer.make_room() is False
        gate, done = threading.Event(), threading.Event()
        writer.submit("x", lambda: gate.wait(5) and done.set())
        real_wait = writer.wait
        writer.wait = lambda: gate.set() or real_wait()  # the write finishes only once make_room waits
        assert writer.make_room() is True and done.is_set()
