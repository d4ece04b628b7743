"""Home Assistant intent sentence YAML (the template language of Assist) into a :class:`Grammar`.

``hassil`` parses every template, rule and list; this module turns hassil's expressions into
the grammar's template trees, inlining rules and resolving lists (local lists and rules of a
``data`` block first), and reports what cannot be used as one line naming the file, the intent
and the expression. Supported: ``(a|b)``, ``[x]``, ``(a;b)`` permutations, ``{list}`` and
``{list:slot}`` with ``values`` (``in``/``out`` synonyms, templates in ``in``) and ``range``
lists (numbers said in words), ``<rule>``, ``skip_words``, per-block fixed ``slots``, local
``lists``/``expansion_rules``, and ``requires_context``/``excludes_context`` against the
``context`` of list values. Sentences that need a ``wildcard`` list (free text) are left out,
with one warning that says how many. Written forms (digits, "1/2") are left out where an
alternative or a synonym says the same in words, since the sentences are read by speech
synthesis.
"""

from __future__ import annotations

import itertools
import logging
import re
from pathlib import Path
from typing import Any

from hassil.expression import (
    Alternative,
    Expression,
    ListReference,
    Permutation,
    RuleReference,
    Sequence,
    TextChunk,
)
from hassil.intents import Intents, RangeSlotList, TextSlotList, WildcardSlotList
from hassil.numbers import get_rbnf_engine
from hassil.parse_expression import parse_sentence

from pipeline.grammar.model import (
    Choice,
    Grammar,
    GrammarError,
    Node,
    Seq,
    Slot,
    Template,
    Text,
    check_intents_agree_with_slots,
    collect_slot_values,
)

logger = logging.getLogger(__name__)

MAX_PERMUTATION_ITEMS = 4  # (a;b;c;d) has 24 orders; more is a grammar bug, not a phrasing


_WRITTEN = re.compile(r"[0-9/]")  # written forms ("1/2", "50") that speech synthesis reads badly


def _written(node: Node) -> bool:
    """Whether a tree's own text (list values aside) has a written form."""
    if isinstance(node, Text):
        return bool(_WRITTEN.search(node.text))
    if isinstance(node, (Seq, Choice)):
        return any(_written(item) for item in node.items)
    return False


def _prefer_spoken(nodes: list[Node]) -> list[Node]:
    """The alternatives without written forms, when there are some."""
    spoken = [node for node in nodes if not _written(node)]
    return spoken or nodes


class _NeedsWildcard(Exception):
    """A template refers to a free-text (wildcard) list."""


def _parse_template(text: object, where: str) -> Expression:
    if not isinstance(text, str):
        raise GrammarError(f"{where}: an expression must be a string, got {type(text).__name__}")
    if not text.strip():
        raise GrammarError(f"{where}: an empty expression has no expansion")
    try:
        return parse_sentence(text, keep_text=True).expression
    except Exception as error:  # hassil raises ParseError, ParseExpressionError, AssertionError
        detail = " ".join(str(error).split())
        raise GrammarError(f"{where}: unbalanced brackets or bad template syntax ({detail})") from None


def _parse_lists(lists: object, language: str, where: str) -> dict[str, Any]:
    if lists is None:
        return {}
    if not isinstance(lists, dict):
        raise GrammarError(f"{where}: 'lists' must be a mapping of list name -> list")
    parsed = {}
    for name, body in lists.items():
        try:
            parsed[name] = Intents.from_dict(
                {"language": language, "intents": {}, "lists": {name: body}}
            ).slot_lists[name]
        except Exception as error:
            detail = " ".join(str(error).split()) or type(error).__name__
            raise GrammarError(f"{where}: list {{{name}}} is not valid ({detail})") from None
    return parsed


def _parse_rules(rules: object, where: str) -> dict[str, Expression]:
    if rules is None:
        return {}
    if not isinstance(rules, dict):
        raise GrammarError(f"{where}: 'expansion_rules' must be a mapping of rule name -> template")
    return {name: _parse_template(body, f"{where}, rule <{name}> {body!r}") for name, body in rules.items()}


def _number_words(language: str):
    try:
        engine = get_rbnf_engine(language)
    except Exception:
        return None

    def say(number: float) -> str:
        texts = engine.format_number(number).text_by_ruleset
        return texts.get("spellout-cardinal") or next(iter(texts.values()))

    return say


