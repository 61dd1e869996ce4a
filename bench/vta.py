"""Benchmark of the VTA back end: GEMM utilisation, ResNet-18 estimate, and simulator speed.

1. GEMM utilisation (timing model) of ResNet-18's 3x3 convs with the best tiling for one and for two virtual
   threads (OSDI'18 reports 70% -> 88% peak-compute utilisation from latency hiding), found by the autotune
   stage's tiling search (the first SEARCH_BUDGET candidates in its order; the first is the default tiling),
   next to the compute-bound ceiling: the compute module runs the GEMMs, the ACC reset and the requantize
   epilogue one after the other, so GEMM cycles / (GEMM + reset + ALU cycles) bounds the utilisation whatever
   the tiling.
2. Estimated time of all of ResNet-18's offloaded convs (every conv but the first) against the bounds derived in
   docs/vta.md section 7: 66.2 ms on an ideal 100 MHz GEMM core (75.3 ms at 88%), 33.1 ms at 200 MHz.
3. Wall time of compiling and functionally simulating one 56x56x64 3x3 conv, checked bit-exact against numpy.

Results go to bench/results/vta.json (written atomically); the table goes to stdout.

    .venv/bin/python bench/vta.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from edgetune.autotune.tiling import search
from edgetune.targets.vta.codegen import epilogue_ops, generate_conv2d
from edgetune.targets.vta.compiler import compile_conv2d
from edgetune.targets.vta.config import VTAConfig, get_config
from edgetune.targets.vta.cost import TilingTask
from edgetune.targets.vta.tiler import Tiling
from edgetune.targets.vta.timing import TimingReport, estimate
from edgetune.targets.vta.workload import Conv2dWorkload, Requantize, conv2d_reference

ROOT = Path(__file__).resolve().parent.parent
# (H_out, W_out, C_in, C_out, kernel, stride, repeats): ResNet-18's convs after the stem (docs/vta.md section 7)
RESNET18_CONVS = [
    (56, 56, 64, 64, 3, 1, 4),
    (28, 28, 64, 128, 3, 2, 1), (28, 28, 128, 128, 3, 1, 3), (28, 28, 64, 128, 1, 2, 1),
    (14, 14, 128, 256, 3, 2, 1), (14, 14, 256, 256, 3, 1, 3), (14, 14, 128, 256, 1, 2, 1),
    (7, 7, 256, 512, 3, 2, 1), (7, 7, 512, 512, 3, 1, 3), (7, 7, 256, 512, 1, 2, 1),
]
REQUANT = Requantize(8)  # bias add, rounding add, shift, clip to +-127: 5 ALU ops per output
SEARCH_BUDGET = 64  # candidate tilings evaluated per layer and thread setting
BOUNDS_MS = {"ideal 100 MHz": 66.2, "88% at 100 MHz": 75.3, "ideal 200 MHz": 33.1, "88% at 200 MHz": 37.6}


def machine() -> str:
    """The CPU model (the simulator's wall time depends on it)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return platform.processor() or platform.machine()


def workload(h_out: int, w_out: int, c_in: int, c_out: int, k: int, stride: int) -> Conv2dWorkload:
    pad = k // 2
    size = lambda out: (out - 1) * stride + k - 2 * pad  # noqa: E731 - the input that gives `out`
    return Conv2dWorkload(1, c_in, size(h_out), size(w_out), c_out, k, k, stride, stride, pad, pad)


def layer_timing(wl: Conv2dWorkload, config: VTAConfig, threads: tuple[int, ...]) -> tuple[Tiling, TimingReport]:
    best = search(TilingTask(wl, REQUANT, True), config, SEARCH_BUDGET, threads=threads)
    return best.tiling, estimate(generate_conv2d(wl, best.tiling, config, REQUANT, True).insns, config)


def compute_ceiling(wl: Conv2dWorkload, config: VTAConfig) -> float:
    """GEMM cycles over all compute-module cycles that scale with the outputs: per output block, its GEMMs,
    one reset and `alu_ii` per epilogue ALU op (no pipeline fill, no DMA wait: the best any tiling can do)."""
    gemm = wl.ic_blocks(config.block) * wl.taps
    return gemm / (gemm + 1 + config.alu_ii * len(epilogue_ops(REQUANT, True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=str(ROOT / "bench" / "results" / "vta.json"))
    args = parser.parse_args()
    config, ultra96 = get_config("vta-sim"), get_config("vta-ultra96")
    lines = [f"VTA back end, config vta-sim ({config.bitstream_name}, {config.clock_mhz:.0f} MHz, "
             f"{config.bus_bytes * 8}-bit bus, peak {config.peak_gops:.1f} GOPS); machine: {machine()}",
             "", "GEMM utilisation per ResNet-18 conv (timing model, best tiling with 1 and with 2 virtual threads; "
                 f"{SEARCH_BUDGET} candidates searched per setting)",
             f"  {'layer (HoxWo Cin->Cout k/s)':<30} {'1 thread':>9} {'2 threads':>10} {'ceiling':>8} "
             f"{'ms (2 thr)':>10}  tiling (2 threads)"]
    layers, total_ms, total_ms_one, ultra96_ms, total_macs, util_3x3 = [], 0.0, 0.0, 0.0, 0, {1: [], 2: []}
    search_start = time.perf_counter()
    for h, w, c_in, c_out, k, stride, repeats in RESNET18_CONVS:
        wl = workload(h, w, c_in, c_out, k, stride)
        (_, one), (tiling, two) = layer_timing(wl, config, (1,)), layer_timing(wl, config, (2,))
        ultra96_ms += repeats * layer_timing(wl, ultra96, (2,))[1].latency_ms
        name, ceiling = f"{h}x{w} {c_in}->{c_out} {k}x{k}/{stride}", compute_ceiling(wl, config)
        lines.append(f"  {name + (f' x{repeats}' if repeats > 1 else ''):<30} {one.gemm_utilisation:>8.1%} "
                     f"{two.gemm_utilisation:>9.1%} {ceiling:>7.1%} {two.latency_ms:>10.3f}  {tiling}")
        layers.append({"layer": name, "repeats": repeats, "macs": wl.macs, "tiling": vars(tiling),
                       "compute_ceiling": ceiling, "one_thread": one.as_dict(), "two_threads": two.as_dict()})
        total_ms += repeats * two.latency_ms
        total_ms_one += repeats * one.latency_ms
        total_macs += repeats * wl.macs
        if k == 3:
            for n, report in ((1, one), (2, two)):
                util_3x3[n] += [report.gemm_utilisation] * repeats
    search_s = time.perf_counter() - search_start
    mean_util = {n: float(np.mean(u)) for n, u in util_3x3.items()}
    lines += [f"  mean over the 16 3x3 convs: 1 thread {mean_util[1]:.1%}, 2 threads {mean_util[2]:.1%} "
              f"(goal >= 80% with 2); tiling search + timing of all layers {search_s:.1f} s", "",
              f"ResNet-18 offloaded convs ({total_macs / 1e9:.3f} GMAC): estimated {total_ms:.1f} ms at 100 MHz "
              f"with 2 threads ({total_ms_one:.1f} ms with 1); the same cycles at 200 MHz: {total_ms / 2:.1f} ms; "
              f"vta-ultra96 (333 MHz, 128-bit bus, re-tiled): {ultra96_ms:.1f} ms",
              "  published-derived bounds (must be exceeded): " +
              ", ".join(f"{name} {ms} ms" for name, ms in BOUNDS_MS.items())]

    rng = np.random.default_rng(0)
    wl = workload(56, 56, 64, 64, 3, 1)
    data = rng.integers(-128, 128, (1, 64, 56, 56), dtype=np.int8)
    weight = rng.integers(-128, 128, (64, 64, 3, 3), dtype=np.int8)
    bias = rng.integers(-1000, 1000, 64, dtype=np.int32)
    start = time.perf_counter()
    tiling = Tiling(**layers[0]["tiling"])  # the searched two-thread tiling of the table's first row
    program = compile_conv2d(data.shape, weight, bias, REQUANT, config, (1, 1), (1, 1), tiling)
    compiled = time.perf_counter()
    result = program.run(data)
    simulated = time.perf_counter()
    exact = bool(np.array_equal(result.output, REQUANT.reference(conv2d_reference(data, weight, wl), bias)))
    lines += ["", f"56x56x64 3x3 conv, {tiling}: compile {compiled - start:.2f} s, functional simulation "
                  f"{simulated - compiled:.2f} s (goal <= 10 s), bit-exact vs numpy: {exact}; "
                  f"{len(program.instructions)} instructions, counters {result.counters.as_dict()}"]
    table = "\n".join(lines)
    report = {"config": config.to_json(), "machine": machine(), "layers": layers,
              "mean_gemm_utilisation_3x3": {"one_thread": mean_util[1], "two_threads": mean_util[2]},
              "resnet18_offloaded_ms": {"100MHz_two_threads": total_ms, "100MHz_one_thread": total_ms_one,
                                        "200MHz_two_threads": total_ms / 2, "ultra96_two_threads": ultra96_ms},
              "bounds_ms": BOUNDS_MS, "total_gmac": total_macs / 1e9, "search_budget": SEARCH_BUDGET,
              "sim_56x56x64": {"compile_s": compiled - start, "simulate_s": simulated - compiled,
                               "bit_exact": exact, "counters": result.counters.as_dict(),
                               "timing": result.timing.as_dict()},
              "table": table}
    from edgetune.artifact import atomic_write

    path = Path(args.output)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        handle.write(json.dumps(report, indent=2))
    print(table)


if __name__ == "__main__":
    main()
