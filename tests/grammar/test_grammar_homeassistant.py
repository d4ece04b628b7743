"""Home Assistant grammars: every template construct, and every error, on tiny files."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from pipeline.core.errors import SlukdError
from pipeline.grammar.load import load_grammar
from pipeline.grammar.model import NONE, GrammarError
from pipeline.grammar.sampler import expand_template


def write(tmp_path: Path, text: str, name: str = "grammar.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def expansions(grammar, intent: str) -> set[tuple[str, tuple]]:
    """Every (text, slots) of an intent, fixed slots included."""
    found = set()
    for template in grammar.templates_of(intent):
        for text, spoken in expand_template(template):
            found.add((text, tuple(sorted({**template.fixed_slots, **spoken}.items()))))
    return found


def texts(grammar, intent: str) -> set[str]:
    return {text for text, _ in expansions(grammar, intent)}


LIGHTS = """
language: en
lists:
  room:
    values:
      - {in: kitchen, out: kitchen}
      - {in: (bathroom|washroom), out: washroom}
  level:
    range: {from: 1, to: 3}
  colour:
    values: [red, blue]
expansion_rules:
  the: (the|my)
  lamp: "<the> (light|lamp)"
intents:
  LightOn:
    data:
      - sentences:
          - "(turn|switch) on <lamp> [in the {room:area}]"
        slots: {domain: light}
  LightLevel:
    data:
      - sentences:
          - "set {room:area} to {level}"
          - "({colour};please)"
"""


def test_constructs_alternatives_optionals_lists_synonyms_rules_fixed_slots(tmp_path):
    grammar = load_grammar(write(tmp_path, LIGHTS))
    assert grammar.intents == ["LightOn", "LightLevel"]
    assert grammar.slots == {
        "domain": ["light"],
        "area": ["kitchen", "washroom"],
        "level": ["1", "2", "3"],
        "colour": ["red", "blue"],
    }
    found = expansions(grammar, "LightOn")
    assert len(found) == 2 * 2 * 2 * 4  # verb x determiner x noun x (no room, kitchen, bathroom, washroom)
    assert ("switch on my lamp in the bathroom", (("area", "washroom"), ("domain", "light"))) in found
    assert ("turn on the light", (("domain", "light"),)) in found
    # a range says its numbers in words and reports digits
    assert ("set kitchen to two", (("area", "kitchen"), ("level", "2"))) in expansions(grammar, "LightLevel")
    # a permutation says its items in every order
    assert {"red please", "please red", "blue please", "please blue"} <= texts(grammar, "LightLevel")


def test_label_set_lists_every_value_plus_none(tmp_path):
    labels = load_grammar(write(tmp_path, LIGHTS)).label_set()
    assert labels.intents == ["LightOn", "LightLevel"]
    assert labels.slots["area"] == ["kitchen", "washroom", NONE]
    assert labels.slots["level"] == ["1", "2", "3", NONE]


def test_local_lists_rules_and_context(tmp_path):
    path = write(
        tmp_path,
        """
        language: en
        lists:
          name:
            values:
              - {in: desk lamp, out: desk lamp, context: {domain: light}}
              - {in: front door, out: front door, context: {domain: lock}}
        intents:
          Lock:
            data:
              - sentences: ["<lock> [the] {name}"]
                requires_context: {domain: lock}
                expansion_rules: {lock: (lock|bolt)}
          Dim:
            data:
              - sentences: ["dim [the] {name} to {percent}"]
                excludes_context: {domain: lock}
                lists:
                  percent: {values: [{in: half, out: 50}]}
        """,
    )
    grammar = load_grammar(path)
    assert texts(grammar, "Lock") == {
        "lock front door",
        "lock the front door",
        "bolt front door",
        "bolt the front door",
    }
    assert ("dim the desk lamp to half", (("name", "desk lamp"), ("percent", "50"))) in expansions(
        grammar, "Dim"
    )
    assert not any("front door" in text for text in texts(grammar, "Dim"))


def test_written_forms_give_way_to_words(tmp_path):
    path = write(
        tmp_path,
        """
        language: en
        lists:
          half: {values: [{in: half, out: 30}, {in: 1/2, out: 30}, {in: 3/4, out: 45}]}
        intents:
          Timer:
            data:
              - sentences: ["(set|start) a {half:minutes} (hour|60 minute) timer"]
        """,
    )
    assert texts(load_grammar(path), "Timer") == {
        "set a half hour timer",
        "start a half hour timer",
        "set a 3/4 hour timer",  # no spoken synonym: kept
        "start a 3/4 hour timer",
    }


def test_skip_words_and_symbols(tmp_path):
    path = write(
        tmp_path,
        """
        language: en
        skip_words: [please]
        lists:
          brightness: {range: {from: 50, to: 50}}
        intents:
          Set:
            data:
              - sentences: ["brightness {brightness}%"]
        """,
    )
    grammar = load_grammar(path)
    assert grammar.skip_words == ["please"]
    assert texts(grammar, "Set") == {"brightness fifty percent"}


def test_sentences_agree_with_hassil_recognizer(tmp_path):
    """What the sampler says, hassil itself recognises as the same intent and slots."""
    import yaml
    from hassil import Intents, recognize_all

    from pipeline.grammar.sampler import sample_splits

    path = write(tmp_path, LIGHTS)
    grammar = load_grammar(path)
    intents = Intents.from_dict(yaml.safe_load(path.read_text()))
    for sentence in sample_splits(grammar, {"train": 40}, seed=3)["train"]:
        results = list(recognize_all(sentence.text, intents))
        said = {name: value for name, value in sentence.slots.items() if value != NONE}
        assert any(
            result.intent.name == sentence.intent
            and {name: str(entity.value) for name, entity in result.entities.items()} == said
            for result in results
        ), sentence


ERRORS = {
    "undefined list": (
        'intents: {A: {data: [{sentences: ["turn on {missing}"]}]}}',
        ["'A'", "turn on {missing}", "undefined list {missing}"],
    ),
    "undefined rule": (
        'intents: {A: {data: [{sentences: ["turn on <missing>"]}]}}',
        ["'A'", "turn on <missing>", "undefined rule <missing>"],
    ),
    "unbalanced": (
        'intents: {A: {data: [{sentences: ["turn (on|off the light"]}]}}',
        ["'A'", "turn (on|off the light", "unbalanced brackets"],
    ),
    "unbalanced optional": (
        'intents: {A: {data: [{sentences: ["turn on] the light"]}]}}',
        ["'A'", "turn on] the light", "unbalanced brackets"],
    ),
    "duplicate intent": (
        'intents:\n  A: {data: [{sentences: ["a"]}]}\n  A: {data: [{sentences: ["b"]}]}',
        ["duplicate intent 'A'", "line 4"],
    ),
    "no expansion": (
        'lists: {empty: {values: []}}\nintents: {A: {data: [{sentences: ["say {empty}"]}]}}',
        ["'A'", "say {empty}", "no expansion"],
    ),
    "empty expression": ('intents: {A: {data: [{sentences: [""]}]}}', ["'A'", "no expansion"]),
    "recursive rule": (
        'expansion_rules: {loop: "a <loop>"}\nintents: {A: {data: [{sentences: ["<loop>"]}]}}',
        ["'A'", "rule <loop> refers to itself"],
    ),
    "not a grammar": ("something: else", ["not a grammar"]),
    "no data": ("intents: {A: {sentences: [a]}}", ["'A'", "'data'"]),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_are_one_line_naming_file_intent_and_expression(tmp_path, case):
    text, expected = ERRORS[case]
    path = write(tmp_path, "language: en\n" + text)
    with pytest.raises(GrammarError) as caught:
        load_grammar(path)
    assert isinstance(caught.value, SlukdError)
    message = caught.value.one_line()
    assert message.startswith(str(path))
    assert "\n" not in str(caught.value)
    for part in expected:
        assert part in message, (part, message)


def test_yaml_merge_keys_may_override(tmp_path):
    path = write(
        tmp_path,
        """
        language: en
        block: &block {sentences: ["turn on"], slots: {state: "on"}}
        intents:
          On: {data: [*block]}
          Off: {data: [{<<: *block, sentences: ["turn off"], slots: {state: "off"}}]}
        """,
    )
    grammar = load_grammar(path)
    assert [t.fixed_slots for t in grammar.templates] == [{"state": "on"}, {"state": "off"}]


FSC_STYLE = """
language: en
lists:
  room: {values: [kitchen, bedroom]}
