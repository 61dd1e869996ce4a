"""MetaSchedule tuning of a Relax module after edgetune's passes.

Tasks are the fused TIR kernels of the module as the pass pipeline leaves it, so tuning and compiling see the
same kernels and records always match. A kernel's design space is the target's own (the default rule with
its tiles sampled; small ones are measured whole, `small_space.py`) where it has one, else MetaSchedule's
generic space, searched with the XGBoost cost model. Each task's default schedule (the CPU rules) is measured
once with the same builder and runner as the candidates; a record is used only where it beats that baseline
(`records.py`) and, for a model that runs on this machine, where it is also faster inside the model (`verify.py`); every
other kernel keeps its default schedule. The trial budget counts the records already in the database for
these tasks, so an interrupted run continues toward the same budget and a run whose budget is already spent
measures nothing."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import tvm
from tvm.ir.utils import derived_object
from tvm.s_tir import meta_schedule as ms

from ..errors import UserError
from .database import Baseline, TuningDatabase, Verdict, mean_seconds, workload_key
from .measure import local_builder, local_runner, measure_modules
from .records import current_seconds, extract_tasks, winning_record
from .small_space import Sample, space_schedules, unmeasured
from .verify import KernelTimes, verify_records


# How candidates are chosen: MetaSchedule's evolutionary search ranked by its XGBoost cost model (the
# default); the same search ranked at random (what the cost model adds); plain random sampling of the design
# space (MetaSchedule's ReplayTrace: random search as in AutoTVM's RandomTuner, the baseline of the papers).
SEARCHES = {"xgb": "evolutionary search, XGBoost cost model", "evolve-random": "evolutionary search, random ranking",
            "random": "random sampling of the design space"}
# Which design space: the target's rule spaces where a kernel has one (`Target.tuning_space`), else
# MetaSchedule's generic space; or the generic space for every kernel (to compare the searches where they
# have room to differ: the rule spaces are small enough to be measured whole).
SPACES = {"rules": "the default rules' tiles sampled, else MetaSchedule's generic space",
          "generic": "MetaSchedule's generic space"}


@dataclass
class TuneConfig:
    """What to spend on tuning: a number of measured candidates and/or wall time (the first reached ends it)."""

    trials: int = 0
    time_budget_s: float | None = None
    trials_per_round: int | None = None  # candidates per measured batch; None: sized to the budget and tasks
    seed: int = 0
    builder_timeout_s: float = 120.0
    runner_timeout_s: float = 30.0
    search: str = "xgb"  # one of SEARCHES
    space: str = "rules"  # one of SPACES

    def __post_init__(self) -> None:
        if self.search not in SEARCHES:
            raise UserError(f"--search {self.search!r} is not one of {', '.join(SEARCHES)}")
        if self.space not in SPACES:
            raise UserError(f"--space {self.space!r} is not one of {', '.join(SPACES)}")
        if self.trials < 0:
            raise UserError(f"--trials {self.trials} must be positive")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise UserError("--time-budget must be positive, e.g. 30m or 90s")
        if self.trials == 0 and self.time_budget_s is None:
            raise UserError("tuning needs a budget: --trials N or --time-budget 30m")


@dataclass
class TaskSummary:
    name: str
    weight: int
    trials: int
    default_ms: float | None
    best_ms: float | None
    uses_record: bool
    rejected_in_model: int  # records that won alone and lost inside the model (`verify.py`)

    @property
    def speedup(self) -> float | None:
        if self.default_ms is None or self.best_ms is None or not self.uses_record:
            return 1.0 if self.default_ms is not None else None
        return self.default_ms / self.best_ms

    def to_dict(self) -> dict:
        return {"task": self.name, "weight": self.weight, "trials": self.trials,
                "default_ms": _round(self.default_ms), "best_ms": _round(self.best_ms),
                "uses_record": self.uses_record, "speedup": _round(self.speedup),
                "rejected_in_model": self.rejected_in_model}


@dataclass
class CurvePoint:
    """After a measured batch: the model's estimated latency, the sum over kernels of calls x (best record if
    it beats the default schedule, else the default schedule's time)."""

    seconds: float
    trials: int
    estimated_ms: float


