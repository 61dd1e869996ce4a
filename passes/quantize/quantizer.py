"""Post-training static quantization: calibrate, plan, check accuracy, keep the sensitive layers in float.

The float model is instrumented to also return every unit's input and output, built by the caller (the
normal pipeline and the host CPU), and run over the calibration samples to observe each tensor's range. The
plan quantizes each unit's input per tensor; the quantized model (instrumented the same way) then runs on a
held-out part of the samples, giving each layer's output SQNR against the float model and the model's
accuracy drop. With `max_accuracy_drop`, the layer that loses the most signal of its own (its input SQNR
minus its output SQNR) goes back to float, and the check repeats until the drop is within the limit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Sequence

import numpy as np
import tvm

from ...errors import UserError
from ...validate import sqnr_db
from .calibration import METHODS, RangeObserver
from .instrument import with_extra_outputs
from .params import ACTIVATION_SCHEMES, activation_quant
from .realize import Accelerator, QuantPlan, RealizeQuantization
from .units import Unit, find_units

Runner = Callable[[Sequence[np.ndarray]], list[np.ndarray]]
BuildRunner = Callable[[tvm.IRModule], Runner]


@dataclass
class QuantizeConfig:
    method: str = "percentile"
    scheme: str = "uint8"  # activations: "uint8" (asymmetric, x86) or "int8" (symmetric: ARM sdot, VTA)
    power_of_two: bool = False  # power-of-two scales: requantization by shifts only (VTA)
    percentile: float = 99.99
    max_accuracy_drop: float | None = None  # in points of top-1 (or of top-1 agreement with the float model)
    holdout_fraction: float = 0.2
    channel_block: int = 0  # the target's blocked layout (`PassConfig.channel_block`)
    per_channel_weights: bool = True
    quantize_outputs: bool = False  # calibrate every unit's output too (all outputs integer: accelerators)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UserError(f"--calibration-method {self.method!r} is not one of {', '.join(METHODS)}")
        if self.scheme not in ACTIVATION_SCHEMES:
            raise UserError(f"activation scheme {self.scheme!r} is not one of {', '.join(ACTIVATION_SCHEMES)}")
        if self.max_accuracy_drop is not None and not 0 <= self.max_accuracy_drop <= 100:
            raise UserError(f"--max-accuracy-drop {self.max_accuracy_drop} is not between 0 and 100 points")


@dataclass
class LayerReport:
    name: str
    weight_shape: list[int]
    quantized: bool
    input_range: list[float]
    input_scale: float
    input_zero_point: int
    sqnr_db: float | None  # of the layer's output in the quantized model against the float model


@dataclass
class QuantReport:
    method: str
    scheme: str
    calibration_samples: int
    holdout_samples: int
    accuracy_measure: str
    float_accuracy: float | None
    quantized_accuracy: float | None
    accuracy_drop: float | None  # points
    output_sqnr_db: float | None
    layers: list[LayerReport] = field(default_factory=list)
    accelerator_check: dict | None = None  # offloaded layers against the same integer graph on the host CPU

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "QuantReport":
        return cls(**{**data, "layers": [LayerReport(**layer) for layer in data["layers"]]})

    def table(self) -> str:
        head = (f"int8 ({self.method}, {self.scheme} activations): {sum(l.quantized for l in self.layers)} of "
                f"{len(self.layers)} layers quantized; output SQNR {_db(self.output_sqnr_db)}")
        if self.accuracy_drop is not None:
            head += (f"; {self.accuracy_measure} on {self.holdout_samples} held-out samples: "
                     f"{_pct(self.float_accuracy)} float -> {_pct(self.quantized_accuracy)} int8 "
                     f"(drop {self.accuracy_drop:.2f} points)")
        lines = [head]
        if self.accelerator_check is not None:
            lines.append(f"  accelerator against {self.accelerator_check['reference']}: "
                         + ("bit-exact" if self.accelerator_check["exact"] else
                            f"max abs difference {self.accelerator_check['max_abs_diff']:g}"))
        for layer in self.layers:
            lines.append(f"  {layer.name:<12} {'x'.join(map(str, layer.weight_shape)):<14} "
                         f"{'int8 ' if layer.quantized else 'float'} SQNR {_db(layer.sqnr_db)}")
        return "\n".join(lines)


def _db(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} dB"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _split(samples: Sequence, labels: np.ndarray | None, fraction: float):
    if len(samples) < 5:  # too few to hold any out: check on the calibration samples themselves
        return list(samples), list(samples), labels
    n_hold = max(1, int(round(len(samples) * fraction)))
    held_labels = labels[-n_hold:] if labels is not None else None
    return list(samples[:-n_hold]), list(samples[-n_hold:]), held_labels


class _Observed:
    """The instrumented model's extra outputs: each distinct unit input, then each unit output."""

    def __init__(self, units: list[Unit]):
        self.units = units
        self.inputs: list = []
        self.input_slot: dict[int, int] = {}
        for u in units:
            for slot, tensor in enumerate(self.inputs):
                if tensor.same_as(u.input):
                    break
            else:
                slot = len(self.inputs)
                self.inputs.append(u.input)
            self.input_slot[u.index] = slot

    def tensors(self) -> list:
        return [*self.inputs, *(u.output for u in self.units)]

    def split(self, outputs: list[np.ndarray], n_model: int):
        model, rest = outputs[:n_model], outputs[n_model:]
        return model, rest[:len(self.inputs)], rest[len(self.inputs):]


