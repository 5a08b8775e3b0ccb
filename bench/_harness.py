"""Benchmark harness: time a case in a fresh process and report its own peak memory.

Each case runs in a spawned child. After its untimed setup the child resets the kernel's peak-RSS
counter (Linux: writing 5 to /proc/self/clear_refs), so the reported peak is that of the timed work,
and "work" is that peak minus the resident memory the setup left. Written by hand because
pytest-benchmark and friends time functions but do not isolate peak memory per case.

The training benchmarks share the second half: the loop over training seeds (over_seeds, add_seed_args) and
the mean +- std / "k of n seeds" formatting of their tables (mean_std, count, identical).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
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


def load() -> str:
    """The load average, printed beside timings (shared cores make them slower)."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f}"


def interleaved(cases: list[tuple[str, Callable, Callable]], rounds: int) -> list[Result]:
    """Every case (name, setup, run) once per round, in a fresh process after one warm-up call, rounds in turn
    (so a change of load hits every case alike); median / best time, largest peak and work over the rounds."""
    runs: dict[str, list[Result]] = {name: [] for name, _, _ in cases}
    for r in range(rounds):
        for name, setup, run in cases:
            runs[name].append(measure(name, setup, run, repeats=1, warmup=True))
        print(f"  round {r + 1}/{rounds} done, {load()}", flush=True)
    return [
        Result(
            name,
            statistics.median(x.seconds for x in rs),
            min(x.seconds for x in rs),
            max(x.peak_mb for x in rs),
            max(x.work_mb for x in rs),
        )
        for name, rs in runs.items()
    ]


def report(title: str, results: list[Result], baseline: str) -> None:
    base = next(r for r in results if r.name == baseline)
    print(f"\n{title}\n{HEADER}")
    for r in results:
        print(r.row(None if r is base else base))


# --- training benchmarks over seeds ---------------------------------------------------------------------
# The training benches (velocity U-net, halo velocities, parameters) repeat each comparison over training
# seeds on one store and one split (data.split.seed fixed), so the seeds differ only in initialisation,
# crop order and augmentation; these helpers loop over the seeds and format mean +- std over them.


def add_seed_args(parser, default: int = 3) -> None:
    """--seeds N (seeds base, base + 1, ..., base + N - 1), --seed-base, --smoke."""
    parser.add_argument(
        "--seeds", type=int, default=default, help="training seeds per variant / model (>= 3 for error bars)"
    )
    parser.add_argument(
        "--seed-base", type=int, default=12345, help="first training seed (the configs' default `seed`)"
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny store, 1 epoch, few crops, 2 seeds: checks the whole code path in 1-3 minutes (numbers meaningless)",
    )


def over_seeds(
    labels: list[str], seeds: list[int], run: Callable[[str, int], dict]
) -> dict[str, dict[int, dict]]:
    """run(label, seed) -> result dict, for every label (variant / model) and seed, labels outermost;
    adds "_minutes" and prints the progress. Returns {label: {seed: result}}."""
    results: dict[str, dict[int, dict]] = {}
    total = len(labels) * len(seeds)
    for i, label in enumerate(labels):
        results[label] = {}
        for j, seed in enumerate(seeds):
            start = time.perf_counter()
            result = run(label, seed)
            result["_minutes"] = (time.perf_counter() - start) / 60
            results[label][seed] = result
            print(
                f"[{i * len(seeds) + j + 1}/{total}] {label}, seed {seed}: {result['_minutes']:.1f} min",
                flush=True,
            )
    return results


def _clean(values) -> list[float]:
    return [float(v) for v in values if v is not None and v == v]  # drop None and NaN


def mean_std(values, digits: int = 3) -> str:
    """'mean ± std' over seeds (sample std, ddof = 1); '-' if no value, the value alone if only one."""
    v = _clean(values)
    if not v:
        return "-"
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{statistics.mean(v):.{digits}f} ± {statistics.stdev(v):.{digits}f}"


def count(flags) -> str:
    """'k/n': how many of the seeds a comparison holds in (None counts as not holding)."""
    flags = list(flags)
    return f"{sum(bool(f) for f in flags)}/{len(flags)}"


def identical(values) -> float:
    """Largest relative spread max |x - x_0| / |x_0| of a quantity that should not depend on the seed
    (linear theory); 0 if identical, nan if missing."""
    v = _clean(values)
    if len(v) < 2:
        return 0.0 if v else float("nan")
    ref = v[0]
    return max(abs(x - ref) for x in v) / max(abs(ref), 1e-30)


def merge_overrides(*groups: list[str]) -> list[str]:
    """Hydra overrides of several lists in order, a later `key=value` replacing an earlier one of the same key
    (prefix included: `+a=1` and `a=2` both stay), so printed commands show each setting once."""
    merged: dict[str, str] = {}
    for group in groups:
        for item in group:
            key = item.split("=", 1)[0]
            merged.pop(key, None)
            merged[key] = item
    return list(merged.values())


def variant_overrides(variant: str) -> list[str]:
    """The Hydra overrides of a bench variant: an experiment of conf/experiment/."""
    from lss_lightning.config import CONF_DIR

    if not (CONF_DIR / "experiment" / f"{variant}.yaml").exists():
        raise SystemExit(f"unknown variant {variant!r}: no conf/experiment/{variant}.yaml")
    return [f"experiment={variant}"]


def parse_variant_bench(argv: list[str], doc: str, variants: str, epochs: int, report_help: str):
    """(args, extra Hydra overrides) of a bench that trains experiment variants over seeds."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default=variants, help="experiments, comma-separated")
    p.add_argument(
        "--epochs", type=int, default=None, help=f"training epochs (default {epochs}; 1 with --smoke)"
    )
    p.add_argument("--report", default=None, help=report_help)
    add_seed_args(p)
    args, extra = p.parse_known_args(argv)
    if args.smoke:
        args.seeds = min(args.seeds, 2)
    args.epochs = args.epochs or (1 if args.smoke else epochs)
    return args, extra


def train_seed(run_dir, overrides: list[str]) -> dict:
    """Compose ``train`` with these overrides into ``run_dir``, train and evaluate; the run's metrics.json."""
    import json

    from hydra import compose, initialize_config_dir

    from lss_lightning.config import CONF_DIR
    from lss_lightning.run import train

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*overrides, f"paths.output_dir={run_dir}"])
    train(cfg)
    return json.loads((run_dir / "eval" / "metrics.json").read_text())
