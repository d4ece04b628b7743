"""The plan of the built-in corpus: which sentence each speaker says in which split.

Sentences come from a grammar file (:mod:`pipeline.grammar`; by default the FSC grammar,
``recipes/grammar/conf/fsc.yaml``), sampled per split by :func:`pipeline.grammar.sample_splits`
(coverage of every expression shape and slot value, held-out shapes and slot-value combinations
for ``valid`` and ``test_unseen_phrasing``). Speakers come from the TTS engines installed:

- ``train`` and ``valid``: the training speakers (``valid``: half seen phrasings, half held out
  for it, so that checkpoint selection is not at its ceiling);
- ``test`` and ``test_unseen_phrasing``: speakers never heard in training (a share of each engine's);
- ``test_unseen_engine``: the speakers of one engine held out of every other split
  (``held_out_engine``, piper by default); without that engine there is no such split.

As in Fluent Speech Commands, the seen phrasings of ``valid``, ``test`` and ``test_unseen_engine``
are texts said in ``train`` (by other voices, or other recordings of a training voice); their
unseen phrasings never are. No speaker says one text twice: where every speaker of a pool has
said a seen text, another train text of the same intent takes its place. The plan (texts, speakers, splits, ids) is a pure function of
the grammar, the size preset and the seed.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data_prep.synthetic.engines import ENGINES, Speaker
from pipeline.core.errors import SlukdError
from pipeline.grammar.load import load_grammar
from pipeline.grammar.model import Grammar, Sentence
from pipeline.grammar.sampler import sample_splits

logger = logging.getLogger(__name__)

UNSEEN_ENGINE_SPLIT = "test_unseen_engine"
REST_SPLIT = "train_rest"  # the held-out pools in training voices: only the deployed model trains on it
SPLITS = ("train", "valid", "test", "test_unseen_phrasing", REST_SPLIT, UNSEEN_ENGINE_SPLIT)
SPEAKER_POOLS = {"train": "train", "valid": "train", "test": "test", "test_unseen_phrasing": "test",
                 UNSEEN_ENGINE_SPLIT: UNSEEN_ENGINE_SPLIT, REST_SPLIT: "train"}  # fmt: skip
DEFAULT_HELD_OUT_ENGINE = "piper"  # the neural VITS voice; kokoro stays the neural voice of training
NO_ENGINE = "none"
DEFAULT_GRAMMAR = Path(__file__).resolve().parents[2] / "recipes" / "grammar" / "conf" / "fsc.yaml"


class SyntheticError(SlukdError, ValueError):
    """A corpus that cannot be planned with these settings (size, engines, held-out engine)."""


@dataclass(frozen=True)
class SizePreset:
    """How many utterances per split, at most how many speakers per engine, and what is held out."""

    utterances: dict[str, int]
    speakers: dict[str, int]
    test_speaker_fraction: float = 0.25
    held_out_fraction: float = 0.25  # of the shapes and slot-value combinations, for test_unseen_phrasing


PRESETS: dict[str, SizePreset] = {
    "tiny": SizePreset(
        utterances={
            "train": 62,
            "valid": 16,
            "test": 16,
            "test_unseen_phrasing": 16,
            UNSEEN_ENGINE_SPLIT: 16,
            REST_SPLIT: 16,
        },
        speakers={"espeak": 8, "piper": 2, "kokoro": 2, "flite": 2, "festival": 1},
    ),
    "small": SizePreset(
        utterances={
            "train": 2480,
            "valid": 310,
            "test": 620,
            "test_unseen_phrasing": 620,
            UNSEEN_ENGINE_SPLIT: 620,
            REST_SPLIT: 930,  # the held-out pools' share of the grammar (3/8) at train's density
        },  # fmt: skip
        speakers={"espeak": 48, "piper": 6, "kokoro": 5, "flite": 6, "festival": 3},
    ),
    "full": SizePreset(
        utterances={
            "train": 23250,
            "valid": 3100,
            "test": 3720,
            "test_unseen_phrasing": 3100,
            UNSEEN_ENGINE_SPLIT: 3100,
            REST_SPLIT: 8720,
        },  # fmt: skip
        speakers={"espeak": 96, "piper": 9, "kokoro": 15, "flite": 8, "festival": 6},
    ),
}


@dataclass
class SyntheticConfig:
    """Everything that determines the corpus; its plan's hash decides whether a rerun can skip."""

    size: str = "tiny"
    seed: int = 0
    engines: list[str] = field(default_factory=lambda: list(ENGINES))
    held_out_engine: str = DEFAULT_HELD_OUT_ENGINE  # heard only in test_unseen_engine; "none": no such split
    num_workers: int = 0  # 0: every core
    grammar: str = str(DEFAULT_GRAMMAR)  # the grammar file (Home Assistant or Rhino YAML, or a house folder)

    def preset(self) -> SizePreset:
        try:
            return PRESETS[self.size]
        except KeyError:
            raise SyntheticError(f"unknown size {self.size!r}; choose from {', '.join(PRESETS)}") from None

    def held_out(self, engines: list[str]) -> str | None:
        """The engine to hold out among the usable ``engines``, or ``None`` (none asked, or not here)."""
        name = self.held_out_engine
        if name in ("", NO_ENGINE):
            return None
        if name not in ENGINES:
            raise SyntheticError(
                f"unknown held-out engine {name!r}; choose from {', '.join(ENGINES)} or {NO_ENGINE!r}"
            )
        if name not in engines:
            return None
        if len(engines) == 1:
            raise SyntheticError(f"cannot hold out {name}: it is the only engine available; add another")
        return name


