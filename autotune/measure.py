"""Builders and runners for measuring candidates, sized for small machines.

MetaSchedule's LocalBuilder starts fresh worker processes for every batch, and its default build function
imports `tvm.s_tir.tensor_intrin` in each of them (18-25 s here, TVMScript parsing every intrinsic), so every
batch paid that before building anything. edgetune's build function is the same lowering without that import:
CPU float candidates use no tensor intrinsics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import tvm
from tvm.s_tir import meta_schedule as ms

if TYPE_CHECKING:
    from ..targets.rpc import RemoteDevice


def build_candidate(mod: tvm.IRModule, target: tvm.target.Target, _params) -> tvm.runtime.Module:
    """MetaSchedule's default build, minus the tensor-intrinsic registry import."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    with target:  # CUDA's compile hook reads the architecture from the current target
        return tvm_build(mod, target=target)


def local_builder(timeout_s: float) -> ms.Builder:
    return ms.builder.LocalBuilder(max_workers=1, timeout_sec=timeout_s, f_build=build_candidate)


def local_runner(timeout_s: float) -> ms.Runner:
    """Runs each candidate 3 x 3 times (at least 50 ms per repeat) in a worker process, one at a time."""
    config = ms.runner.EvaluatorConfig(number=3, repeat=3, min_repeat_ms=50, enable_cpu_cache_flush=False)
    return ms.runner.LocalRunner(timeout_sec=timeout_s, evaluator_config=config)


def rpc_runner(device: "RemoteDevice", timeout_s: float) -> ms.Runner:
    """Candidates measured on the devices an RPC tracker hands out under `device.key`, one worker per
    registered device (so several devices measure in parallel). A device that drops out or stops answering
    fails the candidates it held (MetaSchedule records them as errors) and tuning goes on with the others.

    MetaSchedule's RPCRunner makes its worker pool without a timeout (`session_timeout_sec` only asks the
    server to end the session, which a wedged device never does), so a device that stops answering without
    closing the connection would block tuning forever: the pool here kills a worker after the session's
    `timeout_s` plus the device's own timeout for getting and reaching a device."""
    from tvm.support.popen_pool import PopenPoolExecutor

    from ..targets.rpc import tracker_devices

    config = ms.runner.RPCConfig(tracker_host=device.host, tracker_port=device.port, tracker_key=device.key,
                                 session_priority=1, session_timeout_sec=int(timeout_s))
    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=3, min_repeat_ms=50, enable_cpu_cache_flush=False)
    workers = tracker_devices(device)
    runner = ms.runner.RPCRunner(config, evaluator, max_workers=workers)
    runner.pool = PopenPoolExecutor(max_workers=workers, timeout=timeout_s + device.timeout_s)
    return runner
