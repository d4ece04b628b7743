"""The grammars shipped in recipes/grammar/conf load and sample; fsc.yaml is today's FSC grammar."""

from __future__ import annotations

from pathlib import Path

import pytest

from data_prep.synthetic import grammar as fsc_python
from pipeline.data.labels import intent_slot_values
from pipeline.grammar import NONE, load_grammar, sample_splits
from pipeline.grammar.sampler import expand_template

CONF = Path(__file__).resolve().parents[2] / "recipes" / "grammar" / "conf"
TINY = {"train": 62, "valid": 16, "test": 16, "test_unseen_phrasing": 16, "test_unseen_engine": 16}


@pytest.fixture(scope="module")
def fsc():
    return load_grammar(CONF / "fsc.yaml")


def test_fsc_has_the_python_grammar_intents_and_slot_values(fsc):
    assert fsc.intents == [intent.name for intent in fsc_python.INTENTS]
    assert {name: sorted(values) for name, values in fsc.slots.items()} == {
        name: sorted(values) for name, values in fsc_python.SLOT_VALUES.items()
    }


def test_fsc_says_exactly_the_python_grammar_phrasings_with_agreeing_slots(fsc):
    """Same phrasings, same vocabulary; every sentence's slots are its intent's (both views agree)."""
    for intent in fsc_python.INTENTS:
        said = set()
        for template in fsc.templates_of(intent.name):
            for text, spoken in expand_template(template):
                said.add(text)
                assert {**template.fixed_slots, **spoken} == intent.slots, (intent.name, text)
        assert said == {phrasing.text for phrasing in fsc_python.phrasings(intent)}, intent.name


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