@dataclass(frozen=True)
class PlannedUtterance:
    id: str
    split: str
    intent: str
    slots: dict[str, str]
    shape: str  # the expression template the text came from
    text: str
    speaker: Speaker
    seen_phrasing: bool = True

    @property
    def audio(self) -> str:
        return f"audio/{self.speaker.id}/{self.id}.wav"


def choose_speakers(
    engines: list[str], preset: SizePreset, rng: np.random.Generator, held_out: str | None = None
) -> dict[str, list[Speaker]]:
    """Split each engine's speakers into training and test pools (stratified by engine); the
    held-out engine's speakers all go to the ``test_unseen_engine`` pool."""
    pools: dict[str, list[Speaker]] = {"train": [], "test": []}
    for name in engines:
        speakers = ENGINES[name].speakers(preset.speakers.get(name, 0), rng)
        if name == held_out:
            pools[UNSEEN_ENGINE_SPLIT] = speakers
            continue
        order = [speakers[i] for i in rng.permutation(len(speakers))]
        test_count = int(np.floor(len(order) * preset.test_speaker_fraction + 0.5))
        pools["test"] += order[:test_count]
        pools["train"] += order[test_count:]
    for pool, speakers in pools.items():
        if not speakers:
            raise SyntheticError(
                f"no {pool} speakers: engines {', '.join(engines)} give too few speakers for this size"
            )
    return pools


def plan_corpus(
    config: SyntheticConfig, engines: list[str], grammar: Grammar | None = None
) -> tuple[list[PlannedUtterance], dict[str, list[Speaker]]]:
    """Decide every utterance: split, sentence (intent, slots, shape, text), speaker and id.

    Args:
        config: size, seed, held-out engine and grammar file.
        engines: the usable TTS engines.
        grammar: the grammar already loaded from ``config.grammar`` (default: load it).

    Returns:
        The planned utterances, and the speaker pools (``train``, ``test``, maybe ``test_unseen_engine``).
    """
    preset = config.preset()
    rng = np.random.default_rng(config.seed)
    held_out = config.held_out(engines)
    if held_out is None and config.held_out_engine not in ("", NO_ENGINE):
        logger.warning(
            "held-out engine %s is not available: no %s split", config.held_out_engine, UNSEEN_ENGINE_SPLIT
        )
    speakers = choose_speakers(engines, preset, rng, held_out)
    grammar = grammar or load_grammar(config.grammar)
    sizes = {split: count for split, count in preset.utterances.items() if SPEAKER_POOLS[split] in speakers}
    sentences = sample_splits(grammar, sizes, config.seed, preset.held_out_fraction)
    used_pairs: set[tuple[str, str]] = set()
    speaker_turn: Counter = Counter()

    def pick_speaker(pool: str, text: str) -> Speaker | None:
        candidates = speakers[pool]
        for _ in range(len(candidates)):
            speaker = candidates[speaker_turn[pool] % len(candidates)]
            speaker_turn[pool] += 1
            if (speaker.id, text) not in used_pairs:
                return speaker
        return None  # every speaker of the pool already said this text

    said_in_train: dict[str, list[Sentence]] = {}
    for sentence in sentences.get("train", []):
        texts = said_in_train.setdefault(sentence.intent, [])
        if all(other.text != sentence.text for other in texts):
            texts.append(sentence)
    text_turn: Counter = Counter()

    def candidates_of(split: str, sentence: Sentence) -> list[Sentence]:
        """The sentence, then (for a seen phrasing outside train, should every speaker of the pool
        have said it already) the intent's other train texts in turn."""
        said = said_in_train.get(sentence.intent, [])
        if split == "train" or sentence.phrasing != "seen" or not said:
            return [sentence]
        start = text_turn[split, sentence.intent]
        text_turn[split, sentence.intent] += 1
        others = [said[(start + offset) % len(said)] for offset in range(len(said))]
        return [sentence, *(other for other in others if other.text != sentence.text)]

    plan: list[PlannedUtterance] = []
    for split, items in sentences.items():
        number = 0
        for planned in items:
            for sentence in candidates_of(split, planned):
                speaker = pick_speaker(SPEAKER_POOLS[split], sentence.text)
                if speaker is not None:
                    break
            else:
                continue  # every speaker of the pool already said every candidate
            used_pairs.add((speaker.id, sentence.text))
            plan.append(
                PlannedUtterance(
                    f"{split}-{number:06d}",
                    split,
                    sentence.intent,
                    dict(sentence.slots),
                    sentence.shape,
                    sentence.text,
                    speaker,
                    sentence.phrasing == "seen",
                )  # fmt: skip
            )
            number += 1
    return plan, speakers
