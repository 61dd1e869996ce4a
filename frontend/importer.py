"""ONNX -> Relax IRModule with weights bound as constants and every input shape static."""

from __future__ import annotations

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
from .parameters import check_parameters_known
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
    check_supported(proto)
    proto = fold_static_values(proto, inputs)
    check_parameters_known(proto)
    from tvm.relax.frontend.onnx import from_onnx

    try:
        with warnings.catch_warnings(), edgetune_converters():
            warnings.simplefilter("ignore")  # the importer re-runs onnx.checker and warns on what we checked
            mod = from_onnx(
                proto,
                shape_dict={s.name: list(s.shape) for s in inputs},
                dtype_dict={s.name: s.dtype for s in inputs},
                keep_params_in_input=False,
                sanitize_input_names=False,
            )
    except (tvm.error.OpNotImplemented, NotImplementedError) as exc:
        raise UserError(f"the importer cannot convert this model: {_summary(exc)}") from None
    except (ValueError, RuntimeError, AssertionError, KeyError, IndexError) as exc:  # TVM errors are RuntimeErrors
        raise UserError(f"the importer rejected the model ({type(exc).__name__}: {_summary(exc)}); "
                        "check the graph with `edgetune inspect` or re-export it") from None
    outputs = _output_specs(mod, [o.name for o in proto.graph.output])
    return ImportedModel(mod, Signature(inputs, outputs), model)


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


def _summary(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__
