"""Fuzzing the front door: mutated and truncated ONNX files through `edgetune compile`.

Every case must end with exit 0 (an artifact that verifies), a clean exit 2 (one line naming the problem,
nothing written) or exit 3 (the compiled model disagrees with onnxruntime, kept as OUTDIR.failed): never exit 1,
a traceback, a native crash or a hang. The mutations (tests/onnx_mutations.py) are drawn by hypothesis, seeded
so that every run tries the same inputs; tests/fuzz_corpus/ keeps the inputs that found bugs, with what they
found and the outcome they must have now.
"""

import contextlib
import faulthandler
import io
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edgetune
from edgetune.cli import main

from onnx_models import conv_net, two_outputs
from onnx_mutations import MUTATIONS, mutate

CORPUS = Path(__file__).parent / "fuzz_corpus"
CASES = json.loads((CORPUS / "cases.json").read_text())
EDGETUNE = str(Path(sys.executable).parent / "edgetune")
HANG_S = 300  # a single compile of these models takes seconds; past this the process is dumped and ended
COMPILE_FLAGS = ["--repeat", "1", "--warmup", "0", "--max-profile-seconds", "1"]


def compile_in_process(model: Path, outdir: Path) -> tuple[int, str]:
    """`edgetune compile` through `cli.main`: its exit status and what it printed to stderr."""
    err = io.StringIO()
    faulthandler.dump_traceback_later(HANG_S, exit=True)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            status = main(["compile", str(model), "-o", str(outdir), *COMPILE_FLAGS])
    finally:
        faulthandler.cancel_dump_traceback_later()
    return status, err.getvalue()


def assert_clean_outcome(status: int, stderr: str, outdir: Path) -> None:
    lines = stderr.strip().splitlines()
    assert status in (0, 2, 3), stderr
    assert "Traceback" not in stderr, stderr
    if status == 0:
        edgetune.load(outdir)  # complete: every file matches the manifest's checksums
        return
    assert len(lines) == 1 and lines[0].startswith("edgetune: "), stderr
    assert not outdir.exists()  # nothing half-written under the user's name
    leftovers = {p.name for p in outdir.parent.iterdir()} - {outdir.name + ".failed", "case.onnx"}
    assert not leftovers, leftovers
    assert (status == 3) == (outdir.parent / (outdir.name + ".failed")).is_dir()


@pytest.fixture(scope="module")
def sources(digits_model):
    return {"digits": onnx.load(str(digits_model)), "conv": conv_net(channels=4, size=6), "two": two_outputs()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_corpus_ends_as_recorded(name, tmp_path):
    case = CASES[name]
    status, stderr = compile_in_process(CORPUS / name, tmp_path / "out")
    assert_clean_outcome(status, stderr, tmp_path / "out")
    assert status == case["status"] and case["message"] in stderr, (case["found"], stderr)


def fuzz(sources: dict[str, onnx.ModelProto], examples: int) -> Counter:
    """Compile `examples` mutated models drawn by hypothesis (derandomized: the same ones every run); returns
    how many ended with each exit status."""
    outcomes: Counter = Counter()

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(source=st.sampled_from(sorted(sources)), mutation=st.sampled_from(MUTATIONS),
           seed=st.integers(0, 2**32 - 1))
    def one_input(source, mutation, seed):
        with tempfile.TemporaryDirectory(prefix="edgetune-fuzz-") as folder:
            model = Path(folder) / "case.onnx"
            model.write_bytes(mutate(sources[source], mutation, seed))
            status, stderr = compile_in_process(model, Path(folder) / "out")
            assert_clean_outcome(status, stderr, Path(folder) / "out")
            outcomes[status] += 1

    one_input()
    return outcomes


def test_mutated_models_end_cleanly(sources):
    outcomes = fuzz(sources, examples=300)
    print(f"fuzzed {sum(outcomes.values())} inputs: exit statuses {dict(sorted(outcomes.items()))}")
    assert sum(outcomes.values()) >= 300 and outcomes[0] and outcomes[2]


@pytest.mark.slow
def test_mutated_models_end_cleanly_long_campaign(sources):
    outcomes = fuzz(sources, examples=5000)
    print(f"fuzzed {sum(outcomes.values())} inputs: exit statuses {dict(sorted(outcomes.items()))}")
    assert sum(outcomes.values()) >= 5000


@pytest.mark.parametrize("name", ["conv-wrong_rank-19.onnx", "two-wrong_attribute-10.onnx", "truncated"])
def test_command_prints_one_line_for_bad_models(name, digits_model, tmp_path):
    """The real command, where native libraries print to the process's stderr: still one line, no traceback."""
    if name == "truncated":
        model = tmp_path / "truncated.onnx"
        model.write_bytes(digits_model.read_bytes()[:5000])
        status, message = 2, "is not an ONNX model"
    else:
        model, status, message = CORPUS / name, CASES[name]["status"], CASES[name]["message"]
    result = subprocess.run([EDGETUNE, "compile", str(model), "-o", str(tmp_path / "out"), *COMPILE_FLAGS],
                            capture_output=True, text=True, timeout=HANG_S)
    assert result.returncode == status, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()
