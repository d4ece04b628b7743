"""data_prep.synthetic.grammar: FSC's label space and the phrase grammar."""

from __future__ import annotations

from collections import Counter

import pytest

from data_prep.synthetic import grammar


def test_fsc_label_space():
    names = [intent.name for intent in grammar.INTENTS]
    assert len(names) == len(set(names)) == 31
    assert Counter(intent.action for intent in grammar.INTENTS) == {
        "change language": 5, "activate": 6, "deactivate": 6, "increase": 5, "decrease": 5, "bring": 4,
    }  # fmt: skip
    assert "change language_Chinese_none" in names and "activate_lights_washroom" in names
    assert "increase_heat_kitchen" in names and "bring_socks_none" in names
    assert "activate_music_kitchen" not in names  # music has no location in FSC
    for intent in grammar.INTENTS:
        for slot, value in intent.slots.items():
            assert value in grammar.SLOT_VALUES[slot]


def test_expansion_syntax():
    assert grammar._expand("(a|b) [very ]big") == ("a very big", "a big", "b very big", "b big")
    assert grammar._expand("x (y|[z ]w)") == ("x y", "x z w", "x w")
    with pytest.raises(ValueError, match="unbalanced"):
        grammar._expand("(a|b")


def test_every_intent_has_many_phrasings_and_families():
    for intent in grammar.INTENTS:
        phrasings = grammar.phrasings(intent)
        assert len({p.family for p in phrasings}) >= 5, intent.name
        assert len(phrasings) >= 25, intent.name
        texts = [p.text for p in phrasings]
        assert len(texts) == len(set(texts))
        assert all(text == text.strip() and "  " not in text and "{" not in text for text in texts)


def test_no_text_belongs_to_two_intents():
    owner: dict[str, str] = {}
    for intent in grammar.INTENTS:
        for phrasing in grammar.phrasings(intent):
            assert owner.setdefault(phrasing.text, intent.name) == intent.name, phrasing.text


def test_locations_are_spoken_only_for_located_intents():
    places = {"kitchen", "bedroom", "washroom", "bathroom"}
    for intent in grammar.INTENTS:
        for phrasing in grammar.phrasings(intent):
            spoken = grammar.words(phrasing.text) & places
            if intent.location == "none":
                assert not spoken, phrasing.text
            else:
                assert spoken, phrasing.text


def test_synonyms_and_ellipsis_are_there():
    def texts(name):
        return {p.text for i in grammar.INTENTS if i.name == name for p in grammar.phrasings(i)}

    lights_off = texts("deactivate_lights_kitchen")
    assert "kitchen lights off" in lights_off  # ellipsis
    lights_on = texts("activate_lights_none")
    assert {"turn on the lights", "switch on the lights"} <= lights_on
    assert "please turn on the lights" in lights_on
    assert "turn the heat up" in texts("increase_heat_none")
    assert any("bathroom" in t for t in texts("activate_lights_washroom"))
