"""VTA tiling search with the timing model as the cost, and the best tiling per layer in the tuning database.

The VTA back end leaves each layer's tiling open (tile shape, channel steps, one or two virtual threads and the
loop they split). Where MetaSchedule measures a CPU schedule, a tiling's cost is the timing model's cycles for
the stream it generates: deterministic, so every candidate is evaluated once, in a fixed order (the back end's
quick estimate, best first; the first candidate is the default tiling a compile uses without a record). A record
keeps the best tiling and how many candidates were evaluated, so a larger budget continues where the last search
stopped, and a compile whose records cover its budget searches nothing.

Records sit in the tuning database's root, in one folder per VTA configuration (every timing constant is part
of the key) and edgetune version, one JSON line per layer, rewritten atomically; lines that do not parse are
dropped with a warning, as for MetaSchedule's files.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .. import __version__
from ..targets.vta.config import VTAConfig
from ..targets.vta.cost import TilingTask
from ..targets.vta.target import VTATarget
from ..targets.vta.tiler import Tiling, is_legal
from .database import keyed_folder, parse_json_lines, write_atomically
from .tuner import TaskSummary, TuneConfig, TuneResult

TILINGS = "vta_tilings.json"


@dataclass
class TilingRecord:
    tiling: Tiling
    cycles: int  # the timing model's, under `tiling`
    default_cycles: int  # under the default tiling (the first candidate)
    evaluated: int  # candidates evaluated so far, in the fixed order

    def to_dict(self) -> dict[str, Any]:
        return {"tiling": asdict(self.tiling), "cycles": self.cycles, "default_cycles": self.default_cycles,
                "evaluated": self.evaluated}

    @classmethod
    def from_dict(cls, row: dict[str, Any]) -> "TilingRecord":
        numbers = [row["cycles"], row["default_cycles"], row["evaluated"]]
        if not all(isinstance(n, int) and n > 0 for n in numbers):
            raise ValueError(f"not positive integers: {numbers}")
        return cls(Tiling(**row["tiling"]), *numbers)


def database_key(config: VTAConfig) -> tuple[str, dict]:
    """Folder name and description: the configuration (sizes, clock, timing constants) and edgetune's version,
    which made the streams whose cycles the records hold."""
    described = {"vta": config.to_json(), "edgetune": __version__}
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]
    return f"vta-{config.target}-{digest}", described


def _task_key(task: TilingTask) -> str:
    return json.dumps(task.key(), sort_keys=True)


class TilingDatabase:
    """The best tiling found per layer task, for one VTA configuration."""

    def __init__(self, root: str | Path | None, config: VTAConfig):
        """`root`: the tuning database folder (None: the user's cache, as for MetaSchedule's records)."""
        self.folder = keyed_folder(root, *database_key(config))
        self.path = self.folder / TILINGS
        self.rows: dict[str, tuple[dict, TilingRecord]] = {}
        self.skipped_lines = 0
        for row in parse_json_lines(self.path):
            try:
                self.rows[json.dumps(row["task"], sort_keys=True)] = (row["task"], TilingRecord.from_dict(row))
            except (TypeError, KeyError, ValueError):
                self.skipped_lines += 1
        if self.skipped_lines:
            warnings.warn(f"tuning database {self.folder}: skipped {self.skipped_lines} damaged line(s) of "
                          f"{TILINGS}", stacklevel=2)
            self._write()

    def get(self, task: TilingTask) -> TilingRecord | None:
        row = self.rows.get(_task_key(task))
        return row[1] if row else None

    def put(self, task: TilingTask, record: TilingRecord) -> None:
        self.rows[_task_key(task)] = (task.key(), record)
        self._write()

    def _write(self) -> None:
        write_atomically(self.path, "".join(json.dumps({"task": key, **record.to_dict()}) + "\n"
                                            for key, record in self.rows.values()))


def search(task: TilingTask, config: VTAConfig, budget: int, start: TilingRecord | None = None,
           deadline: float | None = None, threads: Sequence[int] = (1, 2),
           report: Callable[[TilingRecord, int], None] | None = None) -> TilingRecord | None:
    """Evaluate candidates in the fixed order, after those `start` covered, until `budget` in all were evaluated
    (or `deadline`, a `time.monotonic()` value, passed); the best of them and `start`'s, the earlier candidate
    on a tie. `report(best, candidates)` follows each evaluation. None only if the deadline allowed none."""
    ranked = task.candidates(config, threads)
    best = start
    for index in range(start.evaluated if start else 0, min(budget, len(ranked))):
        if deadline is not None and time.monotonic() >= deadline:
            break
        tiling, cycles = ranked[index], task.cycles(ranked[index], config)
        if best is None:
            best = TilingRecord(tiling, cycles, cycles, 1)
        elif cycles < best.cycles:
            best = TilingRecord(tiling, cycles, best.default_cycles, index + 1)
        else:
            best = TilingRecord(best.tiling, best.cycles, best.default_cycles, index + 1)
        if report is not None:
            report(best, len(ranked))
    return best


@dataclass
class TilingSummary(TaskSummary):
    """A layer's tuning outcome; `trials` counts the candidates evaluated, the times are the timing model's."""

    default_cycles: int | None
    best_cycles: int | None
    tiling: Tiling

    @classmethod
    def of(cls, task: TilingTask, record: TilingRecord | None, tiling: Tiling, clock_mhz: float) -> "TilingSummary":
        """From the layer's record; None: no record, so the default tiling, not costed."""
        if record is None:
            return cls(task.describe(), 1, 0, None, None, False, 0, None, None, tiling)
        to_ms = 1e-3 / clock_mhz
        return cls(task.describe(), 1, record.evaluated, record.default_cycles * to_ms, record.cycles * to_ms,
                   record.cycles < record.default_cycles, 0, record.default_cycles, record.cycles, tiling)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "default_cycles": self.default_cycles, "best_cycles": self.best_cycles,
                "tiling": asdict(self.tiling)}


