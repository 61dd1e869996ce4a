"""What a tiling costs: the timing model's cycles for the stream it generates (the tuning cost), and a quick
analytic estimate that orders the candidates, so that the default tiling needs no search and a small search
budget tries the likely tilings first."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

from .codegen import epilogue_ops, generate_conv2d
from .config import VTAConfig
from .tiler import Tiling, bias_entries, candidates, input_extent
from .timing import estimate
from .workload import Conv2dWorkload, Requantize


@dataclass(frozen=True)
class TilingTask:
    """A conv2d to tile, with what else shapes its stream: the bias and the requantize epilogue."""

    workload: Conv2dWorkload
    requant: Requantize
    with_bias: bool

    def key(self) -> dict:
        """The task's identity in a tuning record: the workload, the bias and the epilogue's ALU opcodes (their
        immediates do not change a stream's cycles)."""
        return {"workload": asdict(self.workload), "bias": self.with_bias,
                "epilogue": [op.name for op, _ in epilogue_ops(self.requant, self.with_bias)]}

    def describe(self) -> str:
        wl = self.workload
        return (f"conv2d {wl.batch}x{wl.in_channels}x{wl.height}x{wl.width} -> {wl.out_channels} "
                f"{wl.kernel_h}x{wl.kernel_w}/{wl.stride_h} pad {wl.pad_h}")

    def cycles(self, tiling: Tiling, config: VTAConfig) -> int:
        """The timing model's cycles for one run of the stream generated under `tiling`."""
        stream = generate_conv2d(self.workload, tiling, config, self.requant, self.with_bias)
        return estimate(stream.insns, config).cycles

    def candidates(self, config: VTAConfig, threads: Sequence[int] = (1, 2)) -> list[Tiling]:
        """Every legal tiling, the lowest quick estimate first (ties keep the enumeration order)."""
        legal = list(candidates(self.workload, config, self.with_bias, threads))
        if not legal:
            raise ValueError(f"no legal VTA tiling for {self.workload} (the ACC write hazard or SRAM sizes rule "
                             "out all)")
        return sorted(legal, key=lambda tiling: quick_estimate(self, tiling, config))

    def default_tiling(self, config: VTAConfig, threads: Sequence[int] = (1, 2)) -> Tiling:
        """The tiling a compile uses without a tuning record: the best by the quick estimate."""
        return self.candidates(config, threads)[0]


def quick_estimate(task: TilingTask, tiling: Tiling, config: VTAConfig) -> float:
    """Cycles by counting, without generating the stream: the compute, load and store modules' busy time,
    serialised with one thread, overlapped with two (the slowest module plus the first step's loads)."""
    wl, t, block = task.workload, tiling, config.block
    n_h, n_w = -(-wl.out_h // t.h), -(-wl.out_w // t.w)
    n_oc, n_ic = -(-wl.oc_blocks(block) // t.oc), -(-wl.ic_blocks(block) // t.ic)
    tiles, outputs = wl.batch * n_h * n_w * n_oc, wl.batch * wl.out_h * wl.out_w * wl.oc_blocks(block)
    alu_ops = len(epilogue_ops(task.requant, task.with_bias))
    rows, cols = input_extent(t.h, wl.stride_h, wl.kernel_h), input_extent(t.w, wl.stride_w, wl.kernel_w)
    request, bus = config.dma_request_cycles, config.bus_bytes
    inp_step = t.ic * rows * (request + -(-cols * config.elem_bytes("inp") // bus))
    wgt_step = t.oc * (request + -(-t.ic * wl.taps * config.elem_bytes("wgt") // bus))
    load = tiles * n_ic * (inp_step + wgt_step)
    store = tiles * t.oc * t.h * (request + -(-t.w * config.elem_bytes("out") // bus))
    uops = t.threads * (wl.taps + 1) * t.h * t.w * (config.elem_bytes("uop") / bus)
    compute = (outputs * (wl.ic_blocks(block) * wl.taps + 1 + config.alu_ii * alu_ops)
               + tiles * ((1 + n_ic) * config.gemm_pipeline_cycles + alu_ops * config.alu_pipeline_cycles)
               + uops + bias_entries(wl, config, task.with_bias) * config.elem_bytes("acc") / bus)
    if t.threads == 1:
        return compute + load + store
    return max(compute, load, store) + inp_step + wgt_step
