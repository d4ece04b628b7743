"""Command grammars as data: Home Assistant intent YAML and Picovoice Rhino contexts in, sampled
sentences with their intent and slots out.

    grammar = load_grammar("recipes/grammar/conf/fsc.yaml")
    grammar.label_set()                    # intents, and each slot's values plus "none"
    splits = sample_splits(grammar, {"train": 620, "valid": 62, "test_unseen_phrasing": 62}, seed=0)
    splits["train"][0]                     # Sentence(text, intent, slots, shape, phrasing)

See ``docs/grammar.md`` for the formats.
"""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.grammar.homeassistant import grammar_from_homeassistant
from pipeline.grammar.house import HOUSE_FILENAME, homeassistant_house_grammar
from pipeline.grammar.model import NONE, Grammar, GrammarError, Sentence, read_yaml
from pipeline.grammar.rhino import grammar_from_rhino
from pipeline.grammar.sampler import SPLIT_SOURCES, expand_template, sample_splits

__all__ = [
    "NONE",
    "SPLIT_SOURCES",
    "Grammar",
    "GrammarError",
    "Sentence",
    "expand_template",
    "homeassistant_house_grammar",
    "load_grammar",
    "sample_splits",
]


def load_grammar(path: str | os.PathLike) -> Grammar:
    """Read a grammar, its format told by its content.

    Args:
        path: a Home Assistant intents file (top-level ``intents``), a Rhino context
            (top-level ``context``), a house description (top-level ``house``), or a folder
            holding ``house.yaml``.

    Returns:
        The grammar; a bad file raises :class:`GrammarError` naming it.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / HOUSE_FILENAME).is_file():
            raise GrammarError(f"{path}: a grammar folder must hold {HOUSE_FILENAME}")
        path = path / HOUSE_FILENAME
    data = read_yaml(path)
    if isinstance(data, dict) and "context" in data:
        return grammar_from_rhino(data, path)
    if isinstance(data, dict) and "house" in data:
        return homeassistant_house_grammar(path)
    if isinstance(data, dict) and "intents" in data:
        return grammar_from_homeassistant(data, path)
    raise GrammarError(
        f"{path}: not a grammar: expected top-level 'intents' (Home Assistant), 'context' (Rhino) "
        "or 'house' (a house description)"
    )
