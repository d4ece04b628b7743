"""Command acceptance and per-slot scores (pipeline.scoring.metrics, pipeline.evaluation.command_scores)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.labels import LabelSet
from pipeline.data.manifest import Manifest, Utterance
from pipeline.evaluation.command_scores import command_correct, command_metrics, gold_slots
from pipeline.scoring.metrics import command_acceptance, slot_scores


def test_command_acceptance_needs_the_intent_and_every_slot():
    gold_slots_ = {"size": ["small", "none", "large", "none"], "roast": ["dark", "dark", "none", "none"]}
    predicted = {"size": ["small", "none", "large", "small"], "roast": ["dark", "none", "none", "none"]}
    # row 0 right; row 1 roast wrong; row 2 intent wrong; row 3 size filled where gold is none
    assert command_acceptance([0, 0, 1, 0], [0, 0, 0, 0], gold_slots_, predicted) == 0.25
    assert command_acceptance([], [], {"size": []}, {"size": []}) == 0.0


def test_slot_scores_by_hand():
    gold = {"size": ["small", "none", "large", "none"], "roast": ["dark", "dark", "none", "none"]}
    predicted = {"size": ["small", "none", "small", "small"], "roast": ["dark", "none", "none", "none"]}
    scores = slot_scores(gold, predicted)
    # size: right 2/4; gold filled 2, predicted filled 3, true positives 1
    assert scores["size"] == pytest.approx({"accuracy": 0.5, "precision": 1 / 3, "recall": 0.5, "f1": 0.4})
    # roast: right 3/4; gold filled 2, predicted filled 1, true positives 1
    assert scores["roast"] == pytest.approx({"accuracy": 0.75, "precision": 1.0, "recall": 0.5, "f1": 2 / 3})
    # pooled: right 5/8; gold filled 4, predicted filled 4, true positives 2
    assert scores["micro"] == pytest.approx({"accuracy": 0.625, "precision": 0.5, "recall": 0.5, "f1": 0.5})


def utterance(index: int, intent: str, slots: dict[str, str]) -> Utterance:
    return Utterance(f"u{index}", f"u{index}.wav", 1.0, 16000, "text", intent, slots, "speaker")


def test_command_metrics_with_slot_heads_and_from_intent_names():
    labels = LabelSet(["activate_lights_kitchen", "activate_lights_none"],
                      {"action": ["activate"], "object": ["lights"], "location": ["none", "kitchen"]})  # fmt: skip
    manifest = Manifest([utterance(0, "activate_lights_kitchen", {"action": "activate", "object": "lights",
                                                                  "location": "kitchen"}),
                         utterance(1, "activate_lights_none", {"action": "activate", "object": "lights"})])  # fmt: skip
    assert gold_slots(manifest, labels)["location"] == ["kitchen", "none"]
    gold = np.array([0, 1])
    logits = np.log(np.array([[0.6, 0.4], [0.6, 0.4]]))
    # without slot heads the slots are read off the predicted intent names: row 1 is wrong
    names = command_metrics(manifest, labels, gold, logits)
    assert names["command_decoding"] == "intent names" and names["command_acceptance"] == 0.5
    assert names["slots"]["location"]["accuracy"] == 0.5 and names["slots"]["action"]["f1"] == 1.0
    # with slot heads the location head decides row 1 (joint: 0.4 * 0.9 > 0.6 * 0.1)
    slot_logits = {"action": np.zeros((2, 2)), "object": np.zeros((2, 2)),
                   "location": np.log(np.array([[0.2, 0.8], [0.9, 0.1]]))}  # fmt: skip
    joint = command_metrics(manifest, labels, gold, logits, slot_logits)
    assert joint["command_decoding"] == "joint" and joint["command_acceptance"] == 1.0
    assert joint["command_intent_accuracy"] == 1.0
    # per utterance (the paired comparison's input): names get row 1 wrong, joint decoding neither;
    # a row the condition did not run on (NaN) is None
    assert command_correct(manifest, labels, gold, logits) == [1, 0]
    assert command_correct(manifest, labels, gold, logits, slot_logits) == [1, 1]
    skipped = logits.copy()
    skipped[0] = np.nan
    assert command_correct(
        manifest, labels, gold, skipped, {k: v.copy() for k, v in slot_logits.items()}
    ) == [None, 1]
    # a mask of the rows a condition ran on
    assert (
        command_metrics(manifest, labels, gold, logits, slot_logits, np.array([False, True]))[
            "command_acceptance"
        ]
        == 1.0
    )


def test_command_metrics_are_none_without_slots_or_predicted_slots():
    manifest = Manifest([utterance(0, "a", {})])
    none = command_metrics(manifest, LabelSet(["a", "b"]), np.array([0]), np.zeros((1, 2)))
    assert none == {"command_acceptance": None, "slots": None, "command_decoding": None,
                    "command_intent_accuracy": None}  # fmt: skip
    labels = LabelSet(["a", "b"], {"colour": ["red"]})  # the intent names carry no slot values
    assert command_metrics(manifest, labels, np.array([0]), np.zeros((1, 2)))["command_acceptance"] is None
    assert command_correct(manifest, LabelSet(["a", "b"]), np.array([0]), np.zeros((1, 2))) is None
