"""The one representation of a command grammar, whatever file format it came from.

A :class:`Grammar` holds, per intent, its expression *templates*: trees of text, choices,
sequences and *slots* (a slot is one value picked from a list, each value with the phrases
that say it and the canonical name it is reported as). Every template carries the slots its
intent fixes (Home Assistant's per-intent ``slots``). Home Assistant files are parsed by
``hassil`` and Rhino files are translated to the same template syntax first
(:mod:`pipeline.grammar.homeassistant`, :mod:`pipeline.grammar.rhino`), so one sampler
(:mod:`pipeline.grammar.sampler`) serves both.

Every sentence reports every slot of the grammar: the value it says or fixes, else
:data:`NONE`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pipeline.core.errors import SlukdError
from pipeline.data.labels import LabelSet, intent_slot_table

NONE = "none"  # the value of a slot a sentence does not fill
MAX_NAMED_SLOTS = 5  # intent names are read as slot values only up to this many slots (orders tried)


class GrammarError(SlukdError, ValueError):
    """A grammar file that cannot be used: the message names the file, intent and expression."""


@dataclass(frozen=True)
class Sentence:
    """One sampled command: its text, intent, every slot's value and the template it came from.

    ``shape`` identifies the expression template (its text as written in the grammar);
    ``phrasing`` is ``seen`` for sentences from the training pool, ``unseen`` for held-out
    shapes or slot-value combinations.
    """

    text: str
    intent: str
    slots: dict[str, str]
    shape: str
    phrasing: str = "seen"


# ---------------------------------------------------------------------------------------------
# Template trees. Each node knows how many expansions it has and which (slot, value) pairs it
# can produce, so the sampler can force a value and count shapes without expanding anything.


class Node:
    """Base of the template tree."""

    count: int
    produces: frozenset[tuple[str, str]]


class Text(Node):
    """Literal text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.count = 1
        self.produces = frozenset()


class Seq(Node):
    """Items said one after another."""

    def __init__(self, items: list[Node]) -> None:
        self.items = items
        self.count = 1
        for item in items:
            self.count *= item.count
        self.produces = frozenset().union(*(item.produces for item in items))


class Choice(Node):
    """One of the items (an optional part is a choice with an empty text)."""

    def __init__(self, items: list[Node]) -> None:
        self.items = [item for item in items if item.count > 0]
        self.count = sum(item.count for item in self.items)
        self.produces = frozenset().union(*(item.produces for item in self.items))


class Slot(Node):
    """One value of a slot list: ``values`` pairs each phrase tree with its canonical value."""

    def __init__(self, name: str, values: list[tuple[Node, str]]) -> None:
        self.name = name
        self.values = [(phrase, value) for phrase, value in values if phrase.count > 0]
        self.count = sum(phrase.count for phrase, _ in self.values)
        self.produces = frozenset({(name, value) for _, value in self.values}).union(
            *(phrase.produces for phrase, _ in self.values)
        )


@dataclass
class Template:
    """One expression of an intent: its tree, the slots the intent fixes, and its shape."""

    intent: str
    shape: str  # the expression as written; equal texts of different intents are one shape
    tree: Node
    fixed_slots: dict[str, str] = field(default_factory=dict)

    @property
    def variable_slots(self) -> set[str]:
        """Slots this template fills from lists."""
        return {name for name, _ in self.tree.produces}


@dataclass
class Grammar:
    """Intents, their templates and the slot values they can report.

    Attributes:
        path: the file it was read from (named in errors).
        intents: intent names in file order.
        slots: slot name -> canonical values, in order of first appearance.
        templates: every expression template, in file order.
        skip_words: filler words a sentence may start with (Home Assistant's ``skip_words``).
    """

    path: Path
    intents: list[str]
    slots: dict[str, list[str]]
    templates: list[Template]
    skip_words: list[str] = field(default_factory=list)

    def label_set(self) -> LabelSet:
        """The label map: the intents, and every slot's values plus :data:`NONE`."""
        return LabelSet(
            intents=self.intents,
            slots={
                name: values + ([NONE] if NONE not in values else []) for name, values in self.slots.items()
            },
        )

    def templates_of(self, intent: str) -> list[Template]:
        return [template for template in self.templates if template.intent == intent]

    def complete_slots(self, slots: dict[str, str]) -> dict[str, str]:
        """``slots`` with every slot of the grammar, :data:`NONE` where unfilled, in grammar order."""
        return {name: slots.get(name, NONE) for name in self.slots}


