"""The Python API: `compile(model, target)` -> `CompiledModel`, and `load(outdir)`.

The pipeline is the same for every target: frontend -> passes -> build -> export -> validate. A compiled
model is always exported to a library first and then loaded, so validation and profiling measure exactly the
file that `save()` writes.
"""

from __future__ import annotations

import datetime
import platform
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from . import __version__
from .artifact import (LATENCY_CSV, LATENCY_JSON, LIBRARY, TUNING_CURVE, StagedFolder, check_destination, read_manifest,
                       verify_files)
from .errors import UserError, ValidationError
from .frontend import (Signature, bind_inputs, import_model, load_model, load_samples, opset_versions,
                       proto_text)
from .passes import CALIBRATE_AFTER, PassConfig, PassResult, run_passes
from .targets import LatencyReport, ProfileConfig, Session, Target, get_target
from .targets.kernels import time_kernels_alone
from .targets.rpc import RemoteDevice, open_session
from .validate import ValidationReport, compare, reference_outputs

Feed = Mapping[str, np.ndarray] | Sequence[np.ndarray]
Progress = Callable[[str], None]


@dataclass
class CompileOptions:
    input_shapes: Mapping[str, Sequence[int]] | None = None
    bind_inputs: Mapping[str, np.ndarray] | None = None  # graph inputs fixed at compile time (axes, pads, ...)
    opt_level: int = 2
    validate: bool = True
    inputs: Mapping[str, np.ndarray] | None = None  # validation inputs (default: seeded random)
    seed: int = 0
    atol: float | None = None
    rtol: float | None = None
    example_inputs: Sequence[Any] | None = None  # for torch.nn.Module sources
    input_names: Sequence[str] | None = None  # for torch.nn.Module sources
    tune_trials: int = 0  # measure this many candidates (database records count; VTA: per layer) before building
    tune_time_budget_s: float | None = None  # or tune for this long
    tuning_db: str | Path | None = None  # apply (and, when tuning, extend) this database; default: user cache
    edgetune_passes: bool = True  # False: TVM's own passes only (to measure what edgetune's passes earn)
    quantize: str | None = None  # "int8": post-training static quantization (needs `calibration`)
    calibration: str | Path | None = None  # .npz of samples, or a folder of .npy/.npz samples
    calibration_method: str = "percentile"  # minmax | percentile | entropy | mse
    power_of_two: bool = False  # power-of-two scales: requantize by shifts only
    max_accuracy_drop: float | None = None  # keep the most sensitive layers in float until the drop holds
    min_sqnr_db: float = 15.0  # quantized builds validate by SQNR against onnxruntime's float outputs
    device: RemoteDevice | None = None  # validate (and later run) on this device over RPC instead of locally
    cross_compiler: str | None = None  # replaces a cross target's default compiler
    winograd: bool = True  # False: every conv direct (`passes.winograd` changes rounding slightly)
    precision: str = "fp32"  # "fp16": float16 kernels accumulating in float32 (targets listing it in `precisions`)


