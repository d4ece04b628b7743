"""The report's "end-to-end vs cascade" section: the best student against each cascade (an ASR,
then the teacher on its hypothesis), per split and noise condition, on the same utterances.

A cascade is often evaluated on a seeded subset of a split (``EvaluateConfig.max_utterances``,
``noisy_utterances``) because its ASR is slow; the student's per-utterance predictions
(``predictions`` in its eval file) are then scored on exactly the utterances the cascade was
scored on, condition by condition. An eval file without predictions (written before they were
kept) falls back to the student's own numbers, and the row says so.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.evaluation.records import subset_note
from pipeline.evaluation.report_figures import ModelEvals

GOAL_SPEEDUP = 10.0  # the goal: the best student at least this much faster on one thread


@dataclass
class Comparison:
    """The best student and one cascade on one (split, condition)."""

    split: str
    condition: str
    utterances: int
    student: float
    cascade: float
    same_utterances: bool  # False: the student's eval file has no predictions (its own numbers)

    @property
    def difference(self) -> float:
        """Student minus cascade accuracy (positive: the student is ahead)."""
        return self.student - self.cascade


def _accuracy_on(evaluation: dict, condition: str, ids: list[str]) -> float | None:
    """Accuracy of a model's predictions under ``condition`` on the utterances ``ids`` (None when
    it has no prediction for one of them)."""
    predictions = evaluation.get("predictions") or {}
    by_condition = (predictions.get("conditions") or {}).get(condition)
    if by_condition is None:
        return None
    position = {identifier: row for row, identifier in enumerate(predictions["ids"])}
    if any(identifier not in position for identifier in ids):
        return None
    rows = [position[identifier] for identifier in ids]
    predicted = [by_condition[row] for row in rows]
    if any(value is None for value in predicted):
        return None
    gold = np.array([predictions["gold"][row] for row in rows])
    return float((gold == np.array(predicted)).mean()) if rows else None


def compare(student: ModelEvals, cascade: ModelEvals) -> list[Comparison]:
    """Every (split, condition) that both were evaluated on, on the cascade's utterances."""
    rows = []
    for split, evaluation in cascade.evals.items():
        if split not in student.evals or not evaluation.get("predictions"):
            continue
        theirs = evaluation["predictions"]
        own_sweep = {row["condition"]: row for row in student.evals[split].get("noise_sweep") or []}
        for condition, predicted in theirs["conditions"].items():
            ids = [
                identifier
                for identifier, value in zip(theirs["ids"], predicted, strict=True)
                if value is not None
            ]
            cascade_accuracy = _accuracy_on(evaluation, condition, ids)
            student_accuracy = _accuracy_on(student.evals[split], condition, ids)
            same = student_accuracy is not None
            if not same and condition in own_sweep:
                student_accuracy = own_sweep[condition]["accuracy"]
            if student_accuracy is None or cascade_accuracy is None:
                continue
            rows.append(Comparison(split, condition, len(ids), student_accuracy, cascade_accuracy, same))
    return rows


def _cpu(evaluation: dict, key: str) -> float | None:
    return ((evaluation.get("speed") or {}).get("cpu") or {}).get(key)


def ratios(student: ModelEvals, cascade: ModelEvals, split: str) -> dict[str, float | None]:
    """Latency (one CPU thread, batch 1) and size of the cascade over the student's, on ``split``."""
    if split not in student.evals or split not in cascade.evals:
        return {"latency": None, "size": None}
    mine, theirs = student.evals[split], cascade.evals[split]
    latency = _cpu(mine, "latency_ms"), _cpu(theirs, "latency_ms")
    size = (mine.get("speed") or {}).get("weights_bytes"), (theirs.get("speed") or {}).get("weights_bytes")
    return {
        "student_latency_ms": latency[0], "cascade_latency_ms": latency[1],
        "latency": latency[1] / latency[0] if all(latency) else None,
        "student_bytes": size[0], "cascade_bytes": size[1],
        "size": size[1] / size[0] if all(size) else None,
    }  # fmt: skip


