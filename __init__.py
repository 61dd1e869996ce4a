"""edgetune: a hardware-targeted deployment compiler on Apache TVM's Relax IR.

    import edgetune
    model = edgetune.compile("model.onnx", target="host")
    outputs = model.run({"input": x})
    model.save("out/")
    same = edgetune.load("out/")
"""

__version__ = "0.1.0"

# First: the CUDA extra's runtime is loaded before edgetune imports tvm (a no-op without the extra).
from . import _cuda_env  # noqa: E402

_cuda_env.prepare()

from .api import CompiledModel, CompileOptions, compile, load  # noqa: E402
from .errors import EdgetuneError, UserError, ValidationError  # noqa: E402

__all__ = ["CompiledModel", "CompileOptions", "EdgetuneError", "UserError", "ValidationError", "__version__",
           "compile", "load"]
