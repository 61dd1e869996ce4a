"""Benchmark: edgetune (untuned, default schedules) against onnxruntime and PyTorch eager, in one run.

For each model and thread count, the runtimes are measured in interleaved rounds (A, B, C, A, B, C, ...) so
that a noisy neighbour or a frequency change hits all of them alike; the table gives each runtime's median and
its ratio to onnxruntime, plus edgetune's compile time. Results also go to bench/results/latest.json.

Each thread count runs in its own worker process, because TVM sizes its thread pool once per process. Thread
pools do not spin between calls (onnxruntime `session.intra_op.allow_spinning=0`, TVM
`TVM_THREAD_POOL_SPIN_COUNT=0`): interleaved, a spinning pool would steal the cores of the next runtime.

    .venv/bin/python bench/run.py [--models light_squeezenet,digits] [--threads 1,2] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import onnx

ROOT = Path(__file__).resolve().parent.parent
LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
DIGITS = ROOT / "examples" / "digits"
MODELS = ["light_resnet50", "light_squeezenet", "light_densenet121", "light_inception_v1", "light_shufflenet",
          "digits"]


def model_path(name: str) -> Path:
    return DIGITS / "digits_cnn.onnx" if name == "digits" else LIGHT / f"{name}.onnx"


def torch_model(name: str):
    """A PyTorch version of the model where one is at hand (the digits example's trained weights)."""
    weights = DIGITS / "digits_cnn.pt"
    if name != "digits" or not weights.exists():
        return None
    import torch

    sys.path.insert(0, str(DIGITS))
    from train import DigitsCNN

    module = DigitsCNN()
    module.load_state_dict(torch.load(weights, weights_only=True))
    return module.eval()


def time_calls(fn, budget_s: float, min_calls: int = 3) -> float:
    """Median of single-call times within about `budget_s` seconds, in ms."""
    times = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def ort_session(model: Path, threads: int):
    """onnxruntime on `threads` intra-op threads, its pool not spinning between calls (see above)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])


def vm_call(compiled, threads: int, arrays) -> Callable[[], object]:
    """One inference of a compiled model on arrays already on its device: what is timed."""
    session = compiled.session(threads)
    main, args = session.vm["main"], compiled.target._to_device(session, arrays)
    return lambda: main(*args)


def interleaved_medians(runners: dict, rounds: int, budget_s: float) -> dict[str, float]:
    """Each runner warmed up twice, then timed in interleaved rounds; the median per runner, in ms."""
    for fn in runners.values():
        for _ in range(2):
            fn()
    samples = {k: [] for k in runners}
    for _ in range(rounds):
        for key, fn in runners.items():
            samples[key].append(time_calls(fn, budget_s / rounds))
    return {k: statistics.median(v) for k, v in samples.items()}


def run_workers(script: str, models: list[str], threads_list: list[int], args: list[str]) -> list[dict]:
    """`script --worker` once per model and thread count (TVM sizes its pool once per process), pools not
    spinning; the results each worker prints as JSON on its last line."""
    results = []
    env = {**os.environ, "TVM_THREAD_POOL_SPIN_COUNT": "0"}
    for name in models:
        for threads in threads_list:
            print(f"== {name}, {threads} thread(s)", file=sys.stderr, flush=True)
            out = subprocess.run([sys.executable, script, "--worker", "--models", name, "--threads", str(threads),
                                  *args], env=env, check=True, stdout=subprocess.PIPE, text=True).stdout
            results.extend(json.loads(out.strip().splitlines()[-1]))
    return results


def bench_model(name: str, threads: int, rounds: int, budget_s: float) -> dict:
    """One model at one thread count (this process's TVM pool size)."""
    import edgetune
    from edgetune.targets.host import set_threads

    set_threads(threads)
    path = model_path(name)
    start = time.perf_counter()
    compiled = edgetune.compile(path, "host")
    compile_s = time.perf_counter() - start
    feed = compiled.signature.random_feed(0)
    arrays = compiled.signature.check_feed(feed)
    module = torch_model(name)
    runners = {"edgetune": vm_call(compiled, threads, arrays),
               "onnxruntime": (lambda sess: lambda: sess.run(None, feed))(ort_session(path, threads))}
    if module is not None:
        import torch

        torch.set_num_threads(threads)
        tensors = [torch.from_numpy(a) for a in arrays]

        def run_torch():
            with torch.no_grad():
                module(*tensors)

        runners["pytorch"] = run_torch
    medians = interleaved_medians(runners, rounds, budget_s)
    return {"model": name, "threads": threads, "compile_s": compile_s,
            "validation": compiled.validation.summary(), "median_ms": medians,
            "ratio_to_onnxruntime": {k: v / medians["onnxruntime"] for k, v in medians.items()}}


def table(results: list[dict], threads_list: list[int]) -> str:
    lines = ["| model | threads | edgetune ms | onnxruntime ms | pytorch ms | edgetune / ort | compile s |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (r["model"], r["threads"])):
        m = r["median_ms"]
        torch_ms = f"{m['pytorch']:.3f}" if "pytorch" in m else "-"
        lines.append(f"| {r['model']} | {r['threads']} | {m['edgetune']:.3f} | {m['onnxruntime']:.3f} | "
                     f"{torch_ms} | {r['ratio_to_onnxruntime']['edgetune']:.2f} | {r['compile_s']:.1f} |")
    for t in threads_list:
        ratios = [r["ratio_to_onnxruntime"]["edgetune"] for r in results if r["threads"] == t]
        geo = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
        lines.append(f"| geometric mean | {t} | | | | {geo:.2f} (worst {max(ratios):.2f}) | |")
    return "\n".join(lines)


def write_report(path: Path, report: dict) -> None:
    """The results as JSON (written atomically), and the table on stdout."""
    from edgetune.artifact import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        handle.write(json.dumps(report, indent=2))
    print(report["table"])


def worker_arguments(doc: str, models: list[str], out: str) -> argparse.ArgumentParser:
    """The options of a benchmark that measures models per thread count in worker processes."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--models", default=",".join(models))
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=6.0, help="measuring time per model, runtime, thread count")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / out)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser


def main() -> None:
    args = worker_arguments(__doc__, MODELS, "latest.json").parse_args()
    threads_list = [int(t) for t in args.threads.split(",")]
    if args.worker:  # one thread count, results as JSON on stdout
        results = [bench_model(name, threads_list[0], args.rounds, args.seconds) for name in args.models.split(",")]
        print(json.dumps(results))
        return
    results = run_workers(__file__, args.models.split(","), threads_list,
                          ["--rounds", str(args.rounds), "--seconds", str(args.seconds)])
    report = {"machine": f"{platform.machine()} {os.cpu_count()} cores", "results": results,
              "table": table(results, threads_list)}
    write_report(args.out, report)


if __name__ == "__main__":
    main()
