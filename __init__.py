"""edgetune: a hardware-targeted deployment compiler on Apache TVM's Relax IR.

    import edgetune
    model = edgetune.compile("model.onnx", target="host")
    outputs = model.run({"input": x})
    model.save("out/")
    same = edgetune.load("out/")
"""

__version__ = "0.1.0"

from .api import CompiledModel, CompileOptions, compile, load  # noqa: E402
from .errors import EdgetuneError, UserError, ValidationError  # noqa: E402

__all__ = ["CompiledModel", "CompileOptions", "EdgetuneError", "UserError", "ValidationError", "__version__",
           "compile", "load"]
