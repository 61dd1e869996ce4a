"""Builders and runners for measuring candidates, sized for small machines.

MetaSchedule's LocalBuilder starts fresh worker processes for every batch, and its default build function
imports `tvm.s_tir.tensor_intrin` in each of them (18-25 s here, TVMScript parsing every intrinsic), so every
batch paid that before building anything. edgetune's build function is the same lowering without that import:
CPU float candidates use no tensor intrinsics.

MetaSchedule sends the functions given to its builder and runner to its worker processes with cloudpickle:
module-level functions travel by name (the workers import edgetune), and `functools.partial` carries their
arguments.
"""

from __future__ import annotations

import functools
import os
import tempfile
from typing import TYPE_CHECKING, Any

import numpy as np
import tvm
from tvm.s_tir import meta_schedule as ms
from tvm.support import cc

if TYPE_CHECKING:
    from ..targets.rpc import RemoteDevice


def build_candidate(mod: tvm.IRModule, target: tvm.target.Target, _params) -> tvm.runtime.Module:
    """MetaSchedule's default build, minus the tensor-intrinsic registry import."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    with target:  # CUDA's compile hook reads the architecture from the current target
        return tvm_build(mod, target=target)


def export_for_device(cross_compiler: str, mod: tvm.runtime.Module) -> str:
    """A candidate linked here into a shared library for the device. MetaSchedule's default export is a .tar
    of object files that the device's RPC server links itself, which needs a compiler there (edgetune's
    server has none, and boards often have none)."""
    path = os.path.join(tempfile.mkdtemp(prefix="edgetune-candidate-"), "candidate.so")
    mod.export_library(path, fcompile=cc.cross_compiler(cross_compiler))
    return path


def local_builder(timeout_s: float, cross_compiler: str | None = None) -> ms.Builder:
    """Builds candidates in a worker process, linked by `cross_compiler` when the code runs elsewhere."""
    f_export = functools.partial(export_for_device, cross_compiler) if cross_compiler else None
    return ms.builder.LocalBuilder(max_workers=1, timeout_sec=timeout_s, f_build=build_candidate, f_export=f_export)


# How candidates and default schedules are timed; part of the database key (`database.target_key`), so that
# times taken one way are never compared with times taken another.
TIMING = "local: 10 runs, each with every argument but the first flushed from the cache; remote: 3 x 3 runs"


def _evaluator() -> ms.runner.EvaluatorConfig:
    """Each candidate run 3 x 3 times, at least 50 ms per repeat."""
    return ms.runner.EvaluatorConfig(number=3, repeat=3, min_repeat_ms=50, enable_cpu_cache_flush=False)


def _cold_weights_evaluator() -> ms.runner.EvaluatorConfig:
    """Each candidate run 10 times, its weights (and output) flushed from the CPU cache before each run, its
    first argument (the activations a previous kernel just wrote) left in it: at batch 1 a model reads each
    weight once per inference, after the other layers' weights have evicted it. Timed warm (3 x 3 runs of at
    least 50 ms), ResNet-50's 30-minute tuning took records that ran 5% slower inside the model than its
    defaults: the Winograd GEMMs and late-stage convs stream their weights from memory there."""
    return ms.runner.EvaluatorConfig(number=1, repeat=10, min_repeat_ms=0, enable_cpu_cache_flush=True)


def local_runner(timeout_s: float) -> ms.Runner:
    """Runs each candidate in a worker process on this machine, one at a time, on the threads the compiled
    model will run on: the workers inherit TVM_NUM_THREADS, which `set_threads` fixes here. Without it they
    started TVM's own default pool (one thread per physical core: 1 of this machine's 2 vCPUs) and candidates
    were ranked single-threaded for a model run on both."""
    from ..targets.host import set_threads

    set_threads()
    return ms.runner.LocalRunner(timeout_sec=timeout_s, evaluator_config=_cold_weights_evaluator())


def _device_session(device: "RemoteDevice", timeout_s: float, _config: ms.runner.RPCConfig) -> Any:
    """MetaSchedule's session function: a session from targets.rpc.connect, ended by the device after
    `timeout_s`, so that a hung candidate costs at most that."""
    from ..targets.rpc import connect

    return connect(device, session_timeout_s=timeout_s)


def _random_arguments(_session: Any, device: Any, args_info: list, alloc_repeat: int) -> list[list[Any]]:
    """MetaSchedule's argument function, without the device's random-fill function (edgetune's server has
    none): arrays filled here, as for timing a compiled model's kernels."""
    from ..targets.kernels import random_arguments

    rng = np.random.default_rng(0)
    specs = [(shape, dtype) for _kind, dtype, shape in args_info]  # ("TENSOR", dtype, shape)
    return [random_arguments(specs, device, rng) for _ in range(alloc_repeat)]


def rpc_runner(device: "RemoteDevice", timeout_s: float) -> ms.Runner:
    """Candidates measured on a remote device: an RPC server (one candidate at a time), or the devices an RPC
    tracker hands out under `device.key` (one worker per registered device, so several measure in parallel).
    A device that drops out or stops answering fails the candidates it held (MetaSchedule records them as
    errors) and tuning goes on with the others.

    MetaSchedule's RPCRunner makes its worker pool without a timeout (`session_timeout_sec` only asks the
    server to end the session, which a wedged device never does), so a device that stops answering without
    closing the connection would block tuning forever: the pool here kills a worker after the session's
    `timeout_s` plus the device's own timeout for getting and reaching a device."""
    from tvm.support.popen_pool import PopenPoolExecutor

    from ..targets.rpc import connect, tracker_devices

    if device.key is None:
        connect(device)  # a server that does not answer is one clear error now, not a failure per candidate
        workers = 1
    else:
        workers = tracker_devices(device)
    # MetaSchedule insists on a tracker address and key; edgetune's session function uses neither, so the
    # config only carries the session timeout
    config = ms.runner.RPCConfig(tracker_host=device.host, tracker_port=device.port,
                                 tracker_key=device.key or "direct", session_timeout_sec=int(timeout_s))
    session = functools.partial(_device_session, device, timeout_s)
    runner = ms.runner.RPCRunner(config, _evaluator(), f_create_session=session,
                                 f_alloc_argument=_random_arguments, max_workers=workers)
    runner.pool = PopenPoolExecutor(max_workers=workers, timeout=timeout_s + device.timeout_s)
    return runner


def measure_modules(mods: list[tvm.IRModule], target: tvm.target.Target, builder: ms.Builder,
                    runner: ms.Runner) -> list[list | None]:
    """Build and run scheduled one-kernel modules as candidates are: per module its run_secs, None if it
    failed to build or run."""
    built = builder.build([ms.builder.BuilderInput(mod, target) for mod in mods])
    inputs, owners = [], []
    for index, (mod, result) in enumerate(zip(mods, built)):
        if result.error_msg is None:
            inputs.append(ms.runner.RunnerInput(result.artifact_path, _device_type(target),
                                                ms.arg_info.ArgInfo.from_prim_func(mod["main"])))
            owners.append(index)
    run_secs: list[list | None] = [None] * len(mods)
    for index, future in zip(owners, runner.run(inputs)):
        outcome = future.result()
        if outcome.error_msg is None and outcome.run_secs:
            run_secs[index] = list(outcome.run_secs)
    return run_secs


def _device_type(target: tvm.target.Target) -> str:
    return "cpu" if target.kind.name == "llvm" else target.kind.name
