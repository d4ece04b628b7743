"""Command-level scores of an evaluation: command acceptance (intent and every slot exact) and
per-slot accuracy and F1 (:mod:`pipeline.scoring.metrics`), where the label map has slots.

The predicted command is what ``slukd predict`` prints: with slot heads, the joint decoding of
:mod:`pipeline.scoring.commands`; without them, where every intent name splits into slot values
(FSC-style maps), the slots of the predicted intent; otherwise there are no predicted slots and
the scores are ``None``. The gold command is the manifest's intent and slots (a slot the
utterance leaves out is ``none``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from pipeline.data.labels import NO_VALUE, LabelSet, intent_slot_table
from pipeline.data.manifest import Manifest, Utterance
from pipeline.scoring.commands import CommandDecoder
from pipeline.scoring.metrics import accuracy, command_acceptance, command_exact, slot_scores


def gold_slots(utterances: Iterable[Utterance], labels: LabelSet) -> dict[str, list[str]]:
    """Slot -> the gold value of every utterance (``none`` where the utterance leaves it out)."""
    utterances = list(utterances)
    return {name: [u.slots.get(name, NO_VALUE) for u in utterances] for name in labels.slots}


def decoded_intents(labels: LabelSet, logits: np.ndarray, slot_logits: dict[str, np.ndarray]) -> np.ndarray:
    """The intent ``slukd predict`` answers for each row: decoded jointly with the slot heads (when
    the model has one per slot of the map), else the argmax; ``-1`` for rows that did not run (NaN)."""
    intents = np.full(len(logits), -1, dtype=np.int64)
    ran = ~np.isnan(logits).any(axis=1) if len(logits) else np.zeros(0, dtype=bool)
    if not ran.any():
        return intents
    if slot_logits and set(slot_logits) == set(labels.slots):
        rows = {name: values[ran] for name, values in slot_logits.items()}
        intents[ran] = [
            command.intent for command in CommandDecoder(labels, list(rows)).decode(logits[ran], rows)
        ]
    else:
        intents[ran] = logits[ran].argmax(axis=1)
    return intents


def predicted_commands(labels: LabelSet, logits: np.ndarray, slot_logits: dict[str, np.ndarray],
                       ) -> tuple[np.ndarray, dict[str, list[str]], str] | None:  # fmt: skip
    """Predicted intent ids, slot values and how they were read (``joint`` or ``intent names``);
    ``None`` when the model predicts no slots."""
    if slot_logits and set(slot_logits) == set(labels.slots):
        commands = CommandDecoder(labels, list(slot_logits)).decode(logits, slot_logits)
        slots = {name: [command.slots[name] for command in commands] for name in labels.slots}
        return np.array([command.intent for command in commands], dtype=np.int64), slots, "joint"
    table = intent_slot_table(labels)
    if table is None:
        return None
    intents = logits.argmax(axis=1)
    return intents, {name: [table[i][name] for i in intents] for name in labels.slots}, "intent names"


def command_metrics(manifest: Manifest, labels: LabelSet, gold: np.ndarray, logits: np.ndarray,
                    slot_logits: dict[str, np.ndarray] | None = None, rows: np.ndarray | None = None) -> dict:  # fmt: skip
    """``command_acceptance``, ``slots`` (per-slot and micro accuracy/precision/recall/F1),
    ``command_decoding`` and the decoded intent's accuracy, on ``rows`` (a mask; default all).
    Every value is ``None`` when the labels have no slots or the model predicts none."""
    empty = {
        "command_acceptance": None,
        "slots": None,
        "command_decoding": None,
        "command_intent_accuracy": None,
    }
    if not labels.slots:
        return empty
    rows = np.ones(len(gold), dtype=bool) if rows is None else rows
    slot_logits = {name: values[rows] for name, values in (slot_logits or {}).items()}
    predicted = predicted_commands(labels, logits[rows], slot_logits)
    if predicted is None:
        return empty
    intents, slots, decoding = predicted
    truth = gold_slots((u for u, keep in zip(manifest, rows, strict=True) if keep), labels)
    return {
        "command_acceptance": command_acceptance(gold[rows], intents, truth, slots),
        "slots": slot_scores(truth, slots),
        "command_decoding": decoding,
        "command_intent_accuracy": accuracy(gold[rows], intents),
    }


def command_correct(manifest: Manifest, labels: LabelSet, gold: np.ndarray, logits: np.ndarray,
                    slot_logits: dict[str, np.ndarray] | None = None) -> list[int | None] | None:  # fmt: skip
    """Per utterance, 1 when the intent and every slot are exact, 0 when not, ``None`` where the
    model did not run (NaN rows); ``None`` when the labels have no slots or the model predicts none.
    The per-utterance form of the command acceptance, for paired comparisons."""
    if not labels.slots or not len(gold):
        return None
    ran = ~np.isnan(logits).any(axis=1)
    result: list[int | None] = [None] * len(gold)
    if not ran.any():
        return result
    rows = {name: values[ran] for name, values in (slot_logits or {}).items()}
    predicted = predicted_commands(labels, logits[ran], rows)
    if predicted is None:
        return None
    intents, slots, _ = predicted
    kept = [u for u, keep in zip(manifest, ran, strict=True) if keep]
    truth = gold_slots(kept, labels)
    right = command_exact(gold[ran], intents, truth, slots)
    for row, value in zip(np.flatnonzero(ran), right, strict=True):
        result[int(row)] = int(value)
    return result
