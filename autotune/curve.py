"""The tuning curve: the model's estimated latency against trials measured, as a PNG.

Drawn with matplotlib's Agg backend (no display needed) and written atomically. Several curves share one
plot, which is how the benchmark compares the XGBoost cost model with random search."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from ..artifact import atomic_write


def plot_curves(curves: Mapping[str, Sequence[Sequence[float]]], path: str | Path, title: str) -> Path:
    """`curves`: label -> [(seconds, trials, estimated_ms), ...] (as in `TuneResult.to_dict()["curve"]`)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.2), dpi=110)
    for label, points in curves.items():
        if points:
            axis.step([p[1] for p in points], [p[2] for p in points], where="post", marker=".", label=label)
    axis.set_xlabel("trials measured")
    axis.set_ylabel("estimated model latency (ms)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    path = Path(path)
    with atomic_write(path, "wb") as handle:
        figure.savefig(handle, format="png")
    plt.close(figure)
    return path
