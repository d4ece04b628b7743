"""Transcript normalisation: the one spelling of a transcript that every stage agrees on.

Teacher targets are keyed by it, the teacher reads it, and a character CTC head can use it as
its target text. Lowercase, Unicode NFKC, punctuation and symbols become spaces (an apostrophe
inside a word, as in ``don't`` or ``o'clock``, is kept), control and format characters are
dropped, and runs of whitespace collapse to one space::

    >>> normalize_transcript("  Turn the Lights ON, please!  ")
    'turn the lights on please'
    >>> normalize_transcript("Don’t stop — it's 5 o'clock")
    "don't stop it's 5 o'clock"
"""

from __future__ import annotations

import re
import unicodedata

# Typographic apostrophes that all mean "'" inside a word.
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u02bc": "'", "\u0060": "'", "\u00b4": "'"})
_LONE_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")
_WHITESPACE = re.compile(r"\s+")


def normalize_transcript(text: str) -> str:
    """The normalised form of ``text`` (see the module docstring); may be empty."""
    text = unicodedata.normalize("NFKC", text).translate(_APOSTROPHES).lower()
    characters = []
    for character in text:
        category = unicodedata.category(character)
        if character == "'" or character.isspace():
            characters.append(character)
        elif category[0] in "PS":
            characters.append(" ")
        elif category[0] == "C":
            continue  # control, format (zero-width), unassigned
        else:
            characters.append(character)
    text = _LONE_APOSTROPHE.sub(" ", "".join(characters))
    return _WHITESPACE.sub(" ", text).strip()
