"""Benchmark: Winograd F(2x2, 3x3) and F(4x4, 3x3) against the direct conv, per 3x3 conv shape.

Each shape is one 3x3 stride-1 conv + ReLU (channels in = out), compiled for the host three times: direct
(`winograd=False`), and with the tile size forced to 2 and to 4 (`passes.winograd.tile_size` replaced for
the build); onnxruntime runs the same model. Timed interleaved on one thread. The weights stay in cache
between calls here, unlike inside a model, where the larger transformed weights of F(4x4) are read from
memory once per inference (see `tile_size`, which decides with that in mind).

    .venv/bin/python bench/winograd.py [--shapes 56x64,28x128,14x256,7x512] [--rounds 3] [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import ROOT, interleaved_medians, ort_session, vm_call, write_report  # noqa: E402


def conv_model(size: int, channels: int, path: Path) -> Path:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = rng.normal(0, (2 / (9 * channels)) ** 0.5, (channels, channels, 3, 3)).astype(np.float32)
    shape = [1, channels, size, size]
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4), helper.make_node("Relu", ["c"], ["y"])], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


def bench_shape(size: int, channels: int, rounds: int, budget_s: float) -> dict:
    import edgetune
    from edgetune.passes import winograd
    from edgetune.targets import get_target

    chosen_tile = winograd.tile_size(size, size, channels, channels, get_target("host").channel_block())
    with tempfile.TemporaryDirectory() as tmp:
        path = conv_model(size, channels, Path(tmp) / "conv.onnx")
        runners, feed = {}, None
        for label, tile in (("direct", None), ("F(2x2)", 2), ("F(4x4)", 4)):
            choose = winograd.tile_size
            winograd.tile_size = lambda *_shape, tile=tile: tile
            try:
                compiled = edgetune.compile(path, "host", winograd=tile is not None)
            finally:
                winograd.tile_size = choose
            feed = compiled.signature.random_feed(0)
            runners[label] = vm_call(compiled, 1, compiled.signature.check_feed(feed))
        runners["onnxruntime"] = (lambda sess: lambda: sess.run(None, feed))(ort_session(path, 1))
        medians = interleaved_medians(runners, rounds, budget_s)
    return {"shape": f"{size}x{size}x{channels}", "median_ms": medians, "chosen": chosen_tile,
            "gflop": 2 * 9 * size * size * channels * channels / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="56x64,28x128,14x256,7x512", help="SIZExCHANNELS, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "winograd.json"))
    args = parser.parse_args()
    os.environ["TVM_NUM_THREADS"] = "1"
    results = [bench_shape(*(int(v) for v in shape.split("x")), args.rounds, args.seconds)
               for shape in args.shapes.split(",")]
    lines = ["| conv (HxWxC) | GFLOP (direct) | direct ms | F(2x2) ms | F(4x4) ms | onnxruntime ms | chosen |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        ms = r["median_ms"]
        chosen = {None: "direct", 2: "F(2x2)", 4: "F(4x4)"}[r["chosen"]]
        lines.append(f"| {r['shape']} | {r['gflop']:.3f} | {ms['direct']:.3f} | {ms['F(2x2)']:.3f} | "
                     f"{ms['F(4x4)']:.3f} | {ms['onnxruntime']:.3f} | {chosen} |")
    write_report(Path(args.out), {"results": results, "table": "\n".join(lines)})


if __name__ == "__main__":
    main()
