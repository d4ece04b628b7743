"""Sentences sampled from a grammar for training and for held-out tests.

Splits (:func:`sample_splits`; the same names as the built-in corpus):

- ``train``: the training pool, balanced over intents; its first sentences cover every
  expression shape and every slot value the pool can say (shapes first), the rest are drawn
  at random (a new text where one is left);
- ``valid``: half texts of ``train`` (seen phrasings), half from the *valid* held-out pool,
  so that checkpoint selection sees phrasings it was not trained on and is not at its
  ceiling; all seen when the grammar leaves no such pool;
- ``test``: texts of ``train`` (seen phrasings; the unseen voices come from the corpus);
- ``test_unseen_phrasing``: the *test* held-out pool only (each intent's held-out shapes first;
  short, with a warning, when the pool is smaller than asked);
- ``test_unseen_engine``: half texts of ``train``, half from the test held-out pool.
- ``train_rest``: the rest of the grammar, both held-out pools (valid's and test's, in
  proportion to their fractions), in texts no other split says: added to ``train`` for the
  model that is deployed, so that every expression of the grammar is trained on (the measured
  models never see it).

Seen sentences are drawn from ``train``'s texts, balanced over intents; with no ``train``
asked there are none.

Held-out pools: whole expression shapes (a shape is a template's text; equal texts in
several intents are one shape), ``held_out_fraction`` of them for the test pool and
``valid_held_out_fraction`` (by default half that) for the valid pool, chosen among shapes mostly made of words that other shapes also say; and
slot-value combinations (a sentence's intent with the values of the two or more slots it says)
in the same proportions, decided by a seeded hash. Every intent keeps at least half its shapes
and every slot value stays in the training pool (a held-out combination that is the only way
left to say a value in ``train`` goes back to training). A held-out sentence never repeats a text of
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
REST = "rest"  # both held-out pools, for train_rest
# split name -> (fraction from the training pool, held-out pool of the rest)
SPLIT_SOURCES: dict[str, tuple[float, str]] = {
    "train": (1.0, TRAIN),
    "valid": (0.5, VALID),
    "test": (1.0, TRAIN),
    "test_unseen_phrasing": (0.0, TEST),
    "test_unseen_engine": (0.5, TEST),
    "train_rest": (0.0, REST),
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


def _expand(node: Node) -> list[tuple[str, dict[str, str]]]:
    if isinstance(node, Text):
        return [(node.text, {})]
    if isinstance(node, Seq):
        found: list[tuple[str, dict[str, str]]] = [("", {})]
        for item in node.items:
            found = [(left + right, {**a, **b}) for left, a in found for right, b in _expand(item)]
        return found
    if isinstance(node, Choice):
        return [expansion for item in node.items for expansion in _expand(item)]
    if isinstance(node, Slot):
        return [
            (text, {**slots, node.name: value})
            for phrase, value in node.values
            for text, slots in _expand(phrase)
        ]
    raise TypeError(type(node).__name__)


def expand_template(template: Template, limit: int = 100_000) -> list[tuple[str, dict[str, str]]]:
    """Every (text, spoken slots) a template says, distinct and sorted; for small templates."""
    if template.tree.count > limit:
        raise GrammarError(
            f"expression {template.shape!r} has {template.tree.count} expansions (limit {limit})"
        )
    found = {(spoken_text(text), tuple(sorted(slots.items()))) for text, slots in _expand(template.tree)}
    return [(text, dict(slots)) for text, slots in sorted(found)]


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

    def __init__(self, grammar: Grammar, seed: int, fraction: float, valid_fraction: float | None = None):
        valid_fraction = fraction / 2 if valid_fraction is None else valid_fraction
        if not (0.0 <= fraction and 0.0 <= valid_fraction and fraction + valid_fraction < 0.75):
            raise GrammarError(
                f"held-out fractions must be >= 0 and leave training over a quarter, got {fraction} and {valid_fraction}"
            )
        self.grammar, self.seed, self.fraction, self.valid_fraction = grammar, seed, fraction, valid_fraction
        self.shape_pool = self._choose_shapes(random.Random(f"{seed}/shapes"))
        self.released: set[tuple] = set()  # held-out combinations train needed to say a value

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
        wanted = {TEST: round(len(shapes) * self.fraction), VALID: round(len(shapes) * self.valid_fraction)}
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
        key = (intent, *sorted(spoken.items()))
        if len(spoken) < 2 or key in self.released:
            return TRAIN
        u = _unit(self.seed, "combination", *key)
        if u < self.fraction:
            return TEST
        return VALID if u < self.fraction + self.valid_fraction else TRAIN

    def pool_of(self, template: Template, spoken: dict[str, str]) -> str | None:
        """train, valid or test; ``None`` for a sentence held out for both."""
        kinds = {self.shape_pool[template.shape], self.combination(template.intent, spoken)} - {TRAIN}
        if not kinds:
            return TRAIN
        return kinds.pop() if len(kinds) == 1 else None

    def release(self, template: Template, spoken: dict[str, str]) -> None:
        """Give a held-out combination back to training (the only way left to say a value)."""
        self.released.add((template.intent, *sorted(spoken.items())))

    def can_give(self, template: Template, pool: str) -> bool:
        shape = self.shape_pool[template.shape]
        if pool == TRAIN:
            return shape == TRAIN
        share = self.fraction if pool == TEST else self.valid_fraction
        return shape == pool or (shape == TRAIN and len(template.variable_slots) >= 2 and share > 0)


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
        release: bool = False,
        patience: int = _TRIES,
    ) -> Sentence | None:
        """A sentence of ``pool`` from ``templates``: never a text in ``avoid``; preferably in
        ``vocabulary`` and new (not in ``new_texts``: up to ``patience`` tries). With ``release``
        (train only), a held-out combination of a training shape is given back to training."""
        if want is not None:
            templates = [t for t in templates if want in t.tree.produces or want in t.fixed_slots.items()]
        if not templates:
            return None
        fallback = None
        repeats = 0
        for _ in range(2 * _TRIES):
            template = self.rng.choice(templates)
            text, spoken = sample_template(template, self.rng, want)
            if text in avoid:
                continue
            if self.pools.pool_of(template, spoken) != pool:
                if not (release and self.pools.shape_pool[template.shape] == TRAIN):
                    continue
                self.pools.release(template, spoken)
            in_vocabulary = vocabulary is None or _words(text) <= vocabulary
            if in_vocabulary and (new_texts is None or text not in new_texts):
                return self._sentence(template, text, spoken, pool)
            if fallback is None or (in_vocabulary and not fallback[3]):
                fallback = (template, text, spoken, in_vocabulary)
            if in_vocabulary:
                repeats += 1
                if repeats >= patience:
                    break
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
        patience = _TRIES  # halves each time no new text is found: a said-out intent costs little
        for index in range(quotas[intent]):
            chosen, want = targets[index] if index < len(targets) else (templates, None)
            sentence = (
                drawer.draw(chosen, TRAIN, want, new_texts=texts, patience=patience)
                or drawer.draw(chosen, TRAIN, want, release=True)
                or drawer.draw(templates, TRAIN)
            )
            if sentence is None:
                raise GrammarError(f"{grammar.path}: intent {intent!r} has no expression left for training")
            if sentence.text in texts:
                patience = max(1, patience // 2)
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
        shapes = list(dict.fromkeys(t.shape for t in templates))
        rng.shuffle(shapes)
        patience = _TRIES
        for index in range(quota):
            chosen = [t for t in templates if t.shape == shapes[index]] if index < len(shapes) else templates
            options = {"avoid": avoid, "vocabulary": vocabulary, "new_texts": texts, "patience": patience}
            sentence = drawer.draw(chosen, pool, **options)
            if sentence is None and chosen is not templates:
                sentence = drawer.draw(templates, pool, **options)
            if sentence is None:
                continue
            if sentence.text in texts:
                patience = max(1, patience // 2)
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


def _texts(splits: dict[str, list[Sentence]]) -> set[str]:
    return {sentence.text for sentences in splits.values() for sentence in sentences}


def _sample_rest(
    grammar: Grammar, pools: _Pools, split: str, size: int, avoid: set[str], train_texts: set[str],
    rng: random.Random,
) -> list[Sentence]:  # fmt: skip
    """``size`` sentences of the two held-out pools, in proportion to their fractions, in texts no
    other split says; a pool with fewer such texts than asked says them again (other voices), and
    a held-out shape whose every text another split says is said once in one of those texts (the
    point is that every expression is trained on)."""
    total = pools.fraction + pools.valid_fraction
    if total <= 0:
        return []
    test_size = round(size * pools.fraction / total)
    sentences = []
    for pool, count in ((TEST, test_size), (VALID, size - test_size)):
        if count > 0:
            drawn = _sample_held_out(grammar, pools, split, count, pool, avoid, None, rng)
            avoid = avoid | {sentence.text for sentence in drawn}
            sentences += [drawn[index % len(drawn)] for index in range(count)] if drawn else []
    said, drawer = {sentence.shape for sentence in sentences}, _Drawer(grammar, pools, rng)
    for template in grammar.templates:
        pool = pools.shape_pool[template.shape]
        if pool != TRAIN and template.shape not in said:
            sentence = drawer.draw([template], pool, avoid=train_texts)
            if sentence is not None:
                said.add(template.shape)
                sentences.append(sentence)
    return sentences


def _sample_seen(grammar: Grammar, train: list[Sentence], size: int, rng: random.Random) -> list[Sentence]:
    """``size`` sentences whose texts ``train`` says, balanced over intents, each intent's texts in turn."""
    texts: dict[str, dict[str, Sentence]] = defaultdict(dict)
    for sentence in train:
        texts[sentence.intent].setdefault(sentence.text, sentence)
    intents = [intent for intent in grammar.intents if texts[intent]]
    sentences = []
    for intent, quota in sorted(_spread(size, intents, rng).items(), key=lambda item: intents.index(item[0])):
        order = list(texts[intent].values())
        rng.shuffle(order)
        sentences += [order[index % len(order)] for index in range(quota)]
    return sentences