def section(
    student: ModelEvals, cascades: list[ModelEvals], split: str
) -> tuple[list[tuple[str, object]], dict]:
    """The report blocks (``("h2"|"p", text)``, ``("rows", (header, rows))`` for a table) and the
    numbers for metrics.json."""
    blocks: list[tuple[str, object]] = [("h2", "End-to-end vs cascade")]
    numbers = {"student": student.name, "cascades": {}}
    for cascade in cascades:
        rows = compare(student, cascade)
        speed = ratios(student, cascade, split)
        ahead = sum(row.difference > 0 for row in rows)
        subsets = {s: subset_note((e.get("data") or {}).get("subset")) for s, e in cascade.evals.items()}
        goal = bool(rows) and ahead == len(rows) and (speed["latency"] or 0) >= GOAL_SPEEDUP
        numbers["cascades"][cascade.name] = {
            "rows": [{**vars(row), "difference": row.difference} for row in rows], "ratios": speed,
            "student_ahead": ahead, "compared": len(rows), "goal_met": goal, "subsets": subsets,
        }  # fmt: skip
        table = _table(rows, student.name, cascade.name)
        text = [f"{student.name} (the best student) against {cascade.name} ({_asr_name(cascade)}): the student is "
                f"ahead on {ahead} of {len(rows)} (split, condition) pairs, scored on the same utterances; each cell: the "
                f"difference in accuracy points (positive: the student is ahead), then both accuracies."]  # fmt: skip
        if speed["latency"] is not None:
            text.append(f"Latency on one CPU thread at batch 1: {speed['student_latency_ms']:.1f} ms against "
                        f"{speed['cascade_latency_ms']:.0f} ms, the student is {speed['latency']:.0f}x faster.")  # fmt: skip
        if speed["size"] is not None:
            text.append(f"Size: {speed['student_bytes'] / 1e6:.2f} MB against {speed['cascade_bytes'] / 1e6:.1f} MB "
                        f"(ASR and teacher), {speed['size']:.0f}x smaller.")  # fmt: skip
        text.append(
            f"Goal (ahead everywhere and at least {GOAL_SPEEDUP:g}x faster): {'met' if goal else 'not met'}."
        )
        notes = [f"{s}: {note}" for s, note in subsets.items() if note]
        if notes:
            text.append("The cascade was evaluated on " + "; ".join(notes) + ".")
        if any(not row.same_utterances for row in rows):
            text.append("* the student's eval file keeps no per-utterance predictions: its accuracy on its own "
                        "utterances (rerun `slukd evaluate` to compare on the same ones).")  # fmt: skip
        blocks += [("p", " ".join(text)), ("rows", table)]
    return blocks, numbers


def _table(rows: list[Comparison], student: str, cascade: str) -> tuple[list[str], list[list[str]]]:
    """Conditions down, splits across; a cell: the signed difference in points, then both accuracies
    and the utterances compared (``*``: the student's own utterances)."""
    splits = list(dict.fromkeys(row.split for row in rows))
    conditions = list(dict.fromkeys(row.condition for row in rows))
    cells = {(row.split, row.condition): row for row in rows}

    def cell(row: Comparison | None) -> str:
        if row is None:
            return "–"
        mark = "" if row.same_utterances else " *"
        return (f"{100 * row.difference:+.1f} ({100 * row.student:.1f}% vs {100 * row.cascade:.1f}%, "
                f"{row.utterances} utt.){mark}")  # fmt: skip

    header = ["condition"] + [f"{split}: {student} - {cascade}" for split in splits]
    return header, [
        [condition] + [cell(cells.get((split, condition))) for split in splits] for condition in conditions
    ]


def _asr_name(model: ModelEvals) -> str:
    return next((e["model"].get("asr") for e in model.evals.values() if e["model"].get("asr")), "ASR")
