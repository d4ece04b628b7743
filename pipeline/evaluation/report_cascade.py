"""The report's "end-to-end vs cascade" section: the best student against each cascade (an ASR,
then the teacher on its hypothesis), per split and noise condition, on the same utterances.

A cascade is often evaluated on a seeded subset of a split (``EvaluateConfig.max_utterances``,
``noisy_utterances``) because its ASR is slow; the student's per-utterance predictions
(``predictions`` in its eval file) are then scored on exactly the utterances the cascade was
scored on, condition by condition. An eval file without predictions (written before they were
kept) falls back to the student's own numbers, and the row says so.

Each cell is a paired comparison (:mod:`pipeline.scoring.intervals`): both accuracies with their
95% Wilson intervals and the number of utterances, and McNemar's exact test on the per-utterance
correct/incorrect pairs; the student is "ahead" or "behind" only where p < 0.05, "level"
otherwise. A cell without per-utterance predictions has no paired test and stays "level".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.evaluation.records import NOISE_KEYS, subset_note
from pipeline.evaluation.report_figures import ModelEvals
from pipeline.scoring.intervals import (
    AHEAD,
    ALPHA,
    BEHIND,
    LEVEL,
    accuracy_estimate,
    mcnemar_exact,
    proportion_estimate,
)

GOAL_SPEEDUP = 10.0  # the goal: the best student at least this much faster on one thread


ACCURACY, COMMANDS = "accuracy", "command acceptance"  # what a comparison scores per utterance


@dataclass
class Comparison:
    """The best student and one cascade on one (split, condition)."""

    split: str
    condition: str
    utterances: int
    student: float
    cascade: float
    same_utterances: bool  # False: the student's eval file has no predictions (its own numbers)
    student_interval: tuple[float, float] = (0.0, 1.0)  # 95% Wilson
    cascade_interval: tuple[float, float] = (0.0, 1.0)
    student_only: int = 0  # utterances only the student gets right (McNemar's discordant pairs)
    cascade_only: int = 0
    p_value: float | None = None  # McNemar's exact test; None without paired predictions
    verdict: str = LEVEL  # ahead | behind | level (ahead/behind only where p < ALPHA)
    measure: str = ACCURACY  # ACCURACY (the intent) or COMMANDS (intent and every slot exact)

    @property
    def difference(self) -> float:
        """Student minus cascade accuracy (positive: the student is ahead)."""
        return self.student - self.cascade


def _has_commands(evaluation: dict, condition: str) -> bool:
    """Whether the eval file keeps per-utterance exact commands (intent and every slot) under ``condition``."""
    return condition in ((evaluation.get("predictions") or {}).get("commands") or {})


def _correct_on(
    evaluation: dict, condition: str, ids: list[str], commands: bool = False
) -> np.ndarray | None:
    """Per-utterance correct/incorrect of a model's predictions under ``condition`` on the
    utterances ``ids`` (None when it has no prediction for one of them): the intent, or with
    ``commands`` the whole command (intent and every slot exact)."""
    predictions = evaluation.get("predictions") or {}
    if commands:
        exact = (predictions.get("commands") or {}).get(condition)
        if exact is None:
            return None
        position = {identifier: row for row, identifier in enumerate(predictions["ids"])}
        if not ids or any(i not in position or exact[position[i]] is None for i in ids):
            return None
        return np.array([bool(exact[position[i]]) for i in ids])
    by_condition = (predictions.get("conditions") or {}).get(condition)
    if by_condition is None:
        return None
    position = {identifier: row for row, identifier in enumerate(predictions["ids"])}
    if any(identifier not in position for identifier in ids):
        return None
    rows = [position[identifier] for identifier in ids]
    predicted = [by_condition[row] for row in rows]
    if any(value is None for value in predicted) or not rows:
        return None
    gold = np.array([predictions["gold"][row] for row in rows])
    return gold == np.array(predicted)


def _paired(split: str, condition: str, student: np.ndarray, cascade: np.ndarray, measure: str) -> Comparison:
    mine, theirs, test = (
        accuracy_estimate(student),
        accuracy_estimate(cascade),
        mcnemar_exact(student, cascade),
    )
    verdict = LEVEL
    if test.p_value < ALPHA and test.a_only != test.b_only:
        verdict = AHEAD if test.a_only > test.b_only else BEHIND
    return Comparison(split, condition, len(student), mine.value, theirs.value, True, (mine.low, mine.high),
                      (theirs.low, theirs.high), test.a_only, test.b_only, test.p_value, verdict, measure)  # fmt: skip


def compare(student: ModelEvals, cascade: ModelEvals) -> list[Comparison]:
    """Every (split, condition) that both were evaluated on, on the cascade's utterances."""
    rows = []
    for split, evaluation in cascade.evals.items():
        if split not in student.evals or not evaluation.get("predictions"):
            continue
        record = evaluation["predictions"]
        own_sweep = {row["condition"]: row for row in student.evals[split].get("noise_sweep") or []}
        same_noise = _same_noise(student.evals[split], evaluation)
        for condition, predicted in record["conditions"].items():
            ids = [
                identifier
                for identifier, value in zip(record["ids"], predicted, strict=True)
                if value is not None
            ]
            # with slots, the command (intent and every slot exact), where both files keep it per utterance
            commands = _has_commands(evaluation, condition) and _has_commands(student.evals[split], condition)
            cascade_correct = _correct_on(evaluation, condition, ids, commands)
            student_correct = _correct_on(student.evals[split], condition, ids, commands)
            if condition != "clean" and not same_noise:
                student_correct = None  # other noise on the same ids: not a pair
            if cascade_correct is None:
                continue
            measure = COMMANDS if commands else ACCURACY
            if student_correct is not None:
                rows.append(_paired(split, condition, student_correct, cascade_correct, measure))
            elif condition in own_sweep:  # no paired test: the student's own utterances
                own = own_sweep[condition]
                value = own.get("command_acceptance") if commands else own["accuracy"]
                if value is None:
                    continue
                mine = proportion_estimate(value, int(own.get("utterances") or 0))
                theirs = accuracy_estimate(cascade_correct)
                rows.append(Comparison(split, condition, len(ids), value, theirs.value, False,
                                       (mine.low, mine.high), (theirs.low, theirs.high), measure=measure))  # fmt: skip
    return rows


