"""Sentences sampled from a grammar for training and for held-out tests.

Splits (:func:`sample_splits`; the same names as the built-in corpus):

- ``train``: the training pool, balanced over intents; its first sentences cover every
  expression shape and every slot value the pool can say (shapes first), the rest are drawn
  at random (a new text where one is left);
- ``valid``: half from the training pool (phrasings seen in training), half from the *valid*
  held-out pool, so that checkpoint selection sees phrasings it was not trained on and is not
  at its ceiling; all of it from the training pool when the grammar leaves no such pool;
- ``test``: the training pool (seen phrasings; unseen voices come from the corpus);
- ``test_unseen_phrasing``: the *test* held-out pool only;
- ``test_unseen_engine``: half from the training pool, half from the test held-out pool.

Held-out pools: whole expression shapes (a shape is a template's text; equal texts in
several intents are one shape), ``held_out_fraction`` of them for the test pool and half that
for the valid pool, chosen among shapes mostly made of words that other shapes also say; and
slot-value combinations (a sentence's intent with the values of the two or more slots it says)
in the same proportions, decided by a seeded hash. Every intent keeps at least half its shapes
and every slot value stays in the training pool. A held-out sentence never repeats a text of
``train`` (nor ``test_unseen_phrasing`` one of ``valid``), and uses only words said in ``train``
where it can (a warning says how many could not).

Everything is a pure function of the grammar, the sizes and the seed.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections import Counter, defaultdict

from pipeline.grammar.model import Choice, Grammar, GrammarError, Node, Sentence, Seq, Slot, Template, Text

logger = logging.getLogger(__name__)

TRAIN, VALID, TEST = "train", "valid", "test"
# split name -> (fraction from the training pool, held-out pool of the rest)
SPLIT_SOURCES: dict[str, tuple[float, str]] = {
    "train": (1.0, TRAIN),
    "valid": (0.5, VALID),
    "test": (1.0, TRAIN),
    "test_unseen_phrasing": (0.0, TEST),
    "test_unseen_engine": (0.5, TEST),
}
DEFAULT_HELD_OUT_FRACTION = 0.25
SKIP_WORD_PROBABILITY = 0.1  # how often a sentence starts with one of the grammar's skip words
SPOKEN_SYMBOLS = {"%": " percent", "°": " degrees"}
_TRIES = 60
_ELIGIBILITY_SAMPLES = 12


def spoken_text(text: str) -> str:
    """Symbols as words, whitespace collapsed."""
    for symbol, words in SPOKEN_SYMBOLS.items():
        text = text.replace(symbol, words)
    return " ".join(text.split())


def _sample(
    node: Node, rng: random.Random, want: tuple[str, str] | None, parts: list[str], slots: dict
) -> None:
    if isinstance(node, Text):
        parts.append(node.text)
    elif isinstance(node, Seq):
        for item in node.items:
            forced = want if want is not None and want in item.produces else None
            if forced is not None:
                want = None  # one item says it
            _sample(item, rng, forced, parts, slots)
    elif isinstance(node, Choice):
        items = [item for item in node.items if want in item.produces] if want else []
        _sample(rng.choice(items or node.items), rng, want if items else None, parts, slots)
    elif isinstance(node, Slot):
        by_value: dict[str, list[Node]] = defaultdict(list)
        for phrase, value in node.values:
            by_value[value].append(phrase)
        if want is not None and want[0] == node.name and want[1] in by_value:
            value, inner = want[1], None
        else:
            inner = want
            choices = [
                value for value, phrases in by_value.items() if any(want in p.produces for p in phrases)
            ]
            value = rng.choice(choices if want and choices else list(by_value))
        phrases = by_value[value]
        if inner is not None:
            phrases = [phrase for phrase in phrases if inner in phrase.produces] or phrases
        _sample(rng.choice(phrases), rng, inner, parts, slots)
        slots[node.name] = value


def sample_template(
    template: Template, rng: random.Random, want: tuple[str, str] | None = None
) -> tuple[str, dict[str, str]]:
    """One expansion of ``template``: its text and the slots it says (``want`` forced if it can)."""
    parts: list[str] = []
    spoken: dict[str, str] = {}
    _sample(template.tree, rng, want if want and want in template.tree.produces else None, parts, spoken)
    return spoken_text("".join(parts)), spoken


def _words(text: str) -> set[str]:
    return set(text.lower().split())


def _spread(total: int, intents: list[str], rng: random.Random) -> Counter:
    """``total`` sentences over ``intents``, as even as possible, the remainder to seeded intents."""
    counts: Counter = Counter()
    if not intents:
        return counts
    for intent in intents:
        counts[intent] = total // len(intents)
    for intent in rng.sample(intents, total % len(intents)):
        counts[intent] += 1
    return counts


def _unit(*parts: object) -> float:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class _Pools:
    """Which shapes and slot-value combinations are held out, for one grammar and seed."""

    def __init__(self, grammar: Grammar, seed: int, fraction: float):
        if not 0.0 <= fraction < 0.5:
            raise GrammarError(f"held_out_fraction must be in [0, 0.5), got {fraction}")
        self.grammar, self.seed, self.fraction = grammar, seed, fraction
        self.shape_pool = self._choose_shapes(random.Random(f"{seed}/shapes"))

    def _choose_shapes(self, rng: random.Random) -> dict[str, str]:
        grammar = self.grammar
        shapes = list(dict.fromkeys(template.shape for template in grammar.templates))
        pool = dict.fromkeys(shapes, TRAIN)
        samples: dict[str, list[set[str]]] = defaultdict(list)
        for template in grammar.templates:
            for _ in range(_ELIGIBILITY_SAMPLES):
                samples[template.shape].append(_words(sample_template(template, rng)[0]))
        eligible = []
        for shape in shapes:
            others = set().union(*(words for other, ws in samples.items() if other != shape for words in ws))
            inside = sum(words <= others for words in samples[shape])
            if inside * 2 >= len(samples[shape]):
                eligible.append(shape)
        rng.shuffle(eligible)
        shapes_of = {intent: {t.shape for t in grammar.templates_of(intent)} for intent in grammar.intents}
        every_value = self._values(grammar.templates)
        wanted = {TEST: round(len(shapes) * self.fraction), VALID: round(len(shapes) * self.fraction / 2)}
        for kind in (TEST, VALID):
            for shape in eligible:
                if wanted[kind] == 0:
                    break
                if pool[shape] != TRAIN:
                    continue
                pool[shape] = kind
                keeps_half = all(
                    2 * sum(pool[s] == TRAIN for s in mine) >= len(mine)
                    for mine in shapes_of.values()
                    if shape in mine
                )
                train = [t for t in grammar.templates if pool[t.shape] == TRAIN]
                if keeps_half and self._values(train) == every_value:
                    wanted[kind] -= 1
                else:
                    pool[shape] = TRAIN
        return pool

    @staticmethod
    def _values(templates: list[Template]) -> set[tuple[str, str]]:
        found: set[tuple[str, str]] = set()
        for template in templates:
            found |= template.tree.produces | set(template.fixed_slots.items())
        return found

    def combination(self, intent: str, spoken: dict[str, str]) -> str:
        """The pool of a combination of two or more spoken slot values."""
        if len(spoken) < 2:
            return TRAIN
        u = _unit(self.seed, "combination", intent, *sorted(spoken.items()))
        if u < self.fraction:
            return TEST
        return VALID if u < 1.5 * self.fraction else TRAIN

    def pool_of(self, template: Template, spoken: dict[str, str]) -> str | None:
        """train, valid or test; ``None`` for a sentence held out for both."""
        kinds = {self.shape_pool[template.shape], self.combination(template.intent, spoken)} - {TRAIN}
        if not kinds:
            return TRAIN
        return kinds.pop() if len(kinds) == 1 else None

    def can_give(self, template: Template, pool: str) -> bool:
        shape = self.shape_pool[template.shape]
        if pool == TRAIN:
            return shape == TRAIN
        return shape == pool or (shape == TRAIN and len(template.variable_slots) >= 2 and self.fraction > 0)


class _Drawer:
    """Draws sentences of one pool for one split."""

    def __init__(self, grammar: Grammar, pools: _Pools, rng: random.Random):
        self.grammar, self.pools, self.rng = grammar, pools, rng
        self.out_of_vocabulary = 0

    def candidates(self, intent: str, pool: str) -> list[Template]:
        return [t for t in self.grammar.templates_of(intent) if self.pools.can_give(t, pool)]

    def draw(
        self,
        templates: list[Template],
        pool: str,
        want: tuple[str, str] | None = None,
        avoid: set[str] | frozenset[str] = frozenset(),
        vocabulary: set[str] | None = None,
        new_texts: set[str] | None = None,
    ) -> Sentence | None:
        """A sentence of ``pool`` from ``templates``: never a text in ``avoid``; preferably
        new (not in ``new_texts``) and in ``vocabulary``."""
        if want is not None:
            templates = [t for t in templates if want in t.tree.produces or want in t.fixed_slots.items()]
        if not templates:
            return None
        fallback = None
        for attempt in range(2 * _TRIES):
            template = self.rng.choice(templates)
            text, spoken = sample_template(template, self.rng, want)
            if text in avoid or self.pools.pool_of(template, spoken) != pool:
                continue
            in_vocabulary = vocabulary is None or _words(text) <= vocabulary
            if in_vocabulary and (new_texts is None or text not in new_texts or attempt >= _TRIES):
                return self._sentence(template, text, spoken, pool)
            if fallback is None or (in_vocabulary and fallback[3] is False):
                fallback = (template, text, spoken, in_vocabulary)
        if fallback is None:
            return None
        template, text, spoken, in_vocabulary = fallback
        self.out_of_vocabulary += not in_vocabulary
        return self._sentence(template, text, spoken, pool)

    def _sentence(self, template: Template, text: str, spoken: dict[str, str], pool: str) -> Sentence:
        if self.grammar.skip_words and self.rng.random() < SKIP_WORD_PROBABILITY:
            text = spoken_text(f"{self.rng.choice(self.grammar.skip_words)} {text}")
        slots = self.grammar.complete_slots({**template.fixed_slots, **spoken})
        return Sentence(text, template.intent, slots, template.shape, "seen" if pool == TRAIN else "unseen")


def _sample_train(grammar: Grammar, pools: _Pools, size: int, rng: random.Random) -> list[Sentence]:
    drawer = _Drawer(grammar, pools, rng)
    sentences: list[Sentence] = []
    quotas = _spread(size, grammar.intents, rng)
    for intent in grammar.intents:
        templates = drawer.candidates(intent, TRAIN)
        shapes = list(dict.fromkeys(t.shape for t in templates))
        values = sorted(set().union(*(t.tree.produces for t in templates)))
        rng.shuffle(shapes)
        rng.shuffle(values)
        targets = [([t for t in templates if t.shape == shape], None) for shape in shapes]
        targets += [(templates, value) for value in values]
        texts: set[str] = set()
        for index in range(quotas[intent]):
            chosen, want = targets[index] if index < len(targets) else (templates, None)
            sentence = drawer.draw(chosen, TRAIN, want, new_texts=texts) or drawer.draw(templates, TRAIN)
            if sentence is None:
                raise GrammarError(f"{grammar.path}: intent {intent!r} has no expression left for training")
            texts.add(sentence.text)
            sentences.append(sentence)
    return sentences


def _sample_held_out(
    grammar: Grammar,
    pools: _Pools,
    split: str,
    size: int,
    pool: str,
    avoid: set[str],
    vocabulary: set[str] | None,
    rng: random.Random,
) -> list[Sentence]:
    drawer = _Drawer(grammar, pools, rng)
    intents = [intent for intent in grammar.intents if drawer.candidates(intent, pool)]
    if not intents:
        logger.warning("%s: no held-out %s pool: %s has only seen phrasings", grammar.path, pool, split)
        return []
    sentences = []
    texts: set[str] = set()
    for intent, quota in sorted(_spread(size, intents, rng).items(), key=lambda item: intents.index(item[0])):
        templates = drawer.candidates(intent, pool)
        for _ in range(quota):
            sentence = drawer.draw(templates, pool, avoid=avoid, vocabulary=vocabulary, new_texts=texts)
            if sentence is not None:
                texts.add(sentence.text)
                sentences.append(sentence)
    if len(sentences) < size:
        logger.warning(
            "%s: %s has %d held-out sentences of %d asked", grammar.path, split, len(sentences), size
        )
    if drawer.out_of_vocabulary:
        logger.warning(
            "%s: %d %s sentence(s) use a word no train sentence says",
            grammar.path,
            drawer.out_of_vocabulary,
            split,
        )
    return sentences


def sample_splits(
    grammar: Grammar,
    sizes: dict[str, int],
    seed: int,
    held_out_fraction: float = DEFAULT_HELD_OUT_FRACTION,
) -> dict[str, list[Sentence]]:
    """Sample every split in ``sizes`` (see the module docstring for what each holds).

    Args:
        grammar: from :func:`pipeline.grammar.load_grammar`.
        sizes: split name -> number of sentences; names from :data:`SPLIT_SOURCES`.
        seed: the same seed, grammar and sizes give the same sentences.
        held_out_fraction: the share of shapes (and of slot-value combinations) held out for
            the test pool; half as many go to the valid pool.

    Returns:
        split name -> sentences, in the order of ``sizes``.
    """
    unknown = sorted(set(sizes) - set(SPLIT_SOURCES))
    if unknown:
        raise GrammarError(f"unknown split {unknown[0]!r}; choose from {', '.join(SPLIT_SOURCES)}")
    pools = _Pools(grammar, seed, held_out_fraction)
    held = Counter(pools.shape_pool.values())
    logger.info(
        "%s: %d shapes, %d held out for valid and %d for test",
        grammar.path, len(pools.shape_pool), held[VALID], held[TEST],
    )  # fmt: skip
    train = _sample_train(grammar, pools, sizes.get("train", 0), random.Random(f"{seed}/train"))
    train_texts = {sentence.text for sentence in train}
    vocabulary = set().union(*(_words(text) for text in train_texts)) if train else None
    valid_texts: set[str] = set()
    result: dict[str, list[Sentence]] = {}
    for split in sorted(sizes, key=lambda name: list(SPLIT_SOURCES).index(name)):
        if split == "train":
            result[split] = train
            continue
        rng = random.Random(f"{seed}/{split}")
        seen_share, pool = SPLIT_SOURCES[split]
        size = sizes[split]
        avoid = train_texts | (valid_texts if pool == TEST else set())
        held_out = _sample_held_out(
            grammar, pools, split, size - round(size * seen_share), pool, avoid, vocabulary, rng
        )
        seen = _sample_train(grammar, pools, size - len(held_out), rng)
        result[split] = seen + held_out
        if split == "valid":
            valid_texts = {sentence.text for sentence in held_out}
    return {split: result[split] for split in sizes}