@dataclass
class TuneResult:
    database: str
    measured_now: int
    tasks: list[TaskSummary] = field(default_factory=list)
    stopped_by: str = "budget"
    seconds: float = 0.0
    curve: list[CurvePoint] = field(default_factory=list)
    # the same estimate from searched candidates only (no default schedule): how fast the search itself
    # improves, which the curve above hides while the defaults are still the better schedules
    search_curve: list[CurvePoint] = field(default_factory=list)
    in_model: list[Verdict] = field(default_factory=list)  # records checked inside the model in this run

    def to_dict(self) -> dict:
        def points(curve: list[CurvePoint]) -> list:
            return [[round(p.seconds, 2), p.trials, round(p.estimated_ms, 5)] for p in curve]

        return {"database": self.database, "measured_now": self.measured_now, "stopped_by": self.stopped_by,
                "seconds": round(self.seconds, 1), "tasks": [t.to_dict() for t in self.tasks],
                "curve": points(self.curve), "search_curve": points(self.search_curve),
                "in_model": [{**vars(v), "accepted": v.accepted} for v in self.in_model]}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 5)


def parse_duration(text: str) -> float:
    """'30m', '90s', '1h', '1h30m' or plain seconds -> seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    total, number = 0.0, ""
    for char in text.strip().lower():
        if char.isdigit() or char == ".":
            number += char
        elif char in units and number:
            total, number = total + float(number) * units[char], ""
        else:
            raise UserError(f"--time-budget {text!r} is not a duration; write e.g. 30m, 90s or 1h")
    if number:
        total += float(number)
    if total <= 0:
        raise UserError(f"--time-budget {text!r} must be positive")
    return total


# A target's own design space for a one-kernel module (a function scheduling a traced schedule, with sampled
# decisions), or None for MetaSchedule's generic space.
SpaceFn = Callable[[tvm.IRModule], Sample | None]


def _space_generator(sample: Sample | None) -> ms.space_generator.SpaceGenerator | str:
    """The target's design space of the kernel where it has one (`sample`): the default schedule's rule with
    its tile sizes sampled, searched by mutating those samples (its schedules need no post-processing); else
    MetaSchedule's generic space for the target."""
    if sample is None:
        return "post-order-apply"
    return ms.space_generator.ScheduleFn(sample, sch_rules=[], postprocs=[],
                                         mutator_probs={ms.mutator.MutateTileSize(): 1.0})


def _tune_context(task: ms.ExtractedTask, seed: int, search: str, sample: Sample | None) -> ms.TuneContext:
    """A task's MetaSchedule context with a plain Python logger.

    (`extracted_tasks_to_tune_contexts` reconfigures logging with per-task log files through dictConfig and
    fails on a second run in the same process.) The search population is a quarter of MetaSchedule's default
    (512 x 4 genetic rounds), which on two cores took longer per batch than measuring it."""
    logger = logging.getLogger(f"edgetune.autotune.{task.task_name}")
    strategy = ms.search_strategy.ReplayTrace() if search == "random" else \
        ms.search_strategy.EvolutionarySearch(population_size=128, init_min_unmeasured=16, genetic_num_iters=3)
    return ms.TuneContext(mod=task.dispatched[0], target=task.target, space_generator=_space_generator(sample),
                          search_strategy=strategy, task_name=task.task_name, logger=logger, rand_state=seed,
                          num_threads="logical").clone()


class _BudgetSpent(Exception):
    pass


