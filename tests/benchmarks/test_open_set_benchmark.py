"""benchmarks/open_set.py's tables and its choice of the default score, on eval results made by hand."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.open_set import results_table, source_table  # noqa: E402


def metrics(auroc: float, fpr: float, non_speech: float = 1.0) -> dict:
    return {
        "auroc": auroc, "fpr_at_95_tpr": fpr, "in_domain_false_rejections": 0.02, "out_of_domain_rejected": 0.8,
        "rejected_by_kind": {"non_speech": non_speech, "near_miss": 0.5},
        "rejected_by_source": {"non_speech:silence": non_speech, "near_miss": 0.5},
    }  # fmt: skip


RESULTS = {
    # the teacher's higher AUROC must not decide: the default is chosen on the students
    "teacher_oe": {"method": "unknown", "metrics": {"unknown": metrics(0.999, 0.0)}},
    "student": {"method": "max_softmax", "metrics": {"max_softmax": metrics(0.90, 0.3), "energy": metrics(0.92, 0.2)}},
    "student_oe": {"method": "unknown", "metrics": {"max_softmax": metrics(0.95, 0.1), "energy": metrics(0.96, 0.12),
                                                   "unknown": metrics(0.96, 0.08, 0.75)}},
}  # fmt: skip


def test_the_default_is_the_students_best_auroc_then_lowest_fpr():
    table, sentence, default = results_table(RESULTS)
    assert default == "unknown" and "student_oe: AUROC 0.9600, FPR@95%TPR 8.0%" in sentence
    assert len(table.splitlines()) == 2 + 6
    # kinds in order other_domain, generic, near_miss, non_speech; a kind with no utterances: –
    assert "| student_oe | unknown | 0.9600 | 8.0 | 2.0 | 80.0 | – | – | 50.0 | 75.0 |" in table


def test_source_table_uses_the_default_or_the_models_own_score():
    table = source_table(RESULTS, "unknown").splitlines()
    assert table[0].startswith(
        "| model | score | in-domain false rej. % | near_miss rej. % | non_speech:silence"
    )
    assert table[3].startswith("| student | max_softmax | 2.0 |")  # no unknown intent: its own score
    assert table[4] == "| student_oe | unknown | 2.0 | 50.0 | 75.0 |"
