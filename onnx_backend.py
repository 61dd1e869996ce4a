"""edgetune as an `onnx.backend` backend, so that ONNX's backend test runner (and the conformance suite) can
drive the whole pipeline: import, edgetune's passes, build and export for the host, load and run.

ONNX's tests declare dynamic input shapes and feed operator parameters (axes, pads, sizes, k, ...) as graph
inputs whose values come only at run time, while edgetune compiles ahead of time for static shapes. The
prepared model therefore compiles at its first run for the shapes given and with those parameter inputs (and
any input that overrides an initializer's default) bound to the values given, and compiles again if a later run differs: each build computes exactly the model with
those shapes and values, as a user gets with `input_shapes=` and `bind_inputs=`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

from .frontend.parameters import parameter_inputs


class EdgetuneRep(BackendRep):
    def __init__(self, model: onnx.ModelProto, target: str = "host"):
        initializers = {i.name for i in model.graph.initializer}
        self.model = model
        self.target = target
        self.input_names = [i.name for i in model.graph.input if i.name not in initializers]
        self.all_inputs = [i.name for i in model.graph.input]
        self.defaults = [name for name in self.all_inputs if name in initializers]
        self.parameters = [name for name in self.input_names if name in parameter_inputs(model)]
        self._compiled: dict[bytes, Any] = {}

    def run(self, inputs: Sequence[Any], **kwargs: Any) -> tuple[np.ndarray, ...]:
        from . import api

        # Inputs with an initializer are defaults the caller may override: fed, they are bound like parameters.
        names = self.input_names if len(inputs) <= len(self.input_names) else self.all_inputs
        feed = dict(zip(names, inputs))
        bound = {name: np.asarray(feed.pop(name)) for name in [*self.parameters, *self.defaults] if name in feed}
        shapes = {name: np.shape(value) for name, value in feed.items()}
        key = repr(shapes).encode() + b"".join(name.encode() + value.dtype.str.encode() + repr(value.shape).encode()
                                               + value.tobytes() for name, value in bound.items())
        if key not in self._compiled:
            self._compiled[key] = api.compile(self.model, self.target, validate=False, bind_inputs=bound,
                                              input_shapes=shapes)
        return tuple(self._compiled[key].run(feed))


class EdgetuneBackend(Backend):
    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> EdgetuneRep:
        if device != "CPU":
            raise NotImplementedError(f"edgetune's backend runs on the host CPU, not {device}")
        return EdgetuneRep(model)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"
