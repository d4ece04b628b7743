"""Joint decoding of a command (the intent plus every slot) from the intent head and the slot heads.

A model with slot heads gives, per utterance, a distribution over intents and one over each slot's
classes (:meth:`pipeline.data.labels.LabelSet.slot_classes`, ``none`` included). Read apart, the two
views can contradict each other where an intent fixes slots: in an FSC-style label map each intent
name is a slot combination (``activate_lights_kitchen``), and an argmax intent ``activate_lights_kitchen``
beside an argmax location ``bedroom`` is no command at all. So the command is decoded jointly:

    score(intent i) = log p(i) + sum over the slots i fixes of log p_slot(its value)
                                + sum over the other slots of max log p_slot

and the best-scoring intent is taken with its fixed values and, for the slots it leaves free, each
slot's best class. Every printed (intent, slots) pair is therefore consistent with the label map.
Without fixed slots (no intent name splits into values) this is the independent argmax of every head.

Confidences: a slot's confidence is the probability its head gives the decoded value (``none``
included); the command's confidence is the product of the decoded intent's probability and every
slot's confidence (the product of the max probabilities whenever the heads agree with each other),
a rough joint probability that treats the heads as independent. Its logarithm is the ``command``
rejection score (:func:`command_scores`): a model of one intent has no other confidence (its one
logit says nothing), and an out-of-domain input leaves some slot head unsure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.data.labels import NO_VALUE, LabelSet, intent_slot_table
from pipeline.data.open_set import UNKNOWN_INTENT


@dataclass
class Command:
    """One decoded command."""

    intent: int  # class id
    slots: dict[str, str]  # every slot head's value, ``none`` included
    intent_confidence: float
    slot_confidence: dict[str, float]
    confidence: float  # the whole command: intent x every slot

    @property
    def log_confidence(self) -> float:
        """log p(intent) + the log probability of every slot's value: the ``command`` rejection score."""
        tiny = np.finfo(np.float64).tiny
        return math.log(max(self.intent_confidence, tiny)) + sum(
            math.log(max(value, tiny)) for value in self.slot_confidence.values()
        )

    def filled_slots(self, intent: str | None = None) -> dict[str, str]:
        """The slots with a value (``none`` left out), as ``predict`` prints them; none at all when the
        printed ``intent`` is ``unknown`` (rejected below a threshold)."""
        if intent == UNKNOWN_INTENT:
            return {}
        return {name: value for name, value in self.slots.items() if value != NO_VALUE}


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities along the last axis (float64)."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class CommandDecoder:
    """Decodes commands for one label map and one model's slot heads (see the module docstring)."""

    def __init__(self, labels: LabelSet, slot_names: Sequence[str],
                 fixed: Sequence[Mapping[str, str]] | None = None) -> None:  # fmt: skip
        """
        Args:
            labels: the label map (slot classes come from it).
            slot_names: the model's slot heads, in its output order.
            fixed: per intent, the slot values it fixes; default: read off the intent names
                (:func:`pipeline.data.labels.intent_slot_table`), none when they do not split.
        """
        self.labels = labels
        self.slot_names = list(slot_names)
        self.classes = {name: labels.slot_classes(name) for name in self.slot_names}
        if fixed is None:
            fixed = intent_slot_table(labels) or [{} for _ in labels.intents]
        if len(fixed) != len(labels.intents):
            raise ValueError(f"fixed slots for {len(fixed)} intents, the label map has {len(labels.intents)}")
        # [intents, slots]: class id an intent fixes, -1 where the slot is free
        self.fixed = np.full((len(labels.intents), len(self.slot_names)), -1, dtype=np.int64)
        for intent, values in enumerate(fixed):
            if labels.intents[intent] == UNKNOWN_INTENT:
                continue  # the slot heads never veto "not a command": its slots stay free
            for column, name in enumerate(self.slot_names):
                if name in values:
                    self.fixed[intent, column] = self.classes[name].index(values[name])

    @property
    def constrained(self) -> bool:
        """Whether some intent fixes some slot (joint decoding differs from independent argmaxes)."""
        return bool((self.fixed >= 0).any())

    def decode(self, intent_logits: np.ndarray, slot_logits: Mapping[str, np.ndarray]) -> list[Command]:
        """Commands of a batch: ``intent_logits [batch, intents]``, slot -> ``[batch, classes]``."""
        intent_log_probs = log_softmax(intent_logits)
        slot_log_probs = [log_softmax(slot_logits[name]) for name in self.slot_names]
        batch = intent_log_probs.shape[0]
        scores = intent_log_probs.copy()  # [batch, intents]
        for column, log_probs in enumerate(slot_log_probs):
            fixed = self.fixed[:, column]
            free = log_probs.max(axis=1, keepdims=True)  # [batch, 1]
            chosen = log_probs[:, np.clip(fixed, 0, None)]  # [batch, intents]
            scores += np.where(fixed[None, :] >= 0, chosen, free)
        best = scores.argmax(axis=1)
        commands = []
        for row in range(batch):
            intent = int(best[row])
            slots, confidence = {}, {}
            for column, (name, log_probs) in enumerate(zip(self.slot_names, slot_log_probs, strict=True)):
                value = int(self.fixed[intent, column])
                if value < 0:
                    value = int(log_probs[row].argmax())
                slots[name] = self.classes[name][value]
                confidence[name] = float(np.exp(log_probs[row, value]))
            intent_confidence = float(np.exp(intent_log_probs[row, intent]))
            commands.append(Command(intent, slots, intent_confidence, confidence,
                                    intent_confidence * float(np.prod(list(confidence.values())))))  # fmt: skip
        return commands


class CommandDecoders:
    """One :class:`CommandDecoder` per slot-head order met, for a model's label map (what
    :class:`pipeline.serving.inference.IntentRecognizer` decodes each row with)."""

    def __init__(self, labels: LabelSet) -> None:
        self.labels = labels
        self.decoders: dict[tuple[str, ...], CommandDecoder] = {}

    def row(self, logits: np.ndarray, slot_logits: Mapping[str, np.ndarray], row: int) -> Command | None:
        """The command of one row of a batch's outputs; ``None`` without slot heads."""
        if not slot_logits:
            return None
        names = tuple(slot_logits)
        if names not in self.decoders:
            self.decoders[names] = CommandDecoder(self.labels, names)
        slots = {name: values[row : row + 1] for name, values in slot_logits.items()}
        return self.decoders[names].decode(logits[row : row + 1], slots)[0]


def command_scores(
    labels: LabelSet, intent_logits: np.ndarray, slot_logits: Mapping[str, np.ndarray]
) -> np.ndarray:
    """``[batch]`` the log confidence of each row's jointly decoded command: log p(intent) plus the
    log probability of every slot's decoded value (``none`` included)."""
    decoded = CommandDecoder(labels, list(slot_logits)).decode(np.asarray(intent_logits), slot_logits)
    return np.array([command.log_confidence for command in decoded], dtype=np.float64)
