"""ONNX -> Relax IRModule with weights bound as constants and every input shape static."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import onnx
import tvm
from tvm import relax

from ..errors import UserError
from .converters import convert_map, edgetune_converters
from .coverage import check_supported, supported_ops
from .functions import expand_functions
from .opsets import upgrade_old_opsets
from .loader import LoadedModel
from .narrow_formats import NARROW_TYPES, carrier_dtype
from .narrow_types import lower_narrow_types
from .parameters import check_parameters_known
from .scan import unroll_scans
from .signature import Signature, TensorSpec, resolve_input_specs
from .static_values import fold_static_values


@dataclass
class ImportedModel:
    mod: tvm.IRModule
    signature: Signature
    source: LoadedModel


def import_model(model: LoadedModel, input_shapes: Mapping[str, Sequence[int]] | None = None) -> ImportedModel:
    """Resolve the signature and convert the graph; raise `UserError` for what the importer cannot take."""
    proto = model.proto
    if proto.functions:
        proto = onnx.inliner.inline_local_functions(proto)
    proto = upgrade_old_opsets(proto, convert_map())
    inputs = resolve_input_specs(proto, input_shapes)
    not_tensors = [o.name for o in proto.graph.output if not o.type.HasField("tensor_type")]
    if not_tensors:
        raise UserError(f"outputs {', '.join(map(repr, not_tensors))} are not tensors (sequences, maps and "
                        "optionals are not supported as outputs)")
    proto = expand_functions(proto, supported_ops())
    proto = fold_static_values(proto, inputs)
    unrolled = unroll_scans(proto)  # after folding: a Scan's length may come from shape arithmetic
    if unrolled is not proto:  # the bodies may hold function operators and shape arithmetic of their own
        proto = fold_static_values(expand_functions(unrolled, supported_ops()), inputs)
    declared_outputs = {o.name: o.type.tensor_type.elem_type for o in proto.graph.output}
    proto = lower_narrow_types(proto)
    check_supported(proto)
    check_parameters_known(proto)
    from tvm.relax.frontend.onnx import from_onnx

    try:
        with warnings.catch_warnings(), edgetune_converters():
            warnings.simplefilter("ignore")  # the importer re-runs onnx.checker and warns on what we checked
            renamed = identifier_inputs(proto, [s.name for s in inputs])
            mod = from_onnx(
                renamed,
                shape_dict={identifier(s.name): list(s.shape) for s in inputs},
                dtype_dict={identifier(s.name): carrier_dtype(s.dtype) for s in inputs},
                keep_params_in_input=False,
                sanitize_input_names=False,
            )
    except (tvm.error.OpNotImplemented, NotImplementedError) as exc:
        raise UserError(f"the importer cannot convert this model: {_summary(exc)}") from None
    # TVM errors are RuntimeErrors; its type checks (e.g. int8 data into a float32 Conv) raise TypeError
    except (ValueError, RuntimeError, AssertionError, KeyError, IndexError, TypeError) as exc:
        raise UserError(f"the importer rejected the model ({type(exc).__name__}: {_summary(exc)}); "
                        "check the graph with `edgetune inspect` or re-export it") from None
    _check_no_empty_tensors(mod)
    outputs = tuple(_narrow(spec, declared_outputs.get(spec.name)) for spec in
                    _output_specs(mod, [o.name for o in proto.graph.output]))
    return ImportedModel(mod, Signature(inputs, outputs), model)


def identifier(name: str) -> str:
    """`name` as a C identifier: Relax parameters keep input names, and generated CUDA C names its kernel
    parameters after them, so an ONNX name such as `gpu_0/data_0` would not compile there."""
    name = re.sub(r"\W", "_", name)
    return name if name[:1].isalpha() or name[:1] == "_" else f"_{name}"


def identifier_inputs(proto: onnx.ModelProto, inputs: Sequence[str]) -> onnx.ModelProto:
    """A copy of `proto` whose `inputs` are C identifiers (every use and definition renamed, subgraphs
    included); `proto` itself when they already are. The signature keeps the model's own names."""
    names = {name: identifier(name) for name in inputs if identifier(name) != name}
    if not names:
        return proto
    clashes = sorted(set(names.values()) & _value_names(proto.graph))
    if clashes:
        raise UserError(f"input names {', '.join(sorted(names))} cannot become C identifiers ({', '.join(clashes)} "
                        "is taken); rename the model's inputs")
    proto = onnx.ModelProto.FromString(proto.SerializeToString())

    def rename(graph: onnx.GraphProto) -> None:
        for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
            value.name = names.get(value.name, value.name)
        for node in graph.node:
            node.input[:] = [names.get(n, n) for n in node.input]
            node.output[:] = [names.get(n, n) for n in node.output]
            for attribute in node.attribute:
                for subgraph in (*([attribute.g] if attribute.HasField("g") else []), *attribute.graphs):
                    rename(subgraph)

    rename(proto.graph)
    return proto


def _value_names(graph: onnx.GraphProto) -> set[str]:
    return {n for node in graph.node for n in (*node.input, *node.output)} | {
        v.name for v in (*graph.input, *graph.output, *graph.value_info, *graph.initializer)}


def _empty(ty) -> bool:
    """A tensor type with a static dimension of 0 or less."""
    return (isinstance(ty, relax.TensorType) and isinstance(ty.shape, relax.ShapeExpr)
            and any(isinstance(dim, tvm.tirx.IntImm) and int(dim) <= 0 for dim in ty.shape.values))


def _check_no_empty_tensors(mod: tvm.IRModule) -> None:
    """Refuse an operator that makes an empty tensor out of non-empty ones, such as a pooling window larger
    than its input: ONNX's shape inference and onnxruntime let it through, and TVM's legalization rejects it
    only in the pass pipeline, as an internal error. Empty tensors the model is given (ONNX's own cases use
    them) pass through."""
    for block in mod["main"].body.blocks:
        for binding in block.bindings:
            value = binding.value
            if not isinstance(value, relax.Call) or not _empty(binding.var.ty):
                continue
            if any(_empty(getattr(arg, "ty", None)) for arg in value.args):
                continue
            raise UserError(f"{value.op.name} makes an empty tensor of shape {binding.var.ty.shape} (a window "
                            "larger than its input?); check the input shapes with `edgetune inspect` or "
                            "re-export the model")


def _output_specs(mod: tvm.IRModule, names: list[str]) -> tuple[TensorSpec, ...]:
    ret = mod["main"].ret_ty
    fields = list(ret.fields) if isinstance(ret, tvm.ir.TupleType) else [ret]
    specs = []
    for name, field in zip(names, fields):
        if not isinstance(field, relax.TensorType) or not isinstance(field.shape, relax.ShapeExpr):
            raise UserError(f"output {name!r} has no static shape after import; fix the input shapes with "
                            "--input-shape")
        dims = []
        for dim in field.shape.values:
            if not isinstance(dim, tvm.tirx.IntImm):
                raise UserError(f"output {name!r} has a data-dependent shape ({field.shape}); edgetune needs "
                                "static output shapes")
            dims.append(int(dim))
        specs.append(TensorSpec(name, tuple(dims), str(field.dtype)))
    return tuple(specs)


def _narrow(spec: TensorSpec, elem_type: int | None) -> TensorSpec:
    """An output compiled on a narrow type's carrier, declared as the narrow type it carries."""
    fmt = NARROW_TYPES.get(elem_type)
    return spec if fmt is None else TensorSpec(spec.name, spec.shape, fmt.name)


def _summary(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__
