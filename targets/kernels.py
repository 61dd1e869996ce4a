"""Per-kernel times on a remote device: each compiled kernel timed alone, times its calls per inference.

Locally the VM's instrument times every call the model makes (profiling.py), but the instrument is a host
callback that TVM RPC cannot carry to a device. There, each kernel runs alone under the device's own time
evaluator, on arrays of its argument shapes. Everything that needs is recorded at compile time, so nothing is
loaded on the host: each kernel's calls per inference and argument shapes (the manifest's `kernels`), and the
kernels linked on their own into `kernels.so` beside the model library. The model library will not do: a time
evaluator looks a name up among a module's own functions, the model library's own functions are the VM
program's, and its kernels sit in an imported module that RPC gives no handle to.
"""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence

import numpy as np
import tvm
from tvm import relax, tirx

from .rpc import MIN_UPLOAD_RATE, RemoteSession, bounded_request

KERNEL_LIBRARY = "kernels.so"


def kernel_table(mod: tvm.IRModule, target: tvm.target.Target) -> list[dict[str, Any]]:
    """Each kernel the model calls, with its calls per inference and argument shapes and dtypes (or why it
    cannot be timed alone), from `mod` as Relax's build pipeline lowers it (what `tvm.compile` runs for CPU
    targets), where every kernel call is an explicit call."""
    with target:
        lowered = relax.get_pipeline("default")(mod)
    kernels = {gvar.name_hint: func for gvar, func in lowered.functions_items() if isinstance(func, tirx.PrimFunc)}
    calls: Counter[str] = Counter()

    def count_call(expr: relax.Expr) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.GlobalVar) and expr.op.name_hint in kernels:
            calls[expr.op.name_hint] += 1

    for func in lowered.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, count_call)
    return [_entry(str(kernels[name].attrs["global_symbol"]), kernels[name], number)
            for name, number in sorted(calls.items())]


def _entry(symbol: str, func: tirx.PrimFunc, calls: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": symbol, "calls": calls}
    args = []
    for param in func.params:
        if not isinstance(param.ty, tirx.BufferType):
            return {**entry, "skipped": f"takes the scalar {param.name}, known only while the model runs"}
        shape = [int(dim) if isinstance(dim, tirx.IntImm) else str(dim) for dim in param.shape]
        if not all(isinstance(dim, int) for dim in shape):
            return {**entry, "skipped": f"symbolic shape {shape} of {param.name}, known only while the model runs"}
        args.append({"shape": shape, "dtype": str(param.dtype)})
    return {**entry, "args": args}


def random_arguments(specs: Sequence[tuple[Sequence[int], str]], device: Any,
                     rng: np.random.Generator) -> list[tvm.runtime.Tensor]:
    """Arrays of the given (shape, dtype) on `device`: floats uniform in [-1, 1), integers and booleans zero,
    so that an index argument stays in bounds. Filled here and copied over: a device's runtime need not have
    TVM's random-fill function (edgetune's RPC server has not)."""
    return [tvm.runtime.tensor(rng.uniform(-1, 1, shape).astype(dtype) if np.dtype(dtype).kind == "f"
                               else np.zeros(shape, dtype), device) for shape, dtype in specs]


def time_kernels_alone(session: RemoteSession, folder: Path, table: list[dict[str, Any]] | None) -> None:
    """Let a remote `session` time the artifact's kernels one at a time, when the artifact has a kernel table
    and library (else the session keeps saying why there is no per-kernel breakdown)."""
    library = folder / KERNEL_LIBRARY
    if table is None or not library.is_file():
        return
    # Not the session itself: a cycle through it would keep the connection open (and a one-session device
    # busy) until the garbage collector happens to run.
    request = functools.partial(bounded_request, session.address.timeout_s, session.sockets, session.unanswered)
    session.kernel_timer = _RemoteKernels(session.remote, session.device, library, table, request)
    session.kernels_skipped = ""


class _RemoteKernels:
    """The kernel library on a remote device; called with a repeat count, it times every kernel, each
    request to the device bounded by `request(expected_s)`."""

    def __init__(self, remote: Any, device: Any, library: Path, table: list[dict[str, Any]],
                 request: Callable[[float], ContextManager[None]]):
        self.remote = remote  # tvm.rpc.RPCSession
        self.device = device
        self.library = library
        self.table = table
        self.request = request

    def __call__(self, runs: int) -> tuple[list[tuple[str, int, float]], dict[str, str]]:
        remote, device = self.remote, self.device
        with self.request(self.library.stat().st_size / MIN_UPLOAD_RATE):
            remote.upload(str(self.library), target=KERNEL_LIBRARY)
        with self.request(0.0):
            module = remote.load_module(KERNEL_LIBRARY)
        rng = np.random.default_rng(0)
        timed, untimed = [], {}
        for kernel in self.table:
            if "skipped" in kernel:
                untimed[kernel["name"]] = kernel["skipped"]
                continue
            with self.request(0.0):
                args = random_arguments([(arg["shape"], arg["dtype"]) for arg in kernel["args"]], device, rng)
            # each repeat at least 1 ms, so that a kernel of a few microseconds is timed over many calls
            with self.request(2e-3 * runs):
                result = module.time_evaluator(kernel["name"], device, number=1, repeat=runs,
                                               min_repeat_ms=1)(*args)
            timed.append((kernel["name"], kernel["calls"], float(np.mean(result.results))))
        return timed, untimed
