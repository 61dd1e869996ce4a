"""Benchmark: MetaSchedule's XGBoost cost model against random search, on the same kernels and budget.

Three searches (`autotune.SEARCHES`): evolutionary search ranked by the XGBoost model (edgetune's default),
random search (random sampling of the design space, MetaSchedule's ReplayTrace), and, to show what the cost
model itself adds, the evolutionary search ranked at random. Each search tunes the same model into its own
fresh database for the same number of trials. The curves compared are search curves: the model's latency
from the searched candidates alone (the tuning curve proper also counts each kernel's default schedule, which
MetaSchedule's candidates rarely beat here, so every curve stays flat at the defaults and says nothing about
the search).

A search's own estimate is the minimum over its noisy measurements, so a search that measures the same
schedule many times (random sampling does not de-duplicate) lowers its estimate without finding anything
faster: the winner's curse. So each curve is timed again: every record that was a kernel's best at some
point of a search is built and measured once more (all searches' records in one shuffled batch, `--passes`
times; a schedule several records or searches selected is timed once for all of them, so a kernel whose
space holds one schedule cannot separate the searches by noise), and the re-timed curve sums those times for
the records each search had selected after each batch. The re-timed curves are what the records would give
compiled: they go into the plot (`tuning.png`; the searches' own estimates into `tuning_search.png`), and
the table says how many trials the XGBoost search needed to reach the re-timed latency each other search
ended with (goal, against random search: at most half).

    .venv/bin/python bench/tuning.py [--model conv] [--trials 160] [--seed 0] [--space generic] [--passes 3]

The searches are compared in MetaSchedule's generic space for every kernel (`--space generic`, the default
here): edgetune's own rule spaces (`tune --space rules`, the tuning default) are small enough to be measured
whole, the same way by every search, and leave the searches nothing to differ on.

`conv` is the test CNN at 64 channels and 56x56: a stem conv, a 3x3 convolution 64 -> 64 (ResNet-50's most
frequent kernel shape), global pooling and a dense layer; any .onnx path works too.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from run import ROOT, write_report  # noqa: E402  (the benchmark's shared helpers)


def conv_model():
    from onnx_models import conv_net

    return conv_net(channels=64, size=56)


def remeasured_curves(model, roots: dict[str, str], curves: dict[str, list], passes: int
                      ) -> tuple[dict[str, list], dict[str, dict]]:
    """Per search, its search curve (`curves`) with the records it had selected after each batch timed again
    (see the module docstring), and each kernel's final selection: ms as searched, ms timed again in each
    pass. Databases under `roots`."""
    import random

    import tvm

    from edgetune import api
    from edgetune.autotune import TuneConfig, TuningDatabase, extract_tasks, local_builder
    from edgetune.autotune.database import mean_seconds, workload_key
    from edgetune.autotune.measure import local_runner, measure_modules
    from edgetune.targets import get_target

    target = get_target("host").tvm_target()
    tasks = extract_tasks(api.run_pipeline(model, "host").mod, target)
    kernels, weights = [t.dispatched[0] for t in tasks], [float(t.weight) for t in tasks]
    histories = {search: TuningDatabase(root, target).history(kernels) for search, root in roots.items()}
    selected = {}  # (search, position in its history) -> the kernel's best record so far, to be timed again
    for search, history in histories.items():
        best: dict[int, float] = {}
        for position, (task, record) in enumerate(history):
            seconds = mean_seconds(record.run_secs) if record.run_secs else float("inf")
            if seconds < best.get(task, float("inf")):
                best[task] = seconds
                selected[search, position] = (task, record)
    order = list(selected)
    random.Random(0).shuffle(order)
    mods, distinct, slot = [], {}, {}  # each distinct schedule once: the same times in every search
    for key in order:
        task, record = selected[key]
        sch = tvm.s_tir.Schedule(kernels[task])
        record.trace.apply_to_schedule(sch, remove_postproc=False)
        digest = workload_key(sch.mod)
        if digest not in distinct:
            distinct[digest] = len(mods)
            mods.append(sch.mod)
        slot[key] = distinct[digest]
    print(f"timing the {len(mods)} distinct schedules of {len(selected)} selected records again, {passes} passes",
          file=sys.stderr, flush=True)
    builder, runner = local_builder(TuneConfig.builder_timeout_s), local_runner(TuneConfig.runner_timeout_s)
    measured: dict[int, list[float]] = {}
    for _ in range(passes):
        for index, run_secs in enumerate(measure_modules(mods, target, builder, runner)):
            if run_secs:
                measured.setdefault(index, []).append(mean_seconds(run_secs))
    times = {key: measured[slot[key]] for key in order if slot[key] in measured}
    kernels_final, again = {}, {}
    for search, curve in curves.items():
        keys = sorted(key for key in selected if key[0] == search)  # in the order the search measured them
        final = {selected[key][0]: key for key in keys}
        kernels_final[search] = {
            tasks[task].task_name: [round(1e3 * mean_seconds(selected[key][1].run_secs), 5),
                                    [round(1e3 * t, 5) for t in times.get(key, [])]]
            for task, key in sorted(final.items())}
        points, current, next_key = [], {}, 0
        for seconds, trials, _ in curve:
            while next_key < len(keys) and keys[next_key][1] < trials:
                key = keys[next_key]
                current[selected[key][0]] = sum(times[key]) / len(times[key]) if key in times else float("inf")
                next_key += 1
            if len(current) == len(kernels):
                points.append([seconds, trials, round(1e3 * sum(w * current[t] for t, w in enumerate(weights)), 5)])
        again[search] = points
    return again, kernels_final


def trials_to_reach(curve: list[list[float]], target_ms: float) -> int | None:
    return next((int(point[1]) for point in curve if point[2] <= target_ms * 1.0001), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="conv")
    parser.add_argument("--trials", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0, help="the searches' random seed (the same for both)")
    parser.add_argument("--space", default="generic", choices=["generic", "rules"])
    parser.add_argument("--passes", type=int, default=3, help="times each selected record is timed again")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tuning.json")
    args = parser.parse_args()

    from edgetune import api
    from edgetune.autotune import SEARCHES, TuneConfig, plot_curves

    model = conv_model() if args.model == "conv" else args.model
    curves, results = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        roots = {search: str(Path(folder) / search) for search in SEARCHES}
        for search in SEARCHES:
            print(f"== {search}: {args.trials} trials", file=sys.stderr, flush=True)
            config = TuneConfig(trials=args.trials, search=search, seed=args.seed, space=args.space)
            result = api.tune_model(model, "host", config, roots[search],
                                    progress=lambda line: print(line, file=sys.stderr, flush=True))
            curves[search] = result.to_dict()["search_curve"]
            results[search] = result.to_dict()
        again, kernels = remeasured_curves(model, roots, curves, args.passes)
    reached = {search: trials_to_reach(again["xgb"], curve[-1][2]) for search, curve in again.items()
               if search != "xgb" and curve}
    plot = args.out.with_suffix(".png")
    plot.parent.mkdir(parents=True, exist_ok=True)
    plot_curves({SEARCHES[search]: again[search] for search in SEARCHES}, plot,
                f"{args.model}: latency of the selected records, timed again, against trials")
    plot_curves({SEARCHES[search]: curves[search] for search in SEARCHES}, plot.with_name(plot.stem + "_search.png"),
                f"{args.model}: the searches' own estimates against trials")

    def final(curve: list) -> str:
        return f"{curve[-1][2]:.4f}" if curve else "-"

    table = "\n".join([
        "| search | trials | final estimate, as searched (ms) | final, timed again (ms) | XGBoost reached it after |",
        "|---|---|---|---|---|",
        *(f"| {SEARCHES[name]} | {int(curves[name][-1][1]) if curves[name] else 0} | {final(curves[name])} | "
          f"{final(again[name])} | {reached.get(name, '')} |" for name in curves),
        "", f"goal: XGBoost reaches random search's final latency (timed again) within {args.trials // 2} trials; "
        f"plot: {plot}"])
    write_report(args.out, {"machine": f"{platform.machine()} ({platform.processor()})", "model": str(args.model),
                            "trials": args.trials, "seed": args.seed, "passes": args.passes, "results": results,
                            "remeasured_curves": again, "kernels_searched_and_timed_again_ms": kernels,
                            "xgb_trials_to_reach": reached, "table": table})


if __name__ == "__main__":
    main()