class CompiledModel:
    """A compiled model and its metadata; runs and profiles on its target's device."""

    def __init__(self, target: Target, signature: Signature, library: Path, metadata: dict[str, Any],
                 owner: tempfile.TemporaryDirectory | None = None, device: RemoteDevice | None = None):
        self.target = target
        self.device = device  # where it runs: None for this machine
        self.signature = signature
        self.library = library
        self.metadata = metadata  # what goes into the manifest (without files/validation/latency)
        self.validation: ValidationReport | dict | None = None
        self.latency: LatencyReport | None = None
        self._owner = owner  # keeps a freshly built library's temporary folder alive
        self._session: Session | None = None

    @property
    def runnable(self) -> bool:
        """Whether there is somewhere to run it: this machine, or a device given over RPC."""
        return self.device is not None or self.target.runs_locally

    def session(self, threads: int | None = None) -> Session:
        """The loaded library; `threads` (CPU targets) can only be chosen before the first run in a process."""
        if self.device is not None and threads is not None:
            raise UserError("--threads applies to this machine; a device's thread count is set where its RPC "
                            "server starts (TVM_NUM_THREADS)")
        if self._session is None or (threads is not None and threads != self._session.threads):
            if self.device is None:
                self._session = self.target.load(self.library, threads)
            else:
                self._session = open_session(self.device, self.library, self.target)
                time_kernels_alone(self._session, self.library.parent, self.metadata.get("kernels"))
        return self._session

    def run(self, inputs: Feed) -> list[np.ndarray]:
        """One inference. `inputs`: name -> array, or arrays in the signature's input order."""
        return self.signature.library_outputs(self.target.run(self.session(), self._arrays(inputs)))

    def profile(self, inputs: Feed | None = None, warmup: int = 3, repeat: int = 50, threads: int | None = None,
                max_seconds: float | None = None) -> LatencyReport:
        config = ProfileConfig(warmup=warmup, repeat=repeat, threads=threads, max_seconds=max_seconds)
        arrays = self._arrays(inputs if inputs is not None else self.signature.random_feed())
        self.latency = self.target.profile(self.session(threads), arrays, config)
        return self.latency

    def save(self, outdir: str | Path, force: bool = False) -> Path:
        """Write the artifact folder atomically; measures latency first if `profile()` was not called and the
        model can run (without a device, a cross-compiled model is saved without a latency log)."""
        outdir = Path(outdir)
        check_destination(outdir, force)
        if self.latency is None and self.runnable:
            self.profile(max_seconds=10.0)
        with StagedFolder(outdir) as staged:
            shutil.copyfile(self.library, staged.path / LIBRARY)
            for extra in self.target.artifact_files(self.library):
                shutil.copyfile(extra, staged.path / extra.name)
            if self.latency is not None:
                staged.write_json(LATENCY_JSON, self.latency.to_dict())
                staged.write_text(LATENCY_CSV, self.latency.to_csv())
            curve = self.metadata.get("tuning", {}).get("curve")
            if curve:
                from .autotune import plot_curves

                plot_curves({"XGBoost cost model": curve}, staged.path / TUNING_CURVE,
                            f"tuning {self.metadata['source']['origin']} for {self.target.name}")
            return staged.publish(self.manifest())

    def manifest(self) -> dict[str, Any]:
        validation = self.validation.to_dict() if isinstance(self.validation, ValidationReport) else (
            self.validation or {"skipped": True})
        latency = None
        if self.latency is not None:
            latency = {"file": LATENCY_JSON, "device": self.latency.device, "emulated": self.latency.emulated,
                       "threads": self.latency.threads, "repeat": self.latency.repeat,
                       **{k: round(v, 6) for k, v in self.latency.stats.items()}}
        return {**self.metadata, "validation": validation, "latency": latency}

    def _arrays(self, inputs: Feed) -> list[np.ndarray]:
        if isinstance(inputs, Mapping):
            return self.signature.check_feed(inputs)
        arrays = list(inputs)
        if len(arrays) != len(self.signature.inputs):
            raise UserError(f"expected {len(self.signature.inputs)} inputs "
                            f"({', '.join(self.signature.input_names)}), got {len(arrays)}")
        return self.signature.check_feed(dict(zip(self.signature.input_names, arrays)))


