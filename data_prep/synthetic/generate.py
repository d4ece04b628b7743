"""Generate the built-in spoken-commands corpus: plan the utterances, synthesise them on every
core, write manifests, ``labels.json`` and ``stats.json``.

Splits (after Fluent Speech Commands):

- ``train``: training speakers, training phrasings;
- ``valid``: training speakers, training phrasings, (speaker, phrasing) pairs not in train;
- ``test``: speakers never heard in training saying phrasings seen in training;
- ``test_unseen_phrasing``: those unseen speakers saying phrasings from families held out of
  training, keeping only phrasings whose every word occurs in the training transcripts (like
  the FSC utterance challenge);
- ``test_unseen_engine``: the speakers of one engine held out of every other split
  (``held_out_engine``, piper by default), saying phrasings seen in training (half) and unseen
  ones (half, chosen as for ``test_unseen_phrasing``). Without that engine there is no such split.

Every utterance's manifest line says its ``engine``, phrasing ``family`` and whether that
phrasing was seen in training (``phrasing``: ``seen`` or ``unseen``).

The plan (texts, speakers, splits, ids) is a pure function of the size preset and ``--seed``;
audio is written per file atomically, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_prep.synthetic import grammar
from data_prep.synthetic.engines import ENGINES, Engine, Speaker, available_engines, worker_count
from data_prep.synthetic.stats import corpus_stats
from pipeline.core.errors import SlukdError
from pipeline.core.io import is_done, mark_done, write_json
from pipeline.data.audio import SAMPLE_RATE, audio_info, resample, write_audio
from pipeline.data.labels import LabelSet
from pipeline.data.manifest import Manifest, Utterance, read_manifest

logger = logging.getLogger(__name__)

UNSEEN_ENGINE_SPLIT = "test_unseen_engine"
SPLITS = ("train", "valid", "test", "test_unseen_phrasing", UNSEEN_ENGINE_SPLIT)
SEEN_PHRASING_SPLITS = ("train", "valid", "test")
DEFAULT_HELD_OUT_ENGINE = "piper"  # the neural VITS voice; kokoro stays the neural voice of training
NO_ENGINE = "none"
GENERATOR_VERSION = 2  # bump when the audio a given plan produces changes


class SyntheticError(SlukdError, ValueError):
    """A corpus that cannot be planned with these settings (size, engines, held-out engine)."""


@dataclass(frozen=True)
class SizePreset:
    """How many utterances per split, and at most how many speakers per engine."""

    utterances: dict[str, int]
    speakers: dict[str, int]
    phrasings_per_family: int = 4
    test_speaker_fraction: float = 0.25
    held_out_family_fraction: float = 0.25


PRESETS: dict[str, SizePreset] = {
    "tiny": SizePreset(
        utterances={
            "train": 62,
            "valid": 16,
            "test": 16,
            "test_unseen_phrasing": 16,
            UNSEEN_ENGINE_SPLIT: 16,
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
        },
        speakers={"espeak": 48, "piper": 6, "kokoro": 5, "flite": 6, "festival": 3},
    ),
    "full": SizePreset(
        utterances={
            "train": 23250,
            "valid": 3100,
            "test": 3720,
            "test_unseen_phrasing": 3100,
            UNSEEN_ENGINE_SPLIT: 3100,
        },
        speakers={"espeak": 96, "piper": 9, "kokoro": 15, "flite": 8, "festival": 6},
    ),
}


@dataclass
class SyntheticConfig:
    """Everything that determines the corpus; its hash decides whether a rerun can skip."""

    size: str = "tiny"
    seed: int = 0
    engines: list[str] = field(default_factory=lambda: list(ENGINES))
    held_out_engine: str = DEFAULT_HELD_OUT_ENGINE  # heard only in test_unseen_engine; "none": no such split
    num_workers: int = 0  # 0: every core

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
    intent: grammar.Intent
    family: str
    text: str
    speaker: Speaker
    seen_phrasing: bool = True

    @property
    def audio(self) -> str:
        return f"audio/{self.speaker.id}/{self.id}.wav"


# ---------------------------------------------------------------------------------------------
# Planning: a pure function of (preset, seed, available engines)


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


def choose_phrasings(preset: SizePreset, rng: np.random.Generator) -> tuple[dict, dict]:
    """Per intent, the training phrasing pool and the held-out (unseen-family) pool.

    Families are held out per template group. Only families whose phrasings are mostly built
    from words other families also use are eligible, so the held-out texts stay in-vocabulary.
    """
    every = {intent: grammar.phrasings(intent) for intent in grammar.INTENTS}
    families_of_group: dict[str, list[str]] = defaultdict(list)
    for intent in grammar.INTENTS:
        for phrasing in every[intent]:
            if phrasing.family not in families_of_group[intent.group]:
                families_of_group[intent.group].append(phrasing.family)

    held_out: set[str] = set()
    for families in families_of_group.values():
        eligible = []
        for family in families:
            others = {
                word
                for phrasings in every.values()
                for p in phrasings
                if p.family != family
                for word in grammar.words(p.text)
            }
            mine = [p for phrasings in every.values() for p in phrasings if p.family == family]
            covered = sum(grammar.words(p.text) <= others for p in mine)
            if covered / len(mine) >= 0.5:
                eligible.append(family)
        count = max(1, int(round(len(families) * preset.held_out_family_fraction)))
        held_out.update(rng.permutation(eligible)[:count].tolist())

    seen_pool, unseen_pool = {}, {}
    for intent in grammar.INTENTS:
        by_family: dict[str, list[grammar.Phrasing]] = defaultdict(list)
        for phrasing in every[intent]:
            by_family[phrasing.family].append(phrasing)
        seen, unseen = [], []
        for family, members in by_family.items():
            picked = [members[i] for i in rng.permutation(len(members))[: preset.phrasings_per_family]]
            (unseen if family in held_out else seen).extend(picked)
        if not seen:
            raise AssertionError(f"grammar leaves no training phrasing for {intent.name}")
        seen_pool[intent] = [seen[i] for i in rng.permutation(len(seen))]
        unseen_pool[intent] = [unseen[i] for i in rng.permutation(len(unseen))]
    return seen_pool, unseen_pool


def _spread_over_intents(total: int, rng: np.random.Generator) -> list[grammar.Intent]:
    """``total`` intents, as even as possible, in a seeded order."""
    intents = list(grammar.INTENTS)
    result = []
    while len(result) < total:
        result += [intents[i] for i in rng.permutation(len(intents))]
    return sorted(result[:total], key=intents.index)


def plan_parts(preset: SizePreset, speakers: dict[str, list[Speaker]]) -> list[tuple[str, str, str, int]]:
    """What to plan, in order: (split, speaker pool, phrasings, utterances).

    Phrasings are ``train`` (the training pool), ``seen`` (texts said in train) or ``unseen``
    (held-out families, in-vocabulary). ``test_unseen_engine`` is planned in two halves, seen
    then unseen phrasings, when the held-out engine has a speaker pool.
    """
    parts = []
    for split in SPLITS:
        total = preset.utterances[split]
        if split == UNSEEN_ENGINE_SPLIT:
            if split in speakers:
                parts += [(split, split, "seen", total - total // 2), (split, split, "unseen", total // 2)]
        else:
            pool = "train" if split in ("train", "valid") else "test"
            parts.append(
                (split, pool, {"train": "train", "test_unseen_phrasing": "unseen"}.get(split, "seen"), total)
            )
    return parts


def plan_corpus(config: SyntheticConfig, engines: list[str]) -> tuple[list[PlannedUtterance], dict]:
    """Decide every utterance: split, intent, phrasing, speaker and id."""
    preset = config.preset()
    rng = np.random.default_rng(config.seed)
    held_out = config.held_out(engines)
    if held_out is None and config.held_out_engine not in ("", NO_ENGINE):
        logger.warning(
            "held-out engine %s is not available: no %s split", config.held_out_engine, UNSEEN_ENGINE_SPLIT
        )
    speakers = choose_speakers(engines, preset, rng, held_out)
    seen_pool, unseen_pool = choose_phrasings(preset, rng)
    used_pairs: set[tuple[str, str]] = set()
    used_texts: dict[grammar.Intent, list[grammar.Phrasing]] = defaultdict(list)
    plan: list[PlannedUtterance] = []
    speaker_turn: Counter = Counter()
    numbers: Counter = Counter()
    train_vocabulary: set[str] = set()

    def pick_speaker(pool: str, text: str) -> Speaker | None:
        candidates = speakers[pool]
        for _ in range(len(candidates)):
            speaker = candidates[speaker_turn[pool] % len(candidates)]
            speaker_turn[pool] += 1
            if (speaker.id, text) not in used_pairs:
                return speaker
        return None  # every speaker of the pool already said this text

    def phrasings_of(kind: str) -> dict[grammar.Intent, list[grammar.Phrasing]]:
        if kind == "train":
            return seen_pool
        if kind == "seen":
            return {intent: list(dict.fromkeys(texts)) for intent, texts in used_texts.items()}
        return {
            intent: [p for p in pool if grammar.words(p.text) <= train_vocabulary]
            for intent, pool in unseen_pool.items()
        }

    for split, pool_name, kind, count in plan_parts(preset, speakers):
        phrasing_pool = phrasings_of(kind)
        turn: Counter = Counter()
        for intent in _spread_over_intents(count, rng):
            candidates = phrasing_pool.get(intent) or []
            for _ in range(len(candidates)):
                phrasing = candidates[turn[intent] % len(candidates)]
                turn[intent] += 1
                speaker = pick_speaker(pool_name, phrasing.text)
                if speaker is not None:
                    break
            else:
                continue  # nothing left to say for this intent in this split
            used_pairs.add((speaker.id, phrasing.text))
            if split == "train":
                used_texts[intent].append(phrasing)
                train_vocabulary.update(grammar.words(phrasing.text))
            identifier = f"{split}-{numbers[split]:06d}"
            numbers[split] += 1
            plan.append(
                PlannedUtterance(
                    identifier, split, intent, phrasing.family, phrasing.text, speaker, kind != "unseen"
                )
            )
    return plan, speakers


# ---------------------------------------------------------------------------------------------
# Synthesis, one engine instance per worker process

_worker_engines: dict[str, Engine] = {}


def _finish_audio(samples: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Resample to 16 kHz, trim the engine's silence, pad, set a level and a noise floor."""
    samples = resample(samples.astype(np.float32), sample_rate, SAMPLE_RATE)
    loud = np.flatnonzero(np.abs(samples) > 0.01 * (np.abs(samples).max() + 1e-9))
    if loud.size:
        samples = samples[loud[0] : loud[-1] + 1]
    lead, tail = (rng.uniform(0.1, 0.35, size=2) * SAMPLE_RATE).astype(int)
    samples = np.concatenate([np.zeros(lead, np.float32), samples, np.zeros(tail, np.float32)])
    samples *= rng.uniform(0.25, 0.9) / (np.abs(samples).max() + 1e-9)
    noise_floor = 10 ** (rng.uniform(-65, -50) / 20)
    samples += rng.normal(0.0, noise_floor, size=samples.shape).astype(np.float32)
    return samples


