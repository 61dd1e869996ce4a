"""VTA (Versatile Tensor Accelerator): configuration, ISA, simulator, timing model and compiler back end.

VTA left TVM in release 0.19, so edgetune implements the published architecture itself (docs/vta.md).
"""

from .config import PRESETS, VTAConfig, VTAConfigError, get_config

__all__ = ["PRESETS", "VTAConfig", "VTAConfigError", "get_config"]
