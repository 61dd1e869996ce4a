"""Back-to-back data movement collapsed: transpose of a transpose, reshape of a reshape.

Exporters emit chains such as reshape -> expand_dims -> permute -> squeeze around attention heads, and layout
conversion can leave a transpose next to its inverse. Each op is a copy of the whole tensor unless fusion
happens to merge it; composed here, a chain becomes one op, and an identity (a transpose that undoes the
previous one, a reshape back to the input's shape) disappears.
"""

from __future__ import annotations

import tvm
from tvm import relax

from .rewrite import bindings, use_counts

# Ops that only reinterpret the shape of a contiguous tensor (row-major order unchanged).
_RESHAPES = ("relax.reshape", "relax.expand_dims", "relax.squeeze", "relax.flatten")


def _static_shape(expr: relax.Expr) -> list[int] | None:
    ty = expr.ty
    if not isinstance(ty, relax.TensorType) or ty.shape is None:
        return None
    dims = ty.shape.values
    return [int(d) for d in dims] if all(isinstance(d, tvm.tirx.IntImm) for d in dims) else None


@relax.expr_functor.mutator
class _Collapser(relax.PyExprMutator):
    def __init__(self, mod: tvm.IRModule, func: relax.Function):
        super().__init__(mod)
        self.uses = use_counts(func)
        self.values = bindings(func)

    def _inner(self, arg: relax.Expr, names: tuple[str, ...]) -> relax.Call | None:
        """The call bound to `arg` if it is one of `names` and `arg` has no other use."""
        value = self.values.get(arg) if isinstance(arg, relax.Var) else None
        if (isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name in names
                and self.uses.get(arg, 0) == 1):
            return value
        return None

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        if isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.permute_dims":
            return self._permute(call)
        if isinstance(call.op, tvm.ir.Op) and call.op.name in _RESHAPES:
            return self._reshape(call)
        return super().visit_call_(call)

    def _permute(self, call: relax.Call) -> relax.Expr:
        inner = self._inner(call.args[0], ("relax.permute_dims",))
        shape = _static_shape(call)
        if inner is None or shape is None or call.attrs.axes is None or inner.attrs.axes is None:
            return super().visit_call_(call)
        outer_axes, inner_axes = [int(a) for a in call.attrs.axes], [int(a) for a in inner.attrs.axes]
        composed = [inner_axes[a] for a in outer_axes]  # output axis i reads the source's axis composed[i]
        source = self.visit_expr(inner.args[0])
        if composed == list(range(len(composed))):
            return source
        return relax.op.permute_dims(source, composed)

    def _reshape(self, call: relax.Call) -> relax.Expr:
        shape = _static_shape(call)
        inner = self._inner(call.args[0], _RESHAPES)
        if shape is None or inner is None or _static_shape(inner.args[0]) is None:
            return super().visit_call_(call)
        while True:  # walk up the whole chain of reshapes
            deeper = self._inner(inner.args[0], _RESHAPES)
            if deeper is None or _static_shape(deeper.args[0]) is None:
                break
            inner = deeper
        source = self.visit_expr(inner.args[0])
        return source if _static_shape(inner.args[0]) == shape else relax.op.reshape(source, shape)


@tvm.transform.module_pass(opt_level=0, name="CollapseDataMovement")
class CollapseDataMovement:
    """Module pass: compose chains of transposes and of reshape-like ops; drop the identities."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        for gvar, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                mod[gvar] = _Collapser(mod, func).visit_expr(func)
        return relax.transform.DeadCodeElimination()(mod)
