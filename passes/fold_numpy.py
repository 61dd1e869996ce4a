"""Constant folding in numpy for the shape and arithmetic operators that weight preparation is made of.

TVM's `FoldConstant` evaluates each foldable call by legalizing it and compiling it with LLVM: on
light_resnet50 its two runs (BatchNorm constants, then the blocked weights' layout transforms) took 14 of the
18 s of the whole compile. These operators have exact numpy equivalents, so they are folded here first and
`FoldConstant` is left with whatever else there is.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import tvm
from tvm import relax

from .rewrite import rewrite_relax_functions


def _shape(expr: relax.Expr) -> tuple[int, ...] | None:
    if isinstance(expr, relax.ShapeExpr) and all(isinstance(d, tvm.tirx.IntImm) for d in expr.values):
        return tuple(int(d) for d in expr.values)
    return None


_INDEX_OPS = {tvm.tirx.Add: np.add, tvm.tirx.Sub: np.subtract, tvm.tirx.Mul: np.multiply,
              tvm.tirx.FloorDiv: np.floor_divide, tvm.tirx.FloorMod: np.mod}


def _eval_index(expr, env: dict) -> np.ndarray:
    """An index expression of an IndexMap, evaluated elementwise over numpy index grids."""
    if isinstance(expr, tvm.tirx.IntImm):
        return np.int64(expr.value)
    if isinstance(expr, tvm.tirx.Var):
        return env[expr]
    op = _INDEX_OPS.get(type(expr))
    if op is None:
        raise KeyError(type(expr).__name__)
    return op(_eval_index(expr.a, env), _eval_index(expr.b, env))


def _layout_transform(call: relax.Call, data: np.ndarray) -> np.ndarray | None:
    """Scatter every element to its mapped position (a bijection when there is no padding)."""
    out_shape = _shape(call.ty.shape)
    index_map = call.attrs.index_map
    if call.attrs.pad_value is not None or out_shape is None or int(np.prod(out_shape)) != data.size:
        return None
    grids = np.indices(data.shape, dtype=np.int64, sparse=True)
    try:
        env = dict(zip(index_map.initial_indices, grids))
        targets = [np.broadcast_to(_eval_index(e, env), data.shape) for e in index_map.final_indices]
    except KeyError:
        return None  # an index expression beyond + - * // %: leave it to FoldConstant
    out = np.empty(out_shape, dtype=data.dtype)
    out[tuple(targets)] = data
    return out


def _float_binary(fn: Callable) -> Callable:
    def apply(call: relax.Call, lhs: np.ndarray, rhs: np.ndarray) -> np.ndarray | None:
        if lhs.dtype.kind != "f" or rhs.dtype != lhs.dtype:
            return None  # integer division and type promotion differ from numpy's
        return fn(lhs, rhs)

    return apply


_FOLDERS: dict[str, Callable[..., np.ndarray | None]] = {
    "relax.expand_dims": lambda call, x: np.expand_dims(x, tuple(int(a) for a in call.attrs.axis)),
    "relax.permute_dims": lambda call, x: np.transpose(x, None if call.attrs.axes is None
                                                       else [int(a) for a in call.attrs.axes]),
    "relax.layout_transform": _layout_transform,
    "relax.sqrt": lambda call, x: np.sqrt(x) if x.dtype.kind == "f" else None,
    "relax.add": _float_binary(np.add),
    "relax.subtract": _float_binary(np.subtract),
    "relax.multiply": _float_binary(np.multiply),
    "relax.divide": _float_binary(np.divide),
}
_SHAPE_FOLDERS: dict[str, Callable[[np.ndarray, tuple[int, ...]], np.ndarray]] = {
    "relax.broadcast_to": lambda x, shape: np.broadcast_to(x, shape),
    "relax.reshape": lambda x, shape: x.reshape(shape),
}


@relax.expr_functor.mutator
class _NumpyFolder(relax.PyExprMutator):
    def _constant(self, expr: relax.Expr) -> np.ndarray | None:
        """The value of a constant argument, looking through variables bound to constants."""
        if isinstance(expr, relax.Var):
            expr = self.lookup_binding(expr)
        return expr.value.numpy() if isinstance(expr, tvm.ir.GenericConst) else None

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        call = super().visit_call_(call)
        if not isinstance(call.op, tvm.ir.Op) or not isinstance(call.ty, relax.TensorType):
            return call
        name = call.op.name
        args = [self._constant(arg) for arg in call.args]
        if name in _SHAPE_FOLDERS and args[0] is not None:
            shape = _shape(call.args[1])
            value = None if shape is None else _SHAPE_FOLDERS[name](args[0], shape)
        elif name in _FOLDERS and args and all(arg is not None for arg in args):
            value = _FOLDERS[name](call, *args)
        else:
            return call
        if value is None or str(value.dtype) != str(call.ty.dtype):
            return call
        return relax.const(np.asarray(value, order="C"), str(call.ty.dtype))  # (ascontiguousarray makes 0-d 1-d)


@tvm.transform.module_pass(opt_level=0, name="NumpyFoldConstant")
class NumpyFoldConstant:
    """Fold constant-only calls of the operators above; others are left for `FoldConstant`."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        mod = rewrite_relax_functions(mod, lambda module, _func: _NumpyFolder(module))
        return relax.transform.DeadCodeElimination()(mod)  # the folded intermediates
