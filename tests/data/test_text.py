"""pipeline.data.text: the normalised transcript every stage keys on."""

from __future__ import annotations

import pytest

from pipeline.data.text import normalize_transcript


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Turn on the lights", "turn on the lights"),
        ("  Turn the Lights ON, please!  ", "turn the lights on please"),
        ("Don’t stop: it's 5 o'clock.", "don't stop it's 5 o'clock"),
        ("'quoted' words' and 'n' stuff", "quoted words and n stuff"),
        ("wi-fi / bluetooth & co.", "wi fi bluetooth co"),
        ("tab\tand\nnew  line", "tab and new line"),
        ("zero\u200bwidth", "zerowidth"),
        ("ＦＵＬＬ　ｗｉｄｔｈ", "full width"),  # NFKC folds compatibility forms
        ("Café crème", "café crème"),  # letters keep their accents
        ("Volume ÜBER 9000?!", "volume über 9000"),
        ("语言 设置", "语言 设置"),
        ("!!! ...", ""),
        ("", ""),
    ],
)
def test_normalize_transcript(raw, expected):
    assert normalize_transcript(raw) == expected


def test_normalize_is_idempotent():
    for text in ["Don’t stop: it's 5 o'clock.", "  A -- b __ c  ", "Ça va? Oui!"]:
        once = normalize_transcript(text)
        assert normalize_transcript(once) == once
