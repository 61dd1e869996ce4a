"""Latency measurement of a compiled model: end-to-end statistics and a per-kernel breakdown.

TVM 0.27 has no VM profiler any more. End-to-end times come from the VM's `time_evaluator` (the timing loop
runs in C++, and works the same over RPC); the per-kernel breakdown comes from separate, instrumented runs
(`VirtualMachine.set_instrument`), whose kernel times are checked against those runs' own end-to-end times so
that the report states how much of the time the kernels explain. On a remote device, where the instrument
cannot run, each kernel is timed alone instead (targets/kernels.py) and checked against the end-to-end mean.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import psutil

from ..errors import UserError

if TYPE_CHECKING:
    from .base import Session

BUILTIN_PREFIXES = ("vm.builtin.", "vm.")
EMULATED_NOTE = ("NOTE: measured under emulation (qemu, or edgetune's VTA simulator); these times measure the "
                 "emulator, not the device's latency")


@dataclass
class ProfileConfig:
    warmup: int = 3
    repeat: int = 50
    # Stop earlier than `repeat` when the runs would take longer than this (None: always `repeat`).
    max_seconds: float | None = None
    threads: int | None = None
    kernel_runs: int = 5

    def __post_init__(self) -> None:
        if self.warmup < 0 or self.repeat < 1 or self.kernel_runs < 0:
            raise UserError("--warmup must be >= 0 and --repeat >= 1")
        if self.threads is not None and self.threads < 1:
            raise UserError("--threads must be a positive integer")


@dataclass
class KernelStat:
    name: str
    kind: str  # "kernel" (a compiled TIR function) or "builtin" (VM runtime: allocation, shape checks)
    calls: int  # per inference
    total_ms: float  # per inference
    mean_ms: float  # per call
    share: float  # of the summed time of all calls, in percent


# Times each kernel alone on the device, `runs` timed repeats each: (name, calls per inference, mean seconds
# per call) for every kernel timed, and why each other kernel was not.
KernelTimer = Callable[[int], tuple[list[tuple[str, int, float]], dict[str, str]]]
INSTRUMENTED = "instrumented"  # every call of the model's own runs timed by the VM's instrument
ISOLATED = "isolated"  # each kernel timed alone on the device, times its calls per inference


@dataclass
class LatencyReport:
    device: str
    threads: int
    warmup: int
    repeat: int
    samples_ms: list[float]
    kernels: list[KernelStat] = field(default_factory=list)
    kernel_runs: int = 0
    # The end-to-end time the kernels' sum is checked against: the instrumented runs' own mean (INSTRUMENTED),
    # or the timed runs' mean (ISOLATED).
    end_to_end_ms: float = 0.0
    kernel_timing: str = INSTRUMENTED
    untimed_kernels: dict[str, str] = field(default_factory=dict)  # kernel -> why it was not timed alone
    # Timed under an emulator (qemu): the numbers measure the emulator, never the device.
    emulated: bool = False
    kernels_skipped: str = ""  # why there is no per-kernel breakdown, when there is none
    # Per accelerator layer (VTA): the timing model's cycles, latency at the clock, utilisation, and the
    # simulator's DRAM traffic and operation counts.
    accelerator: list[dict[str, Any]] = field(default_factory=list)
    # This process's resident memory around the timed runs (for an RPC device: the host's side only). A long
    # profile is a soak test: the runs must not grow it.
    rss_before_mb: float = 0.0
    rss_after_mb: float = 0.0

    @property
    def rss_growth_pct(self) -> float:
        return 100.0 * (self.rss_after_mb - self.rss_before_mb) / self.rss_before_mb if self.rss_before_mb else 0.0

    @property
    def stats(self) -> dict[str, float]:
        data = np.asarray(self.samples_ms, dtype=np.float64)
        return {
            "mean_ms": float(data.mean()),
            "p50_ms": float(np.percentile(data, 50)),
            "p90_ms": float(np.percentile(data, 90)),
            "p99_ms": float(np.percentile(data, 99)),
            "min_ms": float(data.min()),
            "max_ms": float(data.max()),
            "std_ms": float(data.std()),
        }

    @property
    def kernel_sum_ms(self) -> float:
        return sum(k.total_ms for k in self.kernels)

    def kernel_check(self) -> dict[str, Any]:
        """How much of the end-to-end time the individual calls explain. Isolated timings leave out the VM's
        builtins and dispatch, and run each kernel with warm caches, so their gap is larger."""
        gap = self.end_to_end_ms - self.kernel_sum_ms
        pct = 100.0 * gap / self.end_to_end_ms if self.end_to_end_ms > 0 else 0.0
        return {"method": self.kernel_timing, "runs": self.kernel_runs, "end_to_end_ms": self.end_to_end_ms,
                "sum_of_calls_ms": self.kernel_sum_ms, "gap_ms": gap, "gap_pct": pct}

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "edgetune.latency/1",
            "device": self.device,
            "emulated": self.emulated,
            "end_to_end": {"warmup": self.warmup, "repeat": self.repeat, "threads": self.threads, **self.stats},
            "samples_ms": self.samples_ms,
            "kernels": [asdict(k) for k in self.kernels],
            "kernel_check": self.kernel_check(),
            "memory": {"rss_before_mb": self.rss_before_mb, "rss_after_mb": self.rss_after_mb,
                       "growth_pct": self.rss_growth_pct},
            **({"kernels_skipped": self.kernels_skipped} if self.kernels_skipped else {}),
            **({"untimed_kernels": self.untimed_kernels} if self.untimed_kernels else {}),
            **({"accelerator": self.accelerator} if self.accelerator else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LatencyReport":
        e2e, check = data["end_to_end"], data["kernel_check"]
        return cls(device=data["device"], threads=e2e["threads"], warmup=e2e["warmup"], repeat=e2e["repeat"],
                   samples_ms=list(data["samples_ms"]), kernels=[KernelStat(**k) for k in data["kernels"]],
                   kernel_runs=check["runs"],
                   # logs written before isolated timings existed name it after the instrumented runs
                   end_to_end_ms=check.get("end_to_end_ms", check.get("instrumented_end_to_end_ms", 0.0)),
                   kernel_timing=check.get("method", INSTRUMENTED), untimed_kernels=data.get("untimed_kernels", {}),
                   emulated=data.get("emulated", False), kernels_skipped=data.get("kernels_skipped", ""),
                   accelerator=list(data.get("accelerator", [])),
                   rss_before_mb=data.get("memory", {}).get("rss_before_mb", 0.0),
                   rss_after_mb=data.get("memory", {}).get("rss_after_mb", 0.0))

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        stat_cols = ["mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms", "max_ms", "std_ms"]
        writer.writerow(["scope", "name", "calls", "total_ms", *stat_cols, "share_pct"])
        stats = self.stats
        writer.writerow(["end_to_end", "main", self.repeat, f"{sum(self.samples_ms):.6f}",
                         *(f"{stats[c]:.6f}" for c in stat_cols), "100.0"])
        for k in self.kernels:
            writer.writerow([k.kind, k.name, k.calls, f"{k.total_ms:.6f}", f"{k.mean_ms:.6f}",
                             "", "", "", "", "", "", f"{k.share:.2f}"])
        return out.getvalue()

    def format_table(self, top: int = 10) -> str:
        s = self.stats
        lines = [
            f"latency on {self.device}, {self.threads} thread(s), {self.repeat} runs after {self.warmup} warm-up:",
            f"  mean {s['mean_ms']:.3f} ms  p50 {s['p50_ms']:.3f}  p90 {s['p90_ms']:.3f}  p99 {s['p99_ms']:.3f}  "
            f"min {s['min_ms']:.3f}  max {s['max_ms']:.3f}  std {s['std_ms']:.3f}",
        ]
        if self.rss_before_mb:
            lines.append(f"  resident memory {self.rss_before_mb:.1f} MB before the timed runs, "
                         f"{self.rss_after_mb:.1f} MB after ({self.rss_growth_pct:+.2f}%)")
        if self.emulated:
            lines.insert(0, EMULATED_NOTE)
        if self.kernels_skipped:
            lines.append(f"  no per-kernel breakdown: {self.kernels_skipped}")
        if self.accelerator:
            total = sum(layer["latency_ms"] for layer in self.accelerator)  # each layer runs once per inference
            lines.append(f"  accelerator layers (timing model; {total:.3f} ms per inference at the device clock):")
            for layer in self.accelerator:
                dram = sum(layer["dram_bytes"].values())
                lines.append(f"    {layer['layer']:<12} {layer['cycles']:>10} cycles  {layer['latency_ms']:.3f} ms  "
                             f"GEMM util {100 * layer['gemm_utilisation']:.1f}%  DRAM {dram} bytes")
        if self.kernels:
            check = self.kernel_check()
            if self.kernel_timing == ISOLATED:
                lines.append(f"  kernels ({len(self.kernels)} functions, each timed alone on the device x its calls "
                             f"per inference; they sum to {check['sum_of_calls_ms']:.3f} ms of "
                             f"{check['end_to_end_ms']:.3f} ms end-to-end, gap {check['gap_pct']:.1f}%):")
            else:
                lines.append(f"  kernels ({len(self.kernels)} functions; calls sum to "
                             f"{check['sum_of_calls_ms']:.3f} ms of {check['end_to_end_ms']:.3f} ms instrumented, "
                             f"gap {check['gap_pct']:.1f}%):")
            lines.append(f"    {'share':>6}  {'total ms':>9}  {'calls':>5}  name")
            for k in self.kernels[:top]:
                lines.append(f"    {k.share:5.1f}%  {k.total_ms:9.3f}  {k.calls:5d}  {k.name}")
            if len(self.kernels) > top:
                rest = self.kernels[top:]
                lines.append(f"    {sum(k.share for k in rest):5.1f}%  {sum(k.total_ms for k in rest):9.3f}"
                             f"  {sum(k.calls for k in rest):5d}  ({len(rest)} more)")
        for name, reason in self.untimed_kernels.items():
            lines.append(f"  not timed: {name} ({reason})")
        return "\n".join(lines)


# The timed runs go to the device in requests of about this many seconds each, so that every request has a
# deadline (a device that stops answering is noticed) however many runs were asked for.
REQUEST_SECONDS = 5.0


def measure(session: "Session", args: Sequence[Any], config: ProfileConfig) -> LatencyReport:
    """Time `session.vm["main"](*args)`: warm-up, `repeat` timed runs, then the breakdown: each kernel timed
    alone by the session's `kernel_timer` when it has one (a remote device), else instrumented runs (unless
    the session's `kernels_skipped` says why there can be none)."""
    vm = session.vm
    main = vm["main"]
    start = time.perf_counter()
    for _ in range(max(config.warmup, 1)):
        with session.request():
            main(*args)
    per_run = (time.perf_counter() - start) / max(config.warmup, 1)
    repeat = config.repeat
    if config.max_seconds is not None and per_run > 0:
        repeat = max(1, min(repeat, math.floor(config.max_seconds / per_run)))
    process = psutil.Process()
    rss_before = process.memory_info().rss / 2**20
    samples: list[float] = []
    per_request = max(1, math.floor(REQUEST_SECONDS / per_run)) if per_run > 0 else repeat
    while len(samples) < repeat:
        runs = min(per_request, repeat - len(samples))
        with session.request(2 * runs * per_run):
            result = vm.time_evaluator("main", session.device, number=1, repeat=runs)(*args)
        samples.extend(float(t) * 1e3 for t in result.results)
    rss_after = process.memory_info().rss / 2**20
    report = LatencyReport(device=session.device_name, threads=session.threads, warmup=config.warmup,
                           repeat=len(samples), samples_ms=samples, emulated=session.emulated,
                           kernels_skipped=session.kernels_skipped, rss_before_mb=rss_before,
                           rss_after_mb=rss_after)
    if session.kernels_skipped or not config.kernel_runs:
        return report
    if session.kernel_timer is not None:
        _isolated_breakdown(session.kernel_timer, config.kernel_runs, report)
    else:
        _breakdown(vm, main, args, config.kernel_runs, report)
    return report


