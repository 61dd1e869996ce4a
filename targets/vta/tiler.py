"""Tiling of a conv2d for VTA's SRAMs: the tiles, what each needs, and which tilings are legal.

A tiling splits the output into (h x w pixels, oc channel blocks) tiles and the reduction into ic-block steps.
With two virtual threads, consecutive tiles along `thread_axis` run interleaved, each in its own half of every
SRAM, so that one thread's loads overlap the other's GEMMs (the legacy cthread double buffering).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterator, Sequence

from .config import VTAConfig
from .workload import Conv2dWorkload


@dataclass(frozen=True)
class Tiling:
    h: int  # output rows per tile
    w: int  # output columns per tile
    oc: int  # output channel blocks per tile
    ic: int  # input channel blocks per reduction step
    threads: int = 1  # virtual threads: 1 or 2
    thread_axis: str = "oc"  # which tile loop the two threads split: "oc" or "h"

    def __post_init__(self) -> None:
        if min(self.h, self.w, self.oc, self.ic) < 1 or self.threads not in (1, 2) or \
                self.thread_axis not in ("oc", "h"):
            raise ValueError(f"invalid tiling {self}")


@dataclass(frozen=True)
class Tile:
    """One output tile: batch index, first output row/column/channel block and extents."""

    n: int
    y0: int
    th: int
    x0: int
    tw: int
    ob0: int
    toc: int

    @property
    def pixels(self) -> int:
        return self.th * self.tw


def _spans(total: int, step: int) -> list[tuple[int, int]]:
    return [(start, min(step, total - start)) for start in range(0, total, step)]


def input_extent(out_extent: int, stride: int, kernel: int) -> int:
    """Input rows (or columns), padding included, that `out_extent` outputs read."""
    return (out_extent - 1) * stride + kernel


def tile_groups(workload: Conv2dWorkload, tiling: Tiling, block: int) -> list[list[Tile]]:
    """Tiles in execution order, in groups of `threads` consecutive tiles (tile k of a group -> thread k).

    Tiles are ordered so that neighbours differ along `thread_axis`; the list is chunked as a whole, so only the
    last group can be short. That keeps each thread's buffer-reuse chain in the same order in every module,
    which the counted (untagged) dependency tokens require.
    """
    wl = workload
    ohs, ows = _spans(wl.out_h, tiling.h), _spans(wl.out_w, tiling.w)
    ocs = _spans(wl.oc_blocks(block), tiling.oc)
    tiles: list[Tile] = []
    for n in range(wl.batch):
        if tiling.thread_axis == "oc":
            tiles += [Tile(n, y0, th, x0, tw, ob0, toc) for (y0, th), (x0, tw), (ob0, toc) in
                      itertools.product(ohs, ows, ocs)]
        else:
            for i in range(0, len(ohs), tiling.threads):
                tiles += [Tile(n, y0, th, x0, tw, ob0, toc) for (x0, tw), (ob0, toc), (y0, th) in
                          itertools.product(ows, ocs, ohs[i:i + tiling.threads])]
    return [tiles[i:i + tiling.threads] for i in range(0, len(tiles), tiling.threads)]


def ic_steps(workload: Conv2dWorkload, tiling: Tiling, block: int) -> list[tuple[int, int]]:
    return _spans(workload.ic_blocks(block), tiling.ic)


def bias_entries(workload: Conv2dWorkload, config: VTAConfig, with_bias: bool) -> int:
    """ACC entries of the bias: every output channel block, loaded once at the top of ACC and read by both
    threads' epilogues (one DMA per call instead of one per tile on the compute module)."""
    return workload.oc_blocks(config.block) if with_bias else 0


def thread_shares(workload: Conv2dWorkload, tiling: Tiling, config: VTAConfig, with_bias: bool) -> dict[str, int]:
    """SRAM elements each virtual thread owns in INP, WGT and ACC (ACC less the resident bias)."""
    acc = config.depth("acc") - bias_entries(workload, config, with_bias)
    return {"inp": config.depth("inp") // tiling.threads, "wgt": config.depth("wgt") // tiling.threads,
            "acc": acc // tiling.threads}


def slot_sizes(workload: Conv2dWorkload, tiling: Tiling) -> dict[str, int]:
    """SRAM elements one tile needs in each buffer."""
    wl, t = workload, tiling
    rows, cols = input_extent(t.h, wl.stride_h, wl.kernel_h), input_extent(t.w, wl.stride_w, wl.kernel_w)
    return {"inp": t.ic * rows * cols, "wgt": t.oc * t.ic * wl.taps, "acc": t.oc * t.h * t.w}


def is_legal(workload: Conv2dWorkload, tiling: Tiling, config: VTAConfig, with_bias: bool) -> bool:
    """Fits each thread's SRAM share and the micro-op buffer, and every tile avoids the GEMM write hazard."""
    sizes, shares = slot_sizes(workload, tiling), thread_shares(workload, tiling, config, with_bias)
    if any(sizes[b] > shares[b] for b in ("inp", "wgt", "acc")):
        return False
    if tiling.h > workload.out_h or tiling.w > workload.out_w or tiling.oc > workload.oc_blocks(config.block) \
            or tiling.ic > workload.ic_blocks(config.block):
        return False
    shapes = set(itertools.product(_sizes(workload.out_h, tiling.h), _sizes(workload.out_w, tiling.w),
                                   _sizes(workload.oc_blocks(config.block), tiling.oc)))
    if any(th * tw * toc < 2 for th, tw, toc in shapes):  # one ACC entry written every cycle
        return False
    uops = sum(workload.taps * th * tw * (toc if th * tw < 2 else 1) + th * tw for th, tw, toc in shapes)
    uops += len({th * tw for th, tw, _ in shapes}) * bias_entries(workload, config, with_bias)  # bias ADD kernels
    return uops * tiling.threads <= config.depth("uop")


def _sizes(total: int, step: int) -> set[int]:
    """The distinct extents of the spans of `step` covering `total` (the full one and a remainder)."""
    return {size for _, size in _spans(total, step)}


def _extents(total: int) -> list[int]:
    """Tile sizes that give distinct tile counts (ceil(total / count) for every count)."""
    return sorted({-(-total // count) for count in range(1, total + 1)}, reverse=True)


def candidates(workload: Conv2dWorkload, config: VTAConfig, with_bias: bool,
               threads: Sequence[int] = (1, 2)) -> Iterator[Tiling]:
    wl, block = workload, config.block
    settings = [(n, axis) for n, axis in ((1, "oc"), (2, "oc"), (2, "h")) if n in threads]
    for h, w, oc, ic in itertools.product(_extents(wl.out_h), _extents(wl.out_w), _extents(wl.oc_blocks(block)),
                                          _extents(wl.ic_blocks(block))):
        for n, axis in settings:
            tiling = Tiling(h, w, oc, ic, n, axis)
            if is_legal(wl, tiling, config, with_bias):
                yield tiling
