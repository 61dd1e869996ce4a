"""Autotuning: MetaSchedule really measures, records are keyed and reused, damage is survived."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tvm

import edgetune
from edgetune.autotune import (TuneConfig, TuningDatabase, extract_tasks, parse_duration, repair_database,
                               target_key)
from edgetune.autotune.database import record_key
from edgetune.errors import UserError
from edgetune.targets import get_target

from onnx_models import conv_net, save
from sigkill import run_until_killed


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


def test_candidates_run_on_the_threads_the_model_runs_on():
    """The runner's workers inherit the model's pool size: left to itself TVM starts one thread per physical
    core (half the vCPUs on x86), so candidates would be ranked on fewer threads than the model uses."""
    code = ("import functools, os; from edgetune.autotune.measure import local_runner; "
            "from edgetune.targets.base import default_threads; runner = local_runner(30); "
            "print(runner.pool.submit(functools.partial(os.getenv, 'TVM_NUM_THREADS')).result(), default_threads())")
    env = {k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"}
    worker, model = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                   check=True).stdout.split()
    assert worker == model


def test_local_candidates_are_timed_alone():
    """MetaSchedule goes on searching and building while a batch runs; the tuner's local runner hands each
    batch back timed, so nothing of edgetune's runs beside a candidate being timed."""
    from tvm.s_tir import meta_schedule as ms

    from edgetune.api import run_pipeline
    from edgetune.autotune.measure import local_builder, local_runner
    from edgetune.autotune.tuner import _MeasuredAlone

    host = get_target("host")
    target = host.tvm_target()
    kernel = extract_tasks(run_pipeline(conv_net(channels=4, size=6)).mod, target)[0].dispatched[0]
    built = local_builder(120).build([ms.builder.BuilderInput(host.schedule(kernel)[0], target)])
    inputs = [ms.runner.RunnerInput(built[0].artifact_path, "cpu", ms.arg_info.ArgInfo.from_prim_func(kernel["main"]))]
    futures = _MeasuredAlone(local_runner(30)).run(inputs)
    assert [future.done() for future in futures] == [True]
    result = futures[0].result()
    assert result.error_msg is None and len(result.run_secs) == 10 and all(float(s) > 0 for s in result.run_secs)


