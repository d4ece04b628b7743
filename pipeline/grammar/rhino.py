"""Picovoice Rhino context YAML, translated into Home Assistant template syntax.

A Rhino context::

    context:
      expressions:
        orderTea:                                  # intent -> expressions
          - "[make, brew] (me) a $size:size $tea:tea (@politely)"
      slots:
        size: [small, medium, large]               # slot type -> values
      macros:
        politely: [please, if you can]             # macro -> phrases

``[a, b]`` is one of, ``(a, b)`` an optional one of, ``$type:name`` a value of slot type
``type`` reported in slot ``name``, ``@macro`` one of the macro's phrases. The translation
gives ``(a|b)``, ``[a|b]``, ``{type:name}`` and ``<macro>``; Rhino's built-in types ``pv.SingleDigitInteger``,
``pv.TwoDigitInteger``, ``pv.Percent`` (number ranges) and ``pv.SingleDigitOrdinal``,
``pv.TwoDigitOrdinal`` (ordinals in words) are said in words and reported as digits.
The expression as written stays the template's shape and is what errors quote.
"""

from __future__ import annotations

import re
from pathlib import Path

from hassil.numbers import get_rbnf_engine
from unicode_rbnf import FormatPurpose

from pipeline.grammar.homeassistant import grammar_from_homeassistant
from pipeline.grammar.model import Grammar, GrammarError

NUMBER_TYPES = {
    "pv.SingleDigitInteger": {"range": {"from": 0, "to": 9}},
    "pv.TwoDigitInteger": {"range": {"from": 0, "to": 99}},
    "pv.Percent": {"range": {"from": 0, "to": 100}},
}
ORDINAL_TYPES = {"pv.SingleDigitOrdinal": (1, 9), "pv.TwoDigitOrdinal": (1, 99)}
_TOKEN = re.compile(r"\$([A-Za-z_][\w.]*):([A-Za-z_]\w*)|@([A-Za-z_]\w*)|([\[\](),])|([^\[\](),$@]+)|([$@])")
_RESERVED = set("{}<>|;")
_SPACE_AROUND_BAR = re.compile(r"\s*\|\s*")


def _ordinals(start: int, stop: int) -> dict:
    """A list of ordinals said in words ("third") and reported as digits ("3")."""
    engine = get_rbnf_engine("en")
    values = []
    for number in range(start, stop + 1):
        said = engine.format_number(number, FormatPurpose.ORDINAL).text_by_ruleset
        values.append({"in": next(iter(said.values())), "out": str(number)})
    return {"values": values}


def _names(section: object, what: str, path: Path) -> dict:
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise GrammarError(f"{path}: 'context.{what}' must be a mapping")
    return section


def translate_expression(text: str, types: set[str], macros: set[str], where: str) -> str:
    """One Rhino expression (or macro phrase) in Home Assistant template syntax."""
    if not isinstance(text, str):
        raise GrammarError(f"{where}: an expression must be a string (quote it: YAML reads [a, b] as a list)")
    if not text.strip():
        raise GrammarError(f"{where}: an empty expression has no expansion")
    reserved = sorted(_RESERVED & set(text))
    if reserved:
        raise GrammarError(f"{where}: character {reserved[0]!r} is not part of Rhino syntax")
    out: list[str] = []
    stack: list[str] = []
    for slot_type, slot_name, macro, bracket, words, stray in _TOKEN.findall(text):
        if slot_type:
            if slot_type not in types:
                built_in = ", ".join(sorted({*NUMBER_TYPES, *ORDINAL_TYPES}))
                hint = f" (built-in types here: {built_in})" if slot_type.startswith("pv.") else ""
                raise GrammarError(f"{where}: undefined slot type ${slot_type}{hint}")
            out.append(f"{{{slot_type}:{slot_name}}}")
        elif macro:
            if macro not in macros:
                raise GrammarError(f"{where}: undefined macro @{macro}")
            out.append(f"<{macro}>")
        elif bracket in ("[", "("):
            stack.append(bracket)
            out.append("(" if bracket == "[" else "[")
        elif bracket in ("]", ")"):
            if not stack or stack.pop() != {"]": "[", ")": "("}[bracket]:
                raise GrammarError(f"{where}: unbalanced brackets")
            out.append(")" if bracket == "]" else "]")
        elif bracket == ",":
            if not stack:
                raise GrammarError(f"{where}: ',' outside [ ] or ( )")
            out.append("|")
        elif stray:
            raise GrammarError(f"{where}: {stray!r} must start a $type:name slot or an @macro")
        else:
            out.append(words)
    if stack:
        raise GrammarError(f"{where}: unbalanced brackets")
    return _SPACE_AROUND_BAR.sub("|", "".join(out))


def _is_word(value: object) -> bool:
    """A slot value as YAML reads it: a string, or a number written as one (never a boolean)."""
    return isinstance(value, (str, int, float)) and not isinstance(value, bool)


def rhino_to_homeassistant(data: object, path: Path) -> tuple[dict, dict[str, str]]:
    """A Rhino context as a Home Assistant intents document, and translated text -> expression."""
    context = data.get("context") if isinstance(data, dict) else None
    if not isinstance(context, dict):
        raise GrammarError(f"{path}: a Rhino grammar needs a 'context' mapping")
    expressions = _names(context.get("expressions"), "expressions", path)
    slots = _names(context.get("slots"), "slots", path)
    macros = _names(context.get("macros"), "macros", path)
    if not expressions:
        raise GrammarError(f"{path}: 'context.expressions' has no intent")
    lists: dict[str, dict] = {}
    for slot_type, values in slots.items():
        if not isinstance(values, list) or not values or not all(_is_word(v) for v in values):
            raise GrammarError(f"{path}: slot type ${slot_type} needs a non-empty list of values")
        lists[str(slot_type)] = {"values": [{"in": str(value), "out": str(value)} for value in values]}
    for slot_type, body in NUMBER_TYPES.items():
        lists.setdefault(slot_type, body)
    for slot_type, (start, stop) in ORDINAL_TYPES.items():
        lists.setdefault(slot_type, _ordinals(start, stop))
    type_names, macro_names = set(lists), {str(name) for name in macros}
    rules = {}
    for name, phrases in macros.items():
        if not isinstance(phrases, list) or not phrases:
            raise GrammarError(f"{path}: macro @{name} needs a non-empty list of phrases")
        where = f"{path}: macro @{name}"
        translated = [translate_expression(str(p), type_names, macro_names, where) for p in phrases]
        rules[str(name)] = "(" + "|".join(translated) + ")"
    intents = {}
    shapes: dict[str, str] = {}
    for intent, texts in expressions.items():
        if not isinstance(texts, list) or not texts:
            raise GrammarError(f"{path}: intent {intent!r} needs a list of expressions")
        sentences = []
        for text in texts:
            where = f"{path}: intent {intent!r}, expression {text!r}"
            translated = translate_expression(text, type_names, macro_names, where)
            shapes[translated] = text
            sentences.append(translated)
        intents[str(intent)] = {"data": [{"sentences": sentences}]}
    return {"language": "en", "intents": intents, "lists": lists, "expansion_rules": rules}, shapes


def grammar_from_rhino(data: object, path: Path) -> Grammar:
    """The grammar in a Rhino context document (already read from ``path``)."""
    document, shapes = rhino_to_homeassistant(data, path)
    return grammar_from_homeassistant(document, path, shapes)
