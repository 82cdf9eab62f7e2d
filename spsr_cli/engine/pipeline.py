"""One image through the network, and a folder of them with decoding and encoding overlapped.

:func:`upscale_image` runs an :class:`~spsr_cli.io.images.Image` through an
:class:`~spsr_cli.engine.tiling.Upscaler` into an output in its final storage type
(uint8, or uint16 for 16-bit sources), with its memory checked first.

:class:`Prefetcher` decodes the next image on a worker thread while the current one is in
the network; :class:`WriteBehind` encodes and writes the previous result on another
worker thread. Both are bounded (one image ahead, one behind by default), so a folder
job holds at most three images at once, and results are reported in submission order.
Decoding (Pillow, NumPy) and encoding (zlib, libjpeg, libwebp) release the GIL, so the
threads overlap with the network for real.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import logging
import queue
import threading
from typing import Callable, Generic, Iterable, Iterator, TypeVar

import numpy as np

from spsr_cli.engine.tiles import MemoryBudgetError, Progress, Tiler
from spsr_cli.io.images import Image, quantise, resize_plane

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
K = TypeVar("K")

#: Bytes per output pixel that writing an 8-bit image takes beyond its samples: Pillow's
#: own copy (4 bytes per pixel for RGB and RGBA) and the encoder's buffers.
WRITE_BYTES_8BIT = 6
#: The same for 16-bit PNG/TIFF (pypng's byte-swapped copy, the compressed stream and its chunks), per channel.
WRITE_BYTES_16BIT_PER_CHANNEL = 10


def write_bytes_estimate(image: Image, size: tuple[int, int]) -> int:
    """Memory that writing an output of ``size`` (height, width) needs beyond its RGB samples."""
    pixels = size[0] * size[1]
    channels = 3 + (image.alpha is not None)
    if image.bit_depth == 16:
        return pixels * channels * WRITE_BYTES_16BIT_PER_CHANNEL
    return pixels * (WRITE_BYTES_8BIT + (channels if image.alpha is not None or image.grayscale else 0))


def upscale_image(
    image: Image,
    upscaler: Tiler,
    *,
    outscale: float | None = None,
    progress: Progress | None = None,
    make_room: Callable[[], bool] | None = None,
) -> Image:
    """Super-resolve an :class:`Image`; alpha is resized separately and re-attached.

    The result's ``rgb`` is (s*H) x (s*W) x 3 uint8 (uint16 for 16-bit sources) and its
    ``alpha`` the same type, ready for :func:`~spsr_cli.io.images.write_image`; no
    full-resolution float copy is made. ``outscale`` (default: the model's scale) resizes
    the network output to ``round(outscale * input size)``. Raises
    :class:`~spsr_cli.engine.tiling.MemoryBudgetError` before any large allocation when the
    image cannot fit; first, if ``make_room`` is given and returns True (it released
    memory, e.g. by waiting for a pending write), the check is made once more.
    """
    height, width = image.size
    dtype = np.uint16 if image.bit_depth == 16 else np.uint8
    factor = upscaler.scale if outscale is None else outscale
    size = (max(1, round(height * factor)), max(1, round(width * factor)))
    net_size = (height * upscaler.scale, width * upscaler.scale)
    itemsize = np.dtype(dtype).itemsize
    extra = write_bytes_estimate(image, size)
    if image.alpha is not None:
        extra += size[0] * size[1] * itemsize  # the resized alpha, kept quantised
    if size != net_size:
        extra += size[0] * size[1] * 3 * itemsize + 12 * max(
            size[0] * size[1], net_size[0] * net_size[1]
        )  # float planes
    try:  # fail before resizing the alpha
        try:
            upscaler.plan(height, width, out_itemsize=itemsize, extra_bytes=extra)
        except MemoryBudgetError:
            if make_room is None or not make_room():
                raise
            upscaler.plan(height, width, out_itemsize=itemsize, extra_bytes=extra)
    except MemoryBudgetError as err:
        if size == net_size:
            raise
        raise MemoryBudgetError(
            f"with --outscale {factor:g} the output is {size[1]} x {size[0]} pixels: {err}"
        ) from None
    alpha = quantise(resize_plane(image.alpha, size), dtype) if image.alpha is not None else None
    sr = upscaler.upscale_array(image.rgb, dtype=dtype, extra_bytes=extra, progress=progress)
    if size != net_size:
        resized = np.empty((*size, 3), dtype)
        peak = np.float32(np.iinfo(dtype).max)
        for c in range(3):  # one float plane at a time
            resized[..., c] = quantise(resize_plane(sr[..., c].astype(np.float32) / peak, size), dtype)
        sr = resized
    return dataclasses.replace(image, rgb=sr, alpha=alpha)


class Prefetcher(Generic[T, R]):
    """Runs ``load(item)`` for the items in order on a worker thread, ``depth`` items ahead.

    Iterating yields ``(item, result, error)``: ``error`` is the exception ``load`` raised
    (``result`` is then None), for the caller to handle as if it had called ``load``
    itself. At most ``depth`` results wait beyond the one the caller holds. Use it as a
    context manager (or call :meth:`close`) so that the worker stops when the caller stops early.
    """

    _END = object()

    def __init__(self, items: Iterable[T], load: Callable[[T], R], *, depth: int = 1) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._items = items
        self._load = load
        self._slots = threading.Semaphore(depth)
        self._results: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="spsr-decode", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            for item in self._items:
                while not self._slots.acquire(timeout=0.1):
                    if self._stop.is_set():
                        return
                if self._stop.is_set():
                    return
                try:
                    self._results.put((item, self._load(item), None))
                except Exception as err:  # handed to the caller's thread, which decides
                    self._results.put((item, None, err))
        finally:
            self._results.put(self._END)

    def __iter__(self) -> Iterator[tuple[T, R | None, Exception | None]]:
        while True:
            entry = self._results.get()
            if entry is self._END:
                return
            self._slots.release()  # the worker may start on the next item now
            yield entry

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Prefetcher[T, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WriteBehind(Generic[K]):
    """Runs write tasks one at a time on a worker thread; outcomes come back in submission order.

    :meth:`submit` blocks while ``depth`` tasks are still unfinished, so at most ``depth``
    results wait in memory. :meth:`settle` records an outcome decided without a task
    (a skipped or failed file) in its place in the order. :meth:`finished` returns the
    outcomes ready so far, :meth:`drain` waits for all; an outcome is ``(key, None)`` on
    success, ``(key, exception)`` when the task raised, or ``(key, value)`` as settled.
    On exit after an error, queued tasks are cancelled and the running one is finished.
    """

    def __init__(self, *, depth: int = 1) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._depth = depth
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="spsr-encode")
        self._order: collections.deque = collections.deque()

    def submit(self, key: K, task: Callable[[], object]) -> None:
        while sum(1 for _, f, _ in self._order if f is not None and not f.done()) >= self._depth:
            oldest = next(f for _, f, _ in self._order if f is not None and not f.done())
            concurrent.futures.wait([oldest])
        self._order.append((key, self._pool.submit(task), None))

    def settle(self, key: K, outcome: object) -> None:
        self._order.append((key, None, outcome))

    def pending(self) -> int:
        """Tasks submitted and not finished yet."""
        return sum(1 for _, f, _ in self._order if f is not None and not f.done())

    def finished(self) -> list[tuple[K, object]]:
        ready = []
        while self._order and (self._order[0][1] is None or self._order[0][1].done()):
            key, future, outcome = self._order.popleft()
            ready.append((key, outcome if future is None else future.exception()))
        return ready

    def make_room(self) -> bool:
        """Wait for unfinished tasks (their results hold memory); True if there were any."""
        if not self.pending():
            return False
        self.wait()
        return True

    def wait(self) -> None:
        """Wait until every submitted task has finished (outcomes stay for :meth:`finished`)."""
        concurrent.futures.wait([f for _, f, _ in self._order if f is not None])

    def drain(self) -> list[tuple[K, object]]:
        self.wait()
        return self.finished()

    def __enter__(self) -> WriteBehind[K]:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=exc_type is not None)