def _format_number(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _context_allows(value_context: dict | None, requires: dict, excludes: dict) -> bool:
    """Whether a list value with ``value_context`` may appear in a block with these contexts."""
    if value_context:
        for key, wanted in requires.items():
            if isinstance(wanted, dict) or key not in value_context:
                continue  # {"slot": true}: satisfied by the device's own context, not by the value
            allowed = wanted if isinstance(wanted, list) else [wanted]
            if value_context[key] not in allowed:
                return False
        for key, unwanted in excludes.items():
            refused = unwanted if isinstance(unwanted, list) else [unwanted]
            if key in value_context and value_context[key] in refused:
                return False
    return True


class _Compiler:
    """hassil expressions of one data block -> template trees."""

    def __init__(self, lists: dict, rules: dict, language: str, requires: dict, excludes: dict, where: str):
        self.lists, self.rules, self.language = lists, rules, language
        self.requires, self.excludes, self.where = requires, excludes, where
        self.rule_stack: list[str] = []

    def compile(self, expression: Expression) -> Node:
        if isinstance(expression, TextChunk):
            return Text(expression.original_text)
        if isinstance(expression, Alternative):
            return Choice(_prefer_spoken([self.compile(item) for item in expression.items]))
        if isinstance(expression, Permutation):
            if len(expression.items) > MAX_PERMUTATION_ITEMS:
                raise GrammarError(f"{self.where}: a permutation of more than {MAX_PERMUTATION_ITEMS} items")
            items = [self.compile(item) for item in expression.items]
            return Choice([Seq(list(order)) for order in itertools.permutations(items)])
        if isinstance(expression, Sequence):
            return Seq([self.compile(item) for item in expression.items])
        if isinstance(expression, RuleReference):
            return self.rule(expression.rule_name)
        if isinstance(expression, ListReference):
            return self.slot(expression)
        raise GrammarError(f"{self.where}: unsupported template part {type(expression).__name__}")

    def rule(self, name: str) -> Node:
        if name not in self.rules:
            raise GrammarError(f"{self.where}: undefined rule <{name}>")
        if name in self.rule_stack:
            raise GrammarError(f"{self.where}: rule <{name}> refers to itself")
        self.rule_stack.append(name)
        try:
            return self.compile(self.rules[name])
        finally:
            self.rule_stack.pop()

    def slot(self, reference: ListReference) -> Node:
        if reference.is_inline_range:
            start, stop, step = reference.get_inline_range()  # type: ignore[misc]
            slot_list: Any = RangeSlotList(name=reference.list_name, start=start, stop=stop, step=step)
        elif reference.list_name in self.lists:
            slot_list = self.lists[reference.list_name]
        else:
            raise GrammarError(f"{self.where}: undefined list {{{reference.list_name}}}")
        if isinstance(slot_list, WildcardSlotList):
            raise _NeedsWildcard(reference.list_name)
        values: list[tuple[Node, str]] = []
        if isinstance(slot_list, TextSlotList):
            for value in slot_list.values:
                if not _context_allows(value.context, self.requires, self.excludes):
                    continue
                phrase = self.compile(value.text_in)
                out = value.value_out
                if out is None:  # no "out": the value reports its own text
                    out = value.text_in.original_text if isinstance(value.text_in, TextChunk) else None
                if out is None or out == "":
                    raise GrammarError(
                        f"{self.where}: a value of list {{{reference.list_name}}} has no 'out'"
                    )
                values.append((phrase, str(out)))
            spoken_out = {out for phrase, out in values if not _written(phrase)}
            values = [
                (phrase, out) for phrase, out in values if out not in spoken_out or not _written(phrase)
            ]
        elif isinstance(slot_list, RangeSlotList):
            say = _number_words(self.language) if slot_list.words else None
            for number in slot_list.get_numbers():
                if slot_list.multiplier is not None:
                    number_out: float = number * slot_list.multiplier
                else:
                    number_out = number
                phrases = [Text(say(number))] if say else []
                if slot_list.digits and not phrases:
                    phrases = [Text(_format_number(number))]
                values.append((Choice(phrases), _format_number(number_out)))
        else:
            raise GrammarError(f"{self.where}: list {{{reference.list_name}}} of unknown kind")
        return Slot(reference.slot_name, values)


def _fixed_slots(slots: object, where: str) -> dict[str, str]:
    if slots is None:
        return {}
    if not isinstance(slots, dict):
        raise GrammarError(f"{where}: 'slots' must be a mapping of slot -> value")
    fixed = {}
    for name, value in slots.items():
        if isinstance(value, dict) and "value" in value:
            value = value["value"]
        if isinstance(value, (list, dict)) or value is None or value == "":
            raise GrammarError(f"{where}: fixed slot {name!r} must be one value, got {value!r}")
        fixed[str(name)] = str(value)
    return fixed


def grammar_from_homeassistant(data: object, path: Path, shapes: dict[str, str] | None = None) -> Grammar:
    """The grammar in a Home Assistant intents document (already read from ``path``).

    Args:
        data: the YAML document: ``language``, ``intents``, optional ``lists``,
            ``expansion_rules``, ``skip_words``.
        path: the file, for error messages.
        shapes: template text -> the expression as the user wrote it (for grammars translated
            from another format): used as the shape and in error messages.

    Returns:
        The grammar; templates that need a wildcard list are left out, with one warning.
    """
    shapes = shapes or {}
    if not isinstance(data, dict) or not isinstance(data.get("intents"), dict) or not data["intents"]:
        raise GrammarError(f"{path}: a Home Assistant grammar needs a non-empty 'intents' mapping")
    language = str(data.get("language") or "en")
    lists = _parse_lists(data.get("lists"), language, f"{path}")
    rules = _parse_rules(data.get("expansion_rules"), f"{path}")
    skip_words = data.get("skip_words") or []
    if not isinstance(skip_words, list) or not all(isinstance(word, str) for word in skip_words):
        raise GrammarError(f"{path}: 'skip_words' must be a list of strings")

    templates: list[Template] = []
    intents: list[str] = []
    wildcard_skipped = 0
    for intent, body in data["intents"].items():
        intent = str(intent)
        blocks = body.get("data") if isinstance(body, dict) else None
        if not isinstance(blocks, list) or not blocks:
            raise GrammarError(f"{path}: intent {intent!r} needs a 'data' list of sentence blocks")
        found_any = False
        for block in blocks:
            where = f"{path}: intent {intent!r}"
            if not isinstance(block, dict) or not isinstance(block.get("sentences"), list):
                raise GrammarError(f"{where}: every 'data' block needs a 'sentences' list")
            block_lists = {**lists, **_parse_lists(block.get("lists"), language, where)}
            block_rules = {**rules, **_parse_rules(block.get("expansion_rules"), where)}
            fixed = _fixed_slots(block.get("slots"), where)
            requires = block.get("requires_context") or {}
            excludes = block.get("excludes_context") or {}
            for text in block["sentences"]:
                shown = shapes.get(text, text) if isinstance(text, str) else text
                where_expression = f"{where}, expression {shown!r}"
                expression = _parse_template(text, where_expression)
                compiler = _Compiler(block_lists, block_rules, language, requires, excludes, where_expression)
                try:
                    tree = compiler.compile(expression)
                except _NeedsWildcard:
                    wildcard_skipped += 1
                    continue
                if tree.count == 0:
                    raise GrammarError(f"{where_expression}: the expression has no expansion")
                clash = sorted(set(fixed) & {name for name, _ in tree.produces})
                if clash:
                    raise GrammarError(f"{where_expression}: slot {clash[0]!r} is both fixed and spoken")
                shape = " ".join(str(shown).split())
                templates.append(Template(intent=intent, shape=shape, tree=tree, fixed_slots=fixed))
                found_any = True
        if found_any:
            intents.append(intent)
    if wildcard_skipped:
        dropped = [str(intent) for intent in data["intents"] if str(intent) not in intents]
        logger.warning(
            "%s: left out %d sentence template(s) that need free text (a wildcard list)%s",
            path,
            wildcard_skipped,
            f", and intent(s) {', '.join(dropped)} with nothing else" if dropped else "",
        )
    if not templates:
        raise GrammarError(f"{path}: no expression without free text is left")
    grammar = Grammar(
        path=path,
        intents=intents,
        slots=collect_slot_values(templates),
        templates=templates,
        skip_words=list(skip_words),
    )
    check_intents_agree_with_slots(grammar)
    return grammar