@derived_object
class _Progress(ms.measure_callback.PyMeasureCallback):
    """After each measured batch (of the search, or of a small space measured whole): a progress line, the
    tuning curve, and the time budget enforced."""

    def __init__(self, names: list[str], planned: int, deadline: float | None, report: Callable[[str], None],
                 weights: list[float], starting: list[float | None], started: float):
        self.names = names
        self.planned = planned
        self.deadline = deadline
        self.report = report
        self.done = 0
        self.best: dict[int, float] = {}
        self.started = started  # the tuning run's start (the curve's time axis)
        self.measuring_since = time.monotonic()  # for the time-left estimate
        self.budget_spent = False
        self.weights = weights
        self.current = starting  # per task: seconds of the schedule the model would use now
        self.curve = [CurvePoint(time.monotonic() - started, 0, self._estimate_ms(self.current))] \
            if None not in starting else []
        self.search_curve: list[CurvePoint] = []
        self.searched = list(range(len(names)))  # MetaSchedule's task ids -> these tasks' indices
        self.finished: set[int] = set()  # MetaSchedule's ids of the tasks terminated for an exhausted search

    def _estimate_ms(self, seconds: list[float | None]) -> float:
        return 1e3 * sum(w * s for w, s in zip(self.weights, seconds) if s is not None)

    def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results) -> None:
        if not measure_candidates:
            # The search found nothing left to measure in this kernel's space (an elementwise kernel's
            # handful of unroll choices): MetaSchedule would keep asking, a minute of search per round here.
            if task_id not in self.finished:
                self.finished.add(task_id)
                task_scheduler.terminate_task(task_id)
                self.report(f"tuning: {self.names[self.searched[task_id]]}: nothing left to search, "
                            "the kernel is done")
            return
        self.measured(self.searched[task_id], [result.run_secs for result in runner_results])

    def measured(self, task: int, run_secs: list) -> None:
        """A batch of `task`'s candidates measured (run_secs None or empty: the candidate failed)."""
        self.done += len(run_secs)
        for secs in run_secs:
            if secs:
                self.best[task] = min(self.best.get(task, math.inf), mean_seconds(secs))
        if task in self.best:
            current = self.current[task]
            self.current[task] = self.best[task] if current is None else min(current, self.best[task])
        elapsed = time.monotonic() - self.started
        if None not in self.current:
            self.curve.append(CurvePoint(elapsed, self.done, self._estimate_ms(self.current)))
        if len(self.best) == len(self.weights):
            searched = [self.best[t] for t in range(len(self.weights))]
            self.search_curve.append(CurvePoint(elapsed, self.done, self._estimate_ms(searched)))
        left = []
        if self.planned:
            left.append(f"{self.done}/{self.planned} trials")
        if self.deadline is not None:
            left.append(f"{max(0.0, self.deadline - time.monotonic()):.0f} s left")
        elif self.done:
            per_trial = (time.monotonic() - self.measuring_since) / self.done
            left.append(f"~{per_trial * max(0, self.planned - self.done):.0f} s left")
        best = self.best.get(task)
        width = 24
        filled = int(width * min(1.0, self.done / self.planned)) if self.planned else 0
        self.report(f"tuning [{'#' * filled}{'.' * (width - filled)}] {', '.join(left)}; "
                    f"{self.names[task]}: best {best * 1e3:.4f} ms" if best is not None else
                    f"tuning {', '.join(left)}; {self.names[task]}: no valid candidate yet")
        if self.deadline is not None and time.monotonic() >= self.deadline:
            self.budget_spent = True
            raise _BudgetSpent()


@derived_object
class _BudgetedBuilder(ms.builder.PyBuilder):
    """The builder, stopping the run once the time budget is spent, and reporting MetaSchedule's first round.

    MetaSchedule's task scheduler first sends one batch of every kernel to the builder and runner and joins
    (measures, records, calls back) none of them until all are sent: on ResNet-50's 31 kernels that round took
    7 minutes here, with no progress line and no point at which the measure callback could stop a budget."""

    def __init__(self, inner: ms.Builder, tasks: int, progress: "_Progress", report: Callable[[str], None]):
        self.inner = inner
        self.tasks = tasks
        self.progress = progress
        self.report = report
        self.batches = 0

    def build(self, build_inputs: list[ms.builder.BuilderInput]) -> list[ms.builder.BuilderResult]:
        if self.progress.deadline is not None and time.monotonic() >= self.progress.deadline:
            self.progress.budget_spent = True
            raise _BudgetSpent()
        self.batches += 1
        if self.batches <= self.tasks:
            self.report(f"first round: building {len(build_inputs)} candidates of kernel {self.batches}/{self.tasks} "
                        "(measured after the round)")
        return self.inner.build(build_inputs)