def sample_splits(
    grammar: Grammar,
    sizes: dict[str, int],
    seed: int,
    held_out_fraction: float = DEFAULT_HELD_OUT_FRACTION,
    valid_held_out_fraction: float | None = None,
) -> dict[str, list[Sentence]]:
    """Sample every split in ``sizes`` (see the module docstring for what each holds).

    Args:
        grammar: from :func:`pipeline.grammar.load_grammar`.
        sizes: split name -> number of sentences; names from :data:`SPLIT_SOURCES`.
        seed: the same seed, grammar and sizes give the same sentences.
        held_out_fraction: the share of shapes (and of slot-value combinations) held out for
            the test pool.
        valid_held_out_fraction: the share held out for the valid pool; ``None``: half of
            ``held_out_fraction``; 0: ``valid`` has only seen phrasings.

    Returns:
        split name -> sentences, in the order of ``sizes``.
    """
    unknown = sorted(set(sizes) - set(SPLIT_SOURCES))
    if unknown:
        raise GrammarError(f"unknown split {unknown[0]!r}; choose from {', '.join(SPLIT_SOURCES)}")
    pools = _Pools(grammar, seed, held_out_fraction, valid_held_out_fraction)
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
        if pool == REST:
            result[split] = _sample_rest(
                grammar, pools, split, size, _texts(result) | train_texts, train_texts, rng
            )
            continue
        avoid = train_texts | (valid_texts if pool == TEST else set())
        held_out = _sample_held_out(
            grammar, pools, split, size - round(size * seen_share), pool, avoid, vocabulary, rng
        )
        seen = _sample_seen(grammar, train, size - len(held_out), rng) if seen_share > 0 else []
        result[split] = seen + held_out
        if split == "valid":
            valid_texts = {sentence.text for sentence in held_out}
    return {split: result[split] for split in sizes}
