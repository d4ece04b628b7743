"""One entry point for every grammar file: the format is told by the content."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.grammar.homeassistant import grammar_from_homeassistant
from pipeline.grammar.house import HOUSE_FILENAME, homeassistant_house_grammar
from pipeline.grammar.model import Grammar, GrammarError, read_yaml
from pipeline.grammar.rhino import grammar_from_rhino


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