@derived_object
class _MeasuredAlone(ms.runner.PyRunner):
    """This machine's runner, finishing each batch before MetaSchedule goes on.

    MetaSchedule runs a batch in the background while it goes on to search (XGBoost and the evolutionary
    search on every core) and build (LLVM, in a worker process) the next kernel's candidates: on a machine
    with few cores the candidates were timed while competing with the compiler and the search for them. The
    overlap saved little where there is nothing spare to overlap on; remote devices keep their runner as it
    is (their timing does not share this machine's cores)."""

    def __init__(self, inner: ms.Runner):
        self.inner = inner

    def run(self, runner_inputs: list[ms.runner.RunnerInput]) -> list[ms.runner.RunnerFuture]:
        results = [future.result() for future in self.inner.run(runner_inputs)]
        return [ms.runner.RunnerFuture(lambda: True, functools.partial(_identity, result)) for result in results]


def _identity(value):
    return value


def _measure_defaults(tasks: list[ms.ExtractedTask], target: tvm.target.Target, db: TuningDatabase,
                      schedule: Callable[[tvm.IRModule], tvm.IRModule], builder: ms.Builder,
                      runner: ms.Runner, say: Callable[[str], None]) -> None:
    """Measure the default schedule of every task that has no baseline yet, as candidates are measured.

    In groups of 1, 2, 4, ... kernels, each reported when measured: the first measurement lands a build and a
    run after start-up instead of after every kernel's build (each group costs one more worker start)."""
    todo = [t for t in tasks if db.baseline(t.dispatched[0]) is None]
    size, done = 1, 0
    while done < len(todo):
        group = todo[done:done + size]
        _measure_group(group, target, db, schedule, builder, runner)
        done, size = done + len(group), size * 2
        measured = [b for b in (db.baseline(t.dispatched[0]) for t in group) if b is not None]
        slowest = max(measured, key=lambda b: b.seconds, default=None)
        say(f"default schedules measured: {done}/{len(todo)} kernels"
            + (f"; slowest of these {slowest.task} {slowest.seconds * 1e3:.4f} ms" if slowest else "")
            + (f"; {len(group) - len(measured)} failed" if len(measured) < len(group) else ""))


def _measure_group(group: list[ms.ExtractedTask], target: tvm.target.Target, db: TuningDatabase,
                   schedule: Callable[[tvm.IRModule], tvm.IRModule], builder: ms.Builder,
                   runner: ms.Runner) -> None:
    scheduled = [schedule(t.dispatched[0]) for t in group]
    for task, run_secs in zip(group, measure_modules(scheduled, target, builder, runner)):
        if run_secs:
            db.save_baseline(task.dispatched[0], Baseline(task.task_name, mean_seconds(run_secs)))


def _measure_small_spaces(spaces: dict[int, list[tvm.s_tir.Schedule]], tasks: list[ms.ExtractedTask],
                          target: tvm.target.Target, db: TuningDatabase, builder: ms.Builder, runner: ms.Runner,
                          progress: _Progress, remaining: int, batch: int | None) -> None:
    """Measure each small space's unmeasured schedules (`small_space.py`), most work first, in batches of
    `batch` (None: a kernel a batch), within the trial budget; every result is a record in the database, as
    the search's are."""
    for index, schedules in spaces.items():
        kernel = tasks[index].dispatched[0]
        todo = unmeasured(schedules, db.records(kernel))[:max(0, remaining - progress.done)]
        if not todo:
            continue
        workload, args = db.ms.commit_workload(kernel), ms.arg_info.ArgInfo.from_prim_func(kernel["main"])
        size = batch or len(todo)
        for start in range(0, len(todo), size):
            chunk = todo[start:start + size]
            run_secs = measure_modules([sch.mod for sch in chunk], target, builder, runner)
            for sch, secs in zip(chunk, run_secs):
                db.ms.commit_tuning_record(ms.database.TuningRecord(sch.trace, workload, secs, target, args))
            progress.measured(index, run_secs)


