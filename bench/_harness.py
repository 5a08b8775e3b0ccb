"""Benchmark harness: time a case in a fresh process and report its own peak memory.

Each case runs in a spawned child. After its untimed setup the child resets the kernel's peak-RSS
counter (Linux: writing 5 to /proc/self/clear_refs), so the reported peak is that of the timed work,
and "work" is that peak minus the resident memory the setup left. Written by hand because
pytest-benchmark and friends time functions but do not isolate peak memory per case.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Result:
    name: str
    seconds: float  # median over repeats (after one warm-up call unless warmup=False)
    best: float
    peak_mb: float  # peak resident memory of the child process
    work_mb: float  # peak minus resident memory after setup

    def row(self, baseline: Result | None = None) -> str:
        speedup = f"{baseline.seconds / self.seconds:8.2f}x" if baseline else "   (base)"
        return f"  {self.name:<34} {self.seconds:9.4f} s  {self.best:9.4f} s  {speedup}  {self.peak_mb:9.0f} MB  {self.work_mb:9.0f} MB"


HEADER = f"  {'case':<34} {'median':>11}  {'best':>11}  {'vs base':>9}  {'peak RSS':>12}  {'work':>12}"


def _status_mb(key: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process in MB, from /proc."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # not Linux: lifetime peak


def _reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _child(setup: Callable, run: Callable, repeats: int, warmup: bool, queue) -> None:
    try:
        queue.put(_timed(setup, run, repeats, warmup))
    except BaseException as e:  # report setup/run failures to the parent instead of hanging it
        queue.put(e)


def _timed(setup: Callable, run: Callable, repeats: int, warmup: bool):
    state = setup()
    import gc

    gc.collect()
    base = _status_mb("VmRSS")
    _reset_peak()
    if warmup:
        run(state)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(state)
        times.append(time.perf_counter() - start)
    peak = _status_mb("VmHWM")
    return statistics.median(times), min(times), peak, peak - base


def measure(name: str, setup: Callable, run: Callable, repeats: int = 5, warmup: bool = True) -> Result:
    """setup() -> state (untimed), run(state) timed; both module-level functions (spawn pickles them)."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(setup, run, repeats, warmup, queue))
    proc.start()
    outcome = queue.get()
    proc.join()
    if isinstance(outcome, BaseException):
        raise outcome
    median, best, peak, work = outcome
    return Result(name, median, best, peak, work)


def report(title: str, results: list[Result], baseline: str) -> None:
    base = next(r for r in results if r.name == baseline)
    print(f"\n{title}\n{HEADER}")
    for r in results:
        print(r.row(None if r is base else base))
