"""Sampling: coverage, balance, held-out splits, determinism."""

from __future__ import annotations

import textwrap
from collections import Counter
from pathlib import Path

import pytest

from pipeline.grammar.load import load_grammar
from pipeline.grammar.model import NONE, GrammarError
from pipeline.grammar.sampler import TEST, TRAIN, VALID, _Pools, sample_splits

# Three intents; many shapes; two-slot combinations in "order".
CAFE = """
context:
  expressions:
    order:
      - "[get, make] me a $size:size $drink:drink"
      - "a $size:size $drink:drink (please)"
      - "i'd like a $size:size $drink:drink"
      - "can i have a $size:size $drink:drink"
      - "one $size:size $drink:drink (please)"
      - "$drink:drink [in a, a] $size:size"
      - "i want a $size:size $drink:drink"
      - "could i get a $size:size $drink:drink"
    cancel:
      - "cancel [my, the] order"
      - "never mind"
      - "forget [it, the order]"
      - "i don't want [it, the order]"
    pay:
      - "i'd like to pay by $method:method"
      - "[pay, paying] [with, by] $method:method"
      - "can i pay [with, by] $method:method"
      - "$method:method (please)"
  slots:
    size: [small, medium, large]
    drink: [tea, coffee, latte, mocha, cocoa]
    method: [card, cash, phone]
"""
SIZES = {"train": 120, "valid": 30, "test": 30, "test_unseen_phrasing": 30, "test_unseen_engine": 30}


@pytest.fixture
def cafe(tmp_path: Path):
    path = tmp_path / "cafe.yaml"
    path.write_text(textwrap.dedent(CAFE), encoding="utf-8")
    return load_grammar(path)


def spoken_combination(grammar, sentence) -> tuple:
    return (sentence.intent, tuple(sorted((k, v) for k, v in sentence.slots.items() if v != NONE)))


def test_deterministic_from_the_seed(cafe):
    first = sample_splits(cafe, SIZES, seed=7)
    assert sample_splits(cafe, SIZES, seed=7) == first
    assert sample_splits(cafe, SIZES, seed=8) != first
    assert {split: len(sentences) for split, sentences in first.items()} == SIZES


@pytest.mark.parametrize("seed", range(6))
def test_train_covers_every_value_and_training_shape_balanced_over_intents(cafe, seed):
    splits = sample_splits(cafe, SIZES, seed=seed)
    train = splits["train"]
    counts = Counter(sentence.intent for sentence in train)
    assert max(counts.values()) - min(counts.values()) <= 1
    said = {(name, value) for sentence in train for name, value in sentence.slots.items()}
    assert {(name, value) for name, values in cafe.slots.items() for value in values} <= said
    pools = _Pools(cafe, seed, 0.25)
    training_shapes = {shape for shape, pool in pools.shape_pool.items() if pool == TRAIN}
    assert {sentence.shape for sentence in train} == training_shapes
    assert all(sentence.phrasing == "seen" for sentence in train)
    for sentence in train:  # every sentence reports every slot
        assert set(sentence.slots) == set(cafe.slots)


def test_held_out_shapes_and_combinations_are_disjoint(cafe):
    splits = sample_splits(cafe, SIZES, seed=0)
    pools = _Pools(cafe, 0, 0.25)
    held = Counter(pools.shape_pool.values())
    assert held[TEST] == round(16 * 0.25) and held[VALID] == round(16 * 0.125)
    train_texts = {s.text for s in splits["train"]}
    train_shapes = {s.shape for s in splits["train"]}
    train_combinations = {spoken_combination(cafe, s) for s in splits["train"]}
    unseen = splits["test_unseen_phrasing"]
    assert unseen and all(s.phrasing == "unseen" for s in unseen)
    test_shapes = {shape for shape, pool in pools.shape_pool.items() if pool == TEST}
    assert test_shapes <= {s.shape for s in unseen}  # every held-out shape is said
    valid_unseen = [s for s in splits["valid"] if s.phrasing == "unseen"]
    assert len(valid_unseen) == SIZES["valid"] // 2
    for sentence in unseen + valid_unseen:
        assert sentence.text not in train_texts
        # an unseen sentence has a held-out shape, or says a held-out combination of values
        assert (
            sentence.shape not in train_shapes or spoken_combination(cafe, sentence) not in train_combinations
        )
    # valid and test hold out different shapes, and never share a text
    assert not {s.shape for s in valid_unseen} & test_shapes
    assert not {s.text for s in valid_unseen} & {s.text for s in unseen}
    # seen sentences of the other splits are train's texts
    for split in ("valid", "test", "test_unseen_engine"):
        assert all(s.text in train_texts for s in splits[split] if s.phrasing == "seen")
    assert Counter(s.phrasing for s in splits["test_unseen_engine"]) == {"seen": 15, "unseen": 15}


