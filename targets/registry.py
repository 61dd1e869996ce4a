"""Named target presets. A new target registers its factory here under one or more names."""

from __future__ import annotations

from typing import Callable

from ..errors import UserError
from .base import Target
from .host import HostTarget

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
    if factory is None:
        raise UserError(f"unknown target {name!r}; valid targets: {', '.join(target_names())} "
                        "(see `edgetune targets`)")
    return factory()


register_target("host", HostTarget)
