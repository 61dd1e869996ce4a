"""Rule-based CPU schedules: good code without search, for every LLVM CPU target.

TVM 0.27 leaves CPU kernels as unscheduled scalar loops (and `dlight.cpu` only covers GEMV and reductions),
so these rules give each fused kernel a schedule from its structure: register-tiled conv2d and matmul with
fused epilogues computed per tile, parallel outer loops and vector inner loops for everything else. They are
DLight `ScheduleRule`s parameterised by the vector width, so x86 and ARM share them; MetaSchedule tuning (a
later stage) starts from, and falls back to, this code.
"""

from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple

import tvm
from tvm import s_tir, tirx
from tvm.s_tir import dlight
from tvm.s_tir.dlight.analysis import SBlockInfo, normalize_prim_func
from tvm.target import Target
from tvm.target import codegen
from tvm.target.codegen import llvm_get_vector_width

from ..passes.legalize import INT8_CONV, UINT7_CONV
from .dot_intrinsics import GROUP, dot_intrinsic
from .rules import apply_rules, first_rule


def _x86(target: Target) -> bool:
    return str(target.attrs.get("mtriple", "") or codegen.llvm_get_system_triple()).startswith("x86")


def vector_width(target: Target) -> int:
    """Bits per SIMD register on `target`. For x86 this is read from the target's features: LLVM's own
    answer describes the machine compiling (512 for a `haswell` target built on an AVX-512 host)."""
    if _x86(target):
        return next((bits for feature, bits in (("avx512f", 512), ("avx", 256))
                     if codegen.target_has_features([feature], target)), 128)
    with target:
        return int(llvm_get_vector_width(target))


def vector_registers(target: Target) -> int:
    """SIMD registers the compiler can allocate: 32 with AVX-512 or on AArch64, 16 for AVX2 and SSE."""
    return 32 if vector_width(target) == 512 or not _x86(target) else 16


