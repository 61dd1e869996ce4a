"""Winograd convolution F(m x m, 3 x 3) for 3x3 stride-1 convs in the blocked layout.

A direct 3x3 conv spends 9 multiply-adds per output pixel and channel pair; Winograd's minimal filtering
algorithm (Lavin & Gray, 2016) computes an m x m output tile from an (m + 2) x (m + 2) input tile with
(m + 2)^2: 36 instead of 144 for m = 4, 16 instead of 36 for m = 2. The conv becomes three kernels:

- input transform: each input tile to `V[e, ic, p, ib]` (e the (m+2)^2 tile positions, p the tile);
- a batched GEMM per position, `M[e, oc, p, ob] = sum(V[e, ic, p, ib] * U[e, oc, ic, ib, ob])`, laid out as
  a 1x1 blocked conv so that the blocked conv schedule's register tile runs it;
- output transform back to NCHW[x]c, with the conv's elementwise epilogue (bias, ReLU, residual) fused in.

The weights' transform `U` is done in numpy at compile time (the kernel is a constant). The transforms'
constant matrices are written out as sparse sums with their coefficients (zeros skipped, +-1 as adds), one
expression per row selected by the row index, which the schedule unrolls.
"""

from __future__ import annotations

import functools

import numpy as np
from numpy.polynomial import polynomial

from tvm import te, tirx, topi

KERNEL = 3


