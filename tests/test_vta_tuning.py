"""The autotune stage's VTA tiling search: timing model as the cost, records in the tuning database."""

import json

import pytest

from edgetune.autotune import TuneConfig
from edgetune.autotune.tiling import TILINGS, TilingDatabase, TilingRecord, TilingTuner, search
from edgetune.targets.vta.config import get_config
from edgetune.targets.vta.cost import TilingTask
from edgetune.targets.vta.tiler import Tiling
from edgetune.targets.vta.workload import Conv2dWorkload, Requantize

CFG = get_config("vta-sim")
TASK = TilingTask(Conv2dWorkload(1, 32, 8, 8, 48, 3, 3, 1, 1, 1, 1), Requantize(6), True)


@pytest.fixture(scope="module")
def brute_force():
    """Every legal tiling of TASK with its timing-model cycles, in the search's order."""
    return [(tiling, TASK.cycles(tiling, CFG)) for tiling in TASK.candidates(CFG)]


def test_search_finds_the_fewest_cycles_of_all_candidates(brute_force):
    fewest = min(cycles for _, cycles in brute_force)
    first_fewest = next(tiling for tiling, cycles in brute_force if cycles == fewest)
    record = search(TASK, CFG, budget=len(brute_force) + 10)
    assert (record.tiling, record.cycles, record.evaluated) == (first_fewest, fewest, len(brute_force))
    default_tiling, default_cycles = brute_force[0]
    assert default_tiling == TASK.default_tiling(CFG) and record.default_cycles == default_cycles
    assert record.cycles < record.default_cycles  # the search beats the default here: the check can fail


def test_search_continues_where_a_smaller_budget_stopped(brute_force):
    part = search(TASK, CFG, budget=5)
    assert part.evaluated == 5 and part.cycles == min(cycles for _, cycles in brute_force[:5])
    seen = []
    resumed = search(TASK, CFG, budget=len(brute_force), start=part, report=lambda best, _: seen.append(best))
    assert len(seen) == len(brute_force) - 5  # only the candidates the first search did not evaluate
    assert resumed == search(TASK, CFG, budget=len(brute_force))


def test_records_round_trip_and_a_covered_budget_searches_nothing(tmp_path):
    first = TilingTuner(TilingDatabase(tmp_path, CFG), CFG, TuneConfig(trials=12))
    tiling = first(TASK)
    assert first.result().measured_now == 12
    record = TilingDatabase(tmp_path, CFG).get(TASK)
    assert record.tiling == tiling and record.evaluated == 12 and record.cycles == TASK.cycles(tiling, CFG)
    again = TilingTuner(TilingDatabase(tmp_path, CFG), CFG, TuneConfig(trials=12))
    assert again(TASK) == tiling and again.result().measured_now == 0
    summary = again.result().tasks[0].to_dict()
    assert summary["trials"] == 12 and summary["best_cycles"] == record.cycles
    assert summary["speedup"] == pytest.approx(record.default_cycles / record.cycles, abs=1e-5)
    more = TilingTuner(TilingDatabase(tmp_path, CFG), CFG, TuneConfig(trials=20))
    more(TASK)
    assert more.result().measured_now == 8
    other_shift = TilingTask(TASK.workload, Requantize(3), True)  # same ALU ops: the same record
    assert TilingTuner(TilingDatabase(tmp_path, CFG), CFG)(other_shift) == TilingDatabase(tmp_path, CFG).get(
        TASK).tiling
    no_bias = TilingTask(TASK.workload, Requantize(6), False)  # another epilogue: no record, the default
    apply_only = TilingTuner(TilingDatabase(tmp_path, CFG), CFG)
    assert apply_only(no_bias) == no_bias.default_tiling(CFG) and apply_only.result().tasks[0].trials == 0


def test_damaged_record_lines_are_skipped_with_a_warning(tmp_path):
    TilingTuner(TilingDatabase(tmp_path, CFG), CFG, TuneConfig(trials=3))(TASK)
    path = next(tmp_path.glob(f"vta-*/{TILINGS}"))
    good = path.read_text()
    bad_tiling = json.loads(good)
    bad_tiling["tiling"]["threads"] = 3
    path.write_text('{"task": {"workload"\n' + good + json.dumps(bad_tiling) + "\n")
    with pytest.warns(UserWarning, match="skipped 2 damaged line"):
        db = TilingDatabase(tmp_path, CFG)
    assert db.skipped_lines == 2 and db.get(TASK).evaluated == 3
    assert path.read_text() == good  # rewritten without them


def test_another_configuration_keeps_its_own_records(tmp_path):
    TilingTuner(TilingDatabase(tmp_path, CFG), CFG, TuneConfig(trials=3))(TASK)
    slower_dma = CFG.replace(dma_request_cycles=96)
    assert TilingDatabase(tmp_path, slower_dma).get(TASK) is None
    assert len(list(tmp_path.glob(f"vta-*/{TILINGS}"))) == 1


def test_a_record_that_is_no_longer_legal_is_ignored_with_a_warning(tmp_path):
    TilingDatabase(tmp_path, CFG).put(TASK, TilingRecord(Tiling(99, 8, 1, 1), 1000, 2000, 5))
    with pytest.warns(UserWarning, match="not a legal tiling any more"):
        assert TilingTuner(TilingDatabase(tmp_path, CFG), CFG)(TASK) == TASK.default_tiling(CFG)


def test_a_spent_time_budget_keeps_the_default_tiling(tmp_path):
    tuner = TilingTuner(TilingDatabase(tmp_path, CFG), CFG, TuneConfig(time_budget_s=1e-9))
    assert tuner(TASK) == TASK.default_tiling(CFG)
    result = tuner.result()
    assert result.stopped_by == "time budget" and result.measured_now == 0
    assert TilingDatabase(tmp_path, CFG).get(TASK) is None
