"""Activation statistics gathered over a calibration set, and the range each calibration method picks.

One `RangeObserver` per tensor keeps its minimum, maximum and a histogram over [-bound, bound] whose bound
doubles (merging bin pairs exactly) whenever a batch exceeds it, so statistics of any size take constant
memory and need one pass over the data. The methods:
- minmax: the observed range; no clipping, coarsest steps.
- percentile: clip the outer `percentile` tails (default 99.99%).
- entropy: the clipping threshold whose quantized distribution is closest in KL divergence to the observed
  one (TensorRT's method), on the side(s) the tensor occupies.
- mse: the threshold minimising the expected squared error (clipping plus rounding) over the histogram.
"""

from __future__ import annotations

import numpy as np

METHODS = ("minmax", "percentile", "entropy", "mse")
BINS = 4096  # over [-bound, bound]; each half has BINS // 2


class RangeObserver:
    def __init__(self) -> None:
        self.min = np.inf
        self.max = -np.inf
        self.bound = 0.0
        self.hist = np.zeros(BINS, np.float64)

    def update(self, values: np.ndarray) -> None:
        values = np.asarray(values, np.float32).ravel()
        if values.size == 0:
            return
        if not np.all(np.isfinite(values)):
            raise ValueError("calibration produced non-finite activations (NaN or inf): check the calibration data")
        self.min = min(self.min, float(values.min()))
        self.max = max(self.max, float(values.max()))
        extent = max(abs(self.min), abs(self.max), 1e-12)
        if self.bound == 0.0:
            self.bound = extent
        while extent > self.bound:  # widen: pairs of bins merge into the middle half
            merged = self.hist.reshape(-1, 2).sum(axis=1)
            self.hist = np.concatenate([np.zeros(BINS // 4), merged, np.zeros(BINS // 4)])
            self.bound *= 2.0
        counts, _ = np.histogram(values, bins=BINS, range=(-self.bound, self.bound))
        self.hist += counts

    @property
    def seen(self) -> bool:
        return self.hist.sum() > 0

    def range(self, method: str = "minmax", percentile: float = 99.99, levels: int = 256) -> tuple[float, float]:
        """(lo, hi) to quantize this tensor to `levels` steps, by `method`."""
        if not self.seen:
            raise ValueError("no calibration data reached this tensor")
        lo, hi = self._range(method, percentile, levels)
        return float(lo), float(hi)

    def _range(self, method: str, percentile: float, levels: int) -> tuple[float, float]:
        if method == "minmax":
            return self.min, self.max
        centers = (np.arange(BINS) + 0.5) / BINS * 2 * self.bound - self.bound
        if method == "percentile":
            cdf = np.cumsum(self.hist) / self.hist.sum()
            tail = (100.0 - percentile) / 100.0
            lo = centers[np.searchsorted(cdf, tail)] if self.min < 0 else self.min
            hi = centers[min(np.searchsorted(cdf, 1.0 - tail), BINS - 1)]
            return max(lo, self.min), min(hi, self.max)
        if method == "entropy":
            return self._entropy_range(levels)
        if method == "mse":
            return self._mse_range(centers, levels)
        raise ValueError(f"calibration method {method!r} is not one of {', '.join(METHODS)}")

    def _one_sided(self) -> np.ndarray:
        """Histogram of |x| (bins from 0 to bound), the distribution whose clipping point is chosen."""
        half = BINS // 2
        return self.hist[half:] + self.hist[:half][::-1]

    def _entropy_range(self, levels: int) -> tuple[float, float]:
        signed = self.min < 0
        hist = self._one_sided()
        target = levels // 2 if signed else levels  # quantized steps available on the |x| side
        width = self.bound / len(hist)
        hist = hist[:np.flatnonzero(hist)[-1] + 1].copy()  # up to max |x|
        hist[0] = 0.0  # the exact zeros of ReLU outputs: their spike would favour tiny thresholds
        # A sparse histogram (few values per bin) makes every clipping point look cheap: merge bins until
        # they hold 16 values on average, keeping at least two bins per quantized step.
        while len(hist) >= 4 * target and hist.sum() < 16 * len(hist):
            hist = np.add.reduceat(hist, np.arange(0, len(hist), 2))
            width *= 2
        best, best_kl = len(hist), np.inf
        for stop in range(target, len(hist) + 1, max(1, len(hist) // 512)):
            reference = hist[:stop].copy()
            reference[-1] += hist[stop:].sum()  # clipped outliers land in the last bin
            if reference.sum() == 0:
                continue
            # each quantized step spreads its mass evenly over its non-empty bins
            starts = (np.arange(target) * stop) // target
            sizes = np.diff(np.append(starts, stop))
            occupied = hist[:stop] > 0
            mass = np.add.reduceat(hist[:stop], starts)
            filled = np.maximum(np.add.reduceat(occupied.astype(np.float64), starts), 1.0)
            candidate = np.repeat(mass / filled, sizes) * occupied
            p = reference / reference.sum()
            q = candidate / max(candidate.sum(), 1e-30)
            mask = p > 0
            kl = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
            if kl < best_kl:
                best, best_kl = stop, kl
        threshold = best * width
        return (max(-threshold, self.min) if signed else self.min), min(threshold, self.max)

    def _mse_range(self, centers: np.ndarray, levels: int) -> tuple[float, float]:
        weights = self.hist / self.hist.sum()
        used = weights > 0
        x, w = centers[used], weights[used]

        def error(lo: float, hi: float) -> float:
            lo, hi = min(lo, 0.0), max(hi, 0.0)
            scale = max(hi - lo, 1e-12) / (levels - 1)
            zero = np.round(-lo / scale)
            q = np.clip(np.round(x / scale) + zero, 0, levels - 1)
            return float(np.sum(w * ((q - zero) * scale - x) ** 2))

        fractions = np.linspace(0.05, 1.0, 96)
        # one end at a time (the ends of a skewed tensor want different clipping), the upper end first
        hi = self.max * min(fractions, key=lambda f: error(self.min, self.max * f))
        lo = self.min * min(fractions, key=lambda f: error(self.min * f, hi))
        return lo, hi
