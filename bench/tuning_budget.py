"""Benchmark: models tuned for a time budget against onnxruntime, and recompiling from the database.

For each model: compile untuned (the build time), tune into a fresh database for the budget (`compile
--time-budget`), compile twice from that database without tuning (the recompile time; the same kernels must
come from records both times), then time the untuned and tuned libraries and onnxruntime on the same thread
count, interleaved. Goals (the autotuning issue): after 30 minutes at most 0.8x onnxruntime; recompiling
from a complete database at most 10 s more than the build itself.

    .venv/bin/python bench/tuning_budget.py [--models light_resnet50 light_squeezenet] [--budget-minutes 30] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import ROOT, interleaved_medians, model_path, ort_session, vm_call, write_report  # noqa: E402


def timed_compile(path: Path, **options):
    import edgetune

    start = time.perf_counter()
    compiled = edgetune.compile(path, "host", **options)
    return compiled, time.perf_counter() - start


def bench_model(name: str, budget_s: float, threads: int, say) -> dict:
    path = model_path(name)
    untuned, build_s = timed_compile(path)
    say(f"{name}: untuned compile {build_s:.1f} s; tuning for {budget_s / 60:.0f} min")
    with tempfile.TemporaryDirectory(prefix="edgetune-bench-db-") as db:
        tuned, tune_s = timed_compile(path, tuning_db=db, tune_time_budget_s=budget_s,
                                      progress=lambda line: say(f"  {line}"))
        again, recompile_s = timed_compile(path, tuning_db=db)
        third, _ = timed_compile(path, tuning_db=db)
    tuning = again.metadata["tuning"]
    same_kernels = again.metadata["schedules"]["kernels"] == third.metadata["schedules"]["kernels"]
    feed = untuned.signature.random_feed(0)
    arrays = untuned.signature.check_feed(feed)
    medians = interleaved_medians({
        "untuned": vm_call(untuned, threads, arrays),
        "tuned": vm_call(again, threads, arrays),
        "onnxruntime": (lambda sess: lambda: sess.run(None, feed))(ort_session(path, threads)),
    }, rounds=3, budget_s=9.0)
    tasks = tuned.metadata["tuning"].get("tasks", [])
    in_model = {label: {k.name: k.total_ms for k in compiled.profile(repeat=20).kernels if k.kind == "kernel"}
                for label, compiled in (("untuned", untuned), ("tuned", again))}
    for task in tasks:  # what each kernel's record gained alone, and what it does inside the model
        task["in_model_ms"] = {label: times.get(task["task"]) for label, times in in_model.items()}
    return {"model": name, "threads": threads, "budget_s": budget_s, "tune_compile_s": tune_s,
            "build_s": build_s, "recompile_s": recompile_s, "same_kernels_twice": same_kernels,
            "kernels_from_records": len(tuning.get("kernels_from_records", [])),
            "tasks": len(tasks), "tasks_with_records": sum(1 for t in tasks if t.get("best_ms") is not None),
            "trials": sum(int(t.get("trials", 0)) for t in tasks), "median_ms": medians, "per_task": tasks,
            "checked_in_model": tuned.metadata["tuning"].get("in_model", []),
            "tuned_over_onnxruntime": medians["tuned"] / medians["onnxruntime"],
            "untuned_over_onnxruntime": medians["untuned"] / medians["onnxruntime"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["light_resnet50", "light_squeezenet"])
    parser.add_argument("--budget-minutes", type=float, default=30.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tuning_budget.json")
    args = parser.parse_args()

    # Pools do not spin between calls, as in bench/run.py: onnxruntime's does not, and a spinning TVM pool both
    # skips the wake-up its kernels pay otherwise and steals the core of the runtime timed next.
    os.environ["TVM_THREAD_POOL_SPIN_COUNT"] = "0"
    from edgetune.targets.host import set_threads

    set_threads(args.threads)  # TVM sizes its pool once per process
    say = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    results = []
    for name in args.models:
        results.append(bench_model(name, args.budget_minutes * 60, args.threads, say))
        rows = [f"| {r['model']} | {r['trials']} | {r['tasks_with_records']}/{r['tasks']} | "
                f"{sum(1 for v in r['checked_in_model'] if not v['accepted'])}/{len(r['checked_in_model'])} | "
                f"{r['kernels_from_records']} | "
                f"{r['median_ms']['untuned']:.2f} | {r['median_ms']['tuned']:.2f} | {r['median_ms']['onnxruntime']:.2f} | "
                f"{r['tuned_over_onnxruntime']:.2f} | {r['build_s']:.1f} | {r['recompile_s']:.1f} | "
                f"{'yes' if r['same_kernels_twice'] else 'NO'} |" for r in results]
        table = "\n".join([
            f"{args.budget_minutes:g}-minute budget, {args.threads} thread(s), times in ms (medians, interleaved)",
            "| model | trials | tasks with records | rejected inside the model | records used | untuned | tuned | "
            "onnxruntime | tuned / ort | build s | recompile from db s | same kernels twice |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|", *rows])
        write_report(args.out, {"machine": f"{platform.machine()} ({platform.processor()})",
                                "results": results, "table": table})


if __name__ == "__main__":
    main()