def compile(model: Any, target: str | Target = "host", progress: Progress | None = None,
            **options: Any) -> CompiledModel:
    """Compile `model` (an .onnx path, `onnx.ModelProto`, or `torch.nn.Module` with `example_inputs=`) for
    `target`, validate it against onnxruntime, and return it. Options: see `CompileOptions`.

    Raises `UserError` for bad input and `ValidationError` (carrying the model) when outputs disagree.
    """
    try:
        opts = CompileOptions(**options)
    except TypeError as exc:
        raise UserError(f"edgetune.compile: {exc}") from None
    say = progress or (lambda _msg: None)
    target = get_target(target)
    if opts.cross_compiler is not None:
        target = target.with_cross_compiler(opts.cross_compiler)
    _check_precision(opts, target)
    target.check_tools()
    pass_config = PassConfig(opt_level=opts.opt_level, channel_block=target.channel_block(),
                             edgetune_passes=opts.edgetune_passes, precision=opts.precision,
                             winograd=opts.winograd)
    timings: dict[str, float] = {}

    def timed(stage: str, fn: Callable[[], Any]) -> Any:
        say(f"{stage}...")
        start = time.perf_counter()
        value = fn()
        timings[stage] = round(time.perf_counter() - start, 3)
        return value

    loaded = timed("load", lambda: load_model(model, opts.example_inputs, opts.input_names))
    if opts.bind_inputs:
        loaded = bind_inputs(loaded, opts.bind_inputs)
    imported = timed("import", lambda: import_model(loaded, opts.input_shapes))
    feed = None
    if opts.validate and opts.inputs is not None:  # check user inputs before the long part of the work
        feed = dict(opts.inputs)
        imported.signature.check_feed(feed)
    quantization = cpu_twin = None
    _require_quantization(opts, loaded, target)
    tiling_tuner = _tiling_tuner(target, opts, say)
    if opts.quantize is None and not _prequantized(loaded.proto):
        passed = timed("passes", lambda: run_passes(imported.mod, pass_config))
    else:
        passed, quantization, sample, cpu_twin = timed("quantize", lambda: _quantize(imported, target, pass_config,
                                                                                         opts, say, tiling_tuner))
        if feed is None and sample is not None:
            feed = dict(zip(imported.signature.input_names, sample))
    if opts.validate and feed is None:
        feed = imported.signature.random_feed(opts.seed)
    lowered, tuning = passed.mod, None
    if tiling_tuner is not None:  # the accelerator's layers were tiled from the records while quantizing
        tuning = {"skipped_damaged_lines": tiling_tuner.db.skipped_lines, **tiling_tuner.result().to_dict()}
    elif opts.tune_trials or opts.tune_time_budget_s is not None or opts.tuning_db is not None:
        lowered, tuning = _tune_and_apply(passed.mod, target, opts, imported.signature, timed, say)
    scheduled, rules = timed("schedule", lambda: target.schedule(lowered))
    if tuning is not None:
        rules.update({name: "MetaSchedule record" for name in tuning.get("kernels_from_records", [])})
    executable = timed("build", lambda: target.build(scheduled))
    owner = tempfile.TemporaryDirectory(prefix="edgetune-build-")
    library = Path(owner.name) / LIBRARY
    timed("export", lambda: target.export(executable, library))
    kernels = target.kernel_table(scheduled)

    metadata = {
        "schema": "edgetune.manifest/1",
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "source": {"origin": loaded.origin, "sha256": loaded.sha256, "producer": proto_text(loaded.proto.producer_name),
                   "opsets": opset_versions(loaded.proto)},
        "target": {"name": target.name, "description": target.description, "tvm": target.target_json()},
        "signature": imported.signature.to_dict(),
        "passes": {"opt_level": pass_config.opt_level, "ran": [r.to_dict() for r in passed.records]},
        "schedules": {"by_rule": dict(Counter(r for r in rules.values() if r)),
                      "unscheduled": sorted(k for k, r in rules.items() if r is None), "kernels": rules},
        "compile_seconds": timings,
    }
    if kernels is not None:
        metadata["kernels"] = kernels
    if tuning is not None:
        metadata["tuning"] = tuning
    if quantization is not None:
        metadata["quantization"] = quantization.to_dict()
    compiled = CompiledModel(target, imported.signature, library, metadata, owner, opts.device)
    if not opts.validate:
        compiled.validation = {"skipped": True}
        return compiled
    if not compiled.runnable:
        compiled.validation = {"skipped": True, "reason": target.unavailable_reason()}
        return compiled
    say("validate...")
    reference = reference_outputs(loaded.proto, feed, imported.signature.outputs)
    actual = compiled.run(feed)
    inputs = ("user inputs" if opts.inputs is not None else "a held-out calibration sample" if opts.quantize
              else f"random (seed {opts.seed})")
    if compiled.device is not None:
        compiled.metadata["validated_on"] = compiled.session().device_name
    compiled.validation = compare(actual, reference, imported.signature.outputs, reference=_ort_name(),
                                  inputs=inputs, atol=opts.atol, rtol=opts.rtol,
                                  min_sqnr_db=opts.min_sqnr_db if quantization else
                                  FP16_MIN_SQNR_DB if opts.precision == "fp16" else None)
    if not compiled.validation.passed:
        raise ValidationError(f"validation {compiled.validation.summary()}", compiled)
    if cpu_twin is not None:
        say("check the accelerator against the same integer graph on the host CPU...")
        check = _check_against_cpu(cpu_twin, feed, actual)
        compiled.metadata["quantization"]["accelerator_check"] = check
        if not check["exact"]:
            raise ValidationError(f"the accelerator's outputs differ from the same integer graph on the host CPU "
                                  f"(max abs difference {check['max_abs_diff']:g})", compiled)
    return compiled


# float16 keeps about 3.3 significant digits; a correct fp16 build stays far above this against fp32 outputs.
FP16_MIN_SQNR_DB = 30.0


