"""Benchmark: what edgetune's own passes earn over TVM's (FuseOps/FuseTIR) on the same default schedules.

For each model it compiles twice, with edgetune's passes (scale folding, elementwise activations, blocked
layout with prepacked weights) and with TVM's passes only, then measures both in interleaved rounds on one
thread: distinct kernels, kernel launches per inference and median latency (onnxruntime alongside). Both
builds compute convs directly (`winograd=False`): Winograd's three kernels per conv are a choice of
algorithm, not of fusion, and would hide what fusion does to the kernel count (`bench/run.py` has the
default build).

    .venv/bin/python bench/fusion.py [--models light_resnet50,bert_encoder] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import LIGHT, ROOT, time_calls, vm_call, write_report  # noqa: E402  (the benchmark's shared helpers)

MODELS = ["light_resnet50", "light_densenet121", "light_inception_v1", "bert_encoder"]


def load(name: str):
    """The model as edgetune.compile takes it: an ONNX path, or the BERT-style encoder as a torch module."""
    if name != "bert_encoder":
        return LIGHT / f"{name}.onnx", {}
    import torch

    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(d_model=256, nhead=4, dim_feedforward=1024, batch_first=True,
                                             dropout=0.0)
    encoder = torch.nn.TransformerEncoder(layer, num_layers=4).eval()
    return encoder, {"example_inputs": (torch.randn(1, 64, 256),), "input_names": ["tokens"]}


def launches(compiled) -> tuple[int, int]:
    """(distinct kernels, kernel calls per inference) from the per-call instrumentation."""
    report = compiled.profile(warmup=1, repeat=3)
    kernels = [k for k in report.kernels if k.kind == "kernel"]  # calls are per inference already
    return len(kernels), sum(k.calls for k in kernels)


def bench(name: str, rounds: int, seconds: float) -> dict:
    import onnxruntime as ort

    import edgetune
    from edgetune.targets.host import set_threads

    set_threads(1)
    model, extra = load(name)
    variants = {"edgetune": edgetune.compile(model, winograd=False, **extra),
                "tvm passes": edgetune.compile(model, edgetune_passes=False, winograd=False, **extra)}
    feed = variants["edgetune"].signature.random_feed(0)
    calls = {key: vm_call(compiled, 1, compiled.signature.check_feed(feed)) for key, compiled in variants.items()}
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    proto = edgetune.frontend.load_model(model, extra.get("example_inputs"), extra.get("input_names")).proto
    sess = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    calls["onnxruntime"] = lambda: sess.run(None, feed)
    samples = {k: [] for k in calls}
    for _ in range(rounds):
        for key, fn in calls.items():
            samples[key].append(time_calls(fn, seconds / rounds))
    result = {"model": name, "median_ms": {k: statistics.median(v) for k, v in samples.items()}}
    result["kernels"] = {k: launches(c) for k, c in variants.items()}
    return result


def table(results: list[dict]) -> str:
    lines = ["| model | kernels (tvm passes -> edgetune) | launches per inference | tvm passes ms | edgetune ms "
             "| speedup | onnxruntime ms |", "|---|---|---|---|---|---|---|"]
    for r in results:
        (k0, l0), (k1, l1) = r["kernels"]["tvm passes"], r["kernels"]["edgetune"]
        m = r["median_ms"]
        lines.append(f"| {r['model']} | {k0} -> {k1} | {l0} -> {l1} | {m['tvm passes']:.3f} | {m['edgetune']:.3f} "
                     f"| {m['tvm passes'] / m['edgetune']:.2f}x | {m['onnxruntime']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4.0, help="measuring time per model and variant")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "fusion.json")
    args = parser.parse_args()
    results = [bench(name, args.rounds, args.seconds) for name in args.models.split(",")]
    write_report(args.out, {"results": results, "table": table(results)})


if __name__ == "__main__":
    main()
