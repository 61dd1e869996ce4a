"""Targets: build, export, load, run and profile a compiled model on a device."""

from .base import Session, Target, default_threads
from .profiling import KernelStat, LatencyReport, ProfileConfig
from .registry import get_target, register_target, target_names

__all__ = ["KernelStat", "LatencyReport", "ProfileConfig", "Session", "Target", "default_threads",
           "get_target", "register_target", "target_names"]