def _flatten(result) -> list[np.ndarray]:
    return [np.asarray(r) for r in result]


def quantize_plan(mod: tvm.IRModule, samples: Sequence[Sequence[np.ndarray]], config: QuantizeConfig,
                  build_runner: BuildRunner, n_outputs: int, labels: np.ndarray | None = None,
                  progress: Callable[[str], None] | None = None,
                  accelerator: Accelerator | None = None) -> tuple[QuantPlan, QuantReport]:
    """Calibrate `mod` (after the float passes) on `samples` and decide what to quantize.

    `build_runner(module)` compiles a module at this point of the pipeline and returns a function running
    one sample; `n_outputs` is the model's output count. The accuracy check runs the integer graph on the
    CPU; the returned plan hands what it can to `accelerator`."""
    say = progress or (lambda _m: None)
    units = find_units(mod["main"], config.channel_block)
    calib, holdout, held_labels = _split(samples, labels, config.holdout_fraction)
    report = QuantReport(config.method, config.scheme, len(calib), len(holdout),
                         "top-1 accuracy" if held_labels is not None else "top-1 agreement with float",
                         None, None, None, None)
    if not units:
        return QuantPlan({}, config.power_of_two, config.channel_block), report
    observed = _Observed(units)
    instrumented = with_extra_outputs(mod, observed.tensors())
    say("calibrate: building the instrumented float model...")
    run_float = build_runner(instrumented)
    observers = [RangeObserver() for _ in observed.inputs]
    calibration_outputs = []
    for i, sample in enumerate(calib):
        run = observed.split(_flatten(run_float(sample)), n_outputs)
        for observer, value in zip(observers, run[1]):
            observer.update(value)
        if config.quantize_outputs:
            calibration_outputs.append(run)
        _bar(say, "calibrate", i + 1, len(calib))
    float_runs = [observed.split(_flatten(run_float(s)), n_outputs) for s in holdout]
    ranges = [observer.range(config.method, config.percentile) for observer in observers]
    plan = QuantPlan({u.index: u.input_quant or activation_quant(*ranges[observed.input_slot[u.index]],
                                                                 config.scheme, config.power_of_two)
                      for u in units}, config.power_of_two, config.channel_block,
                     per_channel_weights=config.per_channel_weights, accelerator=accelerator)
    if config.quantize_outputs:
        output_observers = [RangeObserver() for _ in units]
        for _, _, outputs in float_runs + calibration_outputs:
            for observer, value in zip(output_observers, outputs):
                observer.update(value)
        plan.outputs = {u.index: activation_quant(*observer.range(config.method, config.percentile), config.scheme,
                                                  config.power_of_two)
                        for u, observer in zip(units, output_observers)}
    while True:
        say(f"calibrate: checking the int8 model ({len(units) - len(plan.float_units)} of {len(units)} layers)...")
        run_quant = build_runner(RealizeQuantization(replace(plan, accelerator=None))(instrumented))
        quant_runs = [observed.split(_flatten(run_quant(s)), n_outputs) for s in holdout]
        layer_sqnr, input_sqnr = _layer_sqnr(float_runs, quant_runs, observed)
        float_acc, quant_acc, drop = _accuracy([r[0][0] for r in float_runs], [r[0][0] for r in quant_runs],
                                               held_labels)
        if (config.max_accuracy_drop is None or drop <= config.max_accuracy_drop
                or len(plan.float_units) == len(units)):
            break
        candidates = [u for u in units if u.index not in plan.float_units]
        worst = max(candidates, key=lambda u: input_sqnr[u.index] - layer_sqnr[u.index])
        say(f"calibrate: accuracy drop {drop:.2f} > {config.max_accuracy_drop} points; {worst.name} stays float")
        plan.float_units.add(worst.index)
    report.float_accuracy, report.quantized_accuracy, report.accuracy_drop = float_acc, quant_acc, drop
    report.output_sqnr_db = _finite(float(np.mean([sqnr_db(f[0][0], q[0][0])
                                                  for f, q in zip(float_runs, quant_runs)])))
    for u in units:
        quant = plan.inputs[u.index]
        report.layers.append(LayerReport(u.name, list(u.weight.shape), u.index not in plan.float_units,
                                         [round(v, 6) for v in ranges[observed.input_slot[u.index]]],
                                         quant.scale, quant.zero_point, _finite(layer_sqnr[u.index])))
    return plan, report


