"""pipeline.evaluation.selection: the best student is chosen on valid, on whole commands where the
labels have slots."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.evaluation.report_figures import ModelEvals
from pipeline.evaluation.selection import best_on_valid, trained_on_held_out, valid_score


def evaluated(name: str, accuracy: float, commands: float | None, nll: float = 0.1) -> ModelEvals:
    metrics = {"accuracy": accuracy, "command_acceptance": commands, "nll": nll, "utterances": 200}
    return ModelEvals(name, Path(name), "student", {"valid": {"metrics": metrics}})


def test_whole_commands_decide_where_there_are_slots():
    # the better intent head loses when its slots are worse: a command is the intent and every slot
    intents_first = evaluated("student_a", 0.99, 0.80)
    commands_first = evaluated("student_b", 0.95, 0.90)
    best, score = best_on_valid([intents_first, commands_first])
    assert best.name == "student_b" and score.accuracy == 0.90 and score.utterances == 200
    assert valid_score(evaluated("plain", 0.97, None)).accuracy == 0.97  # no slots: intent accuracy


def test_training_metrics_when_valid_was_not_evaluated(tmp_path):
    folder = tmp_path / "student_kd"
    folder.mkdir()
    (folder / "metrics.json").write_text(json.dumps({
        "valid_selected_on": "command_acceptance", "valid_accuracy": 0.93, "valid_loss": 0.2,
    }))  # fmt: skip
    score = valid_score(ModelEvals("student_kd", folder, "student", {}))
    assert (score.accuracy, score.loss, score.source) == (0.93, 0.2, "metrics.json")
    assert valid_score(ModelEvals("none", tmp_path / "missing", "student", {})) is None


def test_whether_a_student_trained_on_the_held_out_phrasings(tmp_path):
    # a grammar corpus's train_rest in its training: its valid holds new texts of taught expressions
    for name, trained in (("student_kd", 120), ("student_kd_held_out", 0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps({"held_out_phrasings_trained": trained}))
    assert trained_on_held_out(ModelEvals("student_kd", tmp_path / "student_kd", "student", {}))
    assert not trained_on_held_out(ModelEvals("held", tmp_path / "student_kd_held_out", "student", {}))
    assert not trained_on_held_out(ModelEvals("none", tmp_path / "missing", "student", {}))