# With a time budget and a model to check the records in, the search stops this much early (a share of the
# budget, at most the seconds below) for the check: ResNet-50's two builds and runs take about 20 s a round.
VERIFY_SHARE, VERIFY_MAX_S = 0.1, 60.0


def tune(mod: tvm.IRModule, target: tvm.target.Target, db: TuningDatabase, config: TuneConfig,
         schedule: Callable[[tvm.IRModule], tvm.IRModule], report: Callable[[str], None] | None = None,
         builder: ms.Builder | None = None, runner: ms.Runner | None = None,
         kernel_times: KernelTimes | None = None, space: SpaceFn | None = None) -> TuneResult:
    """Tune the kernels of `mod` into `db` within `config`'s budget and summarise every task.

    `schedule` gives a one-kernel module its default schedule (the baseline a record must beat); `space`, where
    the target has one, the design space searched for it (else MetaSchedule's generic one). Given
    `kernel_times` (the model runs on this machine), each winning record is then timed inside the model against
    the default schedule and kept only if faster there (`verify.py`), within the same budget."""
    say = report or (lambda line: print(line, file=sys.stderr))
    started = time.monotonic()
    space = space if config.space == "rules" else None
    tasks = extract_tasks(mod, target)
    if not tasks:
        return TuneResult(str(db.folder), 0, stopped_by="no tunable kernels")
    builder = builder or local_builder(config.builder_timeout_s)
    runner = runner or _MeasuredAlone(local_runner(config.runner_timeout_s))
    deadline = search_deadline = None
    if config.time_budget_s is not None:
        deadline = search_deadline = started + config.time_budget_s
        if kernel_times is not None:
            search_deadline -= min(VERIFY_SHARE * config.time_budget_s, VERIFY_MAX_S)
    say(f"tuning {len(tasks)} kernels into {db.folder}")
    with _quiet_meta_schedule():
        result = _search(tasks, target, db, config, schedule, space, say, builder, runner, started,
                         search_deadline)
    if kernel_times is not None:
        result.in_model = verify_records(mod, target, db, kernel_times, say, deadline)
    result.tasks = [summarise(t, db) for t in tasks]
    result.seconds = time.monotonic() - started
    return result


@contextlib.contextmanager
def _quiet_meta_schedule():
    """MetaSchedule logs every round at INFO (tables of all tasks); edgetune prints its own progress line."""
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _search(tasks, target, db, config, schedule, space, say, builder, runner, started, deadline) -> TuneResult:
    """Measure the default schedules, then search until the trial budget or `deadline`."""
    _measure_defaults(tasks, target, db, schedule, builder, runner, say)
    done = sum(len(db.records(t.dispatched[0])) for t in tasks)
    remaining = config.trials - done if config.trials else 1 << 30
    measured_now, stopped_by, curve, search_curve = 0, "budget", [], []
    if remaining <= 0:
        say(f"the database already holds {done} trials for these kernels (budget {config.trials}): "
            "nothing to measure")
    elif deadline is not None and time.monotonic() >= deadline:
        say("the time budget went on measuring the default schedules: no search (give a longer --time-budget)")
        stopped_by = "time budget"
    else:
        weights = [float(task.weight) for task in tasks]
        starting = [current_seconds(t.dispatched[0], db) for t in tasks]
        progress = _Progress([t.task_name for t in tasks], config.trials and remaining, deadline, say, weights,
                             starting, started)
        samples = [space(t.dispatched[0]) if space is not None else None for t in tasks]
        small = _small_spaces(tasks, samples)
        progress.searched = [index for index in range(len(tasks)) if index not in small]
        if small:
            say(f"{len(small)} kernels have small design spaces ({sum(map(len, small.values()))} schedules): "
                "measured whole, the others searched")
        try:
            _measure_small_spaces(small, tasks, target, db, builder, runner, progress, remaining,
                                  config.trials_per_round)
            if progress.searched and progress.done < remaining:
                _tune_searched(tasks, samples, progress, config, db, builder, runner, remaining, deadline, say)
            elif progress.done < remaining:
                stopped_by = "every kernel's space measured"
        except Exception:  # noqa: BLE001 - the budget callback's exception comes back wrapped by the FFI
            if not progress.budget_spent:
                raise
            stopped_by = "time budget"
        measured_now = progress.done
        curve, search_curve = progress.curve, progress.search_curve
    return TuneResult(str(db.folder), measured_now, stopped_by=stopped_by, curve=curve, search_curve=search_curve)