def _check_precision(opts: CompileOptions, target: Target) -> None:
    if opts.precision not in target.precisions:
        raise UserError(f"--precision {opts.precision} is not available for target {target.name} (it computes in "
                        f"{', '.join(target.precisions)}); fp16 is for the CUDA targets (-t cuda-sm80 ...)")
    if opts.precision != "fp32" and opts.quantize is not None:
        raise UserError(f"--precision {opts.precision} and --quantize {opts.quantize} exclude each other; "
                        "pick one")


def _loaded(target: Target, mod: Any) -> tuple[tempfile.TemporaryDirectory, Session]:
    """`mod` (after the pass pipeline) scheduled, built, exported and loaded on this machine; the session
    needs the library's temporary folder to live as long as it."""
    folder = tempfile.TemporaryDirectory(prefix="edgetune-build-")
    library = Path(folder.name) / LIBRARY
    target.export(target.build(target.schedule(mod)[0]), library)
    return folder, target.load(library)


def _host_runner(mod: Any) -> Callable[[Sequence[np.ndarray]], list[np.ndarray]]:
    """`mod` (after the pass pipeline) built and loaded on the host CPU: a function running it."""
    host = get_target("host")
    folder, session = _loaded(host, mod)
    return lambda arrays: (folder, host.run(session, arrays))[1]


# Instrumented runs per build when records are checked inside the model (`autotune/verify.py`).
IN_MODEL_RUNS = 40


def _in_model_check(target: Target, device: RemoteDevice | None, signature: Signature
                    ) -> Callable[[Sequence[Any]], list[dict[str, float]]] | None:
    """The tuner's check of records inside the model (`autotune/verify.py`): for a CPU model run here, the
    modules built here and run in turns on seeded random inputs. None where kernels cannot be timed inside a
    model: on a remote device (its VM cannot be instrumented), or a GPU (launches return before kernels end)."""
    if device is not None or target.device_type != "cpu" or not target.runs_locally:
        return None
    arrays = signature.check_feed(signature.random_feed(0))
    built: list[tuple[Any, tuple[tempfile.TemporaryDirectory, Session]]] = []  # the default is built once

    def kernel_times(mods: Sequence[Any]) -> list[dict[str, float]]:
        loaded = []
        for mod in mods:
            found = next((b for m, b in built if m.same_as(mod)), None)
            if found is None:
                found = _loaded(target, mod)
                built.append((mod, found))
            loaded.append(found)
        return target.compare_kernels([session for _, session in loaded], arrays, IN_MODEL_RUNS)

    return kernel_times


def _check_against_cpu(cpu_twin: PassResult, feed: Mapping[str, np.ndarray], actual: list[np.ndarray]) -> dict:
    """Run the integer graph without offloading on the host and compare: they must agree bit for bit."""
    expected = _host_runner(cpu_twin.mod)(list(feed.values()))
    diffs = [float(np.max(np.abs(a.astype(np.float64) - e.astype(np.float64)))) if a.size else 0.0
             for a, e in zip(actual, expected)]
    return {"reference": "the same integer graph on the host CPU", "max_abs_diff": max(diffs, default=0.0),
            "exact": all(np.array_equal(a, e) for a, e in zip(actual, expected))}


# Operators that make a model pre-quantized: its own scales decide which layers run in integers.
QUANTIZED_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "QGemm", "ConvInteger",
                 "MatMulInteger"}


def _prequantized(model) -> bool:
    return any(node.op_type in QUANTIZED_OPS for node in model.graph.node)


def _require_quantization(opts: CompileOptions, loaded, target: Target) -> None:
    """Refuse a float build for a target that runs integer layers only."""
    if opts.quantize is None and not _prequantized(loaded.proto) and target.requires_quantization():
        raise UserError(target.requires_quantization())


def _tiling_tuner(target: Target, opts: CompileOptions, say: Progress) -> Any:
    """The autotune stage's chooser of the accelerator's tilings (VTA targets; None for others), when tuning or
    a database is asked for."""
    tuning = opts.tune_trials or opts.tune_time_budget_s is not None
    if not tuning and opts.tuning_db is None:
        return None
    from .autotune import TuneConfig, tiling_tuner

    config = TuneConfig(trials=opts.tune_trials, time_budget_s=opts.tune_time_budget_s) if tuning else None
    return tiling_tuner(target, opts.tuning_db, config, say)