def _synthesize_one(task: tuple[int, str, str, dict, str, int]) -> tuple[int, float, str]:
    """Worker: render one planned utterance to ``path``; returns (index, duration, error)."""
    index, path, text, speaker_fields, _, seed = task
    speaker = Speaker(**speaker_fields)
    target = Path(path)
    try:
        if target.is_file():  # finished by an interrupted earlier run
            return index, audio_info(target).duration, ""
        engine = _worker_engines.get(speaker.engine)
        if engine is None:
            engine = _worker_engines[speaker.engine] = ENGINES[speaker.engine]()
        samples, sample_rate = engine.synthesize(text, speaker)
        samples = _finish_audio(samples, sample_rate, np.random.default_rng([seed, index]))
        write_audio(target, samples, SAMPLE_RATE)
        return index, len(samples) / SAMPLE_RATE, ""
    except Exception as error:  # reported by the parent with the utterance named
        return index, 0.0, f"{type(error).__name__}: {error}"


def _fingerprint(config: SyntheticConfig, engines: list[str], plan: list[PlannedUtterance]) -> dict:
    digest = hashlib.sha256()
    for item in plan:
        digest.update(f"{item.id}\t{item.text}\t{item.speaker.id}\n".encode())
    return {
        "size": config.size,
        "seed": config.seed,
        "engines": engines,
        "held_out_engine": config.held_out(engines),
        "generator_version": GENERATOR_VERSION,
        "plan_sha256": digest.hexdigest(),
    }