# Spaces of at most this many schedules are measured whole (`small_space.py`) instead of searched.
SMALL_SPACE = 32


def _small_spaces(tasks: list[ms.ExtractedTask], samples: list[Sample | None]
                  ) -> dict[int, list[tvm.s_tir.Schedule]]:
    """Per task index, every schedule of the target's space for the kernel, where that space is small."""
    small = {}
    for index, (task, sample) in enumerate(zip(tasks, samples)):
        schedules = space_schedules(task.dispatched[0], sample, SMALL_SPACE) if sample is not None else None
        if schedules is not None:
            small[index] = schedules
    return small


def _tune_searched(tasks, samples, progress, config, db, builder, runner, remaining, deadline, say) -> None:
    """MetaSchedule's search over the kernels `progress.searched`, for what is left of the budget."""
    searched = [tasks[index] for index in progress.searched]
    left = remaining - progress.done
    per_round = config.trials_per_round or _batch_size(config, left, len(searched), deadline)
    contexts = [_tune_context(tasks[index], config.seed + index, config.search, samples[index])
                for index in progress.searched]
    ms.tune_tasks(tasks=contexts, task_weights=[float(t.weight) for t in searched], work_dir=str(db.folder),
                  max_trials_global=left, num_trials_per_iter=per_round,
                  builder=_BudgetedBuilder(builder, len(searched), progress, say),
                  runner=runner, database=db.ms, cost_model="xgb" if config.search == "xgb" else "random",
                  measure_callbacks=[*ms.MeasureCallback.create("default"), progress],
                  task_scheduler="gradient")


def _batch_size(config: TuneConfig, remaining: int, tasks: int, deadline: float | None) -> int:
    """Candidates per measured batch. A trial budget gives each task about four batches: the cost model has
    measurements to learn from only after a task's first batch, so a budget spent in one round (as
    `remaining // tasks` did) is plain random sampling whatever the cost model. With a time budget the first
    round (one batch of every kernel, measured only at its end) should take about a quarter of what is left, at
    about a second per candidate here (build, run and search; ResNet-50's 31 x 16 took 408 s)."""
    if config.trials:
        return max(4, min(64, remaining // (4 * tasks)))
    left = deadline - time.monotonic() if deadline is not None else math.inf
    return int(max(2, min(16, 0.25 * left / tasks)))


def summarise(task: ms.ExtractedTask, db: TuningDatabase) -> TaskSummary:
    kernel = task.dispatched[0]
    baseline, winner = db.baseline(kernel), winning_record(kernel, db)
    default_ms = baseline.seconds * 1e3 if baseline else None
    return TaskSummary(task.task_name, int(task.weight), len(db.records(kernel)), default_ms,
                       winner[1] * 1e3 if winner else default_ms, winner is not None,
                       sum(1 for v in db.verdicts.get(workload_key(kernel), []) if not v.accepted))
