"""Validation: the compiled model's outputs against onnxruntime's on the same inputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping, Sequence

import numpy as np
import onnx

from .errors import UserError
from .frontend import TensorSpec
from .frontend.narrow_formats import from_carrier

# (atol, rtol) per output dtype; integer and boolean outputs must match exactly.
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float16": (1e-2, 1e-2),
    "bfloat16": (2e-2, 2e-2),
    "float32": (1e-4, 1e-3),
    "float64": (1e-7, 1e-6),
}


@dataclass
class OutputCheck:
    name: str
    max_abs_err: float
    max_rel_err: float  # over elements whose reference magnitude exceeds atol
    atol: float
    rtol: float
    passed: bool
    problem: str = ""
    sqnr_db: float | None = None  # checked instead of atol/rtol for quantized builds


@dataclass
class ValidationReport:
    reference: str
    inputs: str
    outputs: list[OutputCheck] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    def to_dict(self) -> dict:
        return {"passed": self.passed, "reference": self.reference, "inputs": self.inputs,
                "outputs": [asdict(o) for o in self.outputs]}

    def summary(self) -> str:
        parts = [f"{o.name}: max abs {o.max_abs_err:.3g}, max rel {o.max_rel_err:.3g}"
                 + (f", SQNR {o.sqnr_db:.1f} dB" if o.sqnr_db is not None else "")
                 + ("" if o.passed else f" FAILED ({o.problem})") for o in self.outputs]
        return ("passed" if self.passed else "FAILED") + f" against {self.reference} [" + "; ".join(parts) + "]"


def reference_outputs(model: onnx.ModelProto, feed: Mapping[str, np.ndarray],
                      outputs: Sequence[TensorSpec] | None = None) -> list[np.ndarray]:
    """Run the original model in onnxruntime (CPU provider); outputs as `outputs` declares them (onnxruntime
    returns float8 outputs as their bit patterns in uint8)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # fatal only: its failures come back as the one-line UserError below
    try:
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        results = [np.asarray(o) for o in session.run(None, dict(feed))]
    except Exception as exc:  # onnxruntime raises its own exception types
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"onnxruntime cannot run the model to validate it ({text}); "
                        "pass --no-validate to skip validation") from None
    if outputs is None:
        return results
    return [from_carrier(array, spec.dtype) if array.dtype == np.uint8 else array
            for array, spec in zip(results, outputs, strict=True)]


def compare(actual: Sequence[np.ndarray], expected: Sequence[np.ndarray], specs: Sequence[TensorSpec],
            reference: str, inputs: str, atol: float | None = None, rtol: float | None = None,
            min_sqnr_db: float | None = None) -> ValidationReport:
    """Each output against the reference: within atol/rtol, or (`min_sqnr_db`, for quantized builds) float
    outputs with at least that signal-to-noise ratio."""
    report = ValidationReport(reference=reference, inputs=inputs)
    for spec, got, want in zip(specs, actual, expected):
        check = _check_one(spec.name, np.asarray(got), np.asarray(want), atol, rtol)
        if min_sqnr_db is not None and np.asarray(want).dtype.kind == "f" and check.max_abs_err != float("inf"):
            check.sqnr_db = sqnr_db(np.asarray(want), np.asarray(got))
            check.passed = check.sqnr_db >= min_sqnr_db
            check.problem = "" if check.passed else f"SQNR {check.sqnr_db:.1f} dB < {min_sqnr_db:g} dB"
        report.outputs.append(check)
    return report


def sqnr_db(reference: np.ndarray, actual: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio of `actual` against `reference`, in dB (inf when equal)."""
    reference = np.asarray(reference, np.float64)
    noise = float(np.sum((reference - np.asarray(actual, np.float64)) ** 2))
    signal = float(np.sum(reference ** 2))
    return float("inf") if noise == 0 else 10 * float(np.log10(max(signal, 1e-30) / noise))


def _check_one(name: str, got: np.ndarray, want: np.ndarray, atol: float | None, rtol: float | None
               ) -> OutputCheck:
    default_atol, default_rtol = DEFAULT_TOLERANCES.get(want.dtype.name, (0.0, 0.0))
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol
    if got.shape != want.shape:
        return OutputCheck(name, float("inf"), float("inf"), atol, rtol, False,
                           f"shape {got.shape} != reference {want.shape}")
    if got.size == 0:
        return OutputCheck(name, 0.0, 0.0, atol, rtol, True)
    g, w = got.astype(np.float64), want.astype(np.float64)
    nan_mismatch = np.isnan(g) != np.isnan(w)
    both_nan = np.isnan(g) & np.isnan(w)
    same_inf = np.isinf(w) & (g == w)
    err = np.where(both_nan | same_inf, 0.0, np.abs(g - w))
    err = np.where(np.isnan(err), np.inf, err)
    max_abs = float(err.max())
    big = np.abs(w) > max(atol, np.finfo(np.float64).tiny)
    max_rel = float((err[big] / np.abs(w[big])).max()) if big.any() else 0.0
    within = err <= atol + rtol * np.abs(np.where(np.isfinite(w), w, 0.0))
    passed = bool(within.all() and not nan_mismatch.any())
    problem = "" if passed else (f"{int((~within).sum())} of {err.size} elements beyond atol={atol:g}, "
                                 f"rtol={rtol:g}")
    return OutputCheck(name, max_abs, max_rel, atol, rtol, passed, problem)
