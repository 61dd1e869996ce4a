"""Models at opsets older than the importer's converters, upgraded with `onnx.version_converter`.

The importer picks, per operator, its newest converter version not above the model's opset, and falls back to
its oldest one when the model is older still: an opset-10 Resize (inputs X, scales) would then be read with
opset-18 semantics (X, roi, scales, sizes). A model that uses an operator older than every converter of it is
upgraded to the first opset the converters cover, so each node is read by a converter written for it.
"""

from __future__ import annotations

import onnx

from ..errors import UserError
from .coverage import iter_nodes


def _converter_versions(converter: type) -> list[int]:
    return sorted(int(name[len("_impl_v"):]) for name in dir(converter) if name.startswith("_impl_v"))


def required_opset(model: onnx.ModelProto, convert_map: dict[str, type]) -> tuple[int, list[str]]:
    """The lowest default-domain opset every node's converter implements, and the operators that need it."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    needed, operators = opset, []
    for node in iter_nodes(model.graph):
        converter = convert_map.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        versions = _converter_versions(converter) if converter is not None else []
        if versions and versions[0] > opset:
            needed = max(needed, versions[0])
            operators.append(node.op_type)
    return needed, sorted(set(operators))


def upgrade_old_opsets(model: onnx.ModelProto, convert_map: dict[str, type]) -> onnx.ModelProto:
    """`model`, converted to a newer opset where an operator is older than all of its converters."""
    target, operators = required_opset(model, convert_map)
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if target <= current:
        return model
    try:
        return onnx.version_converter.convert_version(model, target)
    except Exception as exc:  # noqa: BLE001 - the converter raises RuntimeError and friends
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"opset {current} {', '.join(operators)} can only be imported from opset {target}, "
                        f"and onnx.version_converter could not upgrade the model ({first}); re-export it at "
                        f"opset {target} or newer") from None
