"""benchmarks/distill.py's tables: every cell mean ± sd over seeds with its 95% interval and the
columns' utterance counts; the paired table says ahead/behind only where the interval excludes 0."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.distill import RowResults, RunResult, paired_table, results_table  # noqa: E402
from benchmarks.seed_stats import correct_matrix, row_cell  # noqa: E402
from benchmarks.student_scoring import EvalSet  # noqa: E402
from pipeline.augment.conditions import NoiseCondition  # noqa: E402
from pipeline.data.manifest import Manifest, Utterance  # noqa: E402


def eval_set(name: str, count: int) -> EvalSet:
    utterances = [Utterance(f"{name}-{i}", "a.wav", 1.0, 16000, "x", "a", {}, "s") for i in range(count)]
    return EvalSet(name, name, NoiseCondition("clean"), Manifest(utterances, Path("m.jsonl")))


def row(name: str, accuracies: list[float], count: int, sets: list[EvalSet]) -> RowResults:
    """Seeds whose predictions are right on the first ``accuracy * count`` utterances of every set."""
    entry = RowResults(name)
    for seed, accuracy in enumerate(accuracies):
        right = int(round(accuracy * count))
        predicted = tuple([0] * right + [1] * (count - right))
        entry.runs.append(RunResult(seed, {s.name: 100 * right / count for s in sets}, 0.1,
                                    {s.name: predicted for s in sets}, 100.0, 10.0))  # fmt: skip
    return entry


def test_cells_carry_spread_interval_and_n():
    sets = [eval_set("valid", 200), eval_set("test", 200)]
    gold = {s.name: np.zeros(200, dtype=int) for s in sets}
    results = {
        "whisper_ce": row("CE", [0.90, 0.91, 0.89], 200, sets),
        "whisper_std": row("STD", [0.99, 0.98, 0.99], 200, sets),
        "scratch_ce": row("scratch", [0.90], 200, sets),
    }
    table = results_table(results, sets, {}, gold)
    assert "test (n=200)" in table and "valid (n=200)" in table
    ce_line = next(line for line in table.splitlines() if line.startswith("| CE |"))
    low, high = map(float, re.search(r"90\.00 ± 1\.00 \[([\d.]+), ([\d.]+)\]", ce_line).groups())
    assert 85 < low < 90 < high < 95
    single = next(line for line in table.splitlines() if line.startswith("| scratch |"))
    assert "90.00 [" in single and "±" not in single

    paired = paired_table(results, sets, gold, "std")
    lines = paired.splitlines()
    assert lines[0] == "| A vs B | test |"  # valid is for choosing, not for claims
    assert lines[2].startswith("| STD vs CE | ahead +8.67 [")
    assert lines[3].startswith("| CE vs scratch | level +0.00 [")


def test_row_cell_of_one_seed_is_close_to_wilson():
    gold = np.zeros(100, dtype=int)
    correct = correct_matrix([[0] * 97 + [1] * 3], gold)
    assert correct.shape == (1, 100) and correct.sum() == 97
    low, high = map(float, re.search(r"97\.00 \[([\d.]+), ([\d.]+)\]", row_cell(correct)).groups())
    assert 92 <= low <= 95 and high == 100.0  # Wilson: [91.5, 99.0]; the bootstrap cannot pass 100%
    assert row_cell(correct_matrix([], gold)) == "-"
