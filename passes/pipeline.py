"""The named, ordered pass pipeline for each optimisation level.

Each stage is a `tvm.transform` pass under a stable name; the pipeline runs them one by one so that the
manifest can record exactly which ran and how long each took. Later passes (fusion, layout, quantization)
join by adding a stage here, not by editing the callers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import tvm
from tvm import relax

from ..errors import UserError

OPT_LEVELS = (0, 1, 2, 3)
DEFAULT_OPT_LEVEL = 2


@dataclass(frozen=True)
class Stage:
    name: str
    make: Callable[[], tvm.transform.Pass]
    min_level: int  # the stage runs at this optimisation level and above
    why: str


# Order matters: constants are folded before legalization so that weights built at run time by
# ConstantOfShape/Expand (as in the onnx wheel's light_* models) become real constants, and fusion runs
# after legalization because it groups TIR functions.
STAGES: tuple[Stage, ...] = (
    Stage("DecomposeOpsForInference", relax.transform.DecomposeOpsForInference, 0,
          "BatchNorm and friends into inference arithmetic"),
    Stage("FoldConstant", relax.transform.FoldConstant, 1, "evaluate weight-only subgraphs at compile time"),
    Stage("LegalizeOps", relax.transform.LegalizeOps, 0, "Relax operators to TIR functions"),
    Stage("AnnotateTIROpPattern", relax.transform.AnnotateTIROpPattern, 1, "op patterns for fusion"),
    Stage("FoldConstant.post-legalize", relax.transform.FoldConstant, 1, "fold what legalization exposed"),
    Stage("FuseOps", relax.transform.FuseOps, 2, "group producer + elementwise consumers"),
    Stage("FuseTIR", relax.transform.FuseTIR, 2, "merge each group into one kernel"),
    Stage("DeadCodeElimination", relax.transform.DeadCodeElimination, 1, "drop unused functions"),
)


@dataclass
class PassConfig:
    opt_level: int = DEFAULT_OPT_LEVEL

    def __post_init__(self) -> None:
        if self.opt_level not in OPT_LEVELS:
            raise UserError(f"--opt-level {self.opt_level} is not one of {', '.join(map(str, OPT_LEVELS))}")


@dataclass
class PassRecord:
    name: str
    seconds: float

    def to_dict(self) -> dict:
        return {"name": self.name, "seconds": round(self.seconds, 4)}


@dataclass
class PassResult:
    mod: tvm.IRModule
    records: list[PassRecord] = field(default_factory=list)


def pipeline_stages(config: PassConfig) -> list[Stage]:
    return [stage for stage in STAGES if config.opt_level >= stage.min_level]


def run_passes(mod: tvm.IRModule, config: PassConfig | None = None) -> PassResult:
    """Run the pipeline for `config.opt_level` and record each stage's name and time."""
    config = config or PassConfig()
    result = PassResult(mod)
    with tvm.transform.PassContext(opt_level=3):
        for stage in pipeline_stages(config):
            start = time.perf_counter()
            result.mod = stage.make()(result.mod)
            result.records.append(PassRecord(stage.name, time.perf_counter() - start))
    return result
