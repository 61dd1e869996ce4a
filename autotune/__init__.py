"""Autotuning: MetaSchedule with the XGBoost cost model, a keyed and resumable database, and applying the
best records over the default schedules."""

from .curve import plot_curves
from .database import TuningDatabase, default_root, repair_database, target_key
from .measure import local_builder, rpc_runner
from .tuner import TaskSummary, TuneConfig, TuneResult, apply_best_records, extract_tasks, parse_duration, tune

__all__ = ["TaskSummary", "plot_curves", "local_builder", "rpc_runner", "TuneConfig", "TuneResult", "TuningDatabase",
           "apply_best_records", "default_root", "extract_tasks", "parse_duration", "repair_database", "target_key",
           "tune"]
