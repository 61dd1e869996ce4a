"""The `edgetune` command: parses arguments and calls the Python API, nothing more.

Exit statuses: 0 success, 1 internal error (a traceback file is named), 2 bad input (one line, no traceback),
3 validation failure (the artifact is kept as OUTDIR.failed), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .errors import EdgetuneError, UserError, ValidationError

if TYPE_CHECKING:
    from .targets.rpc import RemoteDevice


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + error
        raise UserError(f"{message} (see `{self.prog} --help`)")


def _add_profile_flags(p: argparse.ArgumentParser, repeat: int) -> None:
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first (default 3)")
    p.add_argument("--repeat", type=int, default=repeat, help=f"timed runs (default {repeat})")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")


def _add_quantize_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quantize", choices=["int8"], help="post-training static quantization (needs --calibration)")
    p.add_argument("--calibration", metavar="DATA",
                   help="calibration samples: a .npz (N x input shape per input, optional 'labels') or a folder "
                        "of .npy/.npz samples")
    p.add_argument("--calibration-method", default="percentile", choices=["minmax", "percentile", "entropy", "mse"],
                   help="how activation ranges are chosen (default percentile 99.99)")
    p.add_argument("--power-of-two", action="store_true", help="power-of-two scales: requantize by shifts only")
    p.add_argument("--max-accuracy-drop", type=float, metavar="POINTS",
                   help="keep the most sensitive layers in float until top-1 drops at most this much on the "
                        "held-out 20%% of the calibration samples")


def _quantize_options(args: argparse.Namespace) -> dict:
    """The `CompileOptions` fields of `_add_quantize_flags`."""
    if args.calibration and not args.quantize:
        raise UserError("--calibration is only used with --quantize int8; add --quantize int8")
    return dict(quantize=args.quantize, calibration=args.calibration, calibration_method=args.calibration_method,
                power_of_two=args.power_of_two, max_accuracy_drop=args.max_accuracy_drop)


def _add_device_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rpc", metavar="HOST:PORT", help="run on the device behind this TVM RPC server")
    p.add_argument("--rpc-tracker", metavar="HOST:PORT", help="take a device from this TVM RPC tracker")
    p.add_argument("--rpc-key", metavar="KEY", help="the tracker's device queue (with --rpc-tracker)")
    p.add_argument("--rpc-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="how long the device may leave a request unanswered beyond its expected time (default 60)")


def _device(args: argparse.Namespace) -> RemoteDevice | None:
    from .targets.rpc import RemoteDevice

    return RemoteDevice.from_flags(args.rpc, args.rpc_tracker, args.rpc_key, args.rpc_timeout)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgetune", description="Compile ONNX models into tuned, validated TVM libraries.")
    parser.add_argument("--version", action="version", version=f"edgetune {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    c = sub.add_parser("compile", help="compile, validate and profile a model into an artifact folder")
    c.add_argument("model", help="an .onnx file")
    c.add_argument("-t", "--target", default="host", help="target preset (see `edgetune targets`)")
    c.add_argument("-o", "--output", required=True, help="artifact folder to create")
    c.add_argument("--input-shape", action="append", metavar="NAME=DxD...",
                   help="static shape for an input with dynamic dims, e.g. data=1x3x224x224 (repeatable)")
    c.add_argument("--opt-level", type=int, default=2, help="pass pipeline level 0-3 (default 2)")
    c.add_argument("--inputs", help=".npz of validation inputs (default: seeded random data)")
    c.add_argument("--no-validate", action="store_true", help="skip the comparison with onnxruntime")
    c.add_argument("--no-winograd", action="store_true",
                   help="compute 3x3 convs directly, not by Winograd's transforms (rounding as the direct conv)")
    c.add_argument("--atol", type=float, help="absolute tolerance for validation (default per dtype)")
    c.add_argument("--rtol", type=float, help="relative tolerance for validation (default per dtype)")
    c.add_argument("--force", action="store_true", help="replace OUTDIR if it exists")
    _add_profile_flags(c, repeat=50)
    c.add_argument("--max-profile-seconds", type=float, default=10.0,
                   help="stop timing early after this long (default 10)")
    c.add_argument("--tune", type=int, default=0, metavar="N",
                   help="tune with MetaSchedule until the database holds N trials for this model's kernels "
                        "(VTA targets: N candidate tilings per offloaded layer, costed by the timing model)")
    c.add_argument("--time-budget", help="tune for at most this long (e.g. 30m, 90s)")
    c.add_argument("--db", help="tuning database folder: applied when given, extended when tuning "
                                "(default: ~/.cache/edgetune/tuning)")
    c.add_argument("--precision", choices=["fp32", "fp16"], default="fp32",
                   help="fp16: float16 kernels accumulating in float32, inputs and outputs stay float32 "
                        "(CUDA targets)")
    _add_quantize_flags(c)
    c.add_argument("--cross-compiler", metavar="CXX",
                   help="linker for cross targets (default for ARM: aarch64-linux-gnu-g++)")
    _add_device_flags(c)

    t = sub.add_parser("tune", help="tune a model's kernels into the tuning database (no library is written)")
    t.add_argument("model", help="an .onnx file")
    t.add_argument("-t", "--target", default="host", help="target preset (see `edgetune targets`)")
    t.add_argument("--trials", type=int, default=0, help="measured candidates in all (database records count; VTA "
                                                         "targets: candidate tilings per offloaded layer)")
    t.add_argument("--time-budget", help="wall time to spend (e.g. 30m, 90s, 1h)")
    t.add_argument("--db", help="tuning database folder (default: ~/.cache/edgetune/tuning)")
    t.add_argument("--input-shape", action="append", metavar="NAME=DxD...", help="as for compile")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--search", default="xgb", choices=["xgb", "evolve-random", "random"],
                   help="xgb: evolutionary search ranked by MetaSchedule's XGBoost cost model (default); for "
                        "comparison, evolve-random: the same search ranked at random; random: random sampling")
    t.add_argument("--space", default="rules", choices=["rules", "generic"],
                   help="rules: the default schedule's rule with its tiles sampled, where a kernel has one "
                        "(default); generic: MetaSchedule's own CPU space for every kernel")
    t.add_argument("--plot", metavar="PNG", help="write the tuning curve (estimated latency against trials) here")
    _add_quantize_flags(t)  # VTA targets tune the layers that the int8 compile offloads
    _add_device_flags(t)

    r = sub.add_parser("run", help="run a compiled artifact on inputs from an .npz")
    r.add_argument("outdir")
    r.add_argument("--inputs", required=True, help=".npz with one array per model input")
    r.add_argument("--outputs", required=True, help=".npz to write, one array per model output")
    r.add_argument("--threads", type=int, default=None)
    _add_device_flags(r)

    p = sub.add_parser("profile", help="measure a compiled artifact and rewrite its latency log")
    p.add_argument("outdir")
    p.add_argument("--inputs", help=".npz of inputs (default: seeded random data)")
    _add_profile_flags(p, repeat=100)
    _add_device_flags(p)

    i = sub.add_parser("inspect", help="list a model's operators, inputs, outputs and unsupported operators")
    i.add_argument("model")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.add_argument("--passes", action="store_true",
                   help="run the pass pipeline and show what each pass changed (operators, kernels)")
    i.add_argument("-t", "--target", default="host", help="target for --passes (default host)")
    i.add_argument("--opt-level", type=int, default=2, help="pipeline level for --passes (default 2)")
    i.add_argument("--input-shape", action="append", metavar="NAME=DxD...", help="as for compile")

    sub.add_parser("targets", help="list target presets with their TVM target JSON")

    v = sub.add_parser("vta", help="tools for the VTA accelerator (simulated FPGA) back end")
    vta = v.add_subparsers(dest="vta_command", required=True, parser_class=_Parser)
    d = vta.add_parser("disasm", help="list a binary VTA instruction stream (16 bytes per instruction)")
    d.add_argument("file")
    d.add_argument("--config", default="vta-sim", help="VTA preset (vta-sim, vta-ultra96) or a vta_config.json "
                                                       "(field widths depend on it; default vta-sim)")
    e = sub.add_parser("emulate", help="serve an emulated aarch64 device (qemu) over TVM RPC until Ctrl-C")
    e.add_argument("--cpu", default="cortex-a72", help="qemu core to emulate (default cortex-a72)")
    e.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    e.add_argument("--port", type=int, default=9090, help="port to listen on (default 9090; 0: any free)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if getattr(args, "threads", None) is not None:  # before anything runs: validation, runs, profiling
            from .targets.host import set_threads

            set_threads(args.threads)
        return COMMANDS[args.command](args)
    except ValidationError as exc:
        print(f"edgetune: {exc}", file=sys.stderr)
        return exc.exit_code
    except EdgetuneError as exc:
        print(f"edgetune: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgetune: interrupted; nothing half-written was left (tuning records already measured are kept)",
              file=sys.stderr)
        return 130
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: report, don't dump
        fd, path = tempfile.mkstemp(prefix="edgetune-crash-", suffix=".log")
        with os.fdopen(fd, "w") as f:
            traceback.print_exc(file=f)
        detail = (str(exc).strip().splitlines() or [""])[-1]
        print(f"edgetune: internal error: {type(exc).__name__}: {detail}; traceback written to {path} "
              "(please report it)", file=sys.stderr)
        return 1


def _cmd_compile(args: argparse.Namespace) -> int:
    from . import api
    from .artifact import check_destination
    from .frontend import parse_input_shapes

    outdir = Path(args.output)
    check_destination(outdir, args.force)
    options = dict(input_shapes=parse_input_shapes(args.input_shape), opt_level=args.opt_level,
                   validate=not args.no_validate, winograd=not args.no_winograd, atol=args.atol, rtol=args.rtol,
                   tune_trials=args.tune, tune_time_budget_s=_duration(args.time_budget), tuning_db=args.db,
                   device=_device(args), cross_compiler=args.cross_compiler, precision=args.precision,
                   **_quantize_options(args))
    if args.tune < 0:
        raise UserError(f"--tune {args.tune} must be a positive number of trials")
    if args.inputs:
        options["inputs"] = _read_npz(args.inputs)
    try:
        model = api.compile(args.model, args.target, progress=_progress, **options)
    except ValidationError as exc:
        failed = outdir.with_name(outdir.name + ".failed")
        if exc.compiled is not None:
            exc.compiled.profile(warmup=1, repeat=1)
            exc.compiled.save(failed, force=True)
        raise ValidationError(f"{exc}; artifact kept in {failed}") from None
    report = None
    if model.runnable:
        _progress("profile...")
        report = model.profile(warmup=args.warmup, repeat=args.repeat, threads=args.threads,
                               max_seconds=args.max_profile_seconds)
    model.save(outdir, force=args.force)
    validation = model.validation
    print(f"compiled {args.model} for {model.target.name} -> {outdir}")
    if hasattr(validation, "summary"):
        print(f"validation {validation.summary()}")
    elif validation.get("reason"):
        print(f"validation and profiling skipped: {validation['reason']}")
    if "quantization" in model.metadata:
        from .passes.quantize import QuantReport

        print(QuantReport.from_dict(model.metadata["quantization"]).table())
    if report is not None:
        print(report.format_table())
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from . import api
    from .autotune import TuneConfig
    from .frontend import parse_input_shapes

    config = TuneConfig(trials=args.trials, time_budget_s=_duration(args.time_budget), seed=args.seed,
                        search=args.search, space=args.space)
    result = api.tune_model(args.model, args.target, config, args.db, parse_input_shapes(args.input_shape),
                            progress=lambda line: print(line, file=sys.stderr, flush=True), device=_device(args),
                            quantization=_quantize_options(args))
    if args.plot and not result.curve:
        print("edgetune: nothing plotted: no tuning curve (nothing measured now, or a VTA tiling search, which "
              "has no cost model to train)", file=sys.stderr)
    elif args.plot:
        from .autotune import plot_curves

        plot_curves({args.search: result.to_dict()["curve"]}, args.plot, f"tuning {args.model}")
    print(f"tuned {args.model}: {result.measured_now} candidates measured now in {result.seconds:.0f} s "
          f"(stopped by {result.stopped_by}); database {result.database}")
    print(f"  {'trials':>6}  {'default ms':>10}  {'best ms':>9}  {'speedup':>7}  {'rejected':>8}  kernel")
    for task in result.tasks:
        print(f"  {task.trials:6d}  {_ms(task.default_ms):>10}  {_ms(task.best_ms):>9}  "
              f"{(f'{task.speedup:.2f}x' if task.speedup else '-'):>7}  {task.rejected_in_model:8d}  {task.name}")
    print("  (best and speedup: each kernel measured alone; rejected: records faster alone but not inside the "
          "model)")
    return 0


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _duration(text: str | None) -> float | None:
    if text is None:
        return None
    from .autotune import parse_duration

    return parse_duration(text)


def _cmd_run(args: argparse.Namespace) -> int:
    from . import api

    model = api.load(args.outdir, _device(args))
    outputs = model.run(_read_npz(args.inputs))
    _write_npz(Path(args.outputs), dict(zip(model.signature.output_names, outputs)))
    for spec, value in zip(model.signature.outputs, outputs):
        print(f"{spec.name}: {value.dtype}{list(value.shape)}")
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from . import api

    model = api.load(args.outdir, _device(args))
    feed = _read_npz(args.inputs) if args.inputs else None
    report = model.profile(feed, warmup=args.warmup, repeat=args.repeat, threads=args.threads)
    model.save(args.outdir, force=True)
    print(report.format_table())
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .frontend import load_model, op_coverage, opset_versions, parse_input_shapes, proto_text

    if args.passes:
        from . import api

        result = api.run_pipeline(args.model, args.target, args.opt_level, parse_input_shapes(args.input_shape))
        if args.json:
            print(json.dumps([record.to_dict() for record in result.records], indent=2))
            return 0
        width = max(len(record.name) for record in result.records)
        print(f"{'pass':<{width}}  {'seconds':>7}  what changed")
        for record in result.records:
            print(f"{record.name:<{width}}  {record.seconds:7.3f}  {record.describe()}")
        return 0

    loaded = load_model(args.model)
    coverage = op_coverage(loaded.proto)
    graph = loaded.proto.graph
    initializers = {init.name for init in graph.initializer}
    info = {
        "model": args.model,
        "producer": f"{proto_text(loaded.proto.producer_name)} {proto_text(loaded.proto.producer_version)}".strip(),
        "opsets": opset_versions(loaded.proto),
        "inputs": [_describe_value(vi) for vi in graph.input if vi.name not in initializers],
        "outputs": [_describe_value(vi) for vi in graph.output],
        "initializers": len(initializers),
        "ops": dict(coverage.counts.most_common()),
        "unsupported": coverage.unsupported,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['model']}  (producer: {info['producer'] or '?'}, opsets: "
          + ", ".join(f"{k} {v}" for k, v in info["opsets"].items()) + ")")
    for kind in ("inputs", "outputs"):
        print(f"{kind}:")
        for v in info[kind]:
            print(f"  {v['name']}: {v['dtype']}[{', '.join(map(str, v['shape']))}]")
    print(f"operators ({sum(coverage.counts.values())} nodes, {len(coverage.counts)} types, "
          f"{info['initializers']} initializers):")
    for op, count in coverage.counts.most_common():
        mark = "  UNSUPPORTED" if op in coverage.unsupported else ""
        print(f"  {count:5d}  {op}{mark}")
    if coverage.unsupported:
        print(f"unsupported by the importer: {coverage.unsupported_message()}")
    else:
        print("every operator is supported by the importer")
    return 0


def _cmd_targets(args: argparse.Namespace) -> int:
    from .targets import get_target, target_names
    from .targets.arm import aarch64_tags

    for name in target_names():
        target = get_target(name)
        print(f"{name}: {target.description}")
        print(f"  {json.dumps(target.target_json(), sort_keys=True)}")
    print(f"also accepted: TVM tags of aarch64 boards ({', '.join(aarch64_tags())}) and TVM target JSON for "
          "aarch64, e.g. -t '{\"kind\": \"llvm\", \"mtriple\": \"aarch64-linux-gnu\", \"mattr\": [\"+neon\"]}'")
    return 0


def _cmd_emulate(args: argparse.Namespace) -> int:
    from .targets.emulator import emulated_device

    with emulated_device(args.cpu, args.host, args.port) as device:
        print(f"emulated {args.cpu} (qemu) serving TVM RPC on {device.host}:{device.port}; use it with "
              f"--rpc {device.host}:{device.port}; timings under emulation are marked emulated; Ctrl-C stops it",
              flush=True)
        stop = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # after the server started: it must not inherit this
        print(f"stopped by {signal.Signals(signal.sigwait(stop)).name}", flush=True)
    return 0


def _cmd_vta(args: argparse.Namespace) -> int:
    from .targets.vta.config import load_config
    from .targets.vta.isa import disassemble_file

    print(disassemble_file(args.file, load_config(args.config)))
    return 0


COMMANDS = {"compile": _cmd_compile, "tune": _cmd_tune, "run": _cmd_run, "profile": _cmd_profile,
            "inspect": _cmd_inspect, "targets": _cmd_targets, "vta": _cmd_vta, "emulate": _cmd_emulate}


def _describe_value(vi) -> dict:
    import onnx

    tt = vi.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
    except (KeyError, TypeError):
        dtype = onnx.TensorProto.DataType.Name(tt.elem_type)
    return {"name": vi.name, "dtype": dtype, "shape": dims}


def _read_npz(path: str) -> dict[str, np.ndarray]:
    if not Path(path).is_file():
        raise UserError(f"inputs file {path} does not exist; pass an .npz with one array per model input")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (ValueError, OSError, EOFError) as exc:
        raise UserError(f"cannot read {path} as .npz ({exc}); write it with numpy.savez") from None


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    if not path.resolve().parent.is_dir():
        raise UserError(f"cannot write {path}: its folder does not exist")
    from .artifact import atomic_write

    with atomic_write(path, "wb") as f:
        np.savez(f, **arrays)


def _progress(message: str) -> None:
    if sys.stderr.isatty() or os.environ.get("EDGETUNE_PROGRESS"):
        print(f"  {message}", file=sys.stderr, flush=True)


def _version() -> str:
    from . import __version__

    return __version__


if __name__ == "__main__":
    sys.exit(main())
