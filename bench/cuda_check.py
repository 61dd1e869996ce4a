"""GPU check: light_resnet50 compiled for the NVIDIA GPU present, checked against onnxruntime, timed, and
compared with PyTorch on the same GPU.

For a machine with an NVIDIA GPU (driver R580 or newer) and no network, edgetune installed with its CUDA
extra (`bash setup.sh test`, or `pip install -e '.[cuda]'`):

    .venv/bin/python bench/cuda_check.py [--out bench/results/cuda_check.json] [--tune-seconds 150]

1. The GPU's compute capability (`tvm.cuda(0).compute_version`) picks the preset: cuda-smXY, else cuda-multi.
2. fp32 and fp16 builds, each validated against onnxruntime on the CPU (`edgetune.compile` refuses a build whose
   outputs disagree) and timed with the VM's `time_evaluator`.
3. One short MetaSchedule run (`--tune-seconds`, fresh database) on the fp32 build: tuned, applied, validated,
   timed.
4. PyTorch eager and `torch.compile` on the same GPU when a CUDA build of torch is installed: a ResNet-50 of the
   same architecture with random weights (the ONNX model's weights are placeholders too; latency only).

The whole run is meant to finish in under 8 minutes; its wall time is in the JSON. Without a GPU it says so
and exits 2, writing nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from onnx_models import light  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL = "light_resnet50"
REPEAT = 100


def gpu_preset() -> tuple[str, str, str]:
    """(preset, GPU name, compute capability); exits 2 without a GPU."""
    import edgetune  # noqa: F401  (sets up the CUDA toolchain before tvm is imported)
    import tvm
    from edgetune.targets import target_names

    device = tvm.cuda(0)
    if not device.exist:
        print("cuda_check: no NVIDIA GPU here (tvm.cuda(0).exist is False); run it on a machine with one",
              file=sys.stderr)
        sys.exit(2)
    preset = f"cuda-sm{device.compute_version.replace('.', '')}"
    return (preset if preset in target_names() else "cuda-multi"), device.device_name, device.compute_version


def edgetune_run(model: Path, target: str, say, **options) -> dict:
    """Compile (validated against onnxruntime), then time; the numbers that go into the report."""
    import edgetune

    started = time.perf_counter()
    compiled = edgetune.compile(model, target=target, progress=say, **options)
    compile_s = time.perf_counter() - started
    report = compiled.profile(warmup=10, repeat=REPEAT)
    validation = compiled.validation
    return {"target": target, "compile_s": round(compile_s, 1), "stages_s": compiled.metadata["compile_seconds"],
            "validation": validation.to_dict(), "latency_ms": {k: round(v, 4) for k, v in report.stats.items()},
            **({"tuning": {k: v for k, v in compiled.metadata["tuning"].items() if k != "curve"}}
               if "tuning" in compiled.metadata else {})}


def resnet50(torch):
    """torchvision's ResNet-50 (v1.5: stride on the 3x3 conv), written out: torchvision may not be installed."""
    nn = torch.nn

    class Bottleneck(nn.Module):
        def __init__(self, inplanes: int, planes: int, stride: int):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
                nn.Conv2d(planes, planes, 3, stride, 1, bias=False), nn.BatchNorm2d(planes), nn.ReLU(inplace=True),
                nn.Conv2d(planes, planes * 4, 1, bias=False), nn.BatchNorm2d(planes * 4))
            self.skip = (nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * 4))
                         if stride != 1 or inplanes != planes * 4 else nn.Identity())

        def forward(self, x):
            return torch.relu(self.body(x) + self.skip(x))

    layers, inplanes = [], 64
    for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
        for index in range(blocks):
            layers.append(Bottleneck(inplanes, planes, stride if index == 0 else 1))
            inplanes = planes * 4
    return nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
                         nn.MaxPool2d(3, 2, 1), *layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(2048, 1000), nn.Softmax(dim=1))


def torch_runs(say) -> dict:
    """PyTorch on the same GPU: eager and torch.compile, fp32 and fp16 (autocast); or why it was skipped."""
    try:
        import torch
    except ImportError:
        return {"skipped": "torch is not installed"}
    if not torch.cuda.is_available():
        return {"skipped": f"torch {torch.__version__} has no CUDA device (a CPU-only build, or no driver)"}
    torch.manual_seed(0)
    model = resnet50(torch).eval().cuda()
    x = torch.randn(1, 3, 224, 224, device="cuda")

    def timed(fn, dtype) -> float:
        """Median ms of REPEAT calls, each synchronised: the same count as edgetune's timing."""
        with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=dtype is torch.float16):
            for _ in range(10):
                fn(x)
            torch.cuda.synchronize()
            samples = []
            for _ in range(REPEAT):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn(x)
                end.record()
                torch.cuda.synchronize()
                samples.append(start.elapsed_time(end))
        return round(sorted(samples)[len(samples) // 2], 4)

    results = {"torch": torch.__version__, "model": "ResNet-50 defined in bench/cuda_check.py, random weights"}
    for precision, dtype in (("fp32", torch.float32), ("fp16", torch.float16)):
        say(f"torch eager {precision}...")
        results[f"eager_{precision}_ms"] = timed(model, dtype)
    try:
        say("torch.compile (first call compiles)...")
        started = time.perf_counter()
        compiled = torch.compile(model)
        results["compile_fp32_ms"] = timed(compiled, torch.float32)
        results["torch_compile_s"] = round(time.perf_counter() - started, 1)
    except Exception as exc:  # noqa: BLE001 - Inductor needs Triton and a host compiler; report, go on
        results["compile_skipped"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "cuda_check.json")
    parser.add_argument("--tune-seconds", type=float, default=150.0, help="MetaSchedule time budget")
    args = parser.parse_args()
    started = time.perf_counter()

    def say(line: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {line}", file=sys.stderr, flush=True)

    preset, gpu, compute = gpu_preset()
    model = light(MODEL)
    say(f"{gpu} (compute capability {compute}): {MODEL} for {preset}")
    report = {"gpu": gpu, "compute_capability": compute, "model": MODEL, "repeat": REPEAT,
              "reference": "onnxruntime on the CPU",
              "fp32": edgetune_run(model, preset, say),
              "fp16": edgetune_run(model, preset, say, precision="fp16")}
    with tempfile.TemporaryDirectory(prefix="cuda-check-db-") as db:
        report["fp32_tuned"] = edgetune_run(model, preset, say, tune_time_budget_s=args.tune_seconds, tuning_db=db)
    report["pytorch"] = torch_runs(say)
    report["wall_s"] = round(time.perf_counter() - started, 1)

    from edgetune.artifact import atomic_write

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.out) as handle:
        handle.write(json.dumps(report, indent=2))
    print(json.dumps({k: report[k] for k in ("gpu", "wall_s")} | {
        name: report[name]["latency_ms"]["p50_ms"] for name in ("fp32", "fp16", "fp32_tuned")}
        | {k: v for k, v in report["pytorch"].items() if k.endswith("_ms") or "skipped" in k}, indent=2))


if __name__ == "__main__":
    main()