def test_tune_resume_and_compile_from_a_complete_database(tmp_path):
    """A real (short) MetaSchedule run with the XGBoost model; then a compile from the same database measures
    nothing, validates against onnxruntime, and picks the same kernels each time."""
    model = conv_net(channels=16, size=12)
    lines = []
    first = edgetune.compile(model, tune_trials=8, tuning_db=tmp_path, progress=lines.append)
    tuning = first.metadata["tuning"]
    defaults = [line for line in lines if line.startswith("default schedules measured")]
    kernels = len(tuning["tasks"])  # the first default measurement is reported before the others are built
    assert kernels >= 3 and defaults[0].startswith(f"default schedules measured: 1/{kernels} kernels; slowest")
    assert defaults[-1].startswith(f"default schedules measured: {kernels}/{kernels}")
    assert tuning["measured_now"] >= 8 or tuning["measured_now"] == sum(t["trials"] for t in tuning["tasks"])
    assert sum(t["trials"] for t in tuning["tasks"]) >= 8
    assert all(t["default_ms"] is not None for t in tuning["tasks"])  # every kernel's baseline was measured
    assert first.validation.passed
    curve = tuning["curve"]  # (seconds, trials, estimated ms) after each batch, never worse than the start
    assert curve[0][1] == 0 and curve[-1][1] >= 8 and curve[-1][2] <= curve[0][2]
    saved = first.save(tmp_path / "artifact")
    assert (saved / "tuning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
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
    # every record the compiles use was timed inside the model and found faster there than the default
    db = TuningDatabase(tmp_path, get_target("host").tvm_target())
    accepted = {v.task for verdicts in db.verdicts.values() for v in verdicts if v.accepted}
    assert set(first.metadata["tuning"]["kernels_from_records"]) <= accepted
    assert {v["task"] for v in tuning["in_model"]} <= {t["task"] for t in tuning["tasks"]}


def test_small_design_spaces_are_measured_whole_resumed_and_applied(tmp_path):
    """The conv kernels' rule spaces (a few tile sizes each) are measured schedule by schedule, not searched: a
    run cut short by its budget and the next run together measure each schedule once, and the module built
    from the records computes what the untuned one does."""
    from edgetune.api import run_pipeline
    from edgetune.autotune.records import apply_best_records
    from edgetune.autotune.small_space import space_schedules
    from edgetune.autotune.tuner import SMALL_SPACE

    host = get_target("host")
    target = host.tvm_target()
    mod = run_pipeline(conv_net(channels=16, size=12)).mod
    tasks = extract_tasks(mod, target)
    spaces = {t.task_name: space_schedules(t.dispatched[0], host.tuning_space(t.dispatched[0]), SMALL_SPACE)
              for t in tasks if host.tuning_space(t.dispatched[0]) is not None}
    assert spaces and all(spaces.values())  # every conv kernel's space is small
    total = sum(map(len, spaces.values()))
    db = TuningDatabase(tmp_path, target)

    def tune(trials):
        return edgetune.autotune.tune(mod, target, db, TuneConfig(trials=trials), lambda m: host.schedule(m)[0],
                                      lambda _line: None, space=host.tuning_space)

    assert tune(total - 2).measured_now == total - 2
    assert tune(total).measured_now == 2
    for task in tasks:
        if task.task_name in spaces:
            traces = {str(r.trace) for r in db.records(task.dispatched[0])}
            assert len(traces) == len(spaces[task.task_name])  # each schedule once
    kernels = [t.dispatched[0] for t in tasks]
    history = db.history(kernels)  # in the order measured: kernel by kernel, the second run after the first
    owners = [index for index, _ in history]
    assert len(history) == total and owners == sorted(owners)
    for index, kernel in enumerate(kernels):
        assert sorted(str(r.trace) for i, r in history if i == index) == \
            sorted(str(r.trace) for r in db.records(kernel))
    applied, names = apply_best_records(mod, target, db, tasks)
    assert set(names) <= set(spaces)
    args = [np.random.default_rng(0).uniform(-1, 1, (1, 3, 12, 12)).astype("float32")]
    outputs = []
    for module in (host.schedule(mod)[0], host.schedule(applied)[0]):
        vm = tvm.relax.VirtualMachine(tvm.compile(module, target=target), tvm.cpu())
        outputs.append(vm["main"](*[tvm.runtime.tensor(a) for a in args]).numpy())
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)


@pytest.mark.ci
def test_rule_space_too_large_to_measure_whole_is_searched(tmp_path, monkeypatch):
    """A rule space above the small-space limit goes to MetaSchedule's evolutionary search (a `ScheduleFn`
    space mutated by `MutateTileSize`); its records replay onto the kernel."""
    from edgetune.api import run_pipeline
    from edgetune.autotune import tuner

    monkeypatch.setattr(tuner, "SMALL_SPACE", 0)
    host = get_target("host")
    target = host.tvm_target()
    mod = run_pipeline(conv_net(channels=16, size=12)).mod
    conv = next(t for t in extract_tasks(mod, target) if host.tuning_space(t.dispatched[0]) is not None)
    db = TuningDatabase(tmp_path, target)
    lines = []
    result = tuner.tune(mod, target, db, TuneConfig(trials=8, trials_per_round=4), lambda m: host.schedule(m)[0],
                        lines.append, space=host.tuning_space)
    assert result.measured_now >= 4 and not any("small design spaces" in line for line in lines)
    records = [r for r in TuningDatabase(tmp_path, target).records(conv.dispatched[0]) if r.run_secs]
    assert records and all("sample_perfect_tile" in str(r.trace) for r in records)
    for record in records:  # read back from the files, each replays onto the kernel and builds
        sch = tvm.s_tir.Schedule(conv.dispatched[0])
        record.trace.apply_to_schedule(sch, remove_postproc=False)
        tvm.build(sch.mod, target=target)