@functools.cache
def winograd_matrices(m: int, r: int = KERNEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(AT, G, BT) of F(m, r): `y = AT @ ((G @ g) * (BT @ d))` is the correlation of an (m + r - 1)-long
    input `d` with an r-tap filter `g`. Interpolation points 0, 1, -1, 2, -2, ... and infinity (Toom-Cook:
    evaluation at the points is AT and G, Lagrange interpolation BT, its denominators moved into G).
    Cached (every Winograd conv asks three times) and read-only for that reason."""
    alpha = m + r - 1
    points = [0.0] + [sign * k for k in range(1, alpha) for sign in (1.0, -1.0)][: alpha - 2]
    a_t, g, b_t = np.zeros((m, alpha)), np.zeros((alpha, r)), np.zeros((alpha, alpha))
    for k, point in enumerate(points):
        others = [q for q in points if q != point]
        a_t[:, k] = point ** np.arange(m)
        g[k] = point ** np.arange(r) / np.prod([point - q for q in others])
        b_t[k, : alpha - 1] = polynomial.polyfromroots(others)
    a_t[m - 1, alpha - 1] = 1.0
    g[alpha - 1, r - 1] = 1.0
    b_t[alpha - 1] = polynomial.polyfromroots(points)
    for matrix in (a_t, g, b_t):
        matrix.flags.writeable = False
    return a_t, g, b_t


# Arithmetic one core does per byte of weights it streams from memory (float32 FMA peak over read bandwidth),
# per float32 vector lane: the peak grows with the vector width, a core's read bandwidth does not. AVX-512
# (16 lanes): about 235 GFLOP/s reached by the conv kernels, 19 GB/s streaming Winograd's weights, 12 per
# byte. AVX2 (8 lanes, AMD znver3): a 101 GFLOP/s peak, 6 per byte, with which F(4x4) at 14x14 and F(2x2) at
# 7x7 made ResNet-50 2-8% faster on one thread and 1-3% on two (two runs, 2026-12-07). NEON (4 lanes, 3 per
# byte) follows the same rule, not measured here.
BALANCE_PER_LANE = 0.75
# The transforms, in FLOP-equivalents per transformed element (input and output side): 56x56x64 F(4x4) spent
# 0.094 ms in them against 0.244 ms in its GEMM. And two more kernels and their buffers (about 5 us).
TRANSFORM_COST = 24.0
LAUNCH_COST = 1.2e6
# Winograd must promise this much less time than the direct conv (the costs above are estimates).
MIN_GAIN = 0.15


def _cost(flops: float, weight_bytes: float, lanes: int) -> float:
    """Time in FLOP-equivalents at batch 1: the arithmetic, or streaming the weights if that takes longer."""
    return max(flops, BALANCE_PER_LANE * lanes * weight_bytes)


def tile_size(out_h: int, out_w: int, in_channels: int, out_channels: int, lanes: int) -> int | None:
    """The output tile m (2 or 4) for a 3x3 conv of this shape on a core with `lanes` float32 vector lanes,
    or None to keep the direct conv.

    At batch 1 a conv reads each weight once, and Winograd's transformed weights are (m+2)^2 / 9 times
    larger than the direct conv's (4x for F(4x4)): on small images the GEMM waits for memory. The choice is
    the lowest estimated time (arithmetic or weight streaming, whichever is longer, plus the transforms), each
    tile size with its padded output. Measured inside ResNet-50 (AVX-512, 1 thread): F(4x4) GEMMs at 28x28 and
    56x56 run at the arithmetic peak; at 14x14x256 F(4x4) streamed 9.4 MB of weights at 19 GB/s (0.50 ms)
    where F(2x2) needs 0.44 ms of arithmetic; at 7x7x512 F(2x2) (1.0 ms) was no faster than the direct conv.
    With half the arithmetic rate (AVX2) the weights weigh half as much, and both shapes pay."""
    macs_per_output = in_channels * out_channels
    direct = _cost(2 * 9 * out_h * out_w * macs_per_output, 4 * 9 * macs_per_output, lanes)
    best, best_cost = None, (1 - MIN_GAIN) * direct
    for m in (2, 4):
        positions = (m + KERNEL - 1) ** 2
        tiles = -(-out_h // m) * -(-out_w // m)
        cost = (_cost(2 * positions * tiles * macs_per_output, 4 * positions * macs_per_output, lanes)
                + TRANSFORM_COST * positions * tiles * (in_channels + out_channels) + LAUNCH_COST)
        if cost < best_cost:
            best, best_cost = m, cost
    return best


def _weighted_sum(terms: list[tuple[float, tirx.PrimExpr]]) -> tirx.PrimExpr:
    """sum(c * x) over the nonzero coefficients, +-1 as additions and subtractions."""
    total = None
    for coefficient, value in terms:
        if coefficient == 0.0:
            continue
        if abs(coefficient) != 1.0:
            value, coefficient = value * tirx.const(coefficient, value.dtype), 1.0
        if total is None:
            total = value if coefficient > 0 else -value
        else:
            total = total + value if coefficient > 0 else total - value
    return total


def _select_row(row: tirx.PrimExpr, rows: list) -> tirx.PrimExpr:
    """`rows[row]` for a loop variable `row` (resolved to one row when the loop is unrolled)."""
    value = rows[-1]
    for index in range(len(rows) - 2, -1, -1):
        value = tirx.Select(row == index, rows[index], value)
    return value


def transform_kernel(kernel: np.ndarray, m: int) -> np.ndarray:
    """OIHW[x]i[y]o 3x3 weights to `U[e, oc, ic, ib, ob]` (float32), computed in float64."""
    _, g, _ = winograd_matrices(m)
    alpha = m + KERNEL - 1
    u = np.einsum("ah,bw,kchwio->abkcio", g, g, kernel.astype(np.float64))
    return u.reshape(alpha * alpha, *u.shape[2:]).astype(kernel.dtype)


def input_transform(data: te.Tensor, m: int, padding, out_h: int, out_w: int) -> te.Tensor:
    """NCHW[x]c input to `V[e, ic, p, ib]`: each (m+2) x (m+2) tile of the zero-padded input times BT on
    both sides, rows first (`winograd_input_rows`, per tile) then columns."""
    batch, chunks, in_h, in_w, block = (int(d) for d in data.shape)
    _, _, b_t = winograd_matrices(m)
    alpha = m + KERNEL - 1
    tiles_h, tiles_w = -(-out_h // m), -(-out_w // m)
    pad_top, pad_left = int(padding[0]), int(padding[1])
    padded = topi.nn.pad(data, (0, 0, pad_top, pad_left, 0),
                         (0, 0, tiles_h * m + 2 - in_h - pad_top, tiles_w * m + 2 - in_w - pad_left, 0),
                         name="winograd_data_pad")
    tiles = batch * tiles_h * tiles_w

    def tile_origin(p):
        n, rest = p // (tiles_h * tiles_w), p % (tiles_h * tiles_w)
        return n, rest // tiles_w * m, rest % tiles_w * m

    def rows(ic, p, a, j, ib):
        n, y, x = tile_origin(p)
        return _select_row(a, [_weighted_sum([(b_t[row, i], padded[n, ic, y + i, x + j, ib]) for i in range(alpha)])
                               for row in range(alpha)])

    transformed_rows = te.compute((chunks, tiles, alpha, alpha, block), rows, name="winograd_input_rows")

    def columns(e, ic, p, ib):
        a, b = e // alpha, e % alpha
        return _select_row(b, [_weighted_sum([(b_t[col, j], transformed_rows[ic, p, a, j, ib]) for j in range(alpha)])
                               for col in range(alpha)])

    return te.compute((alpha * alpha, chunks, tiles, block), columns, name="winograd_input")


def batched_gemm(v: te.Tensor, u: te.Tensor, out_dtype: str) -> te.Tensor:
    """`M[e, oc, p, ob] = sum(V[e, ic, p, ib] * U[e, oc, ic, ib, ob])`: per tile position a 1x1 blocked conv
    over the tiles."""
    positions, chunks, tiles, in_block = (int(d) for d in v.shape)
    _, out_chunks, _, _, out_block = (int(d) for d in u.shape)
    ic = te.reduce_axis((0, chunks), "ic")
    ib = te.reduce_axis((0, in_block), "ib")
    return te.compute(
        (positions, out_chunks, tiles, out_block),
        lambda e, oc, p, ob: te.sum(v[e, ic, p, ib].astype(out_dtype) * u[e, oc, ic, ib, ob].astype(out_dtype),
                                    axis=[ic, ib]),
        name="winograd_gemm",
    )


def output_transform(gemm: te.Tensor, m: int, batch: int, out_h: int, out_w: int) -> te.Tensor:
    """`M` back to NCHW[x]c: each tile's (m+2) x (m+2) products times AT on both sides, columns first
    (`winograd_output_cols`), cropped to the output size."""
    _, chunks, tiles, block = (int(d) for d in gemm.shape)
    a_t, _, _ = winograd_matrices(m)
    alpha = m + KERNEL - 1
    tiles_h, tiles_w = -(-out_h // m), -(-out_w // m)

    def columns(oc, p, a, j, ob):
        return _select_row(j, [_weighted_sum([(a_t[col, b], gemm[a * alpha + b, oc, p, ob]) for b in range(alpha)])
                               for col in range(m)])

    transformed_cols = te.compute((chunks, tiles, alpha, m, block), columns, name="winograd_output_cols")

    def output(n, oc, y, x, ob):
        p = (n * tiles_h + y // m) * tiles_w + x // m
        return _select_row(y % m, [_weighted_sum([(a_t[row, a], transformed_cols[oc, p, a, x % m, ob])
                                                  for a in range(alpha)]) for row in range(m)])

    return te.compute((batch, chunks, out_h, out_w, block), output, name="winograd_output")
