"""Loading a model from what the user hands over: a path, an `onnx.ModelProto` or a `torch.nn.Module`.

Whatever the source, the result is a checked `onnx.ModelProto` plus the sha256 of its serialized form, which
the manifest records so that an artifact can always be traced back to the exact model it came from.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import onnx
import onnx.numpy_helper

from ..errors import UserError

ModelSource = str | os.PathLike | onnx.ModelProto | Any  # Any: a torch.nn.Module


@dataclass
class LoadedModel:
    proto: onnx.ModelProto
    sha256: str
    origin: str  # path, "<onnx.ModelProto>" or "<torch:ClassName>"


def load_model(source: ModelSource, example_inputs: Sequence[Any] | None = None,
               input_names: Sequence[str] | None = None) -> LoadedModel:
    """Load, parse and check a model; raise `UserError` naming the problem otherwise."""
    if isinstance(source, onnx.ModelProto):
        proto, origin = source, "<onnx.ModelProto>"
    elif isinstance(source, (str, os.PathLike)):
        proto, origin = _load_file(Path(source)), str(source)
    elif _is_torch_module(source):
        if example_inputs is None:
            raise UserError("a torch.nn.Module needs example inputs: pass example_inputs=(tensor, ...)")
        proto = export_torch(source, example_inputs, input_names)
        origin = f"<torch:{type(source).__name__}>"
    else:
        raise UserError(f"cannot compile a {type(source).__name__}; pass an .onnx path, an onnx.ModelProto "
                        "or a torch.nn.Module with example_inputs")
    _check(proto, origin)
    return LoadedModel(proto, hashlib.sha256(proto.SerializeToString()).hexdigest(), origin)


def _load_file(path: Path) -> onnx.ModelProto:
    if not path.exists():
        raise UserError(f"model file {path} does not exist; check the path")
    if path.is_dir():
        raise UserError(f"model path {path} is a folder; pass the .onnx file inside it")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise UserError(f"{path} is not an ONNX model ({type(exc).__name__}); pass an .onnx file") from None
    # Protobuf parses many byte strings into an empty message: a real model always names an IR version.
    if proto.ir_version == 0 or not proto.HasField("graph"):
        raise UserError(f"{path} is not an ONNX model (no IR version or graph in it); pass an .onnx file")
    try:
        onnx.load_external_data_for_model(proto, str(path.parent))
    except (OSError, ValueError, onnx.checker.ValidationError) as exc:  # a missing file: ValidationError
        raise UserError(f"{path}: cannot read its external weight data ({_first_line(exc)}); keep the data files next "
                        "to the model") from None
    return proto


def _check(proto: onnx.ModelProto, origin: str) -> None:
    """onnx.checker, then strict type and shape inference: the checker passes graphs whose tensors disagree
    (an int16 input into a float Conv, negative pads, a dimension past int64), which TVM would only reject
    deep in its importer or passes, as an internal error."""
    try:
        onnx.checker.check_model(proto)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise UserError(f"{origin} fails onnx.checker: {_first_line(exc)}; fix or re-export the model") from None
    for init in proto.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            continue
        try:
            onnx.numpy_helper.to_array(init)
        except (ValueError, TypeError) as exc:  # e.g. raw data of another size than its dims say
            raise UserError(f"{origin}: initializer {proto_text(init.name)!r} does not hold the data its shape "
                            f"{list(init.dims)} says ({_first_line(exc)}); fix or re-export the model") from None
    try:
        onnx.shape_inference.infer_shapes(proto, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError, ValueError) as exc:
        if _inside_function_body(str(exc)):
            return  # ONNX's inference of its own function bodies (MeanVarianceNormalization) is not the model's fault
        raise UserError(f"{origin}: its types or shapes do not agree ({_first_line(exc)}); fix or re-export "
                        "the model") from None


def _inside_function_body(message: str) -> bool:
    """Whether an inference error was raised for a node of an operator's function body (ONNX reports it nested
    inside the operator's own error, on one line) rather than for a node of the model."""
    lines = message.strip().splitlines()
    return bool(lines) and lines[0].count("Inference error(s):") > 1


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def opset_versions(proto: onnx.ModelProto) -> dict[str, int]:
    """Domain -> opset version, as the manifest and `edgetune inspect` show them."""
    return {proto_text(op.domain) or "ai.onnx": op.version for op in proto.opset_import}


def proto_text(value: str | bytes) -> str:
    """A string field of a parsed model: protobuf hands over bytes where the field is not valid UTF-8."""
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _is_torch_module(obj: Any) -> bool:
    return any(c.__module__.startswith("torch.nn") and c.__name__ == "Module" for c in type(obj).__mro__)


def export_torch(module: Any, example_inputs: Sequence[Any], input_names: Sequence[str] | None = None,
                 opset: int = 17) -> onnx.ModelProto:
    """Export a torch module with `torch.onnx.export` at fixed shapes (those of `example_inputs`)."""
    import torch  # only needed for this source; torch is an optional extra

    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    example_inputs = tuple(example_inputs)
    names = list(input_names) if input_names else [f"input_{i}" for i in range(len(example_inputs))]
    was_training = module.training
    module.eval()
    try:
        with tempfile.TemporaryDirectory(prefix="edgetune-export-") as tmp:
            path = os.path.join(tmp, "model.onnx")
            # The TorchScript exporter is used for its speed (tens of ms against seconds) and fixed opset.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, example_inputs, path, input_names=names, opset_version=opset,
                                  dynamo=False)
            return onnx.load(path)
    except Exception as exc:
        raise UserError(f"torch.onnx.export failed for {type(module).__name__}: {exc}".splitlines()[0]) from None
    finally:
        module.train(was_training)
