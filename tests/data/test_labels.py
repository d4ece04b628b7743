"""pipeline.data.labels: the ordered intent map and its slot values."""

from __future__ import annotations

import json

import pytest

from pipeline.data.labels import LabelError, LabelSet
from pipeline.data.manifest import Utterance


def test_round_trip_keeps_order(tmp_path):
    labels = LabelSet(["b_intent", "a_intent"], {"action": ["on", "off"]})
    path = labels.save(tmp_path)
    assert path.name == "labels.json"
    loaded = LabelSet.load(tmp_path)
    assert loaded.intents == ["b_intent", "a_intent"]
    assert loaded.index("a_intent") == 1 and loaded.intent(0) == "b_intent"
    assert loaded.slots == {"action": ["on", "off"]}
    assert json.loads(path.read_text()) == labels.to_dict()


def test_unknown_intent_and_slot_are_named():
    labels = LabelSet(["x"], {"action": ["on"]})
    with pytest.raises(LabelError, match="unknown intent 'y'"):
        labels.index("y")
    with pytest.raises(LabelError, match="unknown value 'off' for slot 'action'"):
        labels.check_slots({"action": "off"})
    with pytest.raises(LabelError, match="unknown slot 'room'"):
        labels.check_slots({"room": "kitchen"})


@pytest.mark.parametrize(
    "intents, slots, message",
    [([], {}, "no intents"), (["a", "a"], {}, "duplicate intent 'a'"), (["a", ""], {}, "non-empty"),
     (["a"], {"s": ["v", "v"]}, "duplicate slot 's' value")],
)  # fmt: skip
def test_invalid_maps_are_rejected(intents, slots, message):
    with pytest.raises(LabelError, match=message):
        LabelSet(intents, slots)


def test_from_utterances_sorts_intents_and_slot_values():
    def utterance(intent, action):
        return Utterance("id", "a.wav", 1.0, 16000, "text", intent, {"action": action})

    labels = LabelSet.from_utterances([utterance("z", "on"), utterance("a", "off"), utterance("z", "on")])
    assert labels.intents == ["a", "z"]
    assert labels.slots == {"action": ["off", "on"]}


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(LabelError, match="labels.json: label map not found"):
        LabelSet.load(tmp_path / "labels.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(LabelError, match="bad.json: not valid JSON"):
        LabelSet.load(bad)
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"classes": []}))
    with pytest.raises(LabelError, match="wrong.json: .*'intents'"):
        LabelSet.load(wrong)


def test_slot_classes_append_none_last_unless_it_is_a_value():
    labels = LabelSet(["x"], {"size": ["small", "large"], "location": ["none", "kitchen"]})
    assert labels.slot_names == ["size", "location"]
    assert labels.slot_classes("size") == ["small", "large", "none"]  # value ids unchanged, none last
    assert labels.slot_classes("location") == ["none", "kitchen"]  # FSC: none is already a value
    assert labels.slot_class_counts() == {"size": 3, "location": 2}
    # a slot the utterance leaves out is none; an explicit none is accepted
    assert labels.slot_targets({"size": "large"}) == [1, 0]
    assert labels.slot_targets({"size": "none", "location": "kitchen"}) == [2, 1]
    assert LabelSet(["x"]).slot_targets({}) == [] and LabelSet(["x"]).slot_class_counts() == {}
    with pytest.raises(LabelError, match="unknown value 'medium' for slot 'size'"):
        labels.slot_targets({"size": "medium"})
    with pytest.raises(LabelError, match="unknown slot 'roast'"):
        labels.slot_classes("roast")
