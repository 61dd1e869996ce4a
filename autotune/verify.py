"""Records checked inside the model before they replace its default schedules.

A kernel measured alone runs back to back, its code, branch history and page translations warm; inside a model
it runs once per inference between the other kernels. Records that beat their defaults alone can lose inside
the model: two SqueezeNet records 10% and 27% faster alone ran 40% and 70% slower in it, and ResNet-50 with its
14 winning records ran 5% slower than with none. So after the search the model is built with its winning
records and without, the two run in turns with every kernel call timed, and a record not faster inside the
model than the default schedule it replaces is rejected (the verdict is kept in the database, so later
compiles skip it without measuring); the kernel's next fastest record, if it still wins alone, is checked in
the next round.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import tvm

from .database import TuningDatabase, Verdict, record_key
from .records import apply_best_records, extract_tasks, winning_record

# Builds the modules and runs them in turns: per module, each kernel's seconds per inference by function name.
KernelTimes = Callable[[Sequence[tvm.IRModule]], list[dict[str, float]]]

ROUNDS = 3


def verify_records(mod: tvm.IRModule, target: tvm.target.Target, db: TuningDatabase, kernel_times: KernelTimes,
                   say: Callable[[str], None], deadline: float | None = None) -> list[Verdict]:
    """Judge the winning records of `mod`'s kernels not judged yet, for up to `ROUNDS` rounds (later rounds
    only before `deadline`); returns the verdicts given."""
    given: list[Verdict] = []
    tasks = extract_tasks(mod, target)
    for round_ in range(ROUNDS):
        pending = {}
        for task in tasks:
            winner = winning_record(task.dispatched[0], db)
            if winner is not None and db.verdict(task.dispatched[0], winner[0]) is None:
                pending[task.task_name] = (task.dispatched[0], winner[0])
        if not pending or (round_ and deadline is not None and time.monotonic() >= deadline):
            break
        say(f"checking {len(pending)} record(s) inside the model against the default schedules")
        applied, _ = apply_best_records(mod, target, db, tasks)
        default, tuned = kernel_times([mod, applied])
        for name, (kernel, record) in pending.items():
            if name not in default or name not in tuned:
                say(f"  {name}: not found in the model's kernel calls; its record stays unchecked")
                continue
            verdict = Verdict(name, record_key(record), tuned[name], default[name])
            db.save_verdict(kernel, verdict)
            given.append(verdict)
            say(f"  {name}: record {verdict.record_seconds * 1e3:.4f} ms vs default "
                f"{verdict.default_seconds * 1e3:.4f} ms in the model: "
                f"{'kept' if verdict.accepted else 'rejected'}")
    return given
