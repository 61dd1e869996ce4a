"""The named, ordered pass pipeline for each optimisation level.

Each stage is a `tvm.transform` pass under a stable name; the pipeline runs them one by one so that the
manifest can record exactly which ran and how long each took. Later passes (fusion, layout, quantization)
join by adding a stage here, not by editing the callers.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import tvm
from tvm import relax

from ..errors import UserError
from .activations import ElementwiseActivations, FullRankConstants
from .attention import FuseAttention
from .transposes import CollapseDataMovement
from .fold_numpy import NumpyFoldConstant
from .fold_scale import FoldScaleIntoWeights
from .layout import BlockedLayout
from .lrn import FuseLocalResponseNorm
from .pad_channels import PadOutputChannels
from .prologue import MergeConvPrologues
from .softmax import FuseDenseSoftmax
from .legalize import legalize_map
from .quantize import QuantPlan, RealizeQuantization

OPT_LEVELS = (0, 1, 2, 3)
# The float module is calibrated after this stage; `RealizeQuantization` follows it.
CALIBRATE_AFTER = "ElementwiseActivations"
DEFAULT_OPT_LEVEL = 2


@dataclass
class PassConfig:
    opt_level: int = DEFAULT_OPT_LEVEL
    # Activation channel block the target's conv schedules want (NCHW[x]c); 0 keeps plain NCHW.
    channel_block: int = 0
    # False: TVM's own passes only (for measuring what edgetune's fusion passes earn).
    edgetune_passes: bool = True
    # A calibrated int8 plan (`passes.quantize.quantize_plan`); None keeps the model in float.
    quant_plan: QuantPlan | None = None
    # "fp16": conv2d/matmul and their neighbours in float16, accumulating in float32 (inputs, outputs stay fp32).
    precision: str = "fp32"
    # 3x3 stride-1 float32 convs as Winograd F(2x2, 3x3) / F(4x4, 3x3) where it pays (`passes.winograd`; level
    # 2 and above, CPU targets): fewer multiplications, slightly larger rounding error.
    winograd: bool = True

    def __post_init__(self) -> None:
        if self.opt_level not in OPT_LEVELS:
            raise UserError(f"--opt-level {self.opt_level} is not one of {', '.join(map(str, OPT_LEVELS))}")


def _fold_constants() -> tvm.transform.Pass:
    """numpy for the common weight-preparation operators (fast), then TVM's FoldConstant for the rest."""
    return tvm.transform.Sequential([NumpyFoldConstant(), relax.transform.FoldConstant()], name="FoldConstant")


def _always(_config: PassConfig) -> bool:
    return True


def _own(config: PassConfig) -> bool:
    return config.edgetune_passes


def _quantized(config: PassConfig) -> bool:
    return config.quant_plan is not None


def _half(config: PassConfig) -> bool:
    return config.precision == "fp16"


def _winograd_lanes(config: PassConfig) -> int:
    """The target's vector lanes (its channel block) where 3x3 convs may go Winograd, else 0."""
    return config.channel_block if config.winograd and config.opt_level >= 2 and _blocked(config) else 0


def _seven_bit(config: PassConfig) -> bool:
    """The quantized module's uint8 activations hold 7 bits (the "uint7" scheme of x86 CPUs without VNNI)."""
    plan = config.quant_plan
    return plan is not None and bool(plan.inputs) and all(q.bits <= 7 for q in plan.inputs.values())


def _blocked(config: PassConfig) -> bool:
    """edgetune's passes on a target with a channel block: the CPUs, whose own rules schedule the blocked
    convs and what the CPU-only stages make (merged prologues, dense + softmax kernels)."""
    return config.edgetune_passes and config.channel_block > 1


@dataclass(frozen=True)
class Stage:
    name: str
    make: Callable[[PassConfig], tvm.transform.Pass]
    min_level: int  # the stage runs at this optimisation level and above
    why: str
    enabled: Callable[[PassConfig], bool] = _always


