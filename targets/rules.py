"""Applying DLight schedule rules kernel by kernel, recording which rule scheduled each one.

Every target with rule-based default schedules (CPU and CUDA) goes through this loop, so that the manifest
can say, per kernel, what gave it its schedule.
"""

from __future__ import annotations

from typing import Sequence

import tvm
from tvm import s_tir, tirx
from tvm.s_tir import dlight
from tvm.target import Target


def first_rule(func: tirx.PrimFunc, target: Target, rules: Sequence[dlight.ScheduleRule]
               ) -> tuple[dlight.ScheduleRule, s_tir.Schedule] | None:
    """The first rule that schedules `func`, with its schedule (call inside `with target`).

    A rule that raises a schedule error on some unusual kernel is skipped for that kernel, never fatal."""
    for rule in rules:
        try:
            sch = rule.apply(func, target, False)
        # s_tir.ScheduleError and TVM errors from the primitives; DLight's analyses assert their
        # assumptions (the GEMV rule on a kernel with no spatial loop left after normalising)
        except (RuntimeError, AssertionError):
            sch = None
        if isinstance(sch, list):  # some rules return a one-schedule space
            sch = sch[0] if sch else None
        if isinstance(sch, s_tir.Schedule):
            return rule, sch
    return None


def apply_rules(mod: tvm.IRModule, target: Target, rules: Sequence[dlight.ScheduleRule]
                ) -> tuple[tvm.IRModule, dict[str, str | None]]:
    """Schedule every unscheduled kernel with the first rule that applies (`first_rule`).

    Returns the module and, per kernel, the rule that scheduled it (None: left as it was).
    """
    applied: dict[str, str | None] = {}
    updates = {}
    with target:
        for gvar, func in mod.functions_items():
            if not isinstance(func, tirx.PrimFunc) or (func.attrs and func.attrs.get("tirx.is_scheduled")):
                continue
            found = first_rule(func, target, rules)
            applied[gvar.name_hint] = type(found[0]).__name__ if found else None
            if found:
                updates[gvar] = found[1].mod["main"].with_attr("tirx.is_scheduled", True)
    mod = mod.clone()  # callers keep their module (the tuner schedules tasks' modules for baselines)
    for gvar, func in updates.items():
        mod[gvar] = func
    return mod, applied
