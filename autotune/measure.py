"""Builders and runners for measuring candidates, sized for small machines.

MetaSchedule's LocalBuilder starts fresh worker processes for every batch, and its default build function
imports `tvm.s_tir.tensor_intrin` in each of them (18-25 s here, TVMScript parsing every intrinsic), so every
batch paid that before building anything. edgetune's build function is the same lowering without that import:
CPU float candidates use no tensor intrinsics.
"""

from __future__ import annotations

import tvm
from tvm.s_tir import meta_schedule as ms


def build_candidate(mod: tvm.IRModule, target: tvm.target.Target, _params) -> tvm.runtime.Module:
    """MetaSchedule's default build, minus the tensor-intrinsic registry import."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def local_builder(timeout_s: float) -> ms.Builder:
    return ms.builder.LocalBuilder(max_workers=1, timeout_sec=timeout_s, f_build=build_candidate)


def local_runner(timeout_s: float) -> ms.Runner:
    """Runs each candidate 3 x 3 times (at least 50 ms per repeat) in a worker process, one at a time."""
    config = ms.runner.EvaluatorConfig(number=3, repeat=3, min_repeat_ms=50, enable_cpu_cache_flush=False)
    return ms.runner.LocalRunner(timeout_sec=timeout_s, evaluator_config=config)
