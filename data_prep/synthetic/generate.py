"""Generate the built-in spoken-commands corpus: plan the utterances from a grammar file
(:mod:`data_prep.synthetic.plan`), synthesise them on every core, write manifests, ``labels.json``
(the grammar's intents, and each slot's values plus ``none``) and ``stats.json``.

Splits (after Fluent Speech Commands; :mod:`pipeline.grammar.sampler` says what each holds):

- ``train``: training speakers, the training pool of expression shapes and slot-value combinations;
- ``valid``: training speakers, half seen phrasings and half from a held-out valid pool, so that
  checkpoint selection is not at its ceiling; (speaker, text) pairs not in train;
- ``test``: speakers never heard in training saying phrasings of the training pool;
- ``test_unseen_phrasing``: those unseen speakers saying held-out shapes and slot-value
  combinations (texts never said in train, in its vocabulary where the grammar allows);
- ``test_unseen_engine``: the speakers of one engine held out of every other split
  (``held_out_engine``, piper by default), saying seen (half) and held-out (half) phrasings.
  Without that engine there is no such split.
- ``train_rest``: training speakers saying both held-out pools in texts no other split says:
  only the model to deploy trains on it (train + train_rest: every expression of the grammar).

Every utterance's manifest line has every slot of the grammar (``none`` where unsaid) and says
its ``engine``, expression ``shape`` and whether that phrasing was seen in training
(``phrasing``: ``seen`` or ``unseen``).

The plan is a pure function of the grammar, the size preset and ``--seed``; audio is written per
file atomically, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data_prep.synthetic.engines import ENGINES, Engine, Speaker, available_engines, worker_count
from data_prep.synthetic.plan import (
    DEFAULT_GRAMMAR,
    DEFAULT_HELD_OUT_ENGINE,
    NO_ENGINE,
    PRESETS,
    SPLITS,
    UNSEEN_ENGINE_SPLIT,
    PlannedUtterance,
    SizePreset,
    SyntheticConfig,
    SyntheticError,
    plan_corpus,
)
from data_prep.synthetic.stats import corpus_stats
from pipeline.core.io import is_done, mark_done, write_json
from pipeline.data.audio import SAMPLE_RATE, audio_info, resample, write_audio
from pipeline.data.labels import LabelSet
from pipeline.data.manifest import Manifest, Utterance, read_manifest, write_split_manifests
from pipeline.grammar.load import load_grammar

__all__ = [
    "DEFAULT_GRAMMAR",
    "DEFAULT_HELD_OUT_ENGINE",
    "NO_ENGINE",
    "PRESETS",
    "SPLITS",
    "UNSEEN_ENGINE_SPLIT",
    "PlannedUtterance",
    "SizePreset",
    "SyntheticConfig",
    "SyntheticError",
    "plan_corpus",
    "prepare_synthetic",
]

logger = logging.getLogger(__name__)

GENERATOR_VERSION = 3  # bump when the audio or manifests a given plan produces change


# ---------------------------------------------------------------------------------------------
# Synthesis, one engine instance per worker process

_worker_engines: dict[str, Engine] = {}


def finish_audio(samples: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Resample to 16 kHz, trim the engine's silence, pad, set a level and a noise floor (the
    out-of-domain corpus finishes its speech the same way, so level and padding say nothing about
    in- or out-of-domain)."""
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
        samples = finish_audio(samples, sample_rate, np.random.default_rng([seed, index]))
        write_audio(target, samples, SAMPLE_RATE)
        return index, len(samples) / SAMPLE_RATE, ""
    except Exception as error:  # reported by the parent with the utterance named
        return index, 0.0, f"{type(error).__name__}: {error}"


def _fingerprint(
    config: SyntheticConfig, engines: list[str], plan: list[PlannedUtterance], labels: LabelSet
) -> dict:
    digest = hashlib.sha256(json.dumps(labels.to_dict(), sort_keys=True).encode())
    for item in plan:
        slots = json.dumps(item.slots, sort_keys=True)
        digest.update(
            f"{item.id}\t{item.text}\t{item.speaker.id}\t{item.intent}\t{slots}\t{item.shape}\n".encode()
        )
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
    grammar = load_grammar(config.grammar)
    labels = grammar.label_set()
    plan, speakers = plan_corpus(config, engines, grammar)
    fingerprint = _fingerprint(config, engines, plan, labels)
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
    rows = {
        split: [
            Utterance(
                id=item.id,
                audio=f"../{item.audio}",
                duration=round(durations[item.id], 4),
                sample_rate=SAMPLE_RATE,
                transcript=item.text,
                intent=item.intent,
                slots=item.slots,
                speaker=item.speaker.id,
                extra={
                    "engine": item.speaker.engine,
                    "shape": item.shape,
                    "phrasing": "seen" if item.seen_phrasing else "unseen",
                },
            )
            for item in plan
            if item.split == split
        ]
        for split in splits
    }
    manifests = write_split_manifests(rows, manifest_dir, labels)
    write_json(manifest_dir / "stats.json", corpus_stats(manifests, labels, generation))
    write_json(
        output_dir / "speakers.json",
        {pool: [speaker.to_dict() for speaker in pool_speakers] for pool, pool_speakers in speakers.items()},
    )
    write_json(
        output_dir / "config.json",
        {
            **asdict(config),
            "engines_used": engines,
            "held_out_engine_used": config.held_out(engines),
            "grammar_path": str(grammar.path),
        },  # fmt: skip
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
