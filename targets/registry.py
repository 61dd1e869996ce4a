"""Named target presets. A new target registers its factory here under one or more names.

Names that are not presets may be TVM target tags or raw TVM target JSON; those are accepted for aarch64.
"""

from __future__ import annotations

from typing import Callable

from ..errors import UserError
from . import arm, cuda
from .base import Target
from .host import HostTarget
from .vta.config import PRESETS as VTA_PRESETS
from .vta.target import VTATarget

_PRESETS: dict[str, Callable[[], Target]] = {}


def register_target(name: str, factory: Callable[[], Target]) -> None:
    if name in _PRESETS:
        raise ValueError(f"target preset {name!r} is already registered")
    _PRESETS[name] = factory


def target_names() -> list[str]:
    return sorted(_PRESETS)


def get_target(name: str | Target) -> Target:
    if isinstance(name, Target):
        return name
    factory = _PRESETS.get(name)
    if factory is not None:
        return factory()
    target = arm.from_tvm(name)
    if target is None:
        raise UserError(f"unknown target {name!r}; valid targets: {', '.join(target_names())}, a TVM tag or "
                        "TVM target JSON (see `edgetune targets`)")
    return target


register_target("host", HostTarget)
for _preset in arm.PRESETS:
    register_target(_preset.name, lambda preset=_preset: preset)
for _gpu in cuda.PRESETS:
    register_target(_gpu.name, lambda preset=_gpu: preset)
for _vta in VTA_PRESETS:
    register_target(_vta, lambda preset=_vta: VTATarget(preset))