def check_intents_agree_with_slots(grammar: Grammar, separator: str = "_") -> None:
    """For a grammar whose intent names are its slot values joined (FSC's ``action_object_location``),
    raise :class:`GrammarError` unless every expression says exactly its intent's values."""
    names = list(grammar.slots)
    if not names or len(names) > MAX_NAMED_SLOTS:
        return
    if any(intent.count(separator) < len(names) - 1 for intent in grammar.intents):
        return
    table = intent_slot_table(grammar.label_set(), separator)
    if table is None:
        return
    expected = dict(zip(grammar.intents, table, strict=True))
    for template in grammar.templates:
        said: dict[str, set[str]] = {}
        for name, value in template.tree.produces:
            said.setdefault(name, set()).add(value)
        for name, value in template.fixed_slots.items():
            said.setdefault(name, set()).add(value)
        for name in names:
            values = said.get(name, {NONE})
            if values != {expected[template.intent][name]}:
                raise GrammarError(
                    f"{grammar.path}: intent {template.intent!r}, expression {template.shape!r}: says "
                    f"{name} = {', '.join(sorted(values))} but the intent's name says {expected[template.intent][name]}"
                )


def collect_slot_values(templates: list[Template]) -> dict[str, list[str]]:
    """Slot name -> values, in order of first appearance over the templates."""
    found: dict[str, dict[str, None]] = {}

    def visit(node: Node) -> None:
        if isinstance(node, Slot):
            for phrase, value in node.values:
                found.setdefault(node.name, {})[value] = None
                visit(phrase)
        elif isinstance(node, (Seq, Choice)):
            for item in node.items:
                visit(item)

    for template in templates:
        for name, value in template.fixed_slots.items():
            found.setdefault(name, {})[value] = None
        visit(template.tree)
    return {name: list(values) for name, values in found.items()}


# ---------------------------------------------------------------------------------------------
# YAML with duplicate keys refused (PyYAML keeps the last one silently).

# What a duplicate key means, by the key of the mapping it is in.
_DUPLICATE_KIND = {
    "intents": "intent",
    "expressions": "intent",
    "lists": "list",
    "expansion_rules": "rule",
    "slots": "slot",
    "macros": "macro",
}


class _Mapping(dict):
    """A mapping that remembers the keys it saw twice, with their line numbers."""

    duplicates: list[tuple[object, int]]


class _StrictLoader(yaml.SafeLoader):
    """A safe loader whose mappings remember duplicate keys."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    own = {id(key) for key, _ in node.value if key.tag != "tag:yaml.org,2002:merge"}
    loader.flatten_mapping(node)  # keys merged in with "<<" may be overridden: only own keys count
    mapping = _Mapping()
    mapping.duplicates = []
    written: set = set()
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if id(key_node) in own:
            if key in written:
                mapping.duplicates.append((key, key_node.start_mark.line + 1))
            written.add(key)
        mapping[key] = loader.construct_object(value_node, deep=True)
    return mapping


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
# Grammars are words: "no", "yes", "on" and "off" stay words (YAML 1.1 reads them as booleans, so a
# slot value "no" would become False); only true and false are booleans, as in YAML 1.2.
_BOOL_TAG = "tag:yaml.org,2002:bool"
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _first_duplicate(data: object, parent: str = "", visited: set[int] | None = None) -> str | None:
    visited = set() if visited is None else visited
    if id(data) in visited:  # an alias seen before (or a recursive one)
        return None
    visited.add(id(data))
    if isinstance(data, dict):
        for key, line in getattr(data, "duplicates", []):
            return f"duplicate {_DUPLICATE_KIND.get(parent, 'key')} {key!r} (line {line})"
        children = [(str(key), value) for key, value in data.items()]
    elif isinstance(data, list):
        children = [(parent, value) for value in data]
    else:
        return None
    for name, value in children:
        found = _first_duplicate(value, name, visited)
        if found:
            return found
    return None


def read_yaml(path: Path) -> object:
    """The YAML document in ``path``; a duplicate key (a duplicate intent) or bad YAML is a
    :class:`GrammarError` naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GrammarError(f"{path}: grammar file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise GrammarError(f"{path}: cannot read the grammar ({error})") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        raise GrammarError(f"{path}: not valid YAML ({' '.join(str(error).split())})") from None
    duplicate = _first_duplicate(data)
    if duplicate:
        raise GrammarError(f"{path}: {duplicate}")
    return data