def _isolated_breakdown(kernel_timer: KernelTimer, runs: int, report: LatencyReport) -> None:
    timed, report.untimed_kernels = kernel_timer(runs)
    report.kernel_timing = ISOLATED
    report.kernel_runs = runs
    report.end_to_end_ms = report.stats["mean_ms"]
    report.kernels = _ranked([(name, "kernel", calls, calls * seconds, seconds) for name, calls, seconds in timed])


class _CallTimer:
    """Times every call a VM makes (its instrument protocol): seconds and calls per function name."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._started: list[float] = []

    def __call__(self, func, name, before_run, ret, *call_args) -> int:  # 0 = continue
        now = time.perf_counter()
        if before_run:
            self._started.append(now)
        else:
            self.seconds[name] += now - self._started.pop()
            self.calls[name] += 1
        return 0

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()


def _breakdown(vm: Any, main: Any, args: Sequence[Any], runs: int, report: LatencyReport) -> None:
    timer = _CallTimer()
    vm.set_instrument(timer)
    try:
        elapsed = 0.0
        for _ in range(runs):
            begin = time.perf_counter()
            main(*args)
            elapsed += time.perf_counter() - begin
    finally:
        vm.set_instrument(None)
    report.kernel_runs = runs
    report.end_to_end_ms = elapsed * 1e3 / runs
    report.kernels = _ranked([(name, "builtin" if name.startswith(BUILTIN_PREFIXES) else "kernel",
                               timer.calls[name] // runs, timer.seconds[name] / runs,
                               timer.seconds[name] / timer.calls[name]) for name in timer.seconds])


def kernel_medians(runs: Sequence[tuple["Session", Sequence[Any]]], repeat: int) -> list[dict[str, float]]:
    """For each (session, arguments): every compiled kernel's median seconds per inference over `repeat`
    instrumented runs. The sessions take turns run by run, so that a change in the machine's load falls on
    all of them alike and their kernels can be compared with each other."""
    samples: list[dict[str, list[float]]] = [defaultdict(list) for _ in runs]
    timers = [_CallTimer() for _ in runs]
    for (session, args), timer in zip(runs, timers):
        session.vm["main"](*args)  # warm-up, uninstrumented
        session.vm.set_instrument(timer)
    try:
        for _ in range(repeat):
            for (session, args), timer, kept in zip(runs, timers, samples):
                timer.reset()
                session.vm["main"](*args)
                for name, seconds in timer.seconds.items():
                    if not name.startswith(BUILTIN_PREFIXES):
                        kept[name].append(seconds)
    finally:
        for session, _ in runs:
            session.vm.set_instrument(None)
    return [{name: float(np.median(values)) for name, values in kept.items()} for kept in samples]


def _ranked(rows: list[tuple[str, str, int, float, float]]) -> list[KernelStat]:
    """(name, kind, calls per inference, seconds per inference, seconds per call) as stats, slowest first."""
    grand = sum(row[3] for row in rows) or 1.0
    return sorted((KernelStat(name=name, kind=kind, calls=calls, total_ms=total * 1e3, mean_ms=mean * 1e3,
                              share=100.0 * total / grand) for name, kind, calls, total, mean in rows),
                  key=lambda k: -k.total_ms)
