"""Benchmark: MetaSchedule's XGBoost cost model against random search, on the same kernels and budget.

Three searches (`autotune.SEARCHES`): evolutionary search ranked by the XGBoost model (edgetune's default),
random search (random sampling of the design space, MetaSchedule's ReplayTrace), and, to show what the cost
model itself adds, the evolutionary search ranked at random. Each search tunes the same model into its own
fresh database for the same number of trials. The curves
compared are the search curves: the model's estimated latency from the searched candidates alone (the
tuning curve proper also counts each kernel's default schedule, which MetaSchedule's candidates rarely beat
here, so both searches' curves stay flat at the defaults and say nothing about the search). Both go into
one plot, and the table says how many trials the XGBoost search needed to reach the latency each other
search ended with (goal, against random search: at most half).

    .venv/bin/python bench/tuning.py [--model conv] [--trials 160] [--seed 0] [--space generic]

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


def trials_to_reach(curve: list[list[float]], target_ms: float) -> int | None:
    return next((int(point[1]) for point in curve if point[2] <= target_ms * 1.0001), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="conv")
    parser.add_argument("--trials", type=int, default=160)
    parser.add_argument("--seed", type=int, default=0, help="the searches' random seed (the same for both)")
    parser.add_argument("--space", default="generic", choices=["generic", "rules"])
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "tuning.json")
    args = parser.parse_args()

    from edgetune import api
    from edgetune.autotune import SEARCHES, TuneConfig, plot_curves

    model = conv_model() if args.model == "conv" else args.model
    curves, results = {}, {}
    for search in SEARCHES:
        with tempfile.TemporaryDirectory() as db:
            print(f"== {search}: {args.trials} trials", file=sys.stderr, flush=True)
            config = TuneConfig(trials=args.trials, search=search, seed=args.seed, space=args.space)
            result = api.tune_model(model, "host", config, db,
                                    progress=lambda line: print(line, file=sys.stderr, flush=True))
        curves[search] = result.to_dict()["search_curve"]
        results[search] = result.to_dict()
    reached = {search: trials_to_reach(curves["xgb"], curve[-1][2]) for search, curve in curves.items()
               if search != "xgb"}
    plot = args.out.with_suffix(".png")
    plot.parent.mkdir(parents=True, exist_ok=True)
    plot_curves({SEARCHES[search]: curves[search] for search in SEARCHES}, plot,
                f"{args.model}: estimated latency of the searched candidates against trials")
    table = "\n".join([
        "| search | final estimated ms (searched candidates) | trials | XGBoost reached it after |",
        "|---|---|---|---|",
        *(f"| {SEARCHES[name]} | {curves[name][-1][2]:.4f} | {int(curves[name][-1][1])} | {reached.get(name, '')} |"
          for name in curves),
        "", f"goal: XGBoost reaches random search's final latency within {args.trials // 2} trials; plot: {plot}"])
    write_report(args.out, {"machine": f"{platform.machine()} ({platform.processor()})", "model": str(args.model),
                            "trials": args.trials, "seed": args.seed, "results": results,
                            "xgb_trials_to_reach": reached, "table": table})


if __name__ == "__main__":
    main()