def _quantize(imported, target: Target, pass_config: PassConfig, opts: CompileOptions, say: Progress,
              tiling_tuner: Any = None):
    """Run the pipeline with an int8 plan: calibrated on the host CPU (`--quantize int8`; layers the model
    already quantizes keep its scales), or the one a pre-quantized model states; the target's accelerator
    takes what it can, tiled by `tiling_tuner` where given. Returns (PassResult, QuantReport, the held-out
    calibration sample for validation or None)."""
    from .passes.quantize import QuantizeConfig, plan_from_model, quantize_plan

    if opts.quantize not in (None, "int8"):
        raise UserError(f"--quantize {opts.quantize!r} is not supported; the only choice is int8")
    if opts.quantize and opts.calibration is None:
        raise UserError("--quantize int8 needs --calibration DATA (a .npz of input samples, or a folder of "
                        ".npy/.npz files)")
    if pass_config.opt_level < 1:
        if opts.quantize:
            raise UserError("--quantize int8 needs --opt-level 1 or higher (it quantizes after the folding passes)")
        return run_passes(imported.mod, pass_config), None, None, None  # pre-quantized: run as fake-quant float
    float_part = run_passes(imported.mod, pass_config, stop_after=CALIBRATE_AFTER)
    if not opts.quantize:
        plan, report = plan_from_model(float_part.mod, pass_config.channel_block)
        return _realized(float_part, pass_config, plan), report, None, None
    settings = {"power_of_two": opts.power_of_two, **target.quantization_overrides()}
    config = QuantizeConfig(method=opts.calibration_method, scheme=target.int8_activations(),
                            max_accuracy_drop=opts.max_accuracy_drop, channel_block=pass_config.channel_block,
                            **settings)
    samples = load_samples(opts.calibration, imported.signature)
    host_config = replace(pass_config, channel_block=get_target("host").channel_block())

    def build_runner(mod):
        return _host_runner(run_passes(mod, host_config, start_after=CALIBRATE_AFTER).mod)

    plan, report = quantize_plan(float_part.mod, samples.samples, config, build_runner,
                                 len(imported.signature.outputs), samples.labels, say,
                                 target.accelerator(tiling_tuner))
    realized = _realized(float_part, pass_config, plan)
    cpu_twin = None
    if plan.accelerator is not None and plan.accelerator.layers:  # the same graph, every unit on the CPU
        cpu_twin = _realized(float_part, pass_config, replace(plan, accelerator=None))
    return realized, report, samples.samples[-1], cpu_twin


def _realized(float_part: PassResult, pass_config: PassConfig, plan) -> PassResult:
    """The rest of the pipeline, from the calibration point on, with `plan` realized."""
    rest = run_passes(float_part.mod, replace(pass_config, quant_plan=plan), start_after=CALIBRATE_AFTER)
    return PassResult(rest.mod, float_part.records + rest.records)


def _tune_and_apply(mod, target: Target, opts: CompileOptions, signature: Signature, timed, say
                    ) -> tuple[Any, dict]:
    """Tune (when a budget is given) into the database, then apply its winning records to `mod`."""
    from .autotune import TuneConfig, TuningDatabase, apply_best_records, tune

    tvm_target = target.tvm_target()
    db = TuningDatabase(opts.tuning_db, tvm_target)
    summary: dict[str, Any] = {"database": str(db.folder), "skipped_damaged_lines": db.skipped_lines}
    if opts.tune_trials or opts.tune_time_budget_s is not None:
        config = TuneConfig(trials=opts.tune_trials, time_budget_s=opts.tune_time_budget_s, seed=opts.seed)
        measuring = _measuring(target, opts.device, config)
        check = _in_model_check(target, opts.device, signature)
        result = timed("tune", lambda: tune(mod, tvm_target, db, config, lambda m: target.schedule(m)[0], say,
                                            kernel_times=check, space=target.tuning_space, **measuring))
        summary.update(result.to_dict())
    applied, names = timed("apply records", lambda: apply_best_records(mod, tvm_target, db))
    summary["kernels_from_records"] = names
    return applied, summary


