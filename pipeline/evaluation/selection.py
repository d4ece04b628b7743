"""Choosing among students on the valid split only; test numbers are for reporting.

:func:`valid_score` reads a student's valid accuracy (command acceptance, intent and every slot
exact, where the labels have slots) from its ``eval/valid.json`` when it was evaluated on valid,
else from its ``metrics.json`` (the training's own valid pass on the checkpoint it kept, the score
that selected it); :func:`best_on_valid` picks the student with the highest valid accuracy, the
lower valid loss breaking ties (valid often sits at its ceiling), then the name. A student without
a valid number is never chosen, whatever its test accuracy. :func:`trained_on_held_out` says
whether a student trained on a grammar corpus's held-out phrasings (``train_rest``), which the
report says beside its valid number.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import NamedTuple

from pipeline.evaluation.report_figures import ModelEvals
from pipeline.scoring.intervals import Estimate, format_estimate, proportion_estimate

logger = logging.getLogger(__name__)

VALID_SPLIT = "valid"
TRAINING_METRICS = "metrics.json"


class ValidScore(NamedTuple):
    """A student's number on valid and where it was read."""

    accuracy: float
    loss: float  # valid loss (NLL) where known, else inf: the tie-breaker
    utterances: int | None  # None when the source does not say
    source: str  # "eval/valid.json" or "metrics.json"

    def describe(self) -> str:
        """``98.5% [96.9, 99.3] n=400 (eval/valid.json)``, or the bare accuracy without ``n``."""
        if self.utterances:
            text = format_estimate(self.estimate())
        else:
            text = f"{100 * self.accuracy:.1f}%"
        return f"{text} ({self.source})"

    def estimate(self) -> Estimate | None:
        return proportion_estimate(self.accuracy, self.utterances) if self.utterances else None


def valid_score(model: ModelEvals) -> ValidScore | None:
    """The student's valid accuracy (eval file first, then the training metrics); ``None`` if neither."""
    evaluation = model.evals.get(VALID_SPLIT)
    if evaluation is not None:
        metrics = evaluation["metrics"]
        loss = metrics.get("nll")
        score = metrics.get("command_acceptance")  # with slots, whole commands are what selection weighs
        score = metrics["accuracy"] if score is None else score
        return ValidScore(float(score), math.inf if loss is None else float(loss),
                          int(metrics["utterances"]), f"eval/{VALID_SPLIT}.json")  # fmt: skip
    path = Path(model.folder) / TRAINING_METRICS
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, OSError) as error:
        logger.warning("%s: no valid score (%s)", path, " ".join(str(error).split()))
        return None
    accuracy = metrics.get("valid_accuracy_averaged", metrics.get("valid_accuracy"))
    if not isinstance(accuracy, (int, float)):
        return None
    loss = metrics.get("valid_loss")
    loss = float(loss) if isinstance(loss, (int, float)) else math.inf
    return ValidScore(float(accuracy), loss, None, TRAINING_METRICS)


def trained_on_held_out(model: ModelEvals) -> bool:
    """Whether the student trained on a grammar corpus's held-out phrasings (``train_rest``), so
    that its valid split holds new texts of expressions it was taught, not expressions it never heard."""
    path = Path(model.folder) / TRAINING_METRICS
    try:
        metrics = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (json.JSONDecodeError, OSError):
        return False
    return bool(metrics.get("held_out_phrasings_trained")) if isinstance(metrics, dict) else False


def best_on_valid(students: list[ModelEvals]) -> tuple[ModelEvals, ValidScore] | None:
    """The student with the highest valid accuracy (then the lower valid loss, then the name)."""
    scored = [(model, score) for model in students if (score := valid_score(model)) is not None]
    if not scored:
        return None
    return min(scored, key=lambda pair: (-pair[1].accuracy, pair[1].loss, pair[0].name))
