"""A kernel's design space measured whole when it is small.

edgetune's rule spaces (`Target.tuning_space`) vary a few tile sizes: a handful of schedules per kernel.
MetaSchedule's evolutionary search is made for spaces of millions: on a space of a few schedules it keeps
drawing duplicates, and each round that found nothing new took about a minute here (populations of 128, three
genetic rounds, the XGBoost features of each) before the kernel's next turn. A space of at most a batch or so
is measured whole instead, as AutoTVM's grid search did; larger ones go to the search.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable

import tvm
from tvm import s_tir
from tvm.s_tir import meta_schedule as ms

Sample = Callable[[s_tir.Schedule], s_tir.Schedule]


def _decisions(trace: s_tir.Trace) -> tuple:
    return tuple(tuple(int(v) for v in decision) for decision in trace.decisions.values())


def space_schedules(kernel: tvm.IRModule, sample: Sample, limit: int) -> list[s_tir.Schedule] | None:
    """Every schedule of the space `sample` makes of `kernel`, the default decisions first; None where it holds
    more than `limit` or samples anything but two-level perfect tiles (whose options are known from the
    default decision: the divisors of the loop's extent up to the instruction's largest inner factor)."""
    trace = sample(s_tir.Schedule(kernel)).trace
    choices = []
    for inst, decision in trace.decisions.items():
        if inst.kind.name != "SamplePerfectTile" or len(decision) != 2:
            return None
        extent, most = math.prod(int(v) for v in decision), int(inst.attrs[1])
        most = extent if most <= 0 else min(most, extent)
        default = [int(v) for v in decision]
        others = [[extent // d, d] for d in range(1, most + 1) if extent % d == 0 and [extent // d, d] != default]
        choices.append((inst, [default, *others]))
    if math.prod(len(options) for _, options in choices) > limit:
        return None
    schedules = []
    for combination in itertools.product(*(options for _, options in choices)):
        chosen = trace
        for (inst, _), decision in zip(choices, combination):
            chosen = chosen.with_decision(inst, decision, remove_postproc=True)
        sch = s_tir.Schedule(kernel)
        chosen.apply_to_schedule(sch, remove_postproc=True)
        schedules.append(sch)
    return schedules


def unmeasured(schedules: list[s_tir.Schedule], records: list[ms.database.TuningRecord]) -> list[s_tir.Schedule]:
    """The schedules no record holds yet (a resumed run measures only the rest)."""
    measured = {_decisions(record.trace) for record in records}
    return [sch for sch in schedules if _decisions(sch.trace) not in measured]
