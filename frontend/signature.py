"""The model's signature: names, shapes and dtypes of its inputs and outputs.

Every stage after the frontend works on static shapes, so dynamic ONNX dimensions are resolved here from
the user's `--input-shape` values, and every feed given to a compiled model is checked against the result.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import onnx

from ..errors import UserError
from .narrow_formats import from_carrier, is_narrow, random_narrow, to_carrier


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor: a name, a static shape and a numpy dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: Mapping) -> "TensorSpec":
        return cls(str(data["name"]), tuple(int(d) for d in data["shape"]), str(data["dtype"]))

    def describe(self) -> str:
        return f"{self.name}: {self.dtype}[{'x'.join(map(str, self.shape)) or 'scalar'}]"


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    @property
    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [spec.name for spec in self.outputs]

    def to_dict(self) -> dict:
        return {"inputs": [s.to_dict() for s in self.inputs], "outputs": [s.to_dict() for s in self.outputs]}

    @classmethod
    def from_dict(cls, data: Mapping) -> "Signature":
        return cls(
            tuple(TensorSpec.from_dict(s) for s in data["inputs"]),
            tuple(TensorSpec.from_dict(s) for s in data["outputs"]),
        )

    def check_feed(self, feed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Check a name -> array feed against the inputs and return the arrays in input order, as the library
        takes them (narrow types on their carriers)."""
        expected = set(self.input_names)
        missing = [n for n in self.input_names if n not in feed]
        extra = sorted(set(feed) - expected)
        if missing or extra:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing)}")
            if extra:
                parts.append(f"unexpected {', '.join(extra)}")
            raise UserError(
                f"inputs do not match the model ({'; '.join(parts)}); "
                f"the model takes {', '.join(s.describe() for s in self.inputs)}"
            )
        arrays = []
        for spec in self.inputs:
            array = np.asarray(feed[spec.name])
            if tuple(array.shape) != spec.shape or array.dtype != np.dtype(spec.dtype):
                got = TensorSpec(spec.name, tuple(array.shape), str(array.dtype)).describe()
                raise UserError(f"input {got} does not match the model's {spec.describe()}; "
                                "convert or reshape it to the declared dtype and shape")
            arrays.append(to_carrier(np.asarray(array, order="C")))  # ascontiguousarray makes scalars 1-d
        return arrays

    def library_outputs(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        """The library's outputs as the model declares them (narrow types off their carriers)."""
        return [from_carrier(array, spec.dtype) for array, spec in zip(arrays, self.outputs)]

    def random_feed(self, seed: int = 0) -> dict[str, np.ndarray]:
        """Seeded random inputs in the declared dtypes: floats in [-1, 1), integers in [0, 10), bools."""
        rng = np.random.default_rng(seed)
        feed = {}
        for spec in self.inputs:
            dtype = np.dtype(spec.dtype)
            _check_allocatable(spec, dtype)
            if is_narrow(spec.dtype):
                feed[spec.name] = random_narrow(rng, spec.shape, spec.dtype)
            elif dtype.kind == "f":
                feed[spec.name] = rng.uniform(-1.0, 1.0, spec.shape).astype(dtype)
            elif dtype.kind in "iu":
                feed[spec.name] = rng.integers(0, 10, spec.shape).astype(dtype)
            elif dtype.kind == "b":
                feed[spec.name] = rng.integers(0, 2, spec.shape).astype(bool)
            else:
                raise UserError(f"cannot generate random data for input {spec.describe()}; pass --inputs FILE.npz")
        return feed


def _check_allocatable(spec: TensorSpec, dtype: np.dtype) -> None:
    """Refuse before numpy tries: a shape such as 2**40 x 3 x 224 x 224 would raise MemoryError (or be
    overcommitted and killed by the kernel) instead of naming the input."""
    import psutil

    needed = math.prod(spec.shape) * (8 + dtype.itemsize)  # numpy draws float64 (or int64) first, then casts
    available = psutil.virtual_memory().available
    if needed > available:
        raise UserError(f"input {spec.describe()} needs {needed / 2**30:.3g} GiB of random data, more than the "
                        f"{available / 2**30:.3g} GiB available; re-export the model with a smaller shape (or give its "
                        "dynamic dimensions with --input-shape)")


_SHAPE_RE = re.compile(r"^\d+([x,]\d+)*$|^$")


def parse_input_shapes(values: Sequence[str] | None) -> dict[str, tuple[int, ...]]:
    """Parse `name=1x3x224x224` flags (`,` also separates dims; a bare shape names the only input)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for value in values or ():
        name, sep, dims = value.rpartition("=")
        dims = dims.strip().strip("[]()")
        if not _SHAPE_RE.match(dims):
            raise UserError(f"--input-shape {value!r} is not NAME=DxDx...; write it like data=1x3x224x224")
        key = name if sep else ""
        shapes[key] = tuple(int(d) for d in re.split(r"[x,]", dims)) if dims else ()
    return shapes


def _onnx_dtype(elem_type: int) -> str:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name


def resolve_input_specs(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None
                        ) -> tuple[TensorSpec, ...]:
    """The graph's real inputs (initializers excluded) with every dimension made static."""
    initializers = {init.name for init in model.graph.initializer}
    graph_inputs = [vi for vi in model.graph.input if vi.name not in initializers]
    names = [vi.name for vi in graph_inputs]
    shapes = dict(input_shapes or {})
    if "" in shapes:
        if len(names) != 1:
            raise UserError(f"--input-shape without a name is only allowed for single-input models; "
                            f"name one of: {', '.join(names)} (e.g. {names[0]}=1x3x224x224)")
        shapes[names[0]] = shapes.pop("")
    unknown = sorted(set(shapes) - set(names))
    if unknown:
        raise UserError(f"--input-shape names unknown input {', '.join(unknown)}; the model's inputs are "
                        f"{', '.join(names)}")

    specs = []
    for vi in graph_inputs:
        tensor_type = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            raise UserError(f"input {vi.name!r} is not a tensor (sequences and maps are not supported)")
        dtype = _onnx_dtype(tensor_type.elem_type)
        declared = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                    for d in tensor_type.shape.dim]
        if vi.name in shapes:
            given = tuple(int(d) for d in shapes[vi.name])
            if tensor_type.HasField("shape") and len(given) != len(declared):
                raise UserError(f"--input-shape {vi.name}={'x'.join(map(str, given))} has rank {len(given)} "
                                f"but the model declares rank {len(declared)}")
            clash = [i for i, (g, d) in enumerate(zip(given, declared)) if d is not None and g != d]
            if clash:
                raise UserError(f"--input-shape {vi.name}={'x'.join(map(str, given))} contradicts the model's "
                                f"static dims {_show_dims(tensor_type)}; change only the dynamic dims")
            if any(d < 0 for d in given):
                raise UserError(f"--input-shape {vi.name}: every dimension must be a non-negative integer")
            specs.append(TensorSpec(vi.name, given, dtype))
            continue
        if not tensor_type.HasField("shape") or None in declared:
            example = "x".join(str(d or 1) for d in declared) or "1x3x224x224"
            raise UserError(f"input {vi.name!r} has dynamic dimensions {_show_dims(tensor_type)}; "
                            f"give them with --input-shape {vi.name}={example}")
        specs.append(TensorSpec(vi.name, tuple(declared), dtype))
    return tuple(specs)


def _show_dims(tensor_type) -> str:
    if not tensor_type.HasField("shape"):
        return "[unknown rank]"
    dims = [str(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else (d.dim_param or "?")
            for d in tensor_type.shape.dim]
    return "[" + ", ".join(dims) + "]"
