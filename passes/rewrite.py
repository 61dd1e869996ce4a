"""Running a Relax expression mutator over every Relax function of a module (the body of edgetune's passes),
and what the pattern rewrites look up: use counts (before folding an intermediate away), the operator call
bound to a variable, scalar constants."""

from __future__ import annotations

from typing import Callable

import tvm
from tvm import relax


def rewrite_relax_functions(mod: tvm.IRModule,
                            make_mutator: Callable[[tvm.IRModule, relax.Function], relax.PyExprMutator]
                            ) -> tvm.IRModule:
    """Replace each Relax function of `mod` by what a fresh `make_mutator(mod, func)` makes of it."""
    for gvar, func in mod.functions_items():
        if isinstance(func, relax.Function):
            mod[gvar] = make_mutator(mod, func).visit_expr(func)
    return mod


def replace_with_kernels(mod: tvm.IRModule,
                         make_fuser: Callable[[tvm.IRModule, relax.Function], relax.PyExprMutator]) -> tvm.IRModule:
    """Run a fuser (a mutator that replaces matched chains by new kernels, fused groups or rewritten chains and
    counts them in `matched`) over each Relax function but the fused groups themselves; the module keeps the functions it
    added, and what the chains left unused goes."""
    for gvar, func in list(mod.functions_items()):
        if isinstance(func, relax.Function) and not (func.attrs and "Primitive" in func.attrs):
            fuser = make_fuser(mod, func)
            rewritten = fuser.visit_expr(func)
            if fuser.matched:
                mod = fuser.builder_.get()  # with the kernels it added
                mod[gvar] = rewritten
    return relax.transform.DeadCodeElimination()(mod)


def use_counts(func: relax.Function) -> dict[relax.Var, int]:
    """How often each variable is referenced in `func`'s body (the return value included)."""
    counts: dict[relax.Var, int] = {}

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Var):
            counts[expr] = counts.get(expr, 0) + 1

    relax.analysis.post_order_visit(func.body, visit)
    return counts


class ChainFuser(relax.PyExprMutator):
    """What the pattern fusers share: the function's bindings and use counts for `_match`, which returns a
    call's replacement (None: no match), and `matched`, the replacements made (`replace_with_kernels` keeps
    the module only then). Subclasses are decorated with `relax.expr_functor.mutator`."""

    def __init__(self, mod: tvm.IRModule, func: relax.Function):
        super().__init__(mod)
        self.values = bindings(func)
        self.uses = use_counts(func)
        self.matched = 0

    def _match(self, call: relax.Call) -> relax.Expr | None:
        raise NotImplementedError

    def visit_call_(self, call: relax.Call) -> relax.Expr:
        fused = self._match(call)
        if fused is None:
            return super().visit_call_(call)
        self.matched += 1
        return fused


def bound_call(expr: relax.Expr, values: dict[relax.Var, relax.Expr], name: str) -> relax.Call | None:
    """The call of operator `name` that `expr` is (or that the variable `expr` is bound to in `values`)."""
    value = values.get(expr) if isinstance(expr, relax.Var) else expr
    if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name == name:
        return value
    return None


def sole_use_call(values: dict[relax.Var, relax.Expr], uses: dict[relax.Var, int], expr: relax.Expr,
                  name: str) -> relax.Call | None:
    """`bound_call`, when nothing but the chain being matched uses the result (it may be folded away)."""
    if isinstance(expr, relax.Var) and uses.get(expr, 0) != 1:
        return None
    return bound_call(expr, values, name)


def scalar_constant(expr: relax.Expr | None) -> float | None:
    """A constant holding one element, as a Python float; None for anything else."""
    if isinstance(expr, tvm.ir.GenericConst) and expr.value.numpy().size == 1:
        return float(expr.value.numpy().reshape(()))
    return None


def bindings(func: relax.Function) -> dict[relax.Var, relax.Expr]:
    """Each variable of `func` bound by a plain binding, with its value."""
    return {b.var: b.value for block in func.body.blocks for b in block.bindings if isinstance(b, relax.VarBinding)}