def test_records_slower_inside_the_model_are_rejected_for_good(tmp_path):
    """The check inside the model (autotune/verify.py) decides from the kernels' in-model times: here every
    record is made to win alone (a slow default recorded in the database) and to lose inside the model (the
    times given), so each one checked is rejected, the verdicts outlive the process, and no rejected record is
    applied again, also when read back from the files (the records judged are those just measured, whose
    traces hold TVM immediates where the files hold plain numbers)."""
    from edgetune.api import run_pipeline
    from edgetune.autotune.database import Baseline
    from edgetune.autotune.records import winning_record
    from edgetune.autotune.verify import verify_records

    model = conv_net(channels=16, size=12)
    host = get_target("host")
    target = host.tvm_target()
    mod = run_pipeline(model).mod
    tasks = extract_tasks(mod, target)
    db = TuningDatabase(tmp_path, target)
    edgetune.autotune.tune(mod, target, db, TuneConfig(trials=8, trials_per_round=4),
                           lambda m: host.schedule(m)[0], lambda _line: None)
    for task in tasks:
        db.save_baseline(task.dispatched[0], Baseline(task.task_name, 1.0))
    db.verdicts.clear()
    rounds = []

    def slower_inside(mods):
        rounds.append(len(mods))
        return [{t.task_name: 1e-3 for t in tasks}, {t.task_name: 2e-3 for t in tasks}]

    verdicts = verify_records(mod, target, db, slower_inside, lambda _line: None)
    assert verdicts and not any(v.accepted for v in verdicts) and rounds[0] == 2 and len(rounds) <= 3
    reloaded = TuningDatabase(tmp_path, target)
    rejected = {(v.task, v.record) for v in verdicts}
    for task in tasks:
        winner = winning_record(task.dispatched[0], reloaded)
        assert winner is None or (task.task_name, record_key(winner[0])) not in rejected
    assert sum(len(v) for v in reloaded.verdicts.values()) == len(verdicts)
    recognised = [r for task in tasks for r, _ in reloaded.fastest(task.dispatched[0], 8)
                  if reloaded.verdict(task.dispatched[0], r) is not None]
    assert len(recognised) == len(verdicts)  # each judged record is known as judged when read back


EDGETUNE = str(Path(sys.executable).parent / "edgetune")


@pytest.mark.parametrize("args, fragment", [
    ([], "needs a budget"),
    (["--time-budget", "soon"], "is not a duration"),
    (["--trials", "-3"], "must be positive"),
])
def test_tune_command_rejects_bad_budgets(tmp_path, args, fragment):
    model = save(conv_net(channels=8, size=8), tmp_path / "conv.onnx")
    result = subprocess.run([EDGETUNE, "tune", str(model), "--db", str(tmp_path / "db"), *args],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and fragment in result.stderr


@pytest.mark.ci
def test_kill_9_mid_tuning_loses_at_most_the_running_batch(tmp_path):
    """`edgetune tune` killed with SIGKILL (workers too) after its first reported batch: the database still
    loads, holds every reported trial, and a new run measures only what the budget has left."""
    model = save(conv_net(channels=16, size=12), tmp_path / "conv.onnx")
    db = tmp_path / "db"
    cmd = [EDGETUNE, "tune", str(model), "--trials", "12", "--db", str(db)]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            start_new_session=True)
    reported = 0
    try:
        for line in proc.stderr:
            match = re.search(r"(\d+)/12 trials", line)
            if match:
                reported = int(match.group(1))
                break
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    assert reported >= 4
    target = get_target("host").tvm_target()
    kept = TuningDatabase(db, target)
    assert len(kept.ms.get_all_tuning_records()) >= reported
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    measured = int(re.search(r"(\d+) candidates measured now", result.stdout).group(1))
    total = len(TuningDatabase(db, target).ms.get_all_tuning_records())
    assert measured <= 12 - reported and total >= 12, result.stdout


