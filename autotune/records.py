"""Which tuning records a compile uses, and applying them: the module's kernels (tasks), each kernel's winning
record, and the module with those records in place of the default schedules.

A record wins when it beat the kernel's default schedule by `MIN_GAIN` where both were measured alone, and was
not rejected where it was timed inside a model (`verify.py`). Only the database decides, so the same database
always yields the same kernels, and compiling from it measures nothing.
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.s_tir import analysis as s_tir_analysis
from tvm.s_tir import meta_schedule as ms

from .database import TuningDatabase

# A record replaces a kernel's default schedule only when measured this much faster. The best of hundreds of
# noisy measurements is biased low against the one measurement of the default (the winner's curse), and a
# kernel measured alone runs with its weights in cache: ResNet-50 tuned for 30 minutes took records for 18 of
# its 29 kernels that each beat the default alone, and ran 7% slower than untuned (20.29 vs 18.93 ms).
MIN_GAIN = 0.05
# How many of a kernel's fastest records may stand in for those rejected inside a model.
RECORDS_CONSIDERED = 8


def extract_tasks(mod: tvm.IRModule, target: tvm.target.Target) -> list[ms.ExtractedTask]:
    """The tunable kernels of `mod` (after the pass pipeline), most floating-point work first, so that a small
    budget goes where the time is."""
    tasks = [t for t in ms.relax_integration.extract_tasks(mod, target)
             if not t.mod.attrs or not t.mod.attrs.get("tirx.is_scheduled", False)]
    return sorted(tasks, key=lambda t: -int(t.weight) * _flops(t.dispatched[0]))


def _flops(mod: tvm.IRModule) -> float:
    try:
        return float(s_tir_analysis.estimate_tir_flops(mod))
    except RuntimeError:
        return 1.0


def winning_record(kernel: tvm.IRModule, db: TuningDatabase) -> tuple[ms.database.TuningRecord, float] | None:
    """The kernel's fastest record not rejected inside a model, with its seconds alone, if it beats the default
    schedule by `MIN_GAIN` (or no default was measured)."""
    baseline = db.baseline(kernel)
    for record, seconds in db.fastest(kernel, RECORDS_CONSIDERED):
        if baseline is not None and seconds > (1 - MIN_GAIN) * baseline.seconds:
            return None
        verdict = db.verdict(kernel, record)
        if verdict is None or verdict.accepted:
            return record, seconds
    return None


def current_seconds(kernel: tvm.IRModule, db: TuningDatabase) -> float | None:
    """Seconds alone of the schedule a compile would use for `kernel` now: the winning record or the default."""
    winner, baseline = winning_record(kernel, db), db.baseline(kernel)
    return winner[1] if winner else (baseline.seconds if baseline else None)


def apply_best_records(mod: tvm.IRModule, target: tvm.target.Target, db: TuningDatabase,
                       tasks: list[ms.ExtractedTask] | None = None) -> tuple[tvm.IRModule, list[str]]:
    """Replace each kernel that has a winning record; returns the module and their names. `tasks`: the
    module's `extract_tasks`, where the caller has them already.

    Only the winning records go into the in-memory database that MetaSchedule applies, so the choice is
    deterministic: the same database always yields the same kernels, and nothing is measured."""
    winners = ms.database.MemoryDatabase()
    for task in tasks if tasks is not None else extract_tasks(mod, target):
        winner = winning_record(task.dispatched[0], db)
        if winner is not None:
            record = winner[0]
            workload = winners.commit_workload(task.dispatched[0])
            winners.commit_tuning_record(ms.database.TuningRecord(record.trace, workload, record.run_secs,
                                                                  target, record.args_info))
    before = {gvar.name_hint: func for gvar, func in mod.functions_items()}
    with target, winners, tvm.transform.PassContext(opt_level=3):
        applied = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
    changed = []
    for gvar, func in applied.functions_items():
        if isinstance(func, tvm.tirx.PrimFunc) and not func.same_as(before.get(gvar.name_hint)):
            applied[gvar] = func.with_attr("tirx.is_scheduled", True)
            changed.append(gvar.name_hint)
    return applied, sorted(changed)
