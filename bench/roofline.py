"""Benchmark: how close edgetune and onnxruntime run to the core's arithmetic peak, on one thread.

The peak is measured, not looked up: `fma_peak.c` (12 independent chains of vector multiply-adds) compiled
with the system C compiler for this machine. A model's arithmetic is its convolutions' and matrix products'
multiply-adds (two floating-point operations each), counted on the imported Relax module. For each model the
table gives both runtimes' achieved GFLOP/s and their share of the peak, and what running at 0.8x
onnxruntime's latency (the autotuning issue's goal) would take: above 100% of the peak, no schedule of the
same arithmetic reaches it; only fewer operations would (Winograd or FFT convolutions).

    .venv/bin/python bench/roofline.py [--models light_resnet50,light_squeezenet] [--rounds 3] [--seconds 3]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import ROOT, bench_model, model_path, write_report  # noqa: E402  (the benchmark's shared helpers)


def fma_peak_gflops() -> float:
    """One core's float32 FMA throughput, from `fma_peak.c` built for this machine."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        sys.exit("roofline: no C compiler (cc or gcc) to build fma_peak.c: install one (apt-get install gcc)")
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "fma_peak"
        subprocess.run([compiler, "-O2", "-march=native", "-ffp-contract=fast", str(Path(__file__).parent /
                        "fma_peak.c"), "-o", str(binary)], check=True)
        return max(float(subprocess.run([str(binary)], check=True, stdout=subprocess.PIPE, text=True).stdout.split()[0])
                   for _ in range(3))


def model_gflop(name: str) -> float:
    """Multiply-adds of the model's conv2d and matmul calls, x2, in GFLOP."""
    import tvm
    from tvm import relax

    from edgetune.frontend import import_model, load_model

    mod = import_model(load_model(model_path(name))).mod
    total = 0

    def visit(expr) -> None:
        nonlocal total
        if not isinstance(expr, relax.Call) or not isinstance(expr.op, tvm.ir.Op):
            return
        if expr.op.name == "relax.nn.conv2d":
            weight = [int(d) for d in expr.args[1].ty.shape.values]
            total += 2 * _elements(expr) * math.prod(weight[1:])
        elif expr.op.name == "relax.matmul":
            total += 2 * _elements(expr) * int(expr.args[0].ty.shape.values[-1])

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return total / 1e9


def _elements(call) -> int:
    return math.prod(int(d) for d in call.ty.shape.values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="light_resnet50,light_squeezenet")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "roofline.json")
    args = parser.parse_args()

    from edgetune.targets.host import set_threads

    set_threads(1)
    peak = fma_peak_gflops()
    rows, results = [], []
    for name in args.models.split(","):
        gflop = model_gflop(name)
        measured = bench_model(name, 1, args.rounds, args.seconds)
        ms = measured["median_ms"]
        rate = {runtime: gflop / (ms[runtime] / 1e3) for runtime in ("edgetune", "onnxruntime")}
        goal = gflop / (0.8 * ms["onnxruntime"] / 1e3)
        results.append({"model": name, "gflop": gflop, "median_ms": ms, "gflops": rate, "goal_gflops": goal})
        rows.append(f"| {name} | {gflop:.2f} | {ms['edgetune']:.2f} | {rate['edgetune']:.0f} "
                    f"({100 * rate['edgetune'] / peak:.0f}%) | {ms['onnxruntime']:.2f} | {rate['onnxruntime']:.0f} "
                    f"({100 * rate['onnxruntime'] / peak:.0f}%) | {goal:.0f} ({100 * goal / peak:.0f}%) |")
    table = "\n".join([
        f"1 thread; peak {peak:.0f} GFLOP/s (fma_peak.c); GFLOP/s (share of the peak)",
        "| model | GFLOP | edgetune ms | edgetune GFLOP/s | onnxruntime ms | onnxruntime GFLOP/s | "
        "0.8x onnxruntime needs |", "|---|---|---|---|---|---|---|", *rows])
    write_report(args.out, {"machine": f"{platform.machine()} ({platform.processor()})", "peak_gflops": peak,
                            "results": results, "table": table})


if __name__ == "__main__":
    main()