# Order matters: constants are folded before legalization so that weights built at run time by
# ConstantOfShape/Expand (as in the onnx wheel's light_* models) become real constants; scale chains are
# folded into weights before the layout changes; the layout pass's weight transforms are folded right after
# it (prepacking at compile time); fusion runs after legalization because it groups TIR functions.
STAGES: tuple[Stage, ...] = (
    Stage("DecomposeOpsForInference", lambda c: relax.transform.DecomposeOpsForInference(), 0,
          "BatchNorm and friends into inference arithmetic"),
    Stage("CanonicalizeBindings", lambda c: relax.transform.CanonicalizeBindings(), 1,
          "look through the tuples BatchNorm leaves, so that its consumers fuse with the producer"),
    Stage("FoldConstant", lambda c: _fold_constants(), 1, "evaluate weight-only subgraphs at compile time"),
    Stage("FoldScaleIntoWeights", lambda c: FoldScaleIntoWeights(), 1,
          "BatchNorm / bias / scale chains into conv and matmul weights", _own),
    Stage("ElementwiseActivations", lambda c: ElementwiseActivations(), 1,
          "Clip and LeakyReLU as max/min/multiply, which keep the producer's layout and fuse into it", _own),
    Stage("RealizeQuantization", lambda c: RealizeQuantization(c.quant_plan), 1,
          "calibrated conv2d/dense units as int8 kernels with integer requantize epilogues", _quantized),
    Stage("CollapseDataMovement", lambda c: CollapseDataMovement(), 2,
          "transpose-of-transpose and reshape-of-reshape chains as one op; identities dropped", _own),
    Stage("FuseAttention", lambda c: FuseAttention(), 2,
          "matmul-scale-softmax-matmul attention chains as one kernel that keeps scores per query row", _own),
    Stage("FuseDenseSoftmax", lambda c: FuseDenseSoftmax(), 2,
          "a classifier's last dense layer and its softmax as one kernel", _blocked),
    Stage("FullRankConstants", lambda c: FullRankConstants(), 2,
          "constant operands at full rank, so elementwise ops can follow a blocked layout", _blocked),
    Stage("PadOutputChannels", lambda c: PadOutputChannels(c.channel_block), 2,
          "a conv's output channels padded to whole blocks where the slice after is free (a classifier head)",
          _blocked),
    Stage("BlockedLayout", lambda c: BlockedLayout(c.channel_block), 2,
          "conv2d and its neighbours in NCHW[x]c, weights as OIHW[x]i[x]o", _blocked),
    Stage("FuseLocalResponseNorm", lambda c: FuseLocalResponseNorm(), 2,
          "LRN's square / channel-window pool / power chain as one kernel in its input's layout", _own),
    Stage("FoldConstant.prepack", lambda c: _fold_constants(), 2,
          "prepack weights into the blocked layout at compile time", _blocked),
    Stage("ToMixedPrecision", lambda c: relax.transform.ToMixedPrecision(out_dtype="float32"), 0,
          "float16 compute with float32 accumulation (--precision fp16)", _half),
    Stage("LegalizeOps", lambda c: relax.transform.LegalizeOps(legalize_map(_winograd_lanes(c), _seven_bit(c))), 0,
          "Relax operators to TIR functions (edgetune's lowering for blocked conv2d; Winograd for 3x3 convs at "
          "level 2 and above)"),
    Stage("AnnotateTIROpPattern", lambda c: relax.transform.AnnotateTIROpPattern(), 1, "op patterns for fusion"),
    Stage("FoldConstant.post-legalize", lambda c: relax.transform.FoldConstant(), 1,
          "fold what legalization exposed"),
    Stage("FuseOps", lambda c: relax.transform.FuseOps(), 2, "group producer + elementwise consumers"),
    Stage("MergeConvPrologues", lambda c: MergeConvPrologues(), 2,
          "injective groups feeding only a conv's input (DenseNet's BatchNorm + ReLU) join the conv's group",
          _blocked),
    Stage("FuseTIR", lambda c: relax.transform.FuseTIR(), 2, "merge each group into one kernel"),
    Stage("DeadCodeElimination", lambda c: relax.transform.DeadCodeElimination(), 1, "drop unused functions"),
)


@dataclass
class PassRecord:
    """One stage's time and what it changed: Relax operator calls (+/- per operator) and TIR kernels."""

    name: str
    seconds: float
    changes: dict[str, int] = field(default_factory=dict)
    kernels_before: int = 0
    kernels_after: int = 0

    def to_dict(self) -> dict:
        return {"name": self.name, "seconds": round(self.seconds, 4), "changes": self.changes,
                "kernels": [self.kernels_before, self.kernels_after]}

    def describe(self) -> str:
        parts = [f"{delta:+d} {op.removeprefix('relax.')}" for op, delta in
                 sorted(self.changes.items(), key=lambda item: (-abs(item[1]), item[0]))]
        if self.kernels_before != self.kernels_after:
            parts.insert(0, f"kernels {self.kernels_before} -> {self.kernels_after}")
        return ", ".join(parts) or "no change"


def module_census(mod: tvm.IRModule) -> tuple[Counter, int]:
    """Relax operator calls per operator, and the number of TIR kernels, in `mod`."""
    calls: Counter = Counter()
    kernels = 0

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            calls[expr.op.name] += 1

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func.body, visit)
        else:
            kernels += 1
    return calls, kernels


@dataclass
class PassResult:
    mod: tvm.IRModule
    records: list[PassRecord] = field(default_factory=list)


def pipeline_stages(config: PassConfig) -> list[Stage]:
    return [stage for stage in STAGES if config.opt_level >= stage.min_level and stage.enabled(config)]


def run_passes(mod: tvm.IRModule, config: PassConfig | None = None, stop_after: str | None = None,
               start_after: str | None = None) -> PassResult:
    """Run the pipeline for `config.opt_level` and record each stage's name and time.

    `stop_after` ends the run after the named stage (to look at an intermediate module, or to calibrate
    it); `start_after` resumes a module that such a run returned."""
    config = config or PassConfig()
    stages = pipeline_stages(config)
    names = [s.name for s in STAGES]
    for name in (stop_after, start_after):
        if name is not None and name not in names:
            raise ValueError(f"no pass stage named {name!r}")
    if start_after is not None:
        stages = [s for s in stages if names.index(s.name) > names.index(start_after)]
    result = PassResult(mod)
    calls, kernels = module_census(mod)
    with tvm.transform.PassContext(opt_level=3):
        for stage in stages:
            start = time.perf_counter()
            result.mod = stage.make(config)(result.mod)
            seconds = time.perf_counter() - start
            after, kernels_after = module_census(result.mod)
            changes = {op: after[op] - calls[op] for op in after.keys() | calls.keys() if after[op] != calls[op]}
            result.records.append(PassRecord(stage.name, seconds, changes, kernels, kernels_after))
            calls, kernels = after, kernels_after
            if stage.name == stop_after:
                break
    return result
