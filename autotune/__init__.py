"""Autotuning (MetaSchedule with the XGBoost cost model) per target.

Nothing lives here yet: tuning is issue 4. The compile pipeline already leaves the place for it, between
the passes and the target's build.
"""
