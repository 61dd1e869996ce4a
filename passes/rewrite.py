"""Running a Relax expression mutator over every Relax function of a module (the body of edgetune's passes),
and the use counts the rewrites check before folding an intermediate away."""

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


def use_counts(func: relax.Function) -> dict[relax.Var, int]:
    """How often each variable is referenced in `func`'s body (the return value included)."""
    counts: dict[relax.Var, int] = {}

    def visit(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Var):
            counts[expr] = counts.get(expr, 0) + 1

    relax.analysis.post_order_visit(func.body, visit)
    return counts
