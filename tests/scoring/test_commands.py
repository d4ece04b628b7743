"""Joint decoding of commands (pipeline.scoring.commands): the printed intent and slots always agree."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.labels import LabelSet
from pipeline.scoring.commands import CommandDecoder, CommandDecoders, command_scores

# an FSC-style map: every intent name is a slot combination ("none" is a location value)
FSC = LabelSet(
    intents=["activate_lights_kitchen", "activate_lights_none", "deactivate_lights_kitchen", "bring_socks_none"],
    slots={"action": ["activate", "deactivate", "bring"], "object": ["lights", "socks"],
           "location": ["none", "kitchen"]},
)  # fmt: skip


def logits_for(probabilities: list[float]) -> np.ndarray:
    return np.log(np.asarray([probabilities], dtype=np.float64))


def test_joint_decoding_never_contradicts_the_intent():
    decoder = CommandDecoder(FSC, ["action", "object", "location"])
    assert decoder.constrained
    # independent argmaxes: intent activate_lights_kitchen, but location none (0.6) and action bring
    intent = logits_for([0.40, 0.35, 0.15, 0.10])
    slots = {"action": logits_for([0.45, 0.05, 0.50]), "object": logits_for([0.9, 0.1]),
             "location": logits_for([0.6, 0.4])}  # fmt: skip
    (command,) = decoder.decode(intent, slots)
    # scores: a_l_k 0.40*0.45*0.9*0.4 = .0648; a_l_n 0.35*0.45*0.9*0.6 = .0851; d_l_k .0027; b_s_n .003
    assert FSC.intent(command.intent) == "activate_lights_none"
    assert command.slots == {"action": "activate", "object": "lights", "location": "none"}
    assert command.filled_slots() == {"action": "activate", "object": "lights"}
    assert command.filled_slots("unknown") == {}
    assert command.intent_confidence == pytest.approx(0.35)
    assert command.slot_confidence == pytest.approx({"action": 0.45, "object": 0.9, "location": 0.6})
    assert command.confidence == pytest.approx(0.35 * 0.45 * 0.9 * 0.6)


def test_free_slots_take_their_own_argmax():
    # one intent with fixed slots given explicitly, the rest free (a Rhino-style coffee order)
    labels = LabelSet(
        ["orderDrink", "cancel"], {"size": ["small", "medium", "large"], "roast": ["dark", "medium"]}
    )
    decoder = CommandDecoder(labels, ["size", "roast"], fixed=[{}, {"size": "none", "roast": "none"}])
    assert decoder.slot_names == ["size", "roast"] and decoder.classes["roast"] == ["dark", "medium", "none"]
    intent = np.log(np.array([[0.7, 0.3], [0.45, 0.55]]))
    slots = {"size": np.log(np.array([[0.1, 0.8, 0.1, 0.0001], [0.6, 0.1, 0.1, 0.2]])),
             "roast": np.log(np.array([[0.2, 0.7, 0.1], [0.5, 0.3, 0.2]]))}  # fmt: skip
    first, second = decoder.decode(intent, slots)
    assert (labels.intent(first.intent), first.slots) == ("orderDrink", {"size": "medium", "roast": "medium"})
    # cancel is likelier alone (0.55) but fixes both slots to none: 0.55*0.2*0.2 < 0.45*0.6*0.5
    assert (labels.intent(second.intent), second.filled_slots()) == (
        "orderDrink",
        {"size": "small", "roast": "dark"},
    )


def test_without_fixed_slots_every_head_is_read_alone():
    labels = LabelSet(["a", "b"], {"colour": ["red", "blue"]})  # intent names carry no slot values
    decoder = CommandDecoder(labels, ["colour"])
    assert not decoder.constrained
    intent, colour = np.log(np.array([[0.2, 0.8]])), np.log(np.array([[0.1, 0.3, 0.6]]))
    (command,) = decoder.decode(intent, {"colour": colour})
    assert labels.intent(command.intent) == "b" and command.slots == {"colour": "none"}
    assert command.filled_slots() == {} and command.confidence == pytest.approx(0.8 * 0.6)


def test_decoders_per_row_and_without_slot_heads():
    decoders = CommandDecoders(FSC)
    intent = np.log(np.array([[0.1, 0.1, 0.1, 0.7], [0.7, 0.1, 0.1, 0.1]]))
    slots = {"action": np.log(np.array([[0.1, 0.1, 0.8], [0.8, 0.1, 0.1]])),
             "object": np.log(np.array([[0.1, 0.9], [0.9, 0.1]])),
             "location": np.log(np.array([[0.9, 0.1], [0.1, 0.9]]))}  # fmt: skip
    assert FSC.intent(decoders.row(intent, slots, 0).intent) == "bring_socks_none"
    assert decoders.row(intent, slots, 1).filled_slots() == {"action": "activate", "object": "lights",
                                                             "location": "kitchen"}  # fmt: skip
    assert decoders.row(intent, {}, 0) is None


def test_fixed_slots_must_cover_every_intent():
    with pytest.raises(ValueError, match="fixed slots for 1 intents, the label map has 4"):
        CommandDecoder(FSC, ["action"], fixed=[{}])


def test_command_score_is_the_log_confidence_of_the_joint_command():
    intents = np.log([[0.5, 0.3, 0.1, 0.1], [0.1, 0.1, 0.1, 0.7]])
    slots = {"action": np.log([[0.6, 0.3, 0.1], [0.2, 0.2, 0.6]]), "object": np.log([[0.9, 0.1], [0.3, 0.7]]),
             "location": np.log([[0.2, 0.8], [0.9, 0.1]])}  # fmt: skip
    decoded = CommandDecoder(FSC, list(slots)).decode(intents, slots)
    scores = command_scores(FSC, intents, slots)
    assert scores == pytest.approx(np.log([command.confidence for command in decoded]))
    # the first row's intent fixes location=kitchen (0.8) against its own best: the joint choice is scored
    assert decoded[0].slots["location"] == "kitchen" and scores[0] == pytest.approx(
        np.log(0.5 * 0.6 * 0.9 * 0.8)
    )
