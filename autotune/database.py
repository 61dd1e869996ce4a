"""The tuning database: MetaSchedule's JSON files, one folder per (target, TVM version).

Records are kept in MetaSchedule's own `JSONDatabase` format (`database_workload.json`,
`database_tuning_record.json`), so TVM's tools read them as they are. The folder name carries a hash of the
target's JSON and the TVM version, so a record can never be applied to another target or to code from another
compiler version. Before MetaSchedule opens the files, lines that do not parse (a run killed mid-write, a
damaged disk) are dropped with a warning and the files rewritten atomically; MetaSchedule itself aborts on them.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import tvm
import tvm_ffi
from tvm.s_tir import meta_schedule as ms

from .measure import TIMING

from ..artifact import atomic_write
from ..errors import UserError
from ..targets.base import target_to_json

WORKLOADS = "database_workload.json"
RECORDS = "database_tuning_record.json"
BASELINES = "baselines.json"  # edgetune's own: each workload's latency under the default schedule
IN_MODEL = "in_model.json"  # edgetune's own: records timed inside a model against the default (verify.py)
KEY = "key.json"


def default_root() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "edgetune" / "tuning"


def target_key(target: tvm.target.Target) -> tuple[str, dict]:
    """Folder name and description for `target` under this TVM version."""
    exported = target_to_json(target.export())
    described = {"target": exported, "tvm": tvm.__version__, "timing": TIMING}
    digest = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]
    mcpu = exported.get("mcpu") or exported.get("arch") or ""
    name = "-".join(part for part in (exported.get("kind", "target"), str(mcpu), digest) if part)
    return name, described


def write_atomically(path: Path, text: str) -> None:
    with atomic_write(path) as handle:
        handle.write(text)


def parse_json_lines(path: Path) -> list[object]:
    """Each non-empty line of `path` as JSON, or None where it does not parse."""
    rows = []
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                rows.append(None)
    return rows


def keyed_folder(root: str | Path | None, name: str, described: dict) -> Path:
    """The database folder `name` under `root` (None: the user's cache), created with its key.json (what the
    records in it are valid for)."""
    folder = Path(root if root is not None else default_root()) / name
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the tuning database {folder}: {exc.strerror}; pass a writable "
                        "--db DIR") from None
    if not (folder / KEY).exists():
        write_atomically(folder / KEY, json.dumps(described, indent=2) + "\n")
    return folder


def repair_database(folder: Path) -> int:
    """Drop damaged workload and record lines, renumbering the records' workload indices to match.

    Returns the number of lines dropped (0: the files were left untouched)."""
    workloads = parse_json_lines(folder / WORKLOADS)
    records = parse_json_lines(folder / RECORDS)
    renumber: dict[int, int] = {}
    for index, row in enumerate(workloads):
        if isinstance(row, list) and len(row) == 2:
            renumber[index] = len(renumber)
    kept_records = [[renumber[row[0]], row[1]] for row in records
                    if isinstance(row, list) and len(row) == 2 and isinstance(row[0], int)
                    and row[0] in renumber and isinstance(row[1], list)]
    dropped = len(workloads) - len(renumber) + len(records) - len(kept_records)
    if dropped:
        write_atomically(folder / WORKLOADS,
                         "".join(json.dumps(row) + "\n" for i, row in enumerate(workloads) if i in renumber))
        write_atomically(folder / RECORDS, "".join(json.dumps(row) + "\n" for row in kept_records))
    return dropped


@dataclass
class Baseline:
    task: str
    seconds: float


@dataclass
class Verdict:
    """A record timed inside a model against the kernel's default schedule in the same model."""

    task: str
    record: str  # `record_key` of the record judged
    record_seconds: float  # per inference, in the model
    default_seconds: float

    @property
    def accepted(self) -> bool:
        return self.record_seconds < self.default_seconds


