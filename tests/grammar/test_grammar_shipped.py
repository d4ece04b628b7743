"""The grammars shipped in recipes/grammar/conf load and sample; fsc.yaml is today's FSC grammar."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pipeline.data.labels import intent_slot_values
from pipeline.grammar.load import load_grammar
from pipeline.grammar.model import NONE
from pipeline.grammar.sampler import expand_template, sample_splits

CONF = Path(__file__).resolve().parents[2] / "recipes" / "grammar" / "conf"
TINY = {"train": 62, "valid": 16, "test": 16, "test_unseen_phrasing": 16, "test_unseen_engine": 16}


@pytest.fixture(scope="module")
def fsc():
    return load_grammar(CONF / "fsc.yaml")


# What data_prep/synthetic/grammar.py (the Python grammar fsc.yaml replaced) gave, frozen when it was
# removed: the sha256 of its 31 intent names in order, and of its 3,322 phrasings as sorted lines
# "intent TAB text TAB action TAB object TAB location".
PYTHON_GRAMMAR_INTENTS_SHA256 = "03c4b15ac7ff4dc6a49fbba4cb3ad3f38b2ef0b816ab3cf0fa9ad9e67d103049"
PYTHON_GRAMMAR_PHRASINGS = 3322
PYTHON_GRAMMAR_PHRASINGS_SHA256 = "48c0a3f9aa86b1fc152e99fb9d794e5becce819b9b87307c814ed94856b685d1"
PYTHON_GRAMMAR_SLOT_VALUES = {
    "action": ["activate", "bring", "change language", "deactivate", "decrease", "increase"],
    "object": ["Chinese", "English", "German", "Korean", "heat", "juice", "lamp", "lights", "music", "newspaper",
               "none", "shoes", "socks", "volume"],
    "location": ["bedroom", "kitchen", "none", "washroom"],
}  # fmt: skip


def test_fsc_has_the_python_grammar_intents_and_slot_values(fsc):
    assert hashlib.sha256("\n".join(fsc.intents).encode()).hexdigest() == PYTHON_GRAMMAR_INTENTS_SHA256
    assert {name: sorted(values) for name, values in fsc.slots.items()} == PYTHON_GRAMMAR_SLOT_VALUES


def test_fsc_says_exactly_the_python_grammar_phrasings_with_agreeing_slots(fsc):
    """Same phrasings, same vocabulary; every sentence's slots are its intent's (both views agree)."""
    lines = set()
    for template in fsc.templates:
        for text, spoken in expand_template(template):
            slots = fsc.complete_slots({**template.fixed_slots, **spoken})
            assert "_".join(slots.values()) == template.intent, (template.intent, text)
            lines.add("\t".join((template.intent, text, *slots.values())))
    assert len(lines) == PYTHON_GRAMMAR_PHRASINGS
    assert hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest() == PYTHON_GRAMMAR_PHRASINGS_SHA256


def test_fsc_bathroom_is_a_synonym_of_washroom(fsc):
    template = fsc.templates_of("activate_lights_washroom")[0]
    said = dict(expand_template(template))
    assert said["turn on the bathroom lights"] == {"location": "washroom"}


def test_fsc_samples_agree_with_the_label_names(fsc):
    labels = fsc.label_set()
    splits = sample_splits(fsc, {"train": 310, "valid": 62, "test_unseen_phrasing": 62}, seed=0)
    for sentences in splits.values():
        for sentence in sentences:
            assert intent_slot_values(labels, sentence.intent) == sentence.slots
    assert {s.intent for s in splits["train"]} == set(fsc.intents)
    unseen = splits["test_unseen_phrasing"]
    assert len(unseen) == 62 and not {s.shape for s in unseen} & {s.shape for s in splits["train"]}


@pytest.mark.parametrize("name", ["fsc.yaml", "kitchen.yaml", "home"])
def test_shipped_grammars_load_and_sample_tiny(name):
    grammar = load_grammar(CONF / name)
    splits = sample_splits(grammar, TINY, seed=0)
    assert {split: len(sentences) for split, sentences in splits.items()} == TINY
    labels = grammar.label_set()
    for sentences in splits.values():
        for sentence in sentences:
            assert sentence.intent in labels
            labels.check_slots(sentence.slots)
    assert all(NONE in values for values in labels.slots.values())


def test_kitchen_medium_is_three_slots_values():
    grammar = load_grammar(CONF / "kitchen.yaml")
    holders = {name for name, values in grammar.slots.items() if "medium" in values}
    assert holders == {"level", "speed", "doneness"}
    assert "medium rare" in grammar.slots["doneness"]


def test_home_is_restricted_to_the_house():
    grammar = load_grammar(CONF / "home")
    assert set(grammar.slots["area"]) == {
        "kitchen",
        "living room",
        "bedroom",
        "bathroom",
        "office",
        "hallway",
    }
    assert "ceiling light" in grammar.slots["name"] and "floor" not in grammar.slots
    assert {"HassTurnOn", "HassLightSet", "HassStartTimer", "HassGetWeather"} <= set(grammar.intents)
    assert grammar.slots["brightness"] == [str(n) for n in range(10, 101, 10)] + ["1"]  # "lowest" says 1
