"""Benchmark: edgetune int8 against edgetune fp32, onnxruntime fp32 and onnxruntime int8, in one run.

The onnxruntime int8 model is made by `onnxruntime.quantization.quantize_static` from the same calibration
samples (QDQ format, per-channel int8 weights, uint8 activations, the settings onnxruntime documents for
x86), so both int8 runtimes compute the same kind of model. Runtimes are measured in interleaved rounds,
each thread count in its own worker process (see bench/run.py). Calibration samples are random (the light
models carry dummy weights, which is fine for speed); accuracy is tested in tests/test_quantize.py.

    .venv/bin/python bench/int8.py [--models light_resnet50,light_squeezenet] [--threads 1,2] [--rounds 5]
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (interleaved_medians, model_path, ort_session, run_workers, vm_call,  # noqa: E402
                 worker_arguments, write_report)  # (the benchmark's shared helpers)

MODELS = ["light_resnet50", "light_squeezenet"]
SAMPLES = 8


def ort_quantized(path: Path, input_name: str, samples: np.ndarray, out: Path) -> Path:
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(samples)

        def get_next(self):
            item = next(self.items, None)
            return None if item is None else {input_name: item}

    quantize_static(str(path), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def bench_model(name: str, threads: int, rounds: int, budget_s: float, mcpu: str | None) -> dict:
    import edgetune
    from edgetune.targets.host import HostTarget, set_threads

    set_threads(threads)
    path = model_path(name)
    target = HostTarget(mcpu)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = edgetune.compile(path, target)
        spec = fp32.signature.inputs[0]
        samples = np.random.default_rng(0).random((SAMPLES, *spec.shape), dtype=np.float32)
        calibration = Path(tmp) / "calibration.npz"
        np.savez(calibration, **{spec.name: samples})
        start = time.perf_counter()
        int8 = edgetune.compile(path, target, quantize="int8", calibration=calibration)
        compile_s = time.perf_counter() - start
        ort_int8_path = ort_quantized(path, spec.name, samples, Path(tmp) / "ort_int8.onnx")
        feed = {spec.name: samples[-1]}
        runners = {"edgetune fp32": vm_call(fp32, threads, [samples[-1]]),
                   "edgetune int8": vm_call(int8, threads, [samples[-1]])}
        for key, model in (("onnxruntime fp32", path), ("onnxruntime int8", ort_int8_path)):
            runners[key] = (lambda s: lambda: s.run(None, feed))(ort_session(model, threads))
        medians = interleaved_medians(runners, rounds, budget_s)
    return {"model": name, "threads": threads, "mcpu": target.mcpu, "int8_compile_s": compile_s, "median_ms": medians,
            "int8_speedup_over_fp32": medians["edgetune fp32"] / medians["edgetune int8"],
            "int8_ratio_to_onnxruntime_int8": medians["edgetune int8"] / medians["onnxruntime int8"],
            "quantization": int8.metadata["quantization"]["output_sqnr_db"],
            "validation": int8.validation.summary()}


def table(results: list[dict]) -> str:
    lines = ["| model (mcpu) | threads | edgetune fp32 ms | edgetune int8 ms | ort fp32 ms | ort int8 ms | "
             "int8 speedup | int8 / ort int8 |", "|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (r["model"], r["threads"])):
        m = r["median_ms"]
        lines.append(f"| {r['model']} ({r['mcpu']}) | {r['threads']} | {m['edgetune fp32']:.2f} | {m['edgetune int8']:.2f} | "
                     f"{m['onnxruntime fp32']:.2f} | {m['onnxruntime int8']:.2f} | "
                     f"{r['int8_speedup_over_fp32']:.2f}x | {r['int8_ratio_to_onnxruntime_int8']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = worker_arguments(__doc__, MODELS, "int8.json")
    parser.add_argument("--mcpu", help="build for this x86 core instead of the host's (e.g. haswell: AVX2, no "
                                       "VNNI); onnxruntime still uses this machine's instructions")
    args = parser.parse_args()
    threads_list = [int(t) for t in args.threads.split(",")]
    if args.worker:
        print(json.dumps([bench_model(n, threads_list[0], args.rounds, args.seconds, args.mcpu)
                          for n in args.models.split(",")]))
        return
    results = run_workers(__file__, args.models.split(","), threads_list,
                          ["--rounds", str(args.rounds), "--seconds", str(args.seconds),
                           *(["--mcpu", args.mcpu] if args.mcpu else [])])
    geo = math.exp(statistics.mean(math.log(r["int8_speedup_over_fp32"]) for r in results))
    write_report(args.out, {"machine": f"{platform.machine()} {os.cpu_count()} cores ({platform.processor()})",
                            "results": results, "table": table(results) + f"\n\ngeometric mean speedup {geo:.2f}x"})


if __name__ == "__main__":
    main()
