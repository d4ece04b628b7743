"""Rhino contexts: the translation to Home Assistant templates, expansion and errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pipeline.grammar.load import load_grammar
from pipeline.grammar.model import GrammarError
from pipeline.grammar.rhino import translate_expression
from pipeline.grammar.sampler import expand_template


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "context.yml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def expansions(grammar, intent: str) -> set[tuple[str, tuple]]:
    return {
        (text, tuple(sorted(spoken.items())))
        for template in grammar.templates_of(intent)
        for text, spoken in expand_template(template)
    }


TEA = """
context:
  expressions:
    orderTea:
      - "[make, brew] (me) a $size:size $tea:tea (@politely)"
      - "$size:size $tea:tea"
    roast:
      - "$size:roast roast"
  slots:
    size: [small, medium]
    tea: [green tea, earl grey]
  macros:
    politely: [please, if you can]
"""


def test_translation_of_each_construct():
    types, macros = {"size", "tea"}, {"politely"}
    assert translate_expression("[make, brew] me", types, macros, "x") == "(make|brew) me"
    assert translate_expression("(me, us) now", types, macros, "x") == "[me|us] now"
    assert translate_expression("a $size:cup $tea:tea", types, macros, "x") == "a {size:cup} {tea:tea}"
    assert translate_expression("tea (@politely)", types, macros, "x") == "tea [<politely>]"


def test_expansion_reports_slot_names_and_macros(tmp_path):
    grammar = load_grammar(write(tmp_path, TEA))
    assert grammar.intents == ["orderTea", "roast"]
    assert grammar.slots == {
        "size": ["small", "medium"],
        "tea": ["green tea", "earl grey"],
        "roast": ["small", "medium"],
    }
    found = expansions(grammar, "orderTea")
    assert (
        len(found) == 2 * 2 * 2 * 2 * 3 + 2 * 2
    )  # verb, me, size, tea, (nothing|please|if you can); the short form
    assert ("brew me a medium earl grey if you can", (("size", "medium"), ("tea", "earl grey"))) in found
    assert ("make a small green tea", (("size", "small"), ("tea", "green tea"))) in found
    # "medium" is a size in one intent and a roast in another: reported in the slot it fills
    assert ("medium roast", (("roast", "medium"),)) in expansions(grammar, "roast")
    # shapes are the expressions as written
    assert [t.shape for t in grammar.templates_of("orderTea")][
        0
    ] == "[make, brew] (me) a $size:size $tea:tea (@politely)"


def test_built_in_number_type(tmp_path):
    grammar = load_grammar(
        write(tmp_path, 'context:\n  expressions:\n    dial: ["call $pv.SingleDigitInteger:digit"]\n')
    )
    assert grammar.slots["digit"] == [str(n) for n in range(10)]
    assert ("call seven", (("digit", "7"),)) in expansions(grammar, "dial")
    grammar = load_grammar(
        write(tmp_path, 'context:\n  expressions:\n    pick: ["the $pv.TwoDigitOrdinal:place one"]\n')
    )
    assert ("the twenty-first one", (("place", "21"),)) in expansions(grammar, "pick")
    with pytest.raises(GrammarError, match=r"undefined slot type \$pv.Alphabetic \(built-in types here"):
        load_grammar(write(tmp_path, 'context:\n  expressions:\n    spell: ["$pv.Alphabetic:letter"]\n'))


ERRORS = {
    "undefined macro": ('    a: ["tea @missing"]', ["'a'", "tea @missing", "undefined macro @missing"]),
    "undefined slot type": (
        '    a: ["tea $missing:x"]',
        ["'a'", "tea $missing:x", "undefined slot type $missing"],
    ),
    "unbalanced": ('    a: ["[make, brew tea"]', ["'a'", "[make, brew tea", "unbalanced brackets"]),
    "crossed brackets": ('    a: ["[make (brew] tea)"]', ["'a'", "unbalanced brackets"]),
    "duplicate intent": ('    a: ["tea"]\n    a: ["coffee"]', ["duplicate intent 'a'"]),
    "empty expression": ('    a: [""]', ["'a'", "no expansion"]),
    "stray dollar": ('    a: ["tea $"]', ["'a'", "$type:name"]),
    "unquoted brackets": ("    a:\n      - [make, brew]", ["'a'", "must be a string"]),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_errors_name_file_intent_and_expression(tmp_path, case):
    body, expected = ERRORS[case]
    path = write(tmp_path, "context:\n  expressions:\n" + body + "\n  slots:\n    size: [small]\n")
    with pytest.raises(GrammarError) as caught:
        load_grammar(path)
    message = caught.value.one_line()
    assert message.startswith(str(path))
    for part in expected:
        assert part in message, (part, message)


def test_bad_macro_and_slot_sections(tmp_path):
    with pytest.raises(GrammarError, match="macro @polite"):
        load_grammar(
            write(tmp_path, 'context:\n  expressions: {a: ["x @polite"]}\n  macros: {polite: "please"}\n')
        )
    with pytest.raises(GrammarError, match=r"slot type \$size"):
        load_grammar(write(tmp_path, 'context:\n  expressions: {a: ["x $size:s"]}\n  slots: {size: []}\n'))


def test_yes_no_on_off_and_numbers_stay_words(tmp_path):
    # YAML 1.1 reads unquoted no/yes/on/off as booleans: a slot value "no" must not become "False"
    grammar = load_grammar(
        write(
            tmp_path,
            """
        context:
          expressions:
            order:
              - "$count:count pizzas with $cheese:cheese cheese"
              - "turn $power:power the oven"
          slots:
            count: [2, 3]
            cheese: [extra, no, yes, light]
            power: [on, off]
        """,
        )
    )
    assert grammar.slots == {
        "count": ["2", "3"],
        "cheese": ["extra", "no", "yes", "light"],
        "power": ["on", "off"],
    }
    assert ("no pizza", ()) not in expansions(grammar, "order")
    assert any(text == "2 pizzas with no cheese" for text, _ in expansions(grammar, "order"))