def tune_model(model: Any, target: str | Target = "host", config: Any = None, tuning_db: str | Path | None = None,
               input_shapes: Mapping[str, Sequence[int]] | None = None, opt_level: int = 2,
               progress: Progress | None = None, device: RemoteDevice | None = None,
               quantization: Mapping[str, Any] | None = None) -> Any:
    """Tune `model` for `target` into the database without building a library; returns the `TuneResult` (per
    task: trials, default and best latency, the tuning curve). The model goes through the pipeline `compile`
    runs, quantized as `quantization` says (`CompileOptions` fields: quantize, calibration, ...). The tasks are
    its kernels (MetaSchedule; with `device`, an RPC server or a tracker and key, measured there instead of on
    this machine), or for an accelerator target (VTA) the tilings of the layers it offloads, costed by its
    timing model."""
    from .autotune import TuningDatabase, tiling_tuner, tune

    say = progress or (lambda _msg: None)
    target = get_target(target)
    opts = CompileOptions(input_shapes=input_shapes, opt_level=opt_level, **(quantization or {}))
    loaded = load_model(model)
    _require_quantization(opts, loaded, target)
    tiling = tiling_tuner(target, tuning_db, config, say)
    if tiling is not None and device is not None:
        raise UserError(f"{target.name} tilings are tuned on the timing model, on this machine: drop the device "
                        "flags")
    if tiling is None:
        target.check_tools()
        measuring = _measuring(target, device, config)
    imported = import_model(loaded, input_shapes)
    pass_config = PassConfig(opt_level=opt_level, channel_block=target.channel_block())
    if opts.quantize is None and not _prequantized(loaded.proto):
        passed = run_passes(imported.mod, pass_config)
    else:
        passed = _quantize(imported, target, pass_config, opts, say, tiling)[0]
    if tiling is not None:
        return tiling.result()
    tvm_target = target.tvm_target()
    db = TuningDatabase(tuning_db, tvm_target)
    return tune(passed.mod, tvm_target, db, config, lambda m: target.schedule(m)[0], say,
                kernel_times=_in_model_check(target, device, imported.signature), space=target.tuning_space,
                **measuring)


def _measuring(target: Target, device: RemoteDevice | None, config: Any) -> dict[str, Any]:
    """The builder and runner `tune` measures candidates with: built here (linked by the target's cross
    compiler when it has one), run here or, given a device, on the device."""
    from .autotune import local_builder, rpc_runner

    if device is None and not target.runs_locally:
        raise UserError(f"tuning measures every candidate on the device: {target.unavailable_reason()}")
    return {"builder": local_builder(config.builder_timeout_s, target.cross_compiler),
            "runner": rpc_runner(device, config.runner_timeout_s) if device is not None else None}


def run_pipeline(model: Any, target: str | Target = "host", opt_level: int = 2,
                 input_shapes: Mapping[str, Sequence[int]] | None = None) -> Any:
    """Import `model` and run the pass pipeline for `target`; returns the `PassResult` (module and, per
    stage, its time and what it changed), as `edgetune inspect --passes` prints it."""
    target = get_target(target)
    imported = import_model(load_model(model), input_shapes)
    return run_passes(imported.mod, PassConfig(opt_level=opt_level, channel_block=target.channel_block()))


def load(outdir: str | Path, device: RemoteDevice | None = None) -> CompiledModel:
    """Open a saved artifact folder after checking every file against the manifest's checksums; it runs on
    `device` over RPC when one is given, else on this machine."""
    outdir = Path(outdir)
    manifest = read_manifest(outdir)
    verify_files(outdir, manifest)
    try:
        signature = Signature.from_dict(manifest["signature"])
        target = get_target(manifest["target"]["name"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{outdir}/manifest.json is missing {exc}; compile the model again") from None
    metadata = {k: v for k, v in manifest.items() if k not in ("files", "validation", "latency")}
    compiled = CompiledModel(target, signature, outdir / LIBRARY, metadata, device=device)
    compiled.validation = manifest.get("validation")
    latency_path = outdir / LATENCY_JSON
    if latency_path.is_file():
        import json

        compiled.latency = LatencyReport.from_dict(json.loads(latency_path.read_text()))
    return compiled


def versions() -> dict[str, str]:
    import onnx
    import tvm
    import tvm_ffi
    from tvm.target import codegen

    return {"edgetune": __version__, "tvm": tvm.__version__, "tvm_ffi": tvm_ffi.__version__,
            "llvm": str(codegen.llvm_version_major()), "onnx": onnx.__version__, "onnxruntime": _ort_version(),
            "numpy": np.__version__, "python": platform.python_version()}


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _ort_name() -> str:
    return f"onnxruntime {_ort_version()} (CPUExecutionProvider)"
