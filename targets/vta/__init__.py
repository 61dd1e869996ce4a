"""VTA (Versatile Tensor Accelerator): configuration, ISA, simulator, timing model and compiler back end.

VTA left TVM in release 0.19, so edgetune implements the published architecture itself (docs/vta.md):

    program = compile_conv2d(data.shape, weight_int8, bias_int32, Requantize(shift=8), get_config("vta-sim"),
                             strides=(1, 1), padding=(1, 1))
    result = program.run(data_int8)  # .output (int8 NCHW), .counters (fsim's), .timing (cycles, utilisation)
"""

from .compiler import DenseProgram, TilingChooser, compile_conv2d, compile_dense
from .cost import TilingTask
from .config import PRESETS, VTAConfig, VTAConfigError, get_config, load_config
from .program import RunResult, VTAProgram
from .simulator import DRAM, Counters, Simulator, VTADeadlockError
from .tiler import Tiling
from .timing import TimingReport, estimate
from .workload import Conv2dWorkload, Requantize

__all__ = ["DRAM", "PRESETS", "Conv2dWorkload", "Counters", "DenseProgram", "Requantize", "RunResult", "Simulator",
           "Tiling", "TilingChooser", "TilingTask", "TimingReport", "VTAConfig", "VTAConfigError", "VTADeadlockError",
           "VTAProgram", "compile_conv2d", "compile_dense", "estimate", "get_config", "load_config"]
