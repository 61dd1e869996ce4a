"""Injective producers merged into the convolution that consumes them, as a prologue of its kernel.

TVM's FuseOps fuses elementwise consumers into a conv (its epilogue) but never a producer: an injective op
whose only consumer is a conv stays a kernel of its own, writing a tensor that the conv reads back. In
DenseNet every layer starts with BatchNorm + ReLU on the concatenated features (a pre-activation that cannot
fold into a weight) and ended up as one such kernel per layer; pads and layout transforms land there too.
`MergeConvPrologues` runs between FuseOps and FuseTIR: a group made only of injective kernels (or one such
kernel) whose result feeds nothing but the data input of a conv group is merged into that group, so FuseTIR
emits one kernel. The conv schedules compute such a prologue once, rows in parallel, into the conv's input
buffer (as they do padding): fewer launches, the same arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import relax, s_tir
from tvm.s_tir.dlight.analysis import normalize_prim_func

from .legalize import INT8_CONV, UINT7_CONV
from .rewrite import ChainFuser, replace_with_kernels

# The conv blocks whose schedules (`targets.cpu_schedule`) compute producer stages before the reduction.
CONV_BLOCKS = ("conv2d_nchwc", INT8_CONV, UINT7_CONV, "conv2d_nchw", "group_conv2d_nchw")


@dataclass
class _Step:
    kernel: tvm.ir.GlobalVar
    args: list  # each an index into the group's inputs (int) or an earlier step's result (_Step)
    out_ty: relax.Type


@dataclass
class _Group:
    """A fused group (or a lone call_tir) as a list of kernel calls over numbered inputs."""

    inputs: list[relax.Expr]
    steps: list[_Step]
    name: str


def _single_injective(func: tvm.tirx.PrimFunc) -> bool:
    """The kernel is one spatial loop nest: elementwise, broadcast, pad, concat or a layout transform (which
    AnnotateTIROpPattern calls opaque because of its index arithmetic). Kernels of several stages (LRN) keep
    their own schedules."""
    infos = normalize_prim_func(s_tir.Schedule(func))
    return infos is not None and len(infos) == 1 and infos[0].is_injective()


def _anchor(func: tvm.tirx.PrimFunc) -> str | None:
    """The name of the kernel's anchor (its main reduction) block, as MetaSchedule finds it."""
    anchor = s_tir.analysis.find_anchor_sblock(tvm.IRModule({"main": func}))
    return anchor.name_hint if anchor is not None else None


@relax.expr_functor.mutator
class _PrologueMerger(ChainFuser):
    def __init__(self, mod: tvm.IRModule, func: relax.Function):
        super().__init__(mod, func)
        self.mod = mod

    def _group(self, call: relax.Call) -> _Group | None:
        """`call` as a list of kernel calls: a call of a fused (Primitive) function, or a single call_tir."""
        if isinstance(call.op, tvm.ir.Op) and call.op.name == "relax.call_tir":
            kernel, args = call.args[0], list(call.args[1].fields)
            return _Group(args, [_Step(kernel, list(range(len(args))), call.ty)], kernel.name_hint)
        if not isinstance(call.op, tvm.ir.GlobalVar):
            return None
        func = self.mod[call.op]
        if not isinstance(func, relax.Function) or not func.attrs or "Primitive" not in func.attrs:
            return None
        if len(func.body.blocks) != 1:
            return None
        env: dict = {param: i for i, param in enumerate(func.params)}
        steps = []
        for binding in func.body.blocks[0].bindings:
            value = binding.value
            if not (isinstance(binding, relax.VarBinding) and isinstance(value, relax.Call)
                    and isinstance(value.op, tvm.ir.Op) and value.op.name == "relax.call_tir"
                    and isinstance(value.args[1], relax.Tuple) and all(a in env for a in value.args[1].fields)):
                return None
            steps.append(_Step(value.args[0], [env[a] for a in value.args[1].fields], value.ty))
            env[binding.var] = steps[-1]
        if not func.body.body.same_as(func.body.blocks[0].bindings[-1].var):
            return None
        return _Group(list(call.args), steps, call.op.name_hint)

    def _is_conv(self, step: _Step) -> bool:
        return _anchor(self.mod[step.kernel]) in CONV_BLOCKS

    def _match(self, call: relax.Call) -> relax.Expr | None:
        consumer = self._group(call)
        if consumer is None:
            return None
        conv = next((s for s in consumer.steps if self._is_conv(s)), None)
        if conv is None:
            return None
        data_index = conv.args[0]
        while isinstance(data_index, _Step):  # through a prologue merged before: its first operand
            data_index = data_index.args[0]
        data = consumer.inputs[data_index]
        if not isinstance(data, relax.Var) or self.uses.get(data, 0) != 1 or data not in self.values:
            return None
        if sum(isinstance(a, int) and a == data_index for s in consumer.steps for a in s.args) != 1:
            return None  # the conv's input is read elsewhere in the group too (a residual): keep it
        producer_call = self.values[data]
        producer = self._group(producer_call) if isinstance(producer_call, relax.Call) else None
        if producer is None or not all(_single_injective(self.mod[s.kernel]) for s in producer.steps):
            return None
        return self._emit(producer, consumer, data_index)

    def _emit(self, producer: _Group, consumer: _Group, data_index: int) -> relax.Expr:
        """One Primitive function running `producer`'s steps, then `consumer`'s on their result."""
        inputs = [self.visit_expr(x) for x in producer.inputs]
        consumer_index = {}
        for i, x in enumerate(consumer.inputs):
            if i != data_index:
                consumer_index[i] = len(inputs)
                inputs.append(self.visit_expr(x))
        params = [relax.Var(f"p{i}", x.ty) for i, x in enumerate(inputs)]
        results: dict[int, relax.Var] = {}
        block = []

        def emit(step: _Step, resolve) -> relax.Var:
            var = relax.DataflowVar(f"lv{len(block)}", step.out_ty)
            call = relax.call_tir(step.kernel, relax.Tuple([resolve(a) for a in step.args]), step.out_ty)
            block.append(relax.VarBinding(var, call))
            results[id(step)] = var
            return var

        for step in producer.steps:
            emit(step, lambda a: params[a] if isinstance(a, int) else results[id(a)])
        produced = results[id(producer.steps[-1])]
        for step in consumer.steps:
            emit(step, lambda a: (produced if a == data_index else params[consumer_index[a]])
                 if isinstance(a, int) else results[id(a)])
        output = relax.Var("gv", consumer.steps[-1].out_ty)
        block[-1] = relax.VarBinding(output, block[-1].value)
        func = relax.Function(params, relax.SeqExpr([relax.DataflowBlock(block)], output),
                              consumer.steps[-1].out_ty, is_pure=True)
        func = func.with_attr("Primitive", True)
        name = f"fused_{producer.name.removeprefix('fused_')}_{consumer.name.removeprefix('fused_')}"
        return relax.Call(self.builder_.add_func(func, name), inputs)


@tvm.transform.module_pass(opt_level=0, name="MergeConvPrologues")
class MergeConvPrologues:
    """Module pass (between FuseOps and FuseTIR): injective groups feeding only a conv's input join its group."""

    def transform_module(self, mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        while True:  # a merged group can take the producer before it in the next round
            fusers = []

            def make(module: tvm.IRModule, func: relax.Function) -> _PrologueMerger:
                fusers.append(_PrologueMerger(module, func))
                return fusers[-1]

            mod = replace_with_kernels(mod, make)
            if not any(fuser.matched for fuser in fusers):
                return mod