class TuningDatabase:
    """A keyed folder of MetaSchedule records for one target, plus the default schedules' latencies and the
    records' verdicts inside models."""

    def __init__(self, root: str | Path | None, target: tvm.target.Target):
        """`root`: the database folder (None: the user's cache, `default_root()`)."""
        self.folder = keyed_folder(root, *target_key(target))
        dropped = repair_database(self.folder)
        if dropped:
            warnings.warn(f"tuning database {self.folder}: skipped {dropped} damaged line(s)", stacklevel=2)
        self.skipped_lines = dropped
        try:
            self.ms = ms.database.JSONDatabase(path_workload=str(self.folder / WORKLOADS),
                                               path_tuning_record=str(self.folder / RECORDS),
                                               allow_missing=True, module_equality="structural")
        except RuntimeError as exc:
            raise UserError(f"the tuning database {self.folder} cannot be read ({str(exc).splitlines()[-1]}); "
                            "move it away or pass another --db DIR") from None
        baselines = self._load(BASELINES, "default schedules will be measured again")
        verdicts = self._load(IN_MODEL, "records will be checked inside the model again")
        try:
            self.baselines = {key: Baseline(**value) for key, value in baselines.items()}
            self.verdicts = {key: [Verdict(**v) for v in values] for key, values in verdicts.items()}
        except TypeError:
            warnings.warn(f"tuning database {self.folder}: unreadable entries in {BASELINES} or {IN_MODEL}; "
                          "both start again", stacklevel=2)
            self.baselines, self.verdicts = {}, {}

    def _load(self, name: str, consequence: str) -> dict:
        path = self.folder / name
        try:
            raw = json.loads(path.read_text()) if path.exists() else {}
            if isinstance(raw, dict):
                return raw
        except ValueError:
            pass
        warnings.warn(f"tuning database {self.folder}: {name} is damaged; {consequence}", stacklevel=3)
        return {}

    def _save(self, name: str, table: dict) -> None:
        write_atomically(self.folder / name, json.dumps(table, indent=1, sort_keys=True) + "\n")

    def save_baseline(self, mod: tvm.IRModule, baseline: Baseline) -> None:
        self.baselines[workload_key(mod)] = baseline
        self._save(BASELINES, {k: vars(v) for k, v in self.baselines.items()})

    def baseline(self, mod: tvm.IRModule) -> Baseline | None:
        return self.baselines.get(workload_key(mod))

    def save_verdict(self, mod: tvm.IRModule, verdict: Verdict) -> None:
        self.verdicts.setdefault(workload_key(mod), []).append(verdict)
        self._save(IN_MODEL, {k: [vars(v) for v in values] for k, values in self.verdicts.items()})

    def verdict(self, mod: tvm.IRModule, record: ms.database.TuningRecord) -> Verdict | None:
        """The latest verdict on `record` inside a model, if it was judged."""
        key = record_key(record)
        return next((v for v in reversed(self.verdicts.get(workload_key(mod), [])) if v.record == key), None)

    def records(self, mod: tvm.IRModule) -> list[ms.database.TuningRecord]:
        """Every record measured for `mod`'s workload (failed candidates included)."""
        if not self.ms.has_workload(mod):
            return []
        workload = self.ms.commit_workload(mod)
        return [r for r in self.ms.get_all_tuning_records() if r.workload.same_as(workload)]

    def history(self, mods: list[tvm.IRModule]) -> list[tuple[int, ms.database.TuningRecord]]:
        """Every record of these kernels in the order measured, each with its kernel's index in `mods`
        (MetaSchedule's queries return records fastest first; its record file is appended as they come)."""
        index = {workload_key(mod): i for i, mod in enumerate(mods)}
        workloads = [ms.database.Workload.from_json(row) for row in parse_json_lines(self.folder / WORKLOADS)]
        owners = [index.get(workload_key(w.mod)) for w in workloads]
        return [(owners[row[0]], ms.database.TuningRecord.from_json(row[1], workloads[row[0]]))
                for row in parse_json_lines(self.folder / RECORDS) if owners[row[0]] is not None]

    def fastest(self, mod: tvm.IRModule, k: int) -> list[tuple[ms.database.TuningRecord, float]]:
        """Up to `k` valid records for `mod`, fastest first (ties: first measured), with their mean seconds."""
        if not self.ms.has_workload(mod):
            return []
        top = self.ms.get_top_k(self.ms.commit_workload(mod), k)
        return [(record, mean_seconds(record.run_secs)) for record in top if record.run_secs]


def mean_seconds(run_secs) -> float:
    """The mean of a measurement's repeats (MetaSchedule's run_secs)."""
    return sum(float(s) for s in run_secs) / len(run_secs)


def workload_key(mod: tvm.IRModule) -> str:
    return f"{tvm_ffi.structural_hash(mod) & 0xFFFFFFFFFFFFFFFF:016x}"


def record_key(record: ms.database.TuningRecord) -> str:
    """A record's schedule (its trace, with every sampling decision), as a short hash: the same for a record
    just measured and the same record read back from the JSON file (where TVM's integer and float immediates
    have become plain numbers)."""
    def plain(value: object) -> object:
        return value.value if isinstance(value, (tvm.tirx.IntImm, tvm.tirx.FloatImm)) else str(value)

    return hashlib.sha256(json.dumps(record.trace.as_json(), default=plain).encode()).hexdigest()[:16]
