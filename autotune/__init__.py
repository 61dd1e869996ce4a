"""Autotuning: MetaSchedule with the XGBoost cost model, a keyed and resumable database, and applying the
best records over the default schedules; for VTA targets, the tiling search with the timing model as the cost."""

from .curve import plot_curves
from .database import TuningDatabase, default_root, repair_database, target_key
from .measure import local_builder, rpc_runner
from .tiling import TilingDatabase, TilingTuner, tiling_tuner
from .records import apply_best_records, extract_tasks
from .tuner import SEARCHES, TaskSummary, TuneConfig, TuneResult, parse_duration, tune

__all__ = ["SEARCHES", "TaskSummary", "plot_curves", "local_builder", "rpc_runner", "TilingDatabase", "TilingTuner",
           "TuneConfig", "TuneResult", "TuningDatabase", "apply_best_records", "default_root", "extract_tasks", "parse_duration",
           "repair_database", "target_key", "tiling_tuner", "tune"]