@pytest.mark.ci
def test_time_budget_stops_after_the_batch_in_flight(tmp_path):
    from edgetune import api

    model = conv_net(channels=16, size=12)
    spent = api.tune_model(model, "host", TuneConfig(time_budget_s=1, trials_per_round=4), tmp_path)
    assert spent.stopped_by == "time budget" and spent.measured_now == 0  # spent on the default schedules
    assert all(task.default_ms is not None for task in spent.tasks)  # which are kept: the next run skips them
    result = api.tune_model(model, "host", TuneConfig(time_budget_s=3, trials_per_round=4), tmp_path)
    # The search's first round outlasts 3 s: the builder stops the run at its next batch (MetaSchedule measures
    # nothing before the round ends), or the callback after the batch in flight; only whole batches count.
    assert result.stopped_by == "time budget" and result.measured_now % 4 == 0
    assert result.seconds < 3 + 60


@pytest.mark.ci
def test_tuning_on_two_devices_of_an_rpc_tracker(tmp_path):
    """A tracker and two RPC servers on 127.0.0.1 (TVM's own Python server, which links the candidates it
    receives): candidates are measured on them, records land in the database, the curve is plotted."""
    from rpc_farm import farm

    model = save(conv_net(channels=8, size=8), tmp_path / "conv.onnx")
    with farm(2) as (port, _servers):
        missing = subprocess.run([EDGETUNE, "tune", str(model), "--trials", "4", "--db", str(tmp_path / "db"),
                                  "--rpc-tracker", f"127.0.0.1:{port}", "--rpc-key", "nokey"],
                                 capture_output=True, text=True, timeout=120)
        assert missing.returncode == 2 and "no device with key 'nokey'" in missing.stderr
        result = subprocess.run([EDGETUNE, "tune", str(model), "--trials", "4", "--db", str(tmp_path / "db"),
                                 "--rpc-tracker", f"127.0.0.1:{port}", "--rpc-key", "farm", "--plot",
                                 str(tmp_path / "curve.png")], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    assert int(re.search(r"(\d+) candidates measured now", result.stdout).group(1)) >= 4
    assert len(TuningDatabase(tmp_path / "db", get_target("host").tvm_target()).ms.get_all_tuning_records()) >= 4
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_kill_9_at_random_moments_loses_no_committed_record(tmp_path):
    """`edgetune tune` SIGKILLed (workers too) at 20 seeded random moments between 20 s and 140 s after its start
    (its first batch comes after about a minute here), again and again on one database: after each kill the
    database loads, and it holds every record held before plus every trial the run reported (the progress line
    comes after MetaSchedule has appended the batch's records). Each run gets 16 more trials than the database
    holds, so batches are small (4) and every run has work to do. (The default suite's version is the kill
    after the first reported batch above.)"""
    kills = 20
    model = save(conv_net(channels=8, size=8), tmp_path / "conv.onnx")
    db, log = tmp_path / "db", tmp_path / "log"
    target = get_target("host").tvm_target()
    rng = random.Random(kills)
    held = reported_in_all = 0
    for attempt in range(kills):
        command = [EDGETUNE, "tune", str(model), "--trials", str(held + 16), "--db", str(db), "--seed", str(attempt)]
        status = run_until_killed(command, rng.uniform(20, 140), log)
        assert status in (None, 0), log.read_text()
        reports = re.findall(r"(\d+)/\d+ trials", log.read_text())
        reported = int(reports[-1]) if reports else 0
        records = len(TuningDatabase(db, target).ms.get_all_tuning_records())
        assert records >= held + reported, (attempt, held, reported, log.read_text())
        held, reported_in_all = records, reported_in_all + reported
    print(f"{kills} kills; {reported_in_all} trials reported before them, all kept; {held} records")
    assert reported_in_all > 0
