"""Passes: Relax-to-Relax transformations run between import and build."""

from .pipeline import (CALIBRATE_AFTER, DEFAULT_OPT_LEVEL, OPT_LEVELS, STAGES, PassConfig, PassRecord, PassResult,
                       pipeline_stages, run_passes)

__all__ = ["CALIBRATE_AFTER", "DEFAULT_OPT_LEVEL", "OPT_LEVELS", "STAGES", "PassConfig", "PassRecord", "PassResult",
           "pipeline_stages", "run_passes"]
