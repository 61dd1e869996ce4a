"""Converters for ONNX's recurrent layers (RNN, GRU, LSTM), unrolled over their static sequence length.

The stock importer has none of the three. The input projection of every step is one matrix product over the
whole sequence; each step then adds its recurrent product and applies the gates, in ONNX's order and formulas
(gates z, r, h for GRU; i, o, f, c for LSTM; peepholes i, o, f). A reverse direction runs forward over each
sequence reversed within its length (`sequence_lens`), and steps past a sequence's length keep its state and
output zeros, as the operators define.
"""

from __future__ import annotations

from typing import Callable

from tvm import relax, topi
from tvm.relax.frontend.onnx import onnx_frontend

from .converters import register_converter


def _const(value: float, dtype: str) -> relax.Expr:
    return relax.const(value, dtype)


# name -> (function of x, alpha, beta; default alpha; default beta); None: the function takes no parameter
_ACTIVATIONS: dict[str, tuple[Callable, float | None, float | None]] = {
    "Sigmoid": (lambda x, a, b: relax.op.sigmoid(x), None, None),
    "Tanh": (lambda x, a, b: relax.op.tanh(x), None, None),
    "Relu": (lambda x, a, b: relax.op.nn.relu(x), None, None),
    "LeakyRelu": (lambda x, a, b: relax.op.nn.leakyrelu(x, a), 0.01, None),
    "ThresholdedRelu": (lambda x, a, b: relax.op.where(relax.op.greater(x, _const(a, x.ty.dtype)), x,
                                                       relax.op.zeros_like(x)), 1.0, None),
    "Affine": (lambda x, a, b: relax.op.add(relax.op.multiply(x, _const(a, x.ty.dtype)), _const(b, x.ty.dtype)),
               1.0, 0.0),
    "ScaledTanh": (lambda x, a, b: relax.op.multiply(_const(a, x.ty.dtype),
                                                     relax.op.tanh(relax.op.multiply(x, _const(b, x.ty.dtype)))),
                   1.0, 1.0),
    "HardSigmoid": (lambda x, a, b: relax.op.clip(relax.op.add(relax.op.multiply(x, _const(a, x.ty.dtype)),
                                                               _const(b, x.ty.dtype)), 0.0, 1.0), 0.2, 0.5),
    "Elu": (lambda x, a, b: relax.op.where(relax.op.less(x, _const(0.0, x.ty.dtype)),
                                           relax.op.multiply(_const(a, x.ty.dtype),
                                                             relax.op.subtract(relax.op.exp(x),
                                                                               _const(1.0, x.ty.dtype))), x),
            1.0, None),
    "Softsign": (lambda x, a, b: relax.op.divide(x, relax.op.add(_const(1.0, x.ty.dtype), relax.op.abs(x))),
                 None, None),
    "Softplus": (lambda x, a, b: relax.op.log(relax.op.add(_const(1.0, x.ty.dtype), relax.op.exp(x))), None, None),
}