def vector_lanes(target: Target, dtype_bits: int = 32) -> int:
    """Elements of `dtype_bits` per SIMD register on `target` (at least 4)."""
    width = vector_width(target)
    return max(4, width // dtype_bits) if width > 0 else 4


def _extent(sch: s_tir.Schedule, loop) -> int | None:
    extent = sch.get(loop).extent
    return int(extent) if isinstance(extent, tirx.IntImm) else None


def _largest_divisor(n: int, limit: int) -> int:
    for d in range(min(n, limit), 0, -1):
        if n % d == 0:
            return d
    return 1


# Kernels with fewer loop iterations than this run on the calling thread: waking the pool costs more.
# Measured on the digits example (2 threads): parallel 0.145 ms per inference against 0.024 ms single-threaded.
MIN_PARALLEL_WORK = 1 << 19


def _work(infos: list[SBlockInfo]) -> int | None:
    """Loop iterations of the kernel, summed over its blocks (None if a loop extent is symbolic)."""
    total = 0
    for info in infos:
        extents = [it.dom for it in info.iters]
        if not all(isinstance(e, int) for e in extents):
            return None
        total += math.prod(extents)
    return total


class _CPURule(dlight.ScheduleRule):
    """Common entry of the rules: LLVM targets only, blocks normalised (unit loops dropped) by DLight, and
    loops marked parallel only when the kernel has enough work to pay for waking the thread pool.

    A rule with `tunable` set samples its tile sizes where it is asked for a tunable schedule (MetaSchedule's
    `sample_perfect_tile`, the default tile as the first decision): its schedule is then a design space whose
    traces the tuner searches and records (`tuning_space`)."""

    tunable = False

    def __init__(self, lanes: int):
        self.lanes = lanes
        self.use_threads = True
        self.sampling = False

    def apply(self, func: tirx.PrimFunc, target: Target, tunable: bool) -> s_tir.Schedule | None:
        if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
            return None
        return self.apply_to(s_tir.Schedule(func), tunable)

    def apply_to(self, sch: s_tir.Schedule, tunable: bool = False) -> s_tir.Schedule | None:
        """Schedule the kernel `sch` holds in place (a traced schedule of MetaSchedule's, when tuning)."""
        infos = normalize_prim_func(sch)
        if infos is None:
            return None
        work = _work(infos)
        self.use_threads = work is None or work >= MIN_PARALLEL_WORK
        self.sampling = tunable and self.tunable
        return self.schedule(sch, infos)

    def split_tile(self, sch: s_tir.Schedule, loop, inner: int, most: int) -> list:
        """Split `loop` into (outer, inner) loops, the inner of `inner` iterations; sampled among the divisors
        of its extent up to `most` when the schedule is a tuning space."""
        if not self.sampling:
            return sch.split(loop, [None, inner])
        extent = _extent(sch, loop)
        factors = sch.sample_perfect_tile(loop, n=2, max_innermost_factor=most, decision=[extent // inner, inner])
        return sch.split(loop, factors)

    def parallel(self, sch: s_tir.Schedule, loops: list) -> None:
        """Fuse `loops` into one and run it on the thread pool (if the kernel is worth it)."""
        fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
        if self.use_threads:
            sch.parallel(fused)

    def parallelize_spatial(self, sch: s_tir.Schedule, loops: list, kinds: str, max_fuse: int = 3) -> None:
        """Fuse up to `max_fuse` leading spatial loops and mark them parallel."""
        lead = []
        for loop, kind in zip(loops, kinds):
            if kind != "S" or len(lead) == max_fuse:
                break
            lead.append(loop)
        if lead:
            self.parallel(sch, lead)

    def schedule_prologue(self, sch: s_tir.Schedule, producers: list[SBlockInfo]) -> None:
        """The stages before a conv's reduction (its padding, a prologue `passes.prologue` merged in): each
        chain collapses into its last stage, computed once, rows in parallel, into the buffer the reduction
        reads; a plain copy (an unpadded input) is read in place instead."""
        names = {sch.get(info.block_rv).name_hint for info in producers}
        for info in producers:
            block = info.block_rv
            feeds_reduction = not any(sch.get(c).name_hint in names for c in sch.get_consumers(block))
            if not feeds_reduction or _is_copy(sch.get(block)):
                sch.compute_inline(block)
                continue
            *rows, inner = sch.get_loops(block)
            if rows:
                self.parallel(sch, rows)
            sch.vectorize(inner)

    def schedule(self, sch: s_tir.Schedule, infos: list[SBlockInfo]) -> s_tir.Schedule | None:
        raise NotImplementedError


def _is_copy(block: tirx.SBlock) -> bool:
    """The block only copies one element of another buffer (a reindexing or an identity pad)."""
    return isinstance(block.body, tirx.BufferStore) and isinstance(block.body.value, tvm.ir.expr.TensorLoad)


def _spatial_then_reduction(info: SBlockInfo) -> int:
    """How many spatial loops lead a block whose remaining loops are all reductions (at least one); else 0."""
    kinds = info.dom_kind()
    n_spatial = len(kinds) - len(kinds.lstrip("S"))
    return n_spatial if set(kinds[n_spatial:]) == {"R"} else 0


def _split_conv_blocks(sch: s_tir.Schedule, infos: list[SBlockInfo], name: str):
    """(conv, producers, consumers) of a kernel with exactly one `name` block and only injective others."""
    conv = [b for b in infos if sch.get(b.block_rv).name_hint == name]
    if len(conv) != 1 or any(not b.is_injective() for b in infos if b is not conv[0]):
        return None
    index = infos.index(conv[0])
    return conv[0], infos[:index], infos[index + 1:]


def _tile_in_registers(sch: s_tir.Schedule, block, tile_loop, consumers: list[SBlockInfo], first_reduction,
                       vector_loops: list, tensorize: tuple | None = None, keep_unit_loops: bool = False) -> None:
    """Accumulate the loops under `tile_loop` in a local (register) tile, run the fused epilogue on the tile
    as soon as its reduction ends, and vectorise the tile's innermost loops (or map the update's
    `tensorize = (loop, intrinsic)` onto a tensor intrinsic). `tile_loop` None: the block is already where
    its tile is written back (computed at that loop). `keep_unit_loops`: for a tuning space, where a sampled
    tile of 1 must leave the loops a trace's later instructions count."""
    for info in consumers[:-1]:
        sch.compute_inline(info.block_rv)
    accum = sch.cache_write(block, 0, "local")
    if consumers:
        sch.reverse_compute_inline(consumers[-1].block_rv)
    if tile_loop is not None:
        sch.reverse_compute_at(accum, tile_loop, preserve_unit_loops=keep_unit_loops)
    sch.vectorize(sch.get_loops(accum)[-1])
    for loop in vector_loops:  # before decompose_reduction: the update block alone is no reduction block
        sch.vectorize(loop)
    init = sch.decompose_reduction(block, first_reduction)
    sch.vectorize(sch.get_loops(init)[-1])
    if tensorize is not None:
        sch.tensorize(*tensorize)


class Conv2dNCHW(_CPURule):
    """conv2d / group conv2d in NCHW with a fused elementwise epilogue (convs the blocked layout skips).

    Loop nest: parallel(n, oc_outer, oh) x ow_outer x [ic, kh, kw] x oc_inner (16, unrolled) x ow_inner
    (at most one vector, vectorised). Measured on light_resnet50 here (AVX-512): a 16 x 16 tile runs 3.3x
    faster than 8 x 32 and 1.4x faster than 32 x 16. The oc_inner x ow_inner accumulator tile lives in a
    local buffer (registers), each input row is loaded as a vector and each weight broadcast.
    """

    def __init__(self, lanes: int, oc_tile: int = 16):
        super().__init__(lanes)
        self.oc_tile = oc_tile

    def schedule(self, sch: s_tir.Schedule, infos: list[SBlockInfo]) -> s_tir.Schedule | None:
        found = _split_conv_blocks(sch, infos, "conv2d_nchw") or _split_conv_blocks(sch, infos, "group_conv2d_nchw")
        if found is None:
            return None
        conv_info, producers, consumers = found
        # normalize_prim_func drops unit loops: a batch of 1, and kh/kw of a 1x1 kernel.
        n_spatial = _spatial_then_reduction(conv_info)
        if n_spatial not in (3, 4):
            return None
        block = conv_info.block_rv
        loops = sch.get_loops(block)
        *batch, oc, oh, ow = loops[:n_spatial]
        reduction = loops[n_spatial:]
        oc_ext, ow_ext = _extent(sch, oc), _extent(sch, ow)
        if oc_ext is None or ow_ext is None:
            return None
        ow_in = _largest_divisor(ow_ext, self.lanes) if ow_ext >= self.lanes else ow_ext
        oc_o, oc_i = sch.split(oc, [None, _largest_divisor(oc_ext, self.oc_tile)])
        ow_o, ow_i = sch.split(ow, [None, ow_in])
        sch.reorder(*batch, oc_o, oh, ow_o, *reduction, oc_i, ow_i)
        self.parallel(sch, [*batch, oc_o, oh])
        sch.unroll(oc_i)
        self.schedule_prologue(sch, producers)
        _tile_in_registers(sch, block, ow_o, consumers, reduction[0], [ow_i])
        return sch


class _BlockedConv(_CPURule):
    """What the blocked-layout conv rules share: the kernel's one block named in `block_names` and its loops
    (outer spatial..., ow, oc_block | reductions...)."""

    block_names: tuple[str, ...] = ()

    def _loops(self, sch: s_tir.Schedule, infos: list[SBlockInfo]):
        """(block, producers, consumers, outer loops, ow, oc_block, reduction loops, the position of the
        output channel chunk loop in the outer loops: None with a single chunk), or None."""
        found = next(filter(None, (_split_conv_blocks(sch, infos, name) for name in self.block_names)), None)
        if found is None:
            return None
        conv_info, producers, consumers = found
        n_spatial = _spatial_then_reduction(conv_info)
        if n_spatial < 3:
            return None
        block = conv_info.block_rv
        loops = sch.get_loops(block)
        *outer, ow, oc_block = loops[:n_spatial]
        if _extent(sch, ow) is None:
            return None
        chunk_index = sch.get(block).writes[0].region[1].min
        chunk = next((i for i, it in enumerate(conv_info.iters) if it.var.same_as(chunk_index)), None)
        return block, producers, consumers, outer, ow, oc_block, loops[n_spatial:], chunk


# Uneven rows: a span of the row split into at most this many register tiles, the last one narrower, each tile
# its own unrolled copy of the reduction loop (`Conv2dNCHWc`).
MOST_SPAN_TILES = 4


class RegisterTile(NamedTuple):
    """A blocked conv's accumulator tile: `pixels` output pixels x `blocks` output channel blocks. The row is
    cut into spans of `span` pixels (a divisor of the row), each covered by tiles of `pixels` from its start,
    the last one narrower where `pixels` does not divide `span`."""

    pixels: int
    blocks: int
    span: int

    @property
    def uneven(self) -> bool:
        """Whether the span's last tile is narrower (each tile then needs its own unrolled copy)."""
        return self.span % self.pixels != 0


def register_tile(width: int, chunks: int, registers: int, uneven: bool = True) -> RegisterTile:
    """The accumulator tile of a blocked conv for a row of `width` pixels and `chunks` channel blocks: per
    reduction step the tile loads one weight vector per block and broadcasts one input per pixel, so the fewest
    loads per FMA over the row, within what the vector registers hold. Measured on AVX-512 (32 registers, 1
    thread): 8 x 2 and 7 x 2 tiles run 10-20% faster than 14 x 1 on ResNet-50's convs; 14 x 2 or 7 x 4 (28
    accumulators) spill and run 40% slower, 13 x 2 too, so at most 18 accumulators there. With 16 registers
    (AVX2) the accumulators, one weight vector per block and the broadcast input must all fit: 6 x 2 or 4 x 3
    tiles made SqueezeNet's 1x1 convs and Winograd GEMMs 10-25% faster than 14 x 1 ones (AMD znver3, 2 threads).

    A tile's pixels need not divide the row (`uneven`): rows of 7, 13 or 14 pixels, whose divisors leave only
    one-block tiles (7 x 1, 13 x 1) or two-pixel ones (2 x 4), are split as evenly as the tile allows (4 + 3,
    5 + 5 + 3, 5 + 5 + 4), in spans that divide the row (49 = 7 spans of 4 + 3), at most `MOST_SPAN_TILES`
    tiles a span, the last at least half as wide as the others. On AVX2 those tiles hold at most 10
    accumulators: 6 + 6 + 4 x 2 (12) ran 20-40% slower than 4 x 2, while 4 + 3 x 2 ran ResNet-50's 7-pixel
    convs 4-32% faster than 7 x 1 and 5 x 2 its 14-pixel convs 2-12% faster than 2 x 4, SqueezeNet's 13-pixel
    ones 14-28% faster than 13 x 1, and spans of 5 + 4 (27 pixels) or of 4 + 3 (a Winograd GEMM over 49
    tiles) 8-24% faster than 3 x 2 and 7 x 1 (znver3, 1 thread). A 4 + 4 + 4 + 1 x 3 span was no faster than
    5 + 5 + 3 x 2: a one-pixel tile has too few accumulators. Uneven tiles are only tried where the row's
    divisors give no tile of at least 4 pixels x 2 blocks: where they do (4 x 2 on 28 and 56 pixels), spans of
    5 + 5 + 4 x 2 ran the same (within 3%) and only add code."""
    if registers >= 32:
        most_pixels = {blocks: min(14, 18 // blocks) for blocks in (1, 2)}
        most_uneven = most_pixels
    else:
        most_pixels = {blocks: min(14, (registers - 1 - blocks) // blocks) for blocks in (1, 2, 3, 4)}
        most_uneven = {blocks: (registers - 6) // blocks for blocks in most_pixels}
    tiles = [RegisterTile(pixels, blocks, pixels) for blocks, most in most_pixels.items() if chunks % blocks == 0
             for pixels in [_largest_divisor(width, most)]]
    if uneven and not any(tile.pixels >= 4 and tile.blocks >= 2 for tile in tiles):
        tiles += [RegisterTile(pixels, blocks, span) for blocks, most in most_uneven.items()
                  if blocks > 1 and chunks % blocks == 0
                  for span in range(1, width + 1) if width % span == 0
                  for pixels in [_even_tile(span, most)] if pixels]
    return max(tiles, key=_fmas_per_load)


def _even_tile(span: int, most: int) -> int:
    """Pixels of the tiles of an even split of a span into as few tiles of at most `most` pixels as it takes,
    when that split is uneven (else 0): the last tile at least half as wide, at most `MOST_SPAN_TILES` tiles."""
    count = -(-span // most)
    pixels = -(-span // count)
    last = span - (count - 1) * pixels
    return pixels if count <= MOST_SPAN_TILES and last != pixels and 2 * last >= pixels else 0


def _fmas_per_load(tile: RegisterTile) -> float:
    """FMAs per load over a span of `tile`s (the last one with the span's remainder)."""
    full, last = divmod(tile.span, tile.pixels)
    loads = full * (tile.pixels + tile.blocks) + (last + tile.blocks if last else 0)
    return tile.span * tile.blocks / loads


class Conv2dNCHWc(_BlockedConv):
    """conv2d in the blocked layout (`passes.layout`): NCHW[x]c activations, OIHW[x]i[x]o weights.

    Loop nest: parallel(n, oc_chunk_outer, oh) x ow_outer x [ic_chunk, kh, kw, ic_block] x oc_chunk_inner
    (unrolled) x ow_inner (unrolled) x oc_block (one vector): a register tile of ow_inner pixels x
    oc_chunk_inner channel blocks (`register_tile`). Per reduction step: one weight vector load per block, one
    input broadcast per pixel, an FMA per accumulator, whatever the stride or image width. The input block's
    channels (the innermost reduction loop) are unrolled here: left to LLVM, it unrolled them by two and
    interleaved the two steps, which with 16 registers spilled the accumulators to the stack on every FMA
    (SqueezeNet's classifier conv: 4.4 ms unrolled by LLVM, 2.8 ms unrolled here; AVX2, 1 thread). Measured on
    light_resnet50 (AVX-512, 1 thread): one block of up to 14 pixels ran 47 ms against 52 ms for 8 pixels (the
    NCHW rule needed 94 ms); two blocks of 7-9 pixels gain 10-20% per conv over that. Winograd's batched GEMM
    (`passes.winograd`) has the same loops, tile positions outermost and tiles for pixels. Where the tile's
    pixels do not divide the row, ow_outer runs over spans of the row and each tile of a span is unrolled.
    """

    block_names = ("conv2d_nchwc", "winograd_gemm")
    tunable = True
    # The tuning space's bounds: pixels and channel blocks per register tile.
    most_pixels, most_blocks = 16, 4

    def __init__(self, lanes: int, registers: int):
        super().__init__(lanes)
        self.registers = registers

    def schedule(self, sch: s_tir.Schedule, infos: list[SBlockInfo]) -> s_tir.Schedule | None:
        found = self._loops(sch, infos)
        if found is None:
            return None
        block, producers, consumers, outer, ow, oc_block, reduction, chunk = found
        if _extent(sch, oc_block) not in (self.lanes, self.lanes // 2):  # half: `passes.layout.channel_block_for`
            return None
        chunks = 1 if chunk is None else _extent(sch, outer[chunk])
        width = _extent(sch, ow)
        # A tuning space samples perfect tiles only: its default decision must be one of them.
        tile = register_tile(width, chunks, self.registers, uneven=not self.sampling)
        spans = []
        if tile.uneven and tile.span < width:
            span, ow = sch.split(ow, [None, tile.span])
            spans.append(span)
        ow_o, ow_i = self.split_tile(sch, ow, tile.pixels, self.most_pixels)
        tile_loops = [ow_i, oc_block]
        if tile.blocks > 1 or (self.sampling and chunks > 1):
            outer[chunk], oc_i = self.split_tile(sch, outer[chunk], tile.blocks, self.most_blocks)
            tile_loops.insert(0, oc_i)
            sch.unroll(oc_i)
        sch.reorder(*outer, *spans, ow_o, *reduction, *tile_loops)
        self.parallel(sch, outer)
        sch.unroll(ow_i)
        sch.unroll(reduction[-1])
        self.schedule_prologue(sch, producers)
        _tile_in_registers(sch, block, ow_o, consumers, reduction[0], [oc_block], keep_unit_loops=self.sampling)
        if tile.uneven:  # the last tile's bound checks fold away in its own copy
            sch.unroll(ow_o)
        return sch


class Conv2dNCHWcInt8(_BlockedConv):
    """8-bit conv2d in the blocked layout (`passes.legalize.conv2d_nchwc_int8`), accumulating in int32.

    The loop nest of `Conv2dNCHWc`, with the output block x 4-channel dot group as the innermost pair: one
    dot instruction per (output pixel, input channel group), broadcasting the pixel's 4 input bytes against
    the block's contiguous kernel bytes: `vpdpbusd` where an x86 CPU has VNNI (16 lanes, uint8 x int8),
    `sdot` on ARM with `+dotprod` (4 lanes, int8 x int8). Without one the pair is plain vector code (correct,
    not fast). The requantize epilogue runs per tile.
    """

    block_names = (INT8_CONV, UINT7_CONV)

    def __init__(self, lanes: int, target: Target, max_ow_tile: int = 14):
        super().__init__(lanes)
        self.max_ow_tile = max_ow_tile
        self.intrinsics = {(dtype, seven_bit): dot_intrinsic(target, dtype, seven_bit)
                           for dtype in ("uint8", "int8") for seven_bit in (False, True)}

    def schedule(self, sch: s_tir.Schedule, infos: list[SBlockInfo]) -> s_tir.Schedule | None:
        found = self._loops(sch, infos)
        if found is None:
            return None
        block, producers, consumers, outer, ow, oc_block, (*reduction, dot), _ = found
        if _extent(sch, dot) != GROUP or not reduction:
            return None
        ow_o, ow_i = sch.split(ow, [None, _largest_divisor(_extent(sch, ow), self.max_ow_tile)])
        sch.reorder(*outer, ow_o, *reduction, ow_i, oc_block, dot)
        self.parallel(sch, outer)
        sch.unroll(ow_i)
        data = [r.source for r in sch.get(block).reads if len(r.source.shape) == 5]
        seven_bit = sch.get(block).name_hint == UINT7_CONV
        intrinsic = self.intrinsics.get((str(data[0].dtype), seven_bit)) if data else None
        use_dot = intrinsic is not None and _extent(sch, oc_block) == intrinsic.lanes
        if not use_dot:
            sch.unroll(dot)
        self.schedule_prologue(sch, producers)
        _tile_in_registers(sch, block, ow_o, consumers, reduction[0], [] if use_dot else [oc_block],
                           (oc_block, intrinsic.registered()) if use_dot else None)
        return sch


class Attention(_CPURule):
    """The attention kernel of `passes.attention`: a few query rows at a time, row blocks in parallel.

    K is transposed once (rows of the transpose in parallel, vectorised); then per block of `tile_rows` query
    rows, in row-block-sized buffers, the scores (a register tile of rows x keys: each step one contiguous
    row of K transposed, loaded once for all the block's rows, times one broadcast query element per row),
    their max and sum (vector-lane partials, then across the lanes), exp (TVM's vectorising fast_exp) and the
    output rows (a register tile of rows x value depth over the keys) are computed one after the other: the
    score matrix is never written whole, and each K and V row loaded serves `tile_rows` query rows.
    Measured on the BERT-style encoder (1 thread, per layer): one row at a time with scalar max/sum and
    libm's exp, 0.075 ms; TVM's unfused matmul -> softmax -> matmul 0.055 ms; this schedule 0.030 ms."""

    _ROW_STAGES = ("attention_weighted", "attention_sum", "attention_exp", "attention_max", "attention_scores")
    tile_rows = 4

    def schedule(self, sch: s_tir.Schedule, infos: list[SBlockInfo]) -> s_tir.Schedule | None:
        names = {sch.get(info.block_rv).name_hint: info.block_rv for info in infos}
        if "attention" not in names or not all(stage in names for stage in self._ROW_STAGES):
            return None
        for name, block in names.items():  # the scale (and mask add) are recomputed where they are read
            if name.startswith("T_"):
                sch.compute_inline(block)
        partials = {stage: self._lane_partials(sch, names[stage]) for stage in ("attention_max", "attention_sum")}
        out = names["attention"]
        *lead, rows, depth = sch.get_loops(out)
        rows_ext = _extent(sch, rows)
        if rows_ext is None:
            return None
        tile = _largest_divisor(rows_ext, self.tile_rows)
        row_block, row = sch.split(rows, [None, tile])
        block_loop = sch.fuse(*lead, row_block) if lead else row_block
        self.parallel(sch, [block_loop])
        sch.vectorize(depth)
        for stage in self._ROW_STAGES:  # consumers first; a reduction's lane partials right before it
            sch.compute_at(names[stage], block_loop)
            if partials.get(stage) is not None:
                sch.compute_at(partials[stage], block_loop)
        for stage in ("attention_scores", "attention_weighted"):  # rows x lanes accumulated in registers
            block = names[stage]
            if tile > 1:
                tile_row, lanes, reduction = sch.get_loops(block)[-3:]
                sch.reorder(reduction, tile_row, lanes)
                sch.unroll(tile_row)
            else:  # one row at a time (no loop over the tile's rows)
                lanes, reduction = sch.get_loops(block)[-2:]
                sch.reorder(reduction, lanes)
            _tile_in_registers(sch, block, None, [], reduction, [lanes])
        sch.vectorize(sch.get_loops(names["attention_exp"])[-1])
        for partial in filter(None, partials.values()):  # rfactor put the lane loop first: (lane, [row,] keys)
            lane, *row, keys = sch.get_loops(partial)[-3 if tile > 1 else -2:]
            sch.reorder(*row, keys, lane)
            sch.vectorize(lane)
            sch.decompose_reduction(partial, keys)
        k_t = names.get("attention_k_t")
        if k_t is not None:
            *outer, inner = sch.get_loops(k_t)
            self.parallel(sch, outer)
            sch.vectorize(inner)
        return sch


    def _lane_partials(self, sch: s_tir.Schedule, block):
        """A reduction over a row of keys split into `lanes` partial results (one vector), reduced across the
        vector at the end: the scalar loop over the row was a third of the kernel. Returns the partials'
        block (None when the row is not a multiple of the vector)."""
        keys = sch.get_loops(block)[-1]
        extent = _extent(sch, keys)
        if extent is None or extent % self.lanes or extent == self.lanes:
            return None
        _, lane = sch.split(keys, [None, self.lanes])
        return sch.rfactor(lane, factor_axis=len(sch.get(block).writes[0].region))


class LocalResponseNorm(_CPURule):
    """The LRN kernel of `passes.lrn` in NCHW[x]c: pixels in parallel; per pixel its zero-padded squares along
    the channels, then each channel block of outputs from `size` contiguous vector loads of them."""

    def schedule(self, sch: s_tir.Schedule, infos: list[SBlockInfo]) -> s_tir.Schedule | None:
        names = {sch.get(info.block_rv).name_hint: info.block_rv for info in infos}
        if set(names) != {"lrn_squares", "local_response_norm"}:
            return None
        out = names["local_response_norm"]
        loops = sch.get_loops(out)
        if len(sch.get(out).writes[0].source.shape) != 5 or len(loops) < 4:
            return None  # NCHW (no CPU target keeps it): the generic rule
        *batch, chunk, row, column, lane = loops
        sch.reorder(*batch, row, column, chunk, lane)
        self.parallel(sch, [*batch, row])
        sch.vectorize(lane)
        sch.compute_at(names["lrn_squares"], column)
        return sch


class WinogradTransform(_CPURule):
    """The input and output transforms of Winograd convolution (`passes.winograd`), one tile at a time.

    Input: per (input channel block, tile), in parallel, the tile's rows times BT, then its columns, each of
    the (m+2)^2 positions one vector of the channel block, the positions unrolled so that each is its own
    sparse sum; the zero padding is read in place. Output: per (output channel block, tile row) in parallel
    and tile, the products' columns times AT, then each output pixel of the tile (its rows), written through
    the fused epilogue (bias, ReLU, residual) as one vector per pixel."""

    def schedule(self, sch: s_tir.Schedule, infos: list[SBlockInfo]) -> s_tir.Schedule | None:
        names = [sch.get(info.block_rv).name_hint for info in infos]
        if "winograd_input" in names and "winograd_input_rows" in names:
            return self._input(sch, infos, names)
        if "winograd_output" in names and "winograd_output_cols" in names:
            return self._output(sch, infos, names)
        return None

    def _input(self, sch: s_tir.Schedule, infos: list[SBlockInfo], names: list[str]) -> s_tir.Schedule | None:
        if names[-1] != "winograd_input":
            return None
        for info in infos[: names.index("winograd_input_rows")]:  # the padding (and fused producers)
            sch.compute_inline(info.block_rv)
        rows, out = infos[names.index("winograd_input_rows")].block_rv, infos[-1]
        position, chunk, tile, lane = _output_loops(sch, out)
        if position is None or lane is None:
            return None
        outer = [loop for loop in (chunk, tile) if loop is not None]
        sch.reorder(*outer, position, lane)
        self.parallel(sch, outer)
        sch.unroll(position)
        sch.vectorize(lane)
        sch.compute_at(rows, sch.get_loops(out.block_rv)[-3])
        row, column, lane = sch.get_loops(rows)[-3:]
        sch.unroll(row)
        sch.unroll(column)
        sch.vectorize(lane)
        return sch

    def _output(self, sch: s_tir.Schedule, infos: list[SBlockInfo], names: list[str]) -> s_tir.Schedule | None:
        start = names.index("winograd_output")
        out_buffer = sch.get(infos[start].block_rv).writes[0].source
        last = infos[-1]
        if any(not info.is_injective() for info in infos[start:]) or \
                list(sch.get(last.block_rv).writes[0].source.shape) != list(out_buffer.shape):
            return None  # something other than an elementwise epilogue fused in
        cols = infos[names.index("winograd_output_cols")].block_rv
        tile = int(sch.get(cols).writes[0].source.shape[3])
        batch, chunk, y, x, lane = _output_loops(sch, last)
        if None in (y, x, lane):
            return None
        for info in infos[start:-1]:
            sch.compute_inline(info.block_rv)
        tile_y, row = sch.split(y, [None, tile])
        tile_x, column = sch.split(x, [None, tile])
        outer = [loop for loop in (batch, chunk, tile_y) if loop is not None]
        sch.reorder(*outer, tile_x, row, column, lane)
        self.parallel(sch, outer)
        sch.unroll(row)
        sch.unroll(column)
        sch.vectorize(lane)
        sch.compute_at(cols, tile_x)
        position, column, lane = sch.get_loops(cols)[-3:]
        sch.unroll(position)
        sch.unroll(column)
        sch.vectorize(lane)
        return sch


def _output_loops(sch: s_tir.Schedule, info: SBlockInfo) -> list:
    """The loop over each dimension of the block's output, None for a dimension of extent 1 (normalising
    dropped its loop)."""
    loops = {it.var: it.loop_rv for it in info.iters}
    return [next((loop for var, loop in loops.items() if var.same_as(r.min)), None)
            for r in sch.get(info.block_rv).writes[0].region]


class Matmul(_CPURule):
    """matmul / dense (`C[i, j] += A[i, k] * B[k, j]` or `B[j, k]`) with a fused epilogue.

    Row blocks in parallel; a register tile of up to 8 rows x 2 vectors of columns accumulated over the whole
    k loop (per k: two B vector loads, one A broadcast and two FMAs per row), the epilogue applied to the
    tile. Measured on a 4-layer BERT-style encoder (1 thread): 8-row tiles ran its dense layers about 3x faster
    than one row at a time. Batch-1 GEMV shapes with the reduction innermost go to dlight's GEMV rule instead.
    """

    max_rows = 8

    def schedule(self, sch: s_tir.Schedule, infos: list[SBlockInfo]) -> s_tir.Schedule | None:
        reductions = [b for b in infos if not b.is_injective()]
        if not reductions or sch.get(reductions[0].block_rv).name_hint not in ("matmul", "T_matmul_NT",
                                                                               "T_batch_matmul_NT"):
            return None
        info = reductions[0]
        n_spatial = _spatial_then_reduction(info)
        if n_spatial < 1:
            return None
        # after the elementwise epilogue, a softmax over the rows (`passes.softmax`): its own loop nests
        tail = infos.index(reductions[1]) if len(reductions) > 1 else len(infos)
        consumers, tail_blocks = infos[infos.index(info) + 1:tail], infos[tail:]
        if tail_blocks and sch.get(tail_blocks[0].block_rv).name_hint != "T_softmax_maxelem":
            return None
        for producer in infos[: infos.index(info)]:
            sch.compute_inline(producer.block_rv)
        block = info.block_rv
        loops = sch.get_loops(block)
        spatial, reduction = loops[:n_spatial], loops[n_spatial:]
        j_ext = _extent(sch, spatial[-1])
        if j_ext is None:
            return None
        j_o, j_i = sch.split(spatial[-1], [None, _largest_divisor(j_ext, 2 * self.lanes)])
        rows = []
        i_ext = _extent(sch, spatial[-2]) if n_spatial >= 2 else None
        if i_ext is not None and i_ext > 1:
            i_o, i_i = sch.split(spatial[-2], [None, _largest_divisor(i_ext, self.max_rows)])
            spatial = [*spatial[:-2], i_o, spatial[-1]]
            rows = [i_i]
        outer = [*spatial[:-1], j_o]
        sch.reorder(*outer, *reduction, *rows, j_i)
        self.parallel(sch, outer)
        for loop in rows:
            sch.unroll(loop)
        _tile_in_registers(sch, block, outer[-1] if len(outer) == 1 else sch.get_loops(block)[0], consumers,
                           reduction[0], [j_i])
        for stage in tail_blocks:  # a few passes over each row: vectorised, on one thread
            *_, inner = sch.get_loops(stage.block_rv)
            if stage.is_injective() and (_extent(sch, inner) or 0) >= self.lanes:
                sch.vectorize(sch.split(inner, [None, self.lanes])[1])
        return sch


class WindowReduction(_CPURule):
    """Reductions over a small window (max/avg pooling, global pooling): the window loops move outside the
    innermost output loop, which is vectorised (one contiguous vector per window step in NCHW[x]c), rows in
    parallel, padding read in place and the epilogue (the average's division) done per row."""

    max_window = 64

    def schedule(self, sch: s_tir.Schedule, infos: list[SBlockInfo]) -> s_tir.Schedule | None:
        reductions = [b for b in infos if not b.is_injective()]
        if len(reductions) != 1:
            return None
        info = reductions[0]
        n_spatial = _spatial_then_reduction(info)
        if n_spatial < 2:
            return None
        block = info.block_rv
        loops = sch.get_loops(block)
        spatial, reduction = loops[:n_spatial], loops[n_spatial:]
        extents = [_extent(sch, loop) for loop in loops]
        if None in extents or math.prod(extents[n_spatial:]) > self.max_window:
            return None
        for producer in infos[: infos.index(info)]:
            sch.compute_inline(producer.block_rv)
        consumers = infos[infos.index(info) + 1:]
        for consumer in consumers[:-1]:
            sch.compute_inline(consumer.block_rv)
        inner = spatial[-1]
        if extents[n_spatial - 1] > self.lanes and extents[n_spatial - 1] % self.lanes == 0:
            outer_inner, inner = sch.split(inner, [None, self.lanes])
            spatial = [*spatial[:-1], outer_inner]
        else:
            spatial = spatial[:-1]
        sch.reorder(*spatial, *reduction, inner)
        self.parallel(sch, spatial)
        row = sch.get_loops(block)[0]
        sch.vectorize(inner)
        init = sch.decompose_reduction(block, reduction[0])
        sch.vectorize(sch.get_loops(init)[-1])
        if consumers:
            sch.reverse_compute_at(consumers[-1].block_rv, row)
            sch.vectorize(sch.fuse(*sch.get_loops(consumers[-1].block_rv)[1:]))
        return sch


class ParallelVectorize(_CPURule):
    """Everything else: each block's leading spatial loops in parallel, a contiguous innermost spatial loop
    vectorised. Covers elementwise chains, concat, layout copies, pooling and reductions."""

    def schedule(self, sch: s_tir.Schedule, infos: list[SBlockInfo]) -> s_tir.Schedule | None:
        if all(b.is_injective() for b in infos) and len(infos) > 1:
            for info in infos[:-1]:  # an elementwise chain becomes one loop nest
                try:
                    sch.compute_inline(info.block_rv)
                except s_tir.ScheduleError:
                    pass
            infos = [b for b in normalize_prim_func(sch) or []]
        for info in infos:
            block = info.block_rv
            kinds = info.dom_kind()
            loops = sch.get_loops(block)
            if not loops or kinds[:1] != "S":
                continue
            n_spatial = len(kinds) - len(kinds.lstrip("S"))
            if info.is_injective() and n_spatial > 1:
                fused = sch.fuse(*loops[:n_spatial])
                extent = _extent(sch, fused)
                if extent is not None and extent % self.lanes == 0 and extent >= 4 * self.lanes:
                    outer, inner = sch.split(fused, [None, self.lanes])
                    self.parallel(sch, [outer])
                    sch.vectorize(inner)
                else:
                    self.parallel(sch, [fused])
            else:
                self.parallelize_spatial(sch, loops, kinds)
        return sch


def default_cpu_rules(target: Target) -> list[dlight.ScheduleRule]:
    """The rules in priority order; the first that applies to a kernel schedules it."""
    lanes = vector_lanes(target)
    return [Conv2dNCHWc(lanes, vector_registers(target)), Conv2dNCHWcInt8(lanes, target), Conv2dNCHW(lanes),
            WinogradTransform(lanes), Attention(lanes), LocalResponseNorm(lanes), Matmul(lanes), dlight.cpu.GEMV(),
            WindowReduction(lanes), ParallelVectorize(lanes)]


def schedule_cpu(mod: tvm.IRModule, target: Target) -> tuple[tvm.IRModule, dict[str, str | None]]:
    """Schedule every unscheduled kernel with the first CPU rule that applies (see `rules.apply_rules`)."""
    return apply_rules(mod, target, default_cpu_rules(target))


def tuning_space(kernel: tvm.IRModule, target: Target) -> Callable[[s_tir.Schedule], s_tir.Schedule] | None:
    """The design space a tunable rule makes of a one-kernel module (`kernel["main"]`): its own schedule with
    the tile sizes sampled, to give MetaSchedule as a `ScheduleFn`; None where the kernel's rule (the first
    that applies) has nothing to tune. MetaSchedule's generic CPU space rarely beats these rules on their
    kernels (no conv record beat its default alone in a 10-minute SqueezeNet run here): searching the rule's
    own tiles starts from the default and varies what the rule fixes by a heuristic."""
    with target:
        found = first_rule(kernel["main"], target, default_cpu_rules(target))
    if found is None or not getattr(found[0], "tunable", False):
        return None
    return functools.partial(_sample, found[0])


def _sample(rule: _CPURule, sch: s_tir.Schedule) -> s_tir.Schedule:
    scheduled = rule.apply_to(sch, tunable=True)
    if scheduled is None:
        raise ValueError(f"{type(rule).__name__} no longer applies to the kernel it was chosen for")
    return scheduled