def _same_noise(first: dict, second: dict) -> bool:
    """Whether two eval files drew the same noisy audio per utterance (seed, babble bank, rooms)."""
    mine, theirs = first.get("settings") or {}, second.get("settings") or {}
    return all(mine.get(key) == theirs.get(key) for key in NOISE_KEYS)


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
        ahead = sum(row.verdict == AHEAD for row in rows)
        behind = sum(row.verdict == BEHIND for row in rows)
        subsets = {s: subset_note((e.get("data") or {}).get("subset")) for s, e in cascade.evals.items()}
        goal = bool(rows) and ahead == len(rows) and (speed["latency"] or 0) >= GOAL_SPEEDUP
        numbers["cascades"][cascade.name] = {
            "rows": [{**vars(row), "difference": row.difference} for row in rows], "ratios": speed,
            "student_ahead": ahead, "student_behind": behind, "level": len(rows) - ahead - behind,
            "compared": len(rows), "goal_met": goal, "subsets": subsets, "alpha": ALPHA,
        }  # fmt: skip
        table = _table(rows, student.name, cascade.name)
        smallest = min((row.utterances for row in rows), default=0)
        measure = COMMANDS if any(row.measure == COMMANDS for row in rows) else ACCURACY
        scored = ("command acceptance points (intent and every slot exact)" if measure == COMMANDS
                  else "accuracy points")  # fmt: skip
        text = [f"{student.name} (the best student on valid) against {cascade.name} ({_asr_name(cascade)}), scored "
                f"on the same utterances and the same noisy audio: the student is ahead on {ahead}, behind on "
                f"{behind} and level on {len(rows) - ahead - behind} of {len(rows)} (split, condition) pairs. Ahead "
                f"or behind only where McNemar's exact test on the per-utterance pairs gives p < {ALPHA:g}, level "
                f"otherwise. Each cell: the verdict, the difference in {scored} (positive: the student is "
                f"ahead) and p, then both {measure} figures with their 95% Wilson intervals and the utterances compared "
                f"(the smallest cell has {smallest})."]  # fmt: skip
        if speed["latency"] is not None:
            text.append(f"Latency on one CPU thread at batch 1: {speed['student_latency_ms']:.1f} ms against "
                        f"{speed['cascade_latency_ms']:.0f} ms, the student is {speed['latency']:.0f}x faster.")  # fmt: skip
        if speed["size"] is not None:
            text.append(f"Size: {speed['student_bytes'] / 1e6:.2f} MB against {speed['cascade_bytes'] / 1e6:.1f} MB "
                        f"(ASR and teacher), {speed['size']:.0f}x smaller.")  # fmt: skip
        text.append(
            f"Goal (significantly ahead everywhere and at least {GOAL_SPEEDUP:g}x faster): "
            f"{'met' if goal else 'not met'}."
        )
        notes = [f"{s}: {note}" for s, note in subsets.items() if note]
        if notes:
            text.append("The cascade was evaluated on " + "; ".join(notes) + ".")
        if any(not row.same_utterances for row in rows):
            text.append("* no pair: the student's eval file keeps no per-utterance predictions, or drew other noise "
                        "(another seed, babble bank or room range): its accuracy on its own utterances, no paired "
                        "test (rerun `slukd evaluate` with the cascade's settings to compare on the same audio).")  # fmt: skip
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
        p_value = "" if row.p_value is None else f", p={row.p_value:.2g}"
        return (f"{row.verdict} {100 * row.difference:+.1f}{p_value} ({_percent(row.student, row.student_interval)} "
                f"vs {_percent(row.cascade, row.cascade_interval)}, {row.utterances} utt.){mark}")  # fmt: skip

    header = ["condition"] + [f"{split}: {student} - {cascade}" for split in splits]
    return header, [
        [condition] + [cell(cells.get((split, condition))) for split in splits] for condition in conditions
    ]


def _percent(value: float, interval: tuple[float, float]) -> str:
    return f"{100 * value:.1f}% [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def _asr_name(model: ModelEvals) -> str:
    return next((e["model"].get("asr") for e in model.evals.values() if e["model"].get("asr")), "ASR")