def plan_from_model(mod: tvm.IRModule, channel_block: int = 0) -> tuple[QuantPlan, QuantReport]:
    """The plan a pre-quantized (QDQ or QOperator) model states: its units whose input carries a
    quantize/dequantize pair, with the model's own scales. No calibration, no accuracy check."""
    units = [u for u in find_units(mod["main"], channel_block) if u.input_quant is not None]
    report = QuantReport("from the model", units[0].input_quant.dtype if units else "uint8", 0, 0, "none",
                         None, None, None, None)
    for u in units:
        report.layers.append(LayerReport(u.name, list(u.weight.shape), True, [], u.input_quant.scale,
                                         u.input_quant.zero_point, None))
    return QuantPlan({u.index: u.input_quant for u in units}, channel_block=channel_block), report


def _finite(value: float) -> float | None:
    return round(value, 2) if math.isfinite(value) else None


def _layer_sqnr(float_runs, quant_runs, observed: _Observed) -> tuple[dict[int, float], dict[int, float]]:
    outputs, inputs = {}, {}
    for u in observed.units:
        slot = observed.input_slot[u.index]
        outputs[u.index] = _mean_sqnr([f[2][u.index] for f in float_runs], [q[2][u.index] for q in quant_runs])
        inputs[u.index] = _mean_sqnr([f[1][slot] for f in float_runs], [q[1][slot] for q in quant_runs])
    return outputs, inputs


def _mean_sqnr(reference: list[np.ndarray], actual: list[np.ndarray]) -> float:
    """SQNR over all samples together (inf for an exact match, e.g. a float model input)."""
    return sqnr_db(np.concatenate([r.ravel() for r in reference]), np.concatenate([a.ravel() for a in actual]))


def _accuracy(float_out: list[np.ndarray], quant_out: list[np.ndarray], labels: np.ndarray | None):
    """(float accuracy, int8 accuracy, drop in points): against labels, or int8 top-1 against float top-1."""
    f_top = np.concatenate([o.reshape(o.shape[0], -1).argmax(axis=1) for o in float_out])
    q_top = np.concatenate([o.reshape(o.shape[0], -1).argmax(axis=1) for o in quant_out])
    if labels is not None and len(labels) == len(f_top):
        f_acc, q_acc = float(np.mean(f_top == labels)), float(np.mean(q_top == labels))
        return f_acc, q_acc, 100.0 * (f_acc - q_acc)
    agreement = float(np.mean(f_top == q_top))
    return 1.0, agreement, 100.0 * (1.0 - agreement)


def _bar(say: Callable[[str], None], what: str, done: int, total: int, width: int = 24) -> None:
    filled = int(width * done / total)
    say(f"{what} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} samples")
