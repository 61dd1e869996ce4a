"""Benchmark: how close edgetune and onnxruntime run to the core's arithmetic peak, on one thread.

The peak is measured, not looked up: `fma_peak.c` (12 independent chains of vector multiply-adds) compiled
with the system C compiler for this machine. A model's arithmetic is its convolutions' and matrix products'
multiply-adds (two floating-point operations each), counted on the imported Relax module. For each model the
table gives both runtimes' achieved GFLOP/s of that arithmetic and their share of the peak, and what running
at 0.8x onnxruntime's latency (the autotuning issue's goal) would take: above 100% of the peak, no schedule
of the same arithmetic reaches it; only fewer operations do. edgetune's Winograd convs (`passes.winograd`) do
fewer, so its rate of the model's arithmetic can pass the peak; the table also gives the arithmetic
edgetune's build executes (its conv, Winograd GEMM and matmul kernels after the pass pipeline; the Winograd
transforms are not counted) and the rate at which it runs that.

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


def executed_gflop(name: str) -> float:
    """Multiply-adds x2 of the reduction blocks of edgetune's conv, Winograd GEMM and matmul kernels, per
    call in the lowered module, in GFLOP."""
    from tvm import relax, s_tir, tirx
    from tvm.s_tir.dlight.analysis import normalize_prim_func

    from edgetune.api import run_pipeline

    mod = run_pipeline(model_path(name), "host").mod
    per_kernel = {}
    for gvar, func in mod.functions_items():
        if not isinstance(func, tirx.PrimFunc):
            continue
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch) or []
        per_kernel[gvar.name_hint] = sum(
            2 * math.prod(it.dom for it in info.iters) for info in infos if not info.is_injective()
            and any(word in sch.get(info.block_rv).name_hint for word in ("conv2d", "winograd_gemm", "matmul")))
    total = 0

    def visit(expr) -> None:
        nonlocal total
        if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == "relax.call_tir":
            total += per_kernel.get(expr.args[0].name_hint, 0)

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
        gflop, executed = model_gflop(name), executed_gflop(name)
        measured = bench_model(name, 1, args.rounds, args.seconds)
        ms = measured["median_ms"]
        rate = {runtime: gflop / (ms[runtime] / 1e3) for runtime in ("edgetune", "onnxruntime")}
        goal = gflop / (0.8 * ms["onnxruntime"] / 1e3)
        executed_rate = executed / (ms["edgetune"] / 1e3)
        results.append({"model": name, "gflop": gflop, "executed_gflop": executed, "median_ms": ms, "gflops": rate,
                        "executed_gflops": executed_rate, "goal_gflops": goal})
        rows.append(f"| {name} | {gflop:.2f} | {ms['edgetune']:.2f} | {rate['edgetune']:.0f} "
                    f"({100 * rate['edgetune'] / peak:.0f}%) | {executed:.2f} | {executed_rate:.0f} "
                    f"({100 * executed_rate / peak:.0f}%) | {ms['onnxruntime']:.2f} | {rate['onnxruntime']:.0f} "
                    f"({100 * rate['onnxruntime'] / peak:.0f}%) | {goal:.0f} ({100 * goal / peak:.0f}%) |")
    table = "\n".join([
        f"1 thread; peak {peak:.0f} GFLOP/s (fma_peak.c); GFLOP/s (share of the peak)",
        "| model | GFLOP | edgetune ms | edgetune GFLOP/s | edgetune executes GFLOP | at GFLOP/s | onnxruntime ms | "
        "onnxruntime GFLOP/s | 0.8x onnxruntime needs |", "|---|---|---|---|---|---|---|---|---|", *rows])
    write_report(args.out, {"machine": f"{platform.machine()} ({platform.processor()})", "peak_gflops": peak,
                            "results": results, "table": table})


if __name__ == "__main__":
    main()
