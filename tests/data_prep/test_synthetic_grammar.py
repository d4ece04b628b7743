"""The built-in corpus's grammar, recipes/grammar/conf/fsc.yaml: FSC's label space, and phrasings
in which the intent and the slots agree (what data_prep/synthetic/grammar.py, which it replaced,
guaranteed in Python)."""

from __future__ import annotations

import random
from collections import Counter, defaultdict

import pytest

from data_prep.synthetic.plan import DEFAULT_GRAMMAR
from pipeline.grammar.load import load_grammar
from pipeline.grammar.sampler import sample_template

SAMPLES_PER_TEMPLATE = 60


@pytest.fixture(scope="module")
def grammar():
    return load_grammar(DEFAULT_GRAMMAR)


@pytest.fixture(scope="module")
def texts(grammar) -> dict[str, dict[str, dict[str, str]]]:
    """intent -> text -> the slots it says (every slot), from seeded samples of every template."""
    rng = random.Random(0)
    found: dict[str, dict[str, dict[str, str]]] = defaultdict(dict)
    for template in grammar.templates:
        for _ in range(SAMPLES_PER_TEMPLATE):
            text, spoken = sample_template(template, rng)
            found[template.intent][text] = grammar.complete_slots({**template.fixed_slots, **spoken})
    return found


def test_fsc_label_space(grammar):
    assert DEFAULT_GRAMMAR.name == "fsc.yaml" and DEFAULT_GRAMMAR.is_file()
    assert len(grammar.intents) == len(set(grammar.intents)) == 31
    actions = Counter(intent.split("_")[0] for intent in grammar.intents)
    assert actions == {
        "change language": 5,
        "activate": 6,
        "deactivate": 6,
        "increase": 5,
        "decrease": 5,
        "bring": 4,
    }
    assert {"change language_Chinese_none", "activate_lights_washroom", "increase_heat_kitchen",
            "bring_socks_none"} <= set(grammar.intents)  # fmt: skip
    assert "activate_music_kitchen" not in grammar.intents  # music has no location in FSC
    labels = grammar.label_set()
    assert labels.intents == grammar.intents
    assert set(labels.slots) == {"action", "object", "location"}
    assert labels.slots["location"] == ["none", "kitchen", "bedroom", "washroom"]  # bathroom is a synonym
    assert all("none" in values for values in labels.slots.values())


def test_intent_and_slots_agree_on_every_phrasing(grammar, texts):
    for intent, phrasings in texts.items():
        assert len(phrasings) >= 20, intent
        for text, slots in phrasings.items():
            assert f"{slots['action']}_{slots['object']}_{slots['location']}" == intent, text
            assert text == " ".join(text.split()) and not {"<", "{", "[", "("} & set(text), text


def test_no_text_belongs_to_two_intents(texts):
    owner: dict[str, str] = {}
    for intent, phrasings in texts.items():
        for text in phrasings:
            assert owner.setdefault(text, intent) == intent, text


def test_locations_are_spoken_only_for_located_intents(texts):
    places = {"kitchen", "bedroom", "washroom", "bathroom"}
    for phrasings in texts.values():
        for text, slots in phrasings.items():
            assert bool(set(text.split()) & places) == (slots["location"] != "none"), text


def test_synonyms_and_ellipsis_are_there(texts):
    assert "kitchen lights off" in texts["deactivate_lights_kitchen"]  # ellipsis
    assert {"turn on the lights", "switch on the lights"} <= set(texts["activate_lights_none"])
    assert "turn the heat up" in texts["increase_heat_none"]
    bathroom = [text for text in texts["activate_lights_washroom"] if "bathroom" in text]
    assert bathroom and all(texts["activate_lights_washroom"][t]["location"] == "washroom" for t in bathroom)
