"""Autotuning: MetaSchedule really measures, records are keyed and reused, damage is survived."""

import json
import warnings

import pytest
import tvm

import edgetune
from edgetune.autotune import TuneConfig, TuningDatabase, parse_duration, repair_database, target_key
from edgetune.errors import UserError

from onnx_models import conv_net


def test_database_is_keyed_by_target_and_tvm_version(tmp_path):
    a = tvm.target.Target({"kind": "llvm", "mcpu": "znver2", "num-cores": 2})
    b = tvm.target.Target({"kind": "llvm", "mcpu": "skylake", "num-cores": 2})
    assert target_key(a)[0] != target_key(b)[0]
    assert target_key(a)[0] == target_key(tvm.target.Target(a.export()))[0]
    db = TuningDatabase(tmp_path, a)
    key = json.loads((db.folder / "key.json").read_text())
    assert key["tvm"] == tvm.__version__ and key["target"]["mcpu"] == "znver2"


def test_damaged_lines_are_dropped_and_records_renumbered(tmp_path):
    (tmp_path / "database_workload.json").write_text('["0x1", "garbled\n["0x2", "payload"]\n')
    (tmp_path / "database_tuning_record.json").write_text('[0, ["a"]]\n[1, ["b"]]\n[1, ["c"]\n')
    assert repair_database(tmp_path) == 3  # one workload, its record, one truncated record
    assert (tmp_path / "database_workload.json").read_text() == '["0x2", "payload"]\n'
    assert (tmp_path / "database_tuning_record.json").read_text() == '[0, ["b"]]\n'
    assert repair_database(tmp_path) == 0


@pytest.mark.parametrize("text, seconds", [("30m", 1800), ("90s", 90), ("1h30m", 5400), ("45", 45)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-5m", "0"])
def test_bad_durations_are_user_errors(text):
    with pytest.raises(UserError):
        parse_duration(text)


def test_tuning_needs_a_budget():
    with pytest.raises(UserError, match="needs a budget"):
        TuneConfig()


def test_tune_resume_and_compile_from_a_complete_database(tmp_path):
    """A real (short) MetaSchedule run with the XGBoost model; then a compile from the same database measures
    nothing, validates against onnxruntime, and picks the same kernels each time."""
    model = conv_net(channels=16, size=12)
    first = edgetune.compile(model, tune_trials=8, tuning_db=tmp_path)
    tuning = first.metadata["tuning"]
    assert tuning["measured_now"] >= 8 or tuning["measured_now"] == sum(t["trials"] for t in tuning["tasks"])
    assert sum(t["trials"] for t in tuning["tasks"]) >= 8
    assert all(t["default_ms"] is not None for t in tuning["tasks"])  # every kernel's baseline was measured
    assert first.validation.passed
    again = [edgetune.compile(model, tune_trials=8, tuning_db=tmp_path) for _ in range(2)]
    assert [c.metadata["tuning"]["measured_now"] for c in again] == [0, 0]
    picked = {tuple(c.metadata["tuning"]["kernels_from_records"]) for c in [first, *again]}
    assert len(picked) == 1
    for compiled in again:
        assert compiled.validation.passed
        assert compiled.metadata["schedules"]["unscheduled"] == []
    # damage the record file: the next run warns, drops the line and still compiles
    records = next(tmp_path.glob("*/database_tuning_record.json"))
    with records.open("a") as handle:
        handle.write('[0, ["truncated"\n')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        damaged = edgetune.compile(model, tuning_db=tmp_path)
    assert any("damaged" in str(w.message) for w in caught)
    assert damaged.metadata["tuning"]["skipped_damaged_lines"] == 1 and damaged.validation.passed
