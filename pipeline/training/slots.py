"""Slot heads in training: which heads a student gets, the slot loss weights, and the scores
checkpoint selection reads.

A label map with slots gives the student one head per slot (:meth:`LabelSet.slot_classes`,
``none`` included) trained with ``distill.slot_ce`` and, when the teacher's targets carry slot
logits, ``distill.slot_logits`` (:func:`pipeline.training.losses.resolve_slot_losses`). Without
slots, or with both weights at 0, the student has no slot heads and trains exactly as before.
With slot heads, the checkpoint is selected on the valid split's command acceptance (intent and
every slot exact), the headline metric; without them on intent accuracy as before.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from pipeline.data.labels import LabelSet
from pipeline.training.losses import DistillConfig, resolve_slot_losses


class Predicted(NamedTuple):
    """A student's outputs over a loader (rows in loader order)."""

    logits: np.ndarray  # [N, intents]
    targets: np.ndarray  # [N] gold intent ids
    ids: list[str]
    slot_logits: dict[str, np.ndarray]  # slot -> [N, classes]; empty without slot heads
    slot_targets: np.ndarray | None  # [N, slots] gold slot classes; None without slot heads


def teacher_has_slot_logits(teacher_targets: str | Path | None) -> bool:
    """Whether a teacher-targets store holds slot logits (a teacher trained with slot heads)."""
    if teacher_targets is None:
        return False
    meta = Path(teacher_targets) / "meta.json"
    return meta.is_file() and bool(json.loads(meta.read_text()).get("slot_heads"))


def slot_settings(distill: DistillConfig, labels: LabelSet, teacher_targets: str | Path | None,
                  ) -> tuple[DistillConfig, dict[str, int]]:  # fmt: skip
    """The distill config with its slot weights resolved, and the student's ``slot_classes``."""
    resolved = resolve_slot_losses(distill, bool(labels.slots), teacher_has_slot_logits(teacher_targets))
    wanted = (resolved.slot_ce or 0.0) > 0 or (resolved.slot_logits or 0.0) > 0
    return resolved, labels.slot_class_counts() if wanted else {}


def fingerprint_settings(settings: dict, labels_path: Path) -> dict:
    """A run's config dict for its fingerprint: the slot weights left out at their defaults (runs
    from before slot heads keep their fingerprint), the slot heads added where the labels have slots."""
    distill = settings["distill"]
    if distill.get("slot_ce") is None and distill.get("slot_logits") is None:
        del distill["slot_ce"], distill["slot_logits"]
    if labels_path.is_file():
        counts = LabelSet.load(labels_path).slot_class_counts()
        if counts:
            settings["slot_heads"] = counts
    return settings


def command_acceptance(predicted: Predicted) -> float | None:
    """Fraction of rows whose intent and every slot are right; ``None`` without slot heads."""
    if not predicted.slot_logits or predicted.slot_targets is None:
        return None
    correct = predicted.logits.argmax(-1) == predicted.targets
    for column, logits in enumerate(predicted.slot_logits.values()):
        correct &= logits.argmax(-1) == predicted.slot_targets[:, column]
    return float(correct.mean()) if len(correct) else 0.0


def check_teacher_slots(
    targets, labels: LabelSet
) -> None:  # targets: pipeline.teacher.targets.TeacherTargets
    """Raise ValueError unless the teacher's slot heads are the student's (names and classes)."""
    theirs = {head["name"]: head["classes"] for head in targets.meta.get("slot_heads") or []}
    ours = {name: labels.slot_classes(name) for name in labels.slots}
    if theirs != ours:
        raise ValueError(
            f"{targets.folder}: the teacher's slot heads ({', '.join(theirs) or 'none'}) differ from the "
            f"labels' slots ({', '.join(ours) or 'none'}); retrain the teacher on this labels.json and re-export"
        )