class _Recurrent(onnx_frontend.OnnxOpConverter):
    """What RNN, GRU and LSTM share: inputs, directions, layout, activations, masking, outputs."""

    gates: int = 1
    default_activations: tuple[str, ...] = ()

    @classmethod
    def _impl_v7(cls, bb, inputs, attr, params):
        inputs = list(inputs) + [None] * (8 - len(inputs))
        data, weight, recurrence, bias, lengths, initial_h = inputs[:6]
        layout = attr.get("layout", 0)
        if layout:  # [batch, seq, ...] -> [seq, batch, ...]
            data = bb.normalize(relax.op.permute_dims(data, [1, 0, 2]))
            initial_h = None if initial_h is None else bb.normalize(relax.op.permute_dims(initial_h, [1, 0, 2]))
        extra = cls._extra_inputs(bb, inputs, layout)
        direction = attr.get("direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        directions = ["forward", "reverse"] if direction == "bidirectional" else [direction]
        hidden = int(attr["hidden_size"])
        steps, batch = (int(d) for d in data.ty.shape.values[:2])
        activations = cls._activations(attr, len(directions))
        results: list[list[relax.Expr]] = []
        for d, name in enumerate(directions):
            def pick(tensor):
                return None if tensor is None else bb.normalize(relax.op.take(tensor, relax.const(d, "int64"), axis=0))

            sequence = cls._reversed(bb, data, lengths) if name == "reverse" else data
            state = [pick(initial_h) if initial_h is not None else
                     bb.normalize(relax.op.zeros((batch, hidden), data.ty.dtype))]
            state += cls._initial_extra_state(bb, extra, d, batch, hidden, data.ty.dtype)
            w, r = pick(weight), pick(recurrence)
            b = pick(bias)
            projected = bb.normalize(relax.op.matmul(sequence, relax.op.permute_dims(w, [1, 0])))
            outputs = []
            for t in range(steps):
                x_t = bb.normalize(relax.op.take(projected, relax.const(t, "int64"), axis=0))
                new_state = cls._step(bb, x_t, state, r, b, pick(extra.get("peepholes")), hidden,
                                      activations[d], attr)
                if lengths is not None:
                    live = bb.normalize(relax.op.expand_dims(
                        relax.op.less(relax.const(t, str(lengths.ty.dtype)), lengths), 1))
                    outputs.append(bb.normalize(relax.op.where(live, new_state[0],
                                                               relax.op.zeros_like(new_state[0]))))
                    state = [bb.normalize(relax.op.where(live, new, old)) for new, old in zip(new_state, state)]
                else:
                    outputs.append(new_state[0])
                    state = new_state
            y = _stacked(bb, outputs, 0)  # [seq, batch, hidden]
            if name == "reverse":
                y = cls._reversed(bb, y, lengths)
            results.append([y, *state])
        y = _stacked(bb, [r[0] for r in results], 1)  # [seq, directions, batch, hidden]
        finals = [_stacked(bb, [r[k] for r in results], 0) for k in range(1, len(results[0]))]
        if layout:
            y = relax.op.permute_dims(y, [2, 0, 1, 3])
            finals = [relax.op.permute_dims(f, [1, 0, 2]) for f in finals]
        outs = [y, *finals][:attr["tvm_custom"]["num_outputs"]]
        return outs[0] if len(outs) == 1 else relax.Tuple(outs)

    @staticmethod
    def _reversed(bb, sequence: relax.Expr, lengths: relax.Expr | None) -> relax.Expr:
        """Time-major `sequence` reversed along time, each batch entry within its length."""
        if lengths is None:
            return bb.emit_te(topi.flip, sequence, axis=0)
        return bb.emit_te(topi.reverse_sequence, sequence, lengths, 0, 1)

    @classmethod
    def _activations(cls, attr, directions: int) -> list[list[Callable[[relax.Expr], relax.Expr]]]:
        names = [n.decode() if isinstance(n, bytes) else n for n in attr.get("activations", [])]
        names = names or list(cls.default_activations) * directions
        alphas, betas = list(attr.get("activation_alpha", [])), list(attr.get("activation_beta", []))
        functions = []
        for name in names:
            if name not in _ACTIVATIONS:
                raise NotImplementedError(f"recurrent activation {name}")
            function, alpha, beta = _ACTIVATIONS[name]
            alpha = alphas.pop(0) if alpha is not None and alphas else alpha
            beta = betas.pop(0) if beta is not None and betas else beta
            functions.append(lambda x, f=function, a=alpha, b=beta: f(x, a, b))
        per = len(cls.default_activations)
        return [functions[d * per:(d + 1) * per] for d in range(directions)]

    @staticmethod
    def _clipped(x: relax.Expr, attr) -> relax.Expr:
        limit = attr.get("clip")
        return x if limit is None else relax.op.clip(x, -float(limit), float(limit))

    @staticmethod
    def _gate(tensor: relax.Expr, index: int, hidden: int) -> relax.Expr:
        """Gate `index` of a [..., gates * hidden] tensor."""
        axis = tensor.ty.ndim - 1
        return relax.op.strided_slice(tensor, axes=[axis], begin=[index * hidden], end=[(index + 1) * hidden])

    @classmethod
    def _extra_inputs(cls, bb, inputs, layout) -> dict[str, relax.Expr]:
        return {}

    @classmethod
    def _initial_extra_state(cls, bb, extra, direction, batch, hidden, dtype) -> list[relax.Expr]:
        return []

    @classmethod
    def _step(cls, bb, x_t, state, r, b, peepholes, hidden, activations, attr) -> list[relax.Expr]:
        raise NotImplementedError


def _stacked(bb, tensors: list[relax.Expr], axis: int) -> relax.Expr:
    """Stacked along a new `axis` (expand + concat: TVM's ConvertLayout fails on `stack`)."""
    return bb.normalize(relax.op.concat([relax.op.expand_dims(t, axis) for t in tensors], axis=axis))


def _biased(x: relax.Expr, b: relax.Expr | None, start: int, gates: int, hidden: int) -> relax.Expr:
    """x plus the bias slice for `gates` gates from gate `start` (W biases first, then R biases)."""
    if b is None:
        return x
    return relax.op.add(x, relax.op.strided_slice(b, axes=[0], begin=[start * hidden],
                                                  end=[(start + gates) * hidden]))


@register_converter("RNN")
class RNN(_Recurrent):
    default_activations = ("Tanh",)

    @classmethod
    def _step(cls, bb, x_t, state, r, b, peepholes, hidden, activations, attr):
        pre = relax.op.add(x_t, relax.op.matmul(state[0], relax.op.permute_dims(r, [1, 0])))
        pre = _biased(_biased(pre, b, 0, 1, hidden), b, 1, 1, hidden)
        return [bb.normalize(activations[0](cls._clipped(pre, attr)))]


@register_converter("GRU")
class GRU(_Recurrent):
    default_activations = ("Sigmoid", "Tanh")

    @classmethod
    def _step(cls, bb, x_t, state, r, b, peepholes, hidden, activations, attr):
        (h,) = state
        f, g = activations
        x_t = bb.normalize(_biased(x_t, b, 0, 3, hidden))  # Wb of z, r, h
        r_zr = relax.op.strided_slice(r, axes=[0], begin=[0], end=[2 * hidden])
        r_h = relax.op.strided_slice(r, axes=[0], begin=[2 * hidden], end=[3 * hidden])
        hr = bb.normalize(_biased(relax.op.matmul(h, relax.op.permute_dims(r_zr, [1, 0])), b, 3, 2, hidden))
        z = bb.normalize(f(cls._clipped(relax.op.add(cls._gate(x_t, 0, hidden), cls._gate(hr, 0, hidden)), attr)))
        reset = bb.normalize(f(cls._clipped(relax.op.add(cls._gate(x_t, 1, hidden), cls._gate(hr, 1, hidden)),
                                            attr)))
        if attr.get("linear_before_reset", 0):
            recurrent = relax.op.multiply(reset, _biased(relax.op.matmul(h, relax.op.permute_dims(r_h, [1, 0])),
                                                         b, 5, 1, hidden))
        else:
            recurrent = _biased(relax.op.matmul(relax.op.multiply(reset, h), relax.op.permute_dims(r_h, [1, 0])),
                                b, 5, 1, hidden)
        candidate = bb.normalize(g(cls._clipped(relax.op.add(cls._gate(x_t, 2, hidden), recurrent), attr)))
        one = relax.const(1.0, str(h.ty.dtype))
        return [bb.normalize(relax.op.add(relax.op.multiply(relax.op.subtract(one, z), candidate),
                                          relax.op.multiply(z, h)))]


@register_converter("LSTM")
class LSTM(_Recurrent):
    default_activations = ("Sigmoid", "Tanh", "Tanh")

    @classmethod
    def _impl_v7(cls, bb, inputs, attr, params):
        if attr.get("input_forget", 0):
            raise NotImplementedError("LSTM with input_forget=1")
        return super()._impl_v7(bb, inputs, attr, params)

    @classmethod
    def _extra_inputs(cls, bb, inputs, layout):
        initial_c, peepholes = inputs[6], inputs[7]
        if layout and initial_c is not None:
            initial_c = bb.normalize(relax.op.permute_dims(initial_c, [1, 0, 2]))
        return {k: v for k, v in (("initial_c", initial_c), ("peepholes", peepholes)) if v is not None}

    @classmethod
    def _initial_extra_state(cls, bb, extra, direction, batch, hidden, dtype):
        if "initial_c" in extra:
            return [bb.normalize(relax.op.take(extra["initial_c"], relax.const(direction, "int64"), axis=0))]
        return [bb.normalize(relax.op.zeros((batch, hidden), dtype))]

    @classmethod
    def _step(cls, bb, x_t, state, r, b, peepholes, hidden, activations, attr):
        h, c = state
        f, g, out = activations
        pre = relax.op.add(x_t, relax.op.matmul(h, relax.op.permute_dims(r, [1, 0])))
        pre = bb.normalize(_biased(_biased(pre, b, 0, 4, hidden), b, 4, 4, hidden))

        def peep(index: int, cell: relax.Expr) -> relax.Expr:  # P holds i, o, f
            return relax.const(0.0, str(cell.ty.dtype)) if peepholes is None else relax.op.multiply(
                relax.op.strided_slice(peepholes, axes=[0], begin=[index * hidden], end=[(index + 1) * hidden]),
                cell)

        i = bb.normalize(f(cls._clipped(relax.op.add(cls._gate(pre, 0, hidden), peep(0, c)), attr)))
        forget = bb.normalize(f(cls._clipped(relax.op.add(cls._gate(pre, 2, hidden), peep(2, c)), attr)))
        cell = bb.normalize(g(cls._clipped(cls._gate(pre, 3, hidden), attr)))
        c_new = bb.normalize(relax.op.add(relax.op.multiply(forget, c), relax.op.multiply(i, cell)))
        o = bb.normalize(f(cls._clipped(relax.op.add(cls._gate(pre, 1, hidden), peep(1, c_new)), attr)))
        return [bb.normalize(relax.op.multiply(o, out(c_new))), c_new]
