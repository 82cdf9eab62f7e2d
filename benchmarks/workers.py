"""What the benchmark scripts share: each measurement in its own spawned process, and the peak
resident memory of that process (Linux ``/proc/self/status``)."""

from __future__ import annotations

import multiprocessing as mp
import queue


def status_kib(field: str) -> int:
    """A field of ``/proc/self/status`` in KiB (``VmRSS``, ``VmHWM``); 0 where it is not there."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def reset_peak_rss() -> None:
    """Make VmHWM start again from the current resident set (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def spawn(target, case: dict) -> dict:
    """Run ``target(case, queue)`` in a fresh spawned process and return what it puts on the queue
    (so one measurement's memory and caches never mix with another's)."""
    ctx = mp.get_context("spawn")
    results: mp.Queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(case, results))
    proc.start()
    try:
        while True:
            try:
                return results.get(timeout=5)
            except queue.Empty:
                if not proc.is_alive():
                    raise RuntimeError(f"benchmark worker for {case} died with exit code {proc.exitcode}") from None
    finally:
        proc.join()
