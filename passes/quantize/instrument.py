"""Instrumentation: a copy of `main` that also returns chosen intermediate tensors.

Calibration and the per-layer report run the model once per sample and need the tensors quantization
touches; returning them as extra outputs lets the normal pipeline (passes, schedules, build) run the model
at full speed instead of interpreting it."""

from __future__ import annotations

from typing import Sequence

import tvm
from tvm import relax


def with_extra_outputs(mod: tvm.IRModule, tensors: Sequence[relax.Expr]) -> tvm.IRModule:
    """`mod` whose `main` returns `(original result, *tensors)`; `tensors` are variables of `main`."""
    func = mod["main"]
    body = func.body
    blocks = list(body.blocks)
    defined_in = {binding.var: i for i, block in enumerate(blocks) for binding in block.bindings}
    extra: dict[int, list[relax.VarBinding]] = {}
    exported = []
    for i, tensor in enumerate(tensors):
        if isinstance(tensor, relax.DataflowVar):  # visible outside its dataflow block only through a new var
            var = relax.Var(f"observed_{i}", tensor.ty)
            extra.setdefault(defined_in[tensor], []).append(relax.VarBinding(var, tensor))
            exported.append(var)
        else:
            exported.append(tensor)
    for index, bindings in extra.items():
        block = blocks[index]
        blocks[index] = relax.DataflowBlock(list(block.bindings) + bindings)
    result = relax.Tuple([body.body, *exported])
    ret_type = relax.TupleType([body.body.ty, *(t.ty for t in exported)])
    new_func = relax.Function(func.params, relax.SeqExpr(blocks, result), ret_type, func.is_pure, func.attrs)
    out = mod.clone()
    out["main"] = new_func
    return relax.transform.Normalize()(out)