intents:
  activate_lights_none: {data: [{sentences: ["lights on"], slots: {action: activate, object: lights, location: none}}]}
  activate_lights_kitchen:
    data: [{sentences: ["kitchen lights on"], slots: {action: activate, object: lights, location: kitchen}}]
  deactivate_lights_bedroom:
    data: [{sentences: ["{room:location} lights off"], slots: {action: deactivate, object: lights}}]
"""


def test_intent_names_made_of_slot_values_must_agree_with_the_slots(tmp_path):
    with pytest.raises(GrammarError) as caught:
        load_grammar(write(tmp_path, FSC_STYLE))
    message = caught.value.one_line()
    assert "'deactivate_lights_bedroom', expression '{room:location} lights off'" in message
    assert "says location = bedroom, kitchen but the intent's name says bedroom" in message
    fixed = FSC_STYLE.replace("{room:location} lights off", "bedroom lights off").replace(
        "action: deactivate, object: lights}", "action: deactivate, object: lights, location: bedroom}"
    )
    assert load_grammar(write(tmp_path, fixed)).intents[2] == "deactivate_lights_bedroom"


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(GrammarError, match="not found"):
        load_grammar(tmp_path / "nope.yaml")
    with pytest.raises(GrammarError, match="not valid YAML"):
        load_grammar(write(tmp_path, "intents: [unclosed"))


def test_wildcard_sentences_left_out_with_one_warning(tmp_path, caplog):
    path = write(
        tmp_path,
        """
        language: en
        lists:
          query: {wildcard: true}
        expansion_rules:
          search: "(find|search for) {query}"
        intents:
          Play:
            data:
              - sentences: ["play {query}", "<search>", "play some music"]
          Search:
            data:
              - sentences: ["look up {query}"]
        """,
    )
    with caplog.at_level(logging.WARNING, logger="pipeline.grammar"):
        grammar = load_grammar(path)
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1 and "left out 3 sentence template(s)" in warnings[0] and "Search" in warnings[0]
    assert grammar.intents == ["Play"]  # Search says nothing without free text
    assert texts(grammar, "Play") == {"play some music"}