def prepare_synthetic(output_dir: str | Path, config: SyntheticConfig | None = None) -> dict[str, Manifest]:
    """Generate (or reuse) the built-in corpus under ``output_dir``.

    Writes ``audio/<speaker>/<id>.wav``, ``manifests/<split>.jsonl``, ``manifests/labels.json``,
    ``manifests/stats.json``, ``speakers.json``, ``config.json`` and ``plan.json``. A finished corpus with the
    same plan is reused as is.

    Returns:
        The manifest of each split.
    """
    config = config or SyntheticConfig()
    output_dir = Path(output_dir)
    engines = available_engines(config.engines)
    plan, speakers = plan_corpus(config, engines)
    fingerprint = _fingerprint(config, engines, plan)
    manifest_dir = output_dir / "manifests"
    splits = [split for split in SPLITS if any(item.split == split for item in plan)]
    if is_done(output_dir, fingerprint):
        logger.info("%s: corpus already generated with this plan, skipping", output_dir)
        return {split: read_manifest(manifest_dir / f"{split}.jsonl") for split in splits}

    for name in engines:
        ENGINES[name].prepare()
    # plan.json says which plan the audio on disk belongs to: same plan, resume; else start over.
    plan_marker = output_dir / "plan.json"
    if output_dir.exists() and not _same_plan(plan_marker, fingerprint):
        logger.info("%s: holds no audio of this plan; clearing it before generating", output_dir)
        shutil.rmtree(output_dir / "audio", ignore_errors=True)
        shutil.rmtree(manifest_dir, ignore_errors=True)  # no split of an earlier plan may stay behind
        (output_dir / ".done").unlink(missing_ok=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(plan_marker, fingerprint)

    workers = config.num_workers or worker_count()
    logger.info(
        "generating %d utterances with %d speakers (%s) on %d workers into %s",
        len(plan), sum(len(v) for v in speakers.values()), ", ".join(engines), workers, output_dir,
    )  # fmt: skip
    durations, generation = _synthesize_all(plan, output_dir, config.seed, workers)

    failed = [item for item in plan if item.id not in durations]
    if failed:
        raise SyntheticError(f"{len(failed)} utterance(s) failed to synthesise, first: {failed[0].id}")
    labels = LabelSet(intents=[intent.name for intent in grammar.INTENTS], slots=grammar.SLOT_VALUES)
    manifests = {}
    for split in splits:
        utterances = [
            Utterance(
                id=item.id,
                audio=f"../{item.audio}",
                duration=round(durations[item.id], 4),
                sample_rate=SAMPLE_RATE,
                transcript=item.text,
                intent=item.intent.name,
                slots=item.intent.slots,
                speaker=item.speaker.id,
                extra={
                    "engine": item.speaker.engine,
                    "family": item.family,
                    "phrasing": "seen" if item.seen_phrasing else "unseen",
                },
            )
            for item in plan
            if item.split == split
        ]
        manifest = Manifest(utterances, manifest_dir / f"{split}.jsonl")
        manifest.validate(labels)
        manifest.write()
        manifests[split] = manifest
    labels.save(manifest_dir / "labels.json")
    write_json(manifest_dir / "stats.json", corpus_stats(manifests, generation))
    write_json(
        output_dir / "speakers.json",
        {pool: [speaker.to_dict() for speaker in pool_speakers] for pool, pool_speakers in speakers.items()},
    )
    write_json(
        output_dir / "config.json",
        {**asdict(config), "engines_used": engines, "held_out_engine_used": config.held_out(engines)},
    )
    mark_done(output_dir, fingerprint)
    return manifests


def _same_plan(marker: Path, fingerprint: dict) -> bool:
    try:
        return json.loads(marker.read_text()) == json.loads(json.dumps(fingerprint))
    except (OSError, json.JSONDecodeError):
        return False


def _synthesize_all(
    plan: list[PlannedUtterance], output_dir: Path, seed: int, workers: int
) -> tuple[dict[str, float], dict]:
    """Render every planned utterance on ``workers`` processes; returns durations and timing."""
    # Slow engines first, so the fast ones fill the tail and every core stays busy.
    cost = {"festival": 0, "kokoro": 1, "piper": 2, "flite": 3, "espeak": 4}
    order = sorted(range(len(plan)), key=lambda i: (cost.get(plan[i].speaker.engine, 0), i))
    tasks = [
        (i, str(output_dir / plan[i].audio), plan[i].text, asdict(plan[i].speaker), plan[i].id, seed)
        for i in order
    ]
    durations: dict[str, float] = {}
    errors = []
    start = time.monotonic()
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    context = multiprocessing.get_context(method)
    with context.Pool(workers) as pool, tqdm(total=len(tasks), desc="synthesising", unit="utt") as bar:
        for index, duration, error in pool.imap_unordered(_synthesize_one, tasks, chunksize=4):
            if error:
                errors.append(f"{plan[index].id} ({plan[index].speaker.id}): {error}")
            else:
                durations[plan[index].id] = duration
            bar.update()
    for message in errors[:10]:
        logger.error("synthesis failed: %s", message)
    seconds = time.monotonic() - start
    hours = sum(durations.values()) / 3600
    logger.info(
        "synthesised %.2f h of audio in %.1f s: %.2f h of audio per minute on %d workers",
        hours, seconds, hours / max(seconds / 60, 1e-9), workers,
    )  # fmt: skip
    generation = {
        "seconds": round(seconds, 2),
        "workers": workers,
        "hours": round(hours, 4),
        "hours_of_audio_per_minute": round(hours / max(seconds / 60, 1e-9), 3),
    }
    return durations, generation
