"""Frontend: a model in (ONNX file, `onnx.ModelProto`, torch module), a Relax IRModule and its signature out."""

# (imported to register their converters)
from . import arithmetic_ops, checked_ops, missing_ops, narrow_casts, quantized_ops, recurrent_ops  # noqa: F401
from .coverage import OpCoverage, check_supported, op_coverage, supported_ops
from .importer import ImportedModel, import_model
from .loader import LoadedModel, export_torch, load_model, opset_versions, proto_text
from .parameters import bind_inputs, parameter_inputs
from .samples import SampleSet, load_samples
from .signature import Signature, TensorSpec, parse_input_shapes, resolve_input_specs

__all__ = [
    "ImportedModel",
    "LoadedModel",
    "OpCoverage",
    "SampleSet",
    "Signature",
    "TensorSpec",
    "bind_inputs",
    "check_supported",
    "export_torch",
    "import_model",
    "load_model",
    "load_samples",
    "op_coverage",
    "opset_versions",
    "parameter_inputs",
    "parse_input_shapes",
    "proto_text",
    "resolve_input_specs",
    "supported_ops",
]