def test_train_rest_is_the_held_out_grammar_in_new_texts(cafe):
    splits = sample_splits(cafe, {**SIZES, "train_rest": 40}, seed=0)
    assert {k: v for k, v in splits.items() if k != "train_rest"} == sample_splits(cafe, SIZES, seed=0)
    rest = splits["train_rest"]
    assert 40 <= len(rest) <= 44 and all(s.phrasing == "unseen" for s in rest)
    others = {s.text for split, sentences in splits.items() if split != "train_rest" for s in sentences}
    # texts no other split says, but for a held-out shape that has no other text left (said once)
    again = [s for s in rest if s.text in others]
    assert len(again) <= len(rest) - 40 and not {s.text for s in rest} & {s.text for s in splits["train"]}
    pools = _Pools(cafe, 0, 0.25)
    held_out_shapes = {shape for shape, pool in pools.shape_pool.items() if pool != TRAIN}
    # every held-out shape, valid's and test's, is said: with train, the whole grammar is trained on
    assert held_out_shapes <= {s.shape for s in rest}
    train_shapes = {s.shape for s in splits["train"]}
    assert {s.shape for s in rest} | train_shapes == set(pools.shape_pool)
    none = sample_splits(
        cafe, {"train": 30, "train_rest": 10}, seed=0, held_out_fraction=0.0, valid_held_out_fraction=0.0
    )
    assert none["train_rest"] == []


def test_every_intent_keeps_half_its_shapes_for_training(cafe):
    pools = _Pools(cafe, 0, 0.4)
    for intent in cafe.intents:
        pools_of_intent = [pools.shape_pool[t.shape] for t in cafe.templates_of(intent)]
        assert 2 * pools_of_intent.count(TRAIN) >= len(pools_of_intent)


def test_no_held_out_fraction_means_no_unseen_sentences(cafe):
    splits = sample_splits(
        cafe, {"train": 30, "valid": 10, "test_unseen_phrasing": 5}, seed=0, held_out_fraction=0.0
    )
    assert all(s.phrasing == "seen" for s in splits["valid"])
    assert splits["test_unseen_phrasing"] == []


def test_bad_split_or_fraction(cafe):
    with pytest.raises(GrammarError, match="unknown split 'dev'"):
        sample_splits(cafe, {"dev": 3}, seed=0)
    with pytest.raises(GrammarError, match="held-out fractions"):
        sample_splits(cafe, {"train": 3}, seed=0, held_out_fraction=0.7)


def test_valid_held_out_fraction(cafe):
    assert Counter(_Pools(cafe, 0, 0.125, 0.25).shape_pool.values()) == {TRAIN: 10, VALID: 4, TEST: 2}
    splits = sample_splits(cafe, {"train": 30, "valid": 10}, seed=0, valid_held_out_fraction=0.0)
    assert all(s.phrasing == "seen" for s in splits["valid"])


def test_same_sentences_in_every_process(tmp_path):
    """No dependence on Python's per-process string hashing (set order)."""
    import os
    import subprocess
    import sys

    path = tmp_path / "cafe.yaml"
    path.write_text(textwrap.dedent(CAFE), encoding="utf-8")
    code = (
        "import sys; from pipeline.grammar.load import load_grammar; from pipeline.grammar.sampler import sample_splits; "
        f"print(repr(sample_splits(load_grammar(sys.argv[1]), {SIZES!r}, seed=5)))"
    )
    root = Path(__file__).resolve().parents[2]
    outputs = set()
    for hash_seed in ("1", "2"):
        environment = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(root)}
        run = subprocess.run(
            [sys.executable, "-c", code, str(path)],
            env=environment,
            capture_output=True,
            text=True,
            check=True,
        )
        outputs.add(run.stdout)
    assert len(outputs) == 1 and "Sentence(" in outputs.pop()
