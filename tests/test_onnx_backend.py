"""ONNX's own backend test suite through the whole pipeline (import, passes, build, run on the host).

Every case must pass unless tests/onnx_backend_expected_failures.txt lists it; a listed case that passes fails
the test too, so the list only shrinks. The default run takes every NODE_SAMPLE_EVERY-th node case and the
small model categories; `--runslow` runs all node cases and the nine light models.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from edgetune import conformance

EXPECTED_FAILURES = Path(__file__).with_name("onnx_backend_expected_failures.txt")
NODE_SAMPLE_EVERY = 8


def expected_failures() -> dict[str, str]:
    """case key -> the reason it fails."""
    listed = {}
    for line in EXPECTED_FAILURES.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, reason = line.partition("  ")
            listed[key.strip()] = reason.strip()
    return listed


def check_against_expected(results: list[conformance.CaseResult]) -> None:
    listed = expected_failures()
    new_failures = [f"{r.key} [{r.stage}] {r.reason}" for r in results if not r.passed and r.key not in listed]
    now_passing = [r.key for r in results if r.passed and r.key in listed]
    message = []
    if new_failures:
        message.append(f"{len(new_failures)} cases fail that the list does not name:\n  " + "\n  ".join(new_failures))
    if now_passing:
        message.append(f"{len(now_passing)} listed cases pass now; remove them from {EXPECTED_FAILURES.name}:\n  "
                       + "\n  ".join(now_passing))
    assert not message, "\n".join(message)


@pytest.fixture(scope="module")
def node_cases() -> list[conformance.Case]:
    return conformance.collect_cases(["node"])


def test_node_cases_sample(node_cases):
    check_against_expected(conformance.run_cases(node_cases[::NODE_SAMPLE_EVERY]))


@pytest.mark.slow
def test_node_cases_all(node_cases):
    check_against_expected(conformance.run_cases(node_cases))


def test_model_cases():
    check_against_expected(conformance.run_cases(conformance.collect_cases(
        ["simple", "pytorch-converted", "pytorch-operator"])))


@pytest.mark.slow
def test_light_models():
    cases = conformance.collect_cases(["light"])
    assert len(cases) == 9
    check_against_expected(conformance.run_cases(cases))


def test_expected_failures_name_existing_cases(node_cases):
    known = {c.key for c in node_cases} | {c.key for c in conformance.collect_cases(
        ["simple", "pytorch-converted", "pytorch-operator", "light"])}
    stale = sorted(set(expected_failures()) - known)
    assert not stale, f"{EXPECTED_FAILURES.name} names cases that do not exist: {stale}"