class TilingTuner:
    """Chooses the tiling of each layer a compile offloads to VTA: its record, searched further first when the
    budget asks for more candidates than the record covers, or the default tiling when there is no record."""

    def __init__(self, db: TilingDatabase, config: VTAConfig, tune: TuneConfig | None = None,
                 report: Callable[[str], None] | None = None):
        """`tune`: the budget (`trials` candidates per layer and/or a time budget for all); None applies the
        records only."""
        self.db, self.config = db, config
        self.started = time.monotonic()
        self.deadline = self.started + tune.time_budget_s if tune and tune.time_budget_s is not None else None
        self.budget = (tune.trials or 1 << 30) if tune else 0
        self.say = report or (lambda _line: None)
        self.summaries: dict[str, TilingSummary] = {}
        self.evaluated_now = 0
        self.stopped_by = "budget" if tune else "records only"

    def __call__(self, task: TilingTask) -> Tiling:
        key = _task_key(task)
        if key in self.summaries:  # another layer of the same shape
            self.summaries[key].weight += 1
            return self.summaries[key].tiling
        record = self.db.get(task)
        if record is not None and not is_legal(task.workload, record.tiling, self.config, task.with_bias):
            warnings.warn(f"tuning database {self.db.folder}: the record for {task.describe()} is not a legal "
                          "tiling any more; it is ignored", stacklevel=2)
            record = None
        done = record.evaluated if record else 0
        if self.budget > done:
            record = search(task, self.config, self.budget, record, self.deadline, report=self._progress(task))
            if record is not None and record.evaluated > done:
                self.evaluated_now += record.evaluated - done
                self.db.put(task, record)
            if self.deadline is not None and time.monotonic() >= self.deadline:
                self.stopped_by = "time budget"
        tiling = record.tiling if record else task.default_tiling(self.config)
        self.summaries[key] = TilingSummary.of(task, record, tiling, self.config.clock_mhz)
        return tiling

    def _progress(self, task: TilingTask) -> Callable[[TilingRecord, int], None]:
        def report(best: TilingRecord, candidates: int) -> None:
            planned = min(self.budget, candidates)
            if best.evaluated % 8 and best.evaluated < planned:
                return
            width = 24
            filled = int(width * best.evaluated / planned)
            self.say(f"tuning VTA tiling [{'#' * filled}{'.' * (width - filled)}] {best.evaluated}/{planned} "
                     f"candidates; {task.describe()}: best {best.cycles} cycles "
                     f"({best.default_cycles / best.cycles:.2f}x the default)")
        return report

    def result(self) -> TuneResult:
        return TuneResult(str(self.db.folder), self.evaluated_now, list(self.summaries.values()), self.stopped_by,
                          time.monotonic() - self.started)


def tiling_tuner(target: Any, root: str | Path | None, tune: TuneConfig | None,
                 report: Callable[[str], None] | None = None) -> TilingTuner | None:
    """The tiling tuner for `target`'s accelerator (VTA targets), or None where no compile leaves a tiling
    open. `root` and `tune` as for `TilingDatabase` and `TilingTuner`."""
    if not isinstance(target, VTATarget):
        return None
    return TilingTuner(TilingDatabase(root, target.config), target.config, tune, report)
