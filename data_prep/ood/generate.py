"""Write the out-of-domain corpus: text kinds rendered through the built-in corpus's TTS engines,
non-speech generated, all labelled ``unknown``.

Splits: ``ood_train`` and ``ood_valid`` (seen sources, training speakers, seen noise colours)
and ``ood_test`` (held-out sources of each kind, speakers never heard in ood_train, the
held-out engine's voices when it is installed, held-out noise colours and hum). Every manifest
line carries ``ood_kind`` (``other_domain``, ``generic``, ``near_miss``, ``non_speech``),
``ood_source`` (where the text or sound came from), ``engine`` and ``held_out``.

The plan is a pure function of the config; audio is written per file atomically, and a
finished corpus with the same plan is reused.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_prep.ood.non_speech import HELD_OUT_SOUNDS, SEEN_SOUNDS, non_speech
from data_prep.ood.text_sources import (
    GENERIC_LICENSE,
    HOME_ASSISTANT_LICENSE,
    OodText,
    generic_texts,
    near_miss_texts,
    other_domain_texts,
)
from data_prep.synthetic.engines import ENGINES, Engine, Speaker, available_engines, worker_count
from data_prep.synthetic.generate import finish_audio
from data_prep.synthetic.plan import DEFAULT_GRAMMAR
from pipeline.core.errors import SlukdError
from pipeline.core.io import is_done, mark_done, write_json
from pipeline.data.audio import SAMPLE_RATE, read_audio, write_audio
from pipeline.data.labels import LabelSet
from pipeline.data.manifest import Manifest, Utterance, read_manifest, write_split_manifests
from pipeline.data.open_set import NO_SPEECH_TRANSCRIPT, OOD_KINDS, OOD_SPLITS, UNKNOWN_INTENT
from pipeline.grammar.load import load_grammar
from pipeline.grammar.sampler import expand_template

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 2  # 2: near misses never equal a phrasing of the built-in grammar
TEXT_KINDS = ("other_domain", "generic", "near_miss")
BABBLE_TALKERS = 8


class OodError(SlukdError, ValueError):
    """An out-of-domain corpus that cannot be made with these settings."""


# utterances per kind and split, and speakers per engine
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"ood_train": 12, "ood_valid": 4, "ood_test": 8},
    "small": {"ood_train": 150, "ood_valid": 30, "ood_test": 60},
    "full": {"ood_train": 1200, "ood_valid": 200, "ood_test": 400},
}
SPEAKERS = {"tiny": 8, "small": 24, "full": 48}


@dataclass
class OodConfig:
    """Everything that decides the corpus."""

    size: str = "tiny"
    seed: int = 0
    engines: list[str] = field(default_factory=lambda: list(ENGINES))
    held_out_engine: str = "piper"  # heard only in ood_test; "none" or missing: none
    in_domain: list[str] = field(default_factory=list)  # manifests whose transcripts make near misses
    num_workers: int = 0  # 0: every core
    splits: list[str] = field(default_factory=lambda: list(OOD_SPLITS))  # those to synthesise (same plan)

    def counts(self) -> dict[str, int]:
        try:
            return SIZES[self.size]
        except KeyError:
            raise OodError(f"unknown size {self.size!r}; choose from {', '.join(SIZES)}") from None


@dataclass(frozen=True)
class PlannedOod:
    id: str
    split: str
    kind: str
    source: str
    text: str  # empty for non-speech
    speaker: Speaker | None  # None for non-speech
    held_out: bool

    @property
    def audio(self) -> str:
        return f"audio/{self.split}/{self.id}.wav"


def grammar_sentences(path: str | Path = DEFAULT_GRAMMAR) -> list[str]:
    """Every sentence a grammar file expands to (the built-in corpus's FSC grammar by default)."""
    grammar = load_grammar(path)
    return [text for template in grammar.templates for text, _ in expand_template(template)]


def in_domain_sentences(manifests: Iterable[str | Path]) -> list[str]:
    """The transcripts of ``manifests``; none given: every sentence of the built-in grammar."""
    paths = list(manifests)
    if not paths:
        return grammar_sentences()
    return [utterance.transcript for path in paths for utterance in read_manifest(path)]


def speaker_pools(
    config: OodConfig, engines: list[str], rng: np.random.Generator
) -> dict[str, list[Speaker]]:
    """Training speakers (ood_train, ood_valid) and test speakers (ood_test), none shared."""
    held = config.held_out_engine if config.held_out_engine in engines and len(engines) > 1 else None
    pools: dict[str, list[Speaker]] = {"train": [], "test": []}
    for name in engines:
        speakers = ENGINES[name].speakers(SPEAKERS[config.size], rng)
        if name == held:
            pools["test"] += speakers
            continue
        cut = max(1, len(speakers) // 4) if len(speakers) > 1 else 0
        pools["test"] += speakers[:cut]
        pools["train"] += speakers[cut:]
    if not pools["train"] or not pools["test"]:
        raise OodError(f"engines {', '.join(engines)} give too few speakers to keep test voices apart")
    return pools


def plan_ood(config: OodConfig, engines: list[str]) -> list[PlannedOod]:
    """Every utterance: split, kind, source, text, speaker."""
    counts = config.counts()
    rng = np.random.default_rng(config.seed)
    speakers = speaker_pools(config, engines, rng)
    texts = {
        "other_domain": other_domain_texts(),
        "generic": generic_texts(config.seed),
        "near_miss": near_miss_texts(
            in_domain_sentences(config.in_domain), rng, config.seed, in_domain_sentences([])
        ),
    }
    plan: list[PlannedOod] = []
    turn = {"train": 0, "test": 0}
    for split in OOD_SPLITS:
        held_out = split == "ood_test"
        pool_name = "test" if held_out else "train"
        number = 0
        for kind in OOD_KINDS:
            count = counts[split]
            if kind == "non_speech":
                sounds = HELD_OUT_SOUNDS if held_out else SEEN_SOUNDS
                chosen = [OodText(kind, f"non_speech:{sounds[i % len(sounds)]}", "") for i in range(count)]
            else:
                chosen = _take(texts[kind], split, count, config.seed)
            for item in chosen:
                speaker = None
                if kind != "non_speech":
                    pool = speakers[pool_name]
                    speaker = pool[turn[pool_name] % len(pool)]
                    turn[pool_name] += 1
                plan.append(
                    PlannedOod(
                        f"{split}-{number:06d}", split, kind, item.source, item.text, speaker, held_out
                    )
                )
                number += 1
    return plan


def _take(pools: tuple[list[OodText], list[OodText]], split: str, count: int, seed: int) -> list[OodText]:
    """``count`` texts for ``split``: train and valid from the seen pool (disjoint while it
    lasts), test from the held-out pool; a pool too small repeats (with other speakers)."""
    seen, held = pools
    if split == "ood_test":
        pool = [held[i] for i in np.random.default_rng([seed, 1]).permutation(len(held))]
    else:
        order = [seen[i] for i in np.random.default_rng([seed, 0]).permutation(len(seen))]
        cut = max(1, len(order) // 6)
        pool = order[:cut] if split == "ood_valid" else order[cut:]
    if not pool:
        raise OodError(f"no {split} texts for {seen[0].kind if seen else 'a text kind'}")
    return [pool[i % len(pool)] for i in range(count)]


# ---------------------------------------------------------------------------------------------
# Rendering

_engines: dict[str, Engine] = {}


def _render_speech(task: tuple[int, str, str, dict, int]) -> tuple[int, float, str]:
    """Worker: synthesise one text to ``path``; (index, duration, error)."""
    index, path, text, speaker_fields, seed = task
    speaker = Speaker(**speaker_fields)
    try:
        engine = _engines.get(speaker.engine) or _engines.setdefault(
            speaker.engine, ENGINES[speaker.engine]()
        )
        samples, sample_rate = engine.synthesize(text, speaker)
        samples = finish_audio(samples, sample_rate, np.random.default_rng([seed, index]))
        write_audio(path, samples, SAMPLE_RATE)
        return index, len(samples) / SAMPLE_RATE, ""
    except Exception as error:  # reported by the parent with the utterance named
        return index, 0.0, f"{type(error).__name__}: {error}"


def render(plan: list[PlannedOod], output_dir: Path, seed: int, workers: int,
           splits: Iterable[str] = OOD_SPLITS) -> dict[str, float]:  # fmt: skip
    """Write the audio of every planned utterance of ``splits``; returns the duration of each id.
    Each utterance draws its randomness from its place in the whole plan, so a split has the same
    texts, voices and sounds whichever other splits are rendered with it (a TTS engine's timing may
    still move by milliseconds with what its process spoke before)."""
    splits = set(splits)
    durations: dict[str, float] = {}
    tasks = [
        (i, str(output_dir / item.audio), item.text, asdict(item.speaker), seed)
        for i, item in enumerate(plan)
        if item.speaker is not None and item.split in splits
    ]
    errors = []
    context = multiprocessing.get_context(
        "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    )
    with context.Pool(max(1, workers)) as pool:
        for index, duration, error in tqdm(pool.imap_unordered(_render_speech, tasks, chunksize=4),
                                           total=len(tasks), desc="synthesising", unit="utt"):  # fmt: skip
            if error:
                errors.append(f"{plan[index].id} ({plan[index].speaker.id}): {error}")
            else:
                durations[plan[index].id] = duration
    if errors:
        raise OodError(f"{len(errors)} utterance(s) failed to synthesise, first: {errors[0]}")
    for index, item in enumerate(plan):
        if item.speaker is not None or item.split not in splits:
            continue
        rng = np.random.default_rng([seed, index])
        talkers = []
        if item.source == "non_speech:babble":
            voiced = [other for other in plan if other.split == item.split and other.speaker is not None]
            picks = rng.permutation(len(voiced))[:BABBLE_TALKERS]
            talkers = [read_audio(output_dir / voiced[i].audio)[0] for i in picks]
        samples = non_speech(item.source.split(":", 1)[1], rng, talkers)
        write_audio(output_dir / item.audio, samples, SAMPLE_RATE)
        durations[item.id] = len(samples) / SAMPLE_RATE
    return durations


def _fingerprint(config: OodConfig, engines: list[str], plan: list[PlannedOod]) -> dict:
    digest = hashlib.sha256()
    for item in plan:
        digest.update(
            f"{item.id}\t{item.source}\t{item.text}\t{item.speaker.id if item.speaker else ''}\n".encode()
        )
    settings = {key: value for key, value in asdict(config).items() if key != "num_workers"}  # not the audio
    return {
        **settings,
        "engines": engines,
        "version": GENERATOR_VERSION,
        "plan_sha256": digest.hexdigest(),
    }


def prepare_ood(output_dir: str | Path, config: OodConfig | None = None) -> dict[str, Manifest]:
    """Generate (or reuse) the out-of-domain corpus under ``output_dir``.

    Writes ``audio/<split>/<id>.wav``, ``manifests/<split>.jsonl`` for ``ood_train``,
    ``ood_valid`` and ``ood_test``, ``manifests/labels.json`` (the one intent ``unknown``) and
    ``config.json`` (with the text sources' licences).

    Returns:
        The manifest of each split.
    """
    config = config or OodConfig()
    unknown = [split for split in config.splits if split not in OOD_SPLITS]
    if unknown or not config.splits:
        raise OodError(
            f"splits must be some of {', '.join(OOD_SPLITS)}, got {', '.join(config.splits) or 'none'}"
        )
    splits = [split for split in OOD_SPLITS if split in config.splits]
    output_dir = Path(output_dir)
    manifest_dir = output_dir / "manifests"
    engines = available_engines(config.engines)
    plan = plan_ood(config, engines)
    fingerprint = _fingerprint(config, engines, plan)
    if is_done(output_dir, fingerprint):
        logger.info("%s: out-of-domain corpus already generated with this plan, skipping", output_dir)
        return {split: read_manifest(manifest_dir / f"{split}.jsonl") for split in splits}
    (output_dir / ".done").unlink(missing_ok=True)
    for name in engines:
        ENGINES[name].prepare()
    logger.info(
        "generating %d out-of-domain utterances (%s; %s) into %s",
        sum(item.split in splits for item in plan), ", ".join(splits), ", ".join(engines), output_dir,
    )  # fmt: skip
    for stale in set(OOD_SPLITS) - set(splits):  # a split of an earlier run with other splits
        (manifest_dir / f"{stale}.jsonl").unlink(missing_ok=True)
    durations = render(plan, output_dir, config.seed, config.num_workers or worker_count(), splits)
    labels = LabelSet(intents=[UNKNOWN_INTENT])
    rows = {
        split: [
            Utterance(
                id=item.id,
                audio=f"../{item.audio}",
                duration=round(durations[item.id], 4),
                sample_rate=SAMPLE_RATE,
                transcript=item.text or NO_SPEECH_TRANSCRIPT,
                intent=UNKNOWN_INTENT,
                speaker=item.speaker.id if item.speaker else "",
                extra={
                    "ood_kind": item.kind,
                    "ood_source": item.source,
                    "engine": item.speaker.engine if item.speaker else "none",
                    "held_out": item.held_out,
                },
            )
            for item in plan
            if item.split == split
        ]
        for split in splits
    }
    manifests = write_split_manifests(rows, manifest_dir, labels)
    write_json(
        output_dir / "config.json",
        {**asdict(config), "engines_used": engines, "licenses": {"other_domain": HOME_ASSISTANT_LICENSE,
                                                                 "generic": GENERIC_LICENSE}},
    )  # fmt: skip
    mark_done(output_dir, fingerprint)
    return manifests
